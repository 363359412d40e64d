"""Issue #11, ingest side: never delete what is not a scan store, resume a killed ingest, detect
changed files and settings, the detector size from the calibration, honest exit codes.

Each test reproduces a defect found on the earlier main (real files, real processes, SIGKILL)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from ingest_helpers import quiet_ingest, write_tiffs

from laueflow.cli.main import main
from laueflow.io.store_kind import NotOurStoreError
from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.pipeline.ingest import IngestError, ingest
from laueflow.pipeline.scan_store import ScanStoreError, scan_state

SHAPE = (48, 64)
CALIBRATION = replace(DEFAULT_CALIBRATION, frame_shape=SHAPE)


def _frame(k: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(k)
    img = 1000 + rng.integers(0, 20, shape)
    img[5 + k % 30, 7] = 30000 + k  # tells frames apart
    return img.astype(np.uint16)


def _tiffs(folder: Path, n: int) -> Path:
    return write_tiffs(folder, n, _frame)


_ingest = quiet_ingest


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- item 1
def test_ingest_overwrite_never_deletes_a_folder_that_is_not_a_scan_store(tmp_path, capsys):
    """Found: `ingest images --out <folder above them> --overwrite` deleted the raw images,
    calib.det and truth.zarr."""
    beamtime = tmp_path / "beamtime"
    _tiffs(beamtime / "images", 4)
    (beamtime / "calib.det").write_text("70, 1024, 1024, 0, 0, 0.0734, 2018, 2016\n")
    truth = zarr.open_group(str(beamtime / "truth.zarr"), mode="w", zarr_format=3)
    truth.attrs["truth_format_version"] = 1
    before = _tree(beamtime)
    for out in (beamtime, beamtime / "images", beamtime / "truth.zarr"):
        rc = main(["ingest", str(beamtime / "images"), "--out", str(out), "--shape", "2x2",
                   "--serial", "--overwrite", "--no-progress"])
        assert rc == 2, out
        assert _tree(beamtime) == before, f"--out {out} changed the folder"
    err = capsys.readouterr().err
    assert "is or contains the input" in err and "truth store" in err and "never deletes" in err
    # a Zarr store of another program, a file: refused too, untouched
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    other.attrs["owner"] = "someone else"
    (tmp_path / "notes.txt").write_text("keep me")
    for out in (tmp_path / "other.zarr", tmp_path / "notes.txt"):
        with pytest.raises(NotOurStoreError, match="never deletes"):
            _ingest([beamtime / "images"], out, shape=(2, 2), overwrite=True)
    assert zarr.open_group(str(tmp_path / "other.zarr")).attrs["owner"] == "someone else"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    # its own scan store: replaced with --overwrite
    scan = tmp_path / "scan.zarr"
    _ingest([beamtime / "images"], scan, shape=(2, 2))
    assert _ingest([beamtime / "images"], scan, shape=(2, 2), overwrite=True)["n_written_now"] == 4


# --------------------------------------------------------------------------- item 4 (and ingest resume)
SLOW_INGEST = textwrap.dedent("""
    import sys, time
    from laueflow.io import images
    from laueflow.pipeline.ingest import ingest

    class SlowTiff(images.TiffReader):  # a slow disk: 60 ms per image
        def read(self, path, frame=None, **options):
            time.sleep(0.06)
            return super().read(path, frame, **options)

    images.READERS.insert(0, SlowTiff())
    src, out, checkpoint_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ingest([src], out, shape=(5, 8), frame_shape=(48, 64), progress=False, log=None,
           checkpoint_s=checkpoint_s)
""")


def _n_ok(store: Path) -> int:
    try:
        return int((np.asarray(zarr.open_group(str(store), mode="r", use_consolidated=False)
                               ["status"][...]) == 0).sum())
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def test_a_killed_ingest_is_refused_by_run_and_resumes(tmp_path):
    """Found: `run` processed the store of a killed ingest (unwritten frames as blank images,
    exit 0, complete) and a re-run of the ingest refused to resume it."""
    src = _tiffs(tmp_path / "images", 40)
    out = tmp_path / "scan.zarr"
    script = tmp_path / "slow_ingest.py"
    script.write_text(SLOW_INGEST)
    proc = subprocess.Popen([sys.executable, str(script), str(src), str(out), "0.2"], start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while _n_ok(out) < 8:
            assert proc.poll() is None, "the ingest ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    read_before_kill = _n_ok(out)
    assert 8 <= read_before_kill < 40
    with pytest.raises(ScanStoreError, match=r"ingest did not finish .*re-run the same `laueflow ingest`"):
        scan_state(out)
    partial = scan_state(out, allow_incomplete=True)
    assert not partial["complete"] and partial["n_valid"] == read_before_kill

    summary = _ingest([src], out, shape=(5, 8), frame_shape=SHAPE)  # the same command: resumes
    assert summary["n_skipped"] == read_before_kill
    assert summary["n_written_now"] == 40 - read_before_kill and summary["counts"]["ok"] == 40
    state = scan_state(out)
    assert state["complete"] and state["content_id"] != partial["content_id"]
    clean = tmp_path / "clean.zarr"
    _ingest([src], clean, shape=(5, 8), frame_shape=SHAPE)
    np.testing.assert_array_equal(zarr.open_array(str(out / "images"))[...],
                                  zarr.open_array(str(clean / "images"))[...])


def test_run_refuses_an_incomplete_scan_unless_asked_and_then_says_so(tmp_path):
    from distributed import Client, LocalCluster

    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import WorkflowError, parse_workflow

    src = _tiffs(tmp_path / "images", 6)
    out = tmp_path / "scan.zarr"
    _ingest([src], out, shape=(2, 3), frame_shape=SHAPE, calibration=CALIBRATION, materials=["Cu"])
    group = zarr.open_group(str(out), mode="r+")  # as a killed ingest leaves it: 2 points read
    status = np.asarray(group["status"][...])
    status.ravel()[2:] = 7
    group["status"][...] = status
    group["valid"][...] = status == 0
    group.attrs["ingest_complete"] = False
    wf = parse_workflow({"input": str(out), "output": str(tmp_path / "results.zarr"),
                         "stages": [{"peaks": {"max_peaks": 4}}]})
    logged = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as client:
        with pytest.raises(WorkflowError, match="ingest did not finish.*--allow-incomplete-scan"):
            run_workflow(wf, client, progress=False, log=logged.append)
        assert not (tmp_path / "results.zarr").exists()
        run_workflow(wf, client, progress=False, log=logged.append, allow_incomplete_scan=True)
    assert any("only the 2 of 6 points read so far" in line for line in logged)
    results = zarr.open_group(str(tmp_path / "results.zarr"), mode="r")
    assert results.attrs["scan_complete"] is False
    assert (np.asarray(results["status"][...]).ravel() == [0, 0, 1, 1, 1, 1]).all()
    assert (np.asarray(results["scan_status"][...]).ravel()[2:] == 7).all()


# --------------------------------------------------------------------------- item 5
def test_reingest_reads_changed_files_again_and_refuses_other_settings(tmp_path):
    """Found: points were skipped by path only (re-simulated files kept the old pixels) and a
    new --calibration, --material or --step-um was silently ignored."""
    src = _tiffs(tmp_path / "images", 4)
    out = tmp_path / "scan.zarr"
    args = dict(shape=(2, 2), calibration=CALIBRATION, materials=["Cu"], step_um=(0.5, 0.5))
    _ingest([src], out, **args)
    first = scan_state(out)["content_id"]
    assert _ingest([src], out, **args)["n_written_now"] == 0 and scan_state(out)["content_id"] == first
    corrected = _frame(99)
    tifffile.imwrite(src / "img_0002.tif", corrected)  # re-simulated / corrected file
    summary = _ingest([src], out, **args)
    assert summary["n_changed_files"] == 1 and summary["n_written_now"] == 1 and summary["n_skipped"] == 3
    np.testing.assert_array_equal(zarr.open_array(str(out / "images"))[1, 0], corrected)
    assert scan_state(out)["content_id"] != first

    other_calibration = replace(CALIBRATION, distance_mm=CALIBRATION.distance_mm + 1.0)
    for change, expect in ((dict(calibration=other_calibration), r"calibration.distance_mm: stored"),
                           (dict(materials=["Si"]), r"materials: stored \[\"Cu\"\], given \[\"Si\"\]"),
                           (dict(step_um=(1.0, 1.0)), r"step_um: stored \[0.5, 0.5\], given \[1.0, 1.0\]"),
                           (dict(mask=np.ones(SHAPE, bool)), r"mask_sha256: stored null")):
        before = _tree(out)
        with pytest.raises(IngestError, match=rf"(?s)other settings.*{expect}.*--overwrite"):
            _ingest([src], out, **{**args, **change})
        assert _tree(out) == before, change


# --------------------------------------------------------------------------- item 6 and exit codes
def test_the_calibration_sets_the_frame_size_not_the_first_file(tmp_path, capsys):
    """Found: one wrong-size first file rejected 19 of 20 good images, exit 0."""
    src = _tiffs(tmp_path / "images", 20)
    tifffile.imwrite(src / "img_0000.tif", _frame(0, shape=(32, 32)))
    summary = _ingest([src], tmp_path / "a.zarr", shape=(4, 5), calibration=CALIBRATION)
    assert summary["counts"]["ok"] == 19 and summary["counts"]["wrong shape"] == 1
    with pytest.raises(IngestError, match=r"do not all have the same size.*--calibration FILE.det or --frame-shape"):
        _ingest([src], tmp_path / "b.zarr", shape=(4, 5))
    assert not (tmp_path / "b.zarr").exists()
    # the CLI: --frame-shape works; a point not ok (listed, even a missing file) → exit 1
    (src / "img_0007.tif").unlink()
    rc = main(["ingest", str(src), "--out", str(tmp_path / "c.zarr"), "--shape", "4x5",
               "--frame-shape", "48x64", "--serial", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "(0, 0) wrong shape" in captured.out and "(1, 2) missing" in captured.out
    assert "2 of 20 points are not ok" in captured.err and "only they are read again" in captured.err
    rc = main(["ingest", str(src), "--out", str(tmp_path / "c.zarr"), "--shape", "4x5",
               "--frame-shape", "48x64", "--serial", "--no-progress"])
    assert rc == 1  # still not ok: the same answer on a re-run


def test_only_one_ingest_writes_a_store_and_a_stale_lock_is_taken_over(tmp_path):
    from laueflow.io.store_lock import StoreLockedError

    src = _tiffs(tmp_path / "images", 40)
    out = tmp_path / "scan.zarr"
    script = tmp_path / "slow_ingest.py"
    script.write_text(SLOW_INGEST)
    proc = subprocess.Popen([sys.executable, str(script), str(src), str(out), "0.2"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _n_ok(out) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(StoreLockedError, match=rf"being written by `ingest` pid {proc.pid}"):
            _ingest([src], out, shape=(5, 8), frame_shape=SHAPE)
        with pytest.raises(StoreLockedError):
            _ingest([src], out, shape=(5, 8), frame_shape=SHAPE, overwrite=True)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    notes = []
    summary = _ingest([src], out, shape=(5, 8), frame_shape=SHAPE, log=notes.append)
    assert summary["counts"]["ok"] == 40
    assert any(f"pid {proc.pid}" in n and "no longer running" in n for n in notes)


def test_a_scan_store_of_laueflow_0x_is_recognised_and_resumed(tmp_path):
    """Stores written before the marker (0.x): usable by `run`, resumed by ingest (which adds the
    marker, an id and the settings), never deleted unless recognised."""
    src = _tiffs(tmp_path / "images", 4)
    out = tmp_path / "scan.zarr"
    _ingest([src], out, shape=(2, 2), frame_shape=SHAPE)
    group = zarr.open_group(str(out), mode="r+")
    for key in ("laueflow_scan", "scan_id", "ingest_settings", "ingest_complete", "content_id"):
        del group.attrs[key]
    for name in ("source_size", "source_mtime_ns"):
        del group[name]
    with pytest.warns(UserWarning, match="[Cc]onsolidated metadata"):  # zarr: not in the v3 spec
        zarr.consolidate_metadata(str(out))
    assert scan_state(out)["complete"]  # recognised by its ingest_summary
    summary = _ingest([src], out, shape=(2, 2), frame_shape=SHAPE)
    assert summary["n_skipped"] == 4 and summary["n_written_now"] == 0
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["laueflow_scan"] is True and attrs["scan_id"] and attrs["ingest_complete"] is True
