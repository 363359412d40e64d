"""Issue #11, run side: one writer per results store (real concurrent `laueflow run` processes),
provenance checked on resume (another scan, a re-ingested scan, another model file), and
nothing deleted that is not a laueflow results store."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.io.store_lock import StoreLock, StoreLockedError
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import ResultsStoreError
from laueflow.pipeline.workflow import parse_workflow

QUIET = {"progress": False, "log": lambda *a: None}
TESTS = Path(standin.__file__).parent


def _workflow(scan, out, stages=("test_peaks", "test_angles"), **extra):
    return parse_workflow({"input": str(scan), "output": str(out), "chunk": [1, 1],
                           "plugins": ["test_pipeline_standin"], "stages": list(stages), **extra})


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two scans of the same shape, calibration and materials (other pixels)."""
    folder = tmp_path_factory.mktemp("scans")
    standin.make_scan_store(folder / "a.zarr", seed=0)
    standin.make_scan_store(folder / "b.zarr", seed=1)
    return folder / "a.zarr", folder / "b.zarr"


@pytest.fixture(scope="module")
def client():
    with connect(ClusterConfig("local", {"n_workers": 1, "threads_per_worker": 1, "processes": False,
                                         "dashboard_address": ":0"})) as client:
        yield client


def _chunks_done(path: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(path), mode="r", use_consolidated=False)
                              ["chunk_done"][...]).sum())
    except Exception:  # noqa: BLE001 - store still being created
        return 0


def _cli_run(tmp_path: Path, scan: Path, out: Path, delay_s: float, name: str, hold: Path | None = None):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"type": "local", "n_workers": 1, "threads_per_worker": 1,
                                       "dashboard_address": ":0"}))
    wf = tmp_path / f"{name}.yaml"
    wf.write_text(yaml.safe_dump({
        "input": str(scan), "output": str(out), "chunk": [1, 1], "cluster": str(cluster),
        "plugins": ["test_pipeline_standin"], "stages": [{"test_peaks": {"delay_s": delay_s, "hold_while_exists": str(hold or "")}}, "test_angles"]}))
    env = dict(os.environ)  # PYTHONPATH holds tests/ (conftest): the subprocess imports the plug-in
    assert str(TESTS) in env["PYTHONPATH"].split(os.pathsep)
    return [sys.executable, "-m", "laueflow.cli.main", "run", str(wf), "--no-progress"], env


def test_two_runs_started_together_one_writes_the_other_is_refused(scans, client, tmp_path):
    """Found: two runs started at the same moment left a store no later run could use, even with
    --overwrite; a run started mid-run recomputed tiles; `run --overwrite` mid-run crashed the first."""
    scan, _ = scans
    out = tmp_path / "results.zarr"
    hold = tmp_path / "hold"  # each tile waits while it exists: the writer is still running, whatever the load
    cmd, env = _cli_run(tmp_path, scan, out, 0.0, "wf", hold)
    hold.touch()
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    deadline = time.monotonic() + 180
    while all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "neither run was refused"
        time.sleep(0.05)
    hold.unlink()
    results = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(i for i, p in enumerate(procs) if p.returncode == 2)
    winner = procs[1 - loser]
    assert f"being written by `run` pid {winner.pid}" in results[loser][1]
    assert "Traceback" not in results[loser][1]
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True

    # a second run, and `run --overwrite`, while a run is writing: refused at once, the first unharmed
    shutil.rmtree(out)
    cmd, env = _cli_run(tmp_path, scan, out, 0.15, "wf", hold)
    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _chunks_done(out) < 2:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    hold.touch()  # the tiles still to start wait: the first run is mid-way while the others try
    for extra in ([], ["--overwrite"]):
        second = subprocess.run(cmd + extra, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert f"being written by `run` pid {first.pid}" in second.stderr
    hold.unlink()
    out_first, err_first = first.communicate(timeout=180)
    assert first.returncode == 0, err_first
    assert "20 tiles (20 images)" in out_first  # nothing was recomputed or deleted under it
    reference = tmp_path / "reference.zarr"
    run_workflow(_workflow(scan, reference), client, **QUIET)
    assert_stores_identical(out, reference)


def test_no_ingest_into_a_scan_a_run_reads(scans, tmp_path):
    import tifffile

    from laueflow.pipeline.ingest import ingest

    scan, _ = scans
    tifffile.imwrite(tmp_path / "img_0000.tif", np.ones((64, 80), np.uint16))
    reader = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from laueflow.io.store_lock import StoreLock\n"
        f"lock = StoreLock({str(scan)!r}, 'run (reading the scan)', shared=True).acquire()\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "held"
        with StoreLock(scan, "run (reading the scan)", shared=True):  # several runs may read one scan
            for overwrite in (False, True):
                with pytest.raises(StoreLockedError, match=r"being read by `run \(reading the scan\)` pid"):
                    ingest([str(tmp_path)], str(scan), overwrite=overwrite, progress=False, log=None)
    finally:
        reader.kill()
        reader.wait()
    assert zarr.open_group(str(scan), mode="r").attrs["laueflow_scan"] is True


def test_resume_with_another_scan_is_refused_with_the_differences(scans, client, tmp_path):
    """Found: a partial store resumed with a workflow pointing at another scan of the same shape
    ended complete=True with half its tiles from each scan."""
    a, b = scans
    out = tmp_path / "results.zarr"
    run_workflow(_workflow(a, out), client, max_tiles=5, **QUIET)
    assert _chunks_done(out) == 5
    before = np.asarray(zarr.open_group(str(out), mode="r")["peak_count"][...])
    with pytest.raises(ResultsStoreError, match=r"(?s)computed from other inputs.*scan_content_id: stored "
                                                r".*scan_id: stored \"standin-0\", given \"standin-1\".*--overwrite"):
        run_workflow(_workflow(b, out), client, **QUIET)
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(out), mode="r")["peak_count"][...]), before)
    assert _chunks_done(out) == 5

    # the same scan store with other content (a file re-read by a resumed ingest): refused too
    moved = tmp_path / "a-copy.zarr"
    shutil.copytree(a, moved)
    group = zarr.open_group(str(moved), mode="r+")
    group.attrs["content_id"] = "0123456789abcdef"
    with pytest.raises(ResultsStoreError, match="scan_content_id: stored"):
        run_workflow(_workflow(moved, out), client, **QUIET)
    # the same scan moved elsewhere (same id and content): the resume is allowed and completes
    group.attrs.pop("content_id")
    summary = run_workflow(_workflow(moved, out), client, **QUIET)
    assert summary.complete and summary.n_tiles_run == 15
    reference = tmp_path / "reference.zarr"
    run_workflow(_workflow(a, reference), client, **QUIET)
    assert_stores_identical(out, reference)


def test_resume_with_another_model_file_is_refused(scans, client, tmp_path):
    """The same model path, other weights (retrained, with their own sha256 file): refused."""
    import torch

    from laueflow.io.model_files import default_spotcnn_path, load_spotcnn, save_spotcnn

    scan, _ = scans
    model = tmp_path / "spotcnn.pt"
    shutil.copy(default_spotcnn_path(), model)
    shutil.copy(default_spotcnn_path().with_suffix(".json"), model.with_suffix(".json"))
    out = tmp_path / "results.zarr"
    stages = [{"peaks": {"max_peaks": 8}}, "angles", {"descriptors": {"model": str(model), "device": "cpu"}}]
    run_workflow(_workflow(scan, out, stages), client, max_tiles=3, **QUIET)
    retrained = load_spotcnn(model)
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    save_spotcnn(retrained, model, metadata={"note": "retrained"})
    with pytest.raises(ResultsStoreError, match=r"models.descriptors.model: stored [0-9a-f]{64}, now [0-9a-f]{64}"):
        run_workflow(_workflow(scan, out, stages), client, **QUIET)
    assert _chunks_done(out) == 3


def test_run_overwrite_never_deletes_what_is_not_a_results_store(scans, client, tmp_path):
    scan, _ = scans
    for name, make in (("folder", lambda p: (p.mkdir(), (p / "data.txt").write_text("mine"))),
                       ("scan", lambda p: shutil.copytree(scan, p))):
        target = tmp_path / f"{name}.zarr"
        make(target)
        before = sorted(str(f.relative_to(target)) for f in target.rglob("*"))
        with pytest.raises(ResultsStoreError, match="never writes into or deletes it"):
            run_workflow(_workflow(scan, target), client, overwrite=True, **QUIET)
        assert sorted(str(f.relative_to(target)) for f in target.rglob("*")) == before


def test_a_task_of_a_replaced_store_writes_nothing_into_its_successor(scans, tmp_path):
    """A task left running by a killed driver (e.g. on a remote scheduler) must not write its tile
    into the store a `run --overwrite` made meanwhile: each store has its own id, checked by the
    task before it reads `chunk_done`, before it writes, and before it marks the tile done."""
    from laueflow.pipeline.run import _tile_chain, validate_run
    from laueflow.pipeline.store import StoreReplacedError, prepare_results_store, read_chunk_done
    from laueflow.pipeline.tasks import run_tile_group

    scan, _ = scans
    out = tmp_path / "results.zarr"
    one_worker = {"n_workers": 1, "worker_resources": {}, "largest_worker_resources": {}}
    wf = _workflow(scan, out)
    old = validate_run(wf, None, cluster_description=one_worker)
    prepare_results_store(out, old.layout, coords=old.coords, attrs=old.attrs)
    params = {s.name: s.params for s in wf.stages}
    (orphan, _), = _tile_chain(old, params, 0, 1, slice(0, 1), slice(1, 2), 0.0)

    new = validate_run(wf, None, overwrite=True, cluster_description=one_worker)  # `run --overwrite`
    prepare_results_store(out, new.layout, coords=new.coords, attrs=new.attrs, overwrite=True)
    assert new.attrs["store_id"] != old.attrs["store_id"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(StoreReplacedError, match="replaced; nothing written"):
        run_tile_group(orphan)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert not read_chunk_done(out).any()
    (current, _), = _tile_chain(new, params, 0, 1, slice(0, 1), slice(1, 2), 0.0)
    assert run_tile_group(current).n_valid == 1 and read_chunk_done(out)[0, 1]


def test_resume_by_another_laueflow_version_is_refused(scans, client, tmp_path, monkeypatch):
    """Stage code of another version may compute otherwise: its tiles are not mixed in."""
    import laueflow.pipeline.run as run_module

    scan, _ = scans
    out = tmp_path / "results.zarr"
    run_workflow(_workflow(scan, out), client, max_tiles=2, **QUIET)
    monkeypatch.setattr(run_module, "__version__", "99.0.0")
    with pytest.raises(ResultsStoreError, match=r"laueflow_version: stored \"[^\"]+\", given \"99.0.0\""):
        run_workflow(_workflow(scan, out), client, **QUIET)
    assert _chunks_done(out) == 2
