"""`laueflow run` on real LocalClusters and real Zarr stores (stand-in stages; real ones if present)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

# the stand-in plug-in: tests/ is on sys.path (pyproject `pythonpath`) and on PYTHONPATH for the
# workers and subprocesses (tests/conftest.py)
import test_pipeline_standin as standin
from store_asserts import assert_stores_identical, documented_variables
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import ResultsStoreError
from laueflow.pipeline.workflow import parse_workflow
from laueflow.stages import angles, peaks

TESTS = Path(standin.__file__).parent
INVALID = [(1, 2)]
EMPTY = [(3, 0)]


def _workflow(scan, out, **extra):
    data = {"input": str(scan), "output": str(out), "images_per_task": 3,
            "plugins": ["test_pipeline_standin"], "stages": ["test_peaks", "test_angles"]}
    data.update(extra)
    return parse_workflow(data)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=INVALID, empty=EMPTY)
    return path


@pytest.fixture(scope="module")
def client2():
    assert str(TESTS) in os.environ["PYTHONPATH"].split(os.pathsep)  # workers import the plug-in
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1,
                                         "dashboard_address": ":0", "processes": True})) as client:
        yield client


@pytest.fixture(scope="module")
def results2(scan, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("r2") / "results.zarr"
    summary = run_workflow(_workflow(scan, out), client2, progress=False, log=lambda *a: None)
    assert summary.n_tiles_run == summary.n_tiles == 8
    return out


def test_schema_matches_doc(results2):
    doc = documented_variables()
    with xr.open_zarr(str(results2)) as ds:
        assert set(ds.data_vars) <= set(doc), f"undocumented: {set(ds.data_vars) - set(doc)}"
        for name, var in ds.data_vars.items():
            _, dims, dtype, fill, units, _ = doc[name]
            assert tuple(d.strip() for d in dims.split(",")) == var.dims, name
            assert var.dtype == np.dtype(dtype), name
            if name != "chunk_done":
                assert var.attrs["units"] == units, name
                if np.dtype(dtype).kind == "f":
                    assert fill == "NaN" and np.isnan(var.encoding["_FillValue"]), name
                else:
                    assert var.attrs["fill_value"] == int(fill), name
        assert ds.attrs["complete"] is True
        assert ds.attrs["workflow"]["stages"][0]["test_peaks"]["max_peaks"] == 16
        for key in ("laueflow_version", "started", "finished", "stage_timings_s", "cluster", "history"):
            assert key in ds.attrs, key
        assert set(ds.attrs["stage_timings_s"]) >= {"read", "test_peaks", "test_angles", "write"}
        assert ds.attrs["cluster"]["n_workers"] == 2
        assert "y_um" in ds.coords
        assert ds["peak_col"].chunks[:2] == ((1,) * 4, (3, 2))


def test_status_and_fill_values(results2, scan):
    with xr.open_zarr(str(results2)) as ds:
        status = ds.status.values
        expected = np.zeros((4, 5), np.int8)
        for p in INVALID:
            expected[p] = 1
        for p in EMPTY:
            expected[p] = 2
        np.testing.assert_array_equal(status, expected)
        np.testing.assert_array_equal(ds.scan_status.values, (expected == 1).astype(np.int8))
        y, x = INVALID[0]
        assert ds.peak_count.values[y, x] == -1
        assert np.isnan(ds.peak_col.values[y, x]).all() and (ds.peak_col_int.values[y, x] == -1).all()
        assert ds.peak_count.values[EMPTY[0]] == 0
        ok = status == 0
        assert (ds.peak_count.values[ok] >= 3).all()  # 4 random spots; two may merge
        assert np.isfinite(ds.peak_two_theta.values[ok][:, :3]).all()
        assert ds.chunk_done.values.all()


def test_one_and_two_workers_identical(scan, results2, tmp_path):
    out = tmp_path / "results1.zarr"
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client:
        run_workflow(_workflow(scan, out), client, progress=False, log=lambda *a: None)
    assert_stores_identical(out, results2)


def test_rerun_skips_done_and_checks_layout(scan, client2, tmp_path):
    out = tmp_path / "results.zarr"
    first = run_workflow(_workflow(scan, out), client2, max_tiles=3, progress=False, log=lambda *a: None)
    assert first.n_tiles_run == 3
    second = run_workflow(_workflow(scan, out), client2, progress=False, log=lambda *a: None)
    assert (second.n_tiles_done_before, second.n_tiles_run) == (3, 5)
    third = run_workflow(_workflow(scan, out), client2, progress=False, log=lambda *a: None)
    assert third.n_tiles_run == 0
    with xr.open_zarr(str(out)) as ds:
        assert len(ds.attrs["history"]) == 3 and ds.attrs["complete"] is True
    changed = _workflow(scan, out, stages=[{"test_peaks": {"max_peaks": 8}}, "test_angles"])
    with pytest.raises(ResultsStoreError, match=r"(?s)other inputs.*stages.test_peaks.max_peaks: stored 16, given 8.*--overwrite"):
        run_workflow(changed, client2, progress=False, log=lambda *a: None)
    run_workflow(changed, client2, overwrite=True, progress=False, log=lambda *a: None)
    with xr.open_zarr(str(out)) as ds:
        assert ds.sizes["peak"] == 8


def test_stage_failure_stops_the_run_and_resume_completes_it(scan, client2, results2, tmp_path):
    from laueflow.pipeline.store import read_chunk_done

    out, marker = tmp_path / "results.zarr", tmp_path / "broken"
    marker.write_text("remove me to fix the fault")
    wf = _workflow(scan, out, stages=["test_peaks", {"test_failing_angles": {"fail_while_exists": str(marker)}}])
    with pytest.raises(RuntimeError, match=r"failed: ValueError: stand-in failure.*finished tiles are kept"):
        run_workflow(wf, client2, progress=False, log=lambda *a: None)
    done = read_chunk_done(out)
    assert 0 < done.sum() < done.size  # tiles without an empty image finished, the faulty ones did not
    with xr.open_zarr(str(out)) as ds:
        assert ds.attrs.get("complete") is not True
    marker.unlink()
    summary = run_workflow(wf, client2, progress=False, log=lambda *a: None)
    assert summary.n_tiles_done_before == int(done.sum()) and summary.n_tiles_run == done.size - done.sum()
    with xr.open_zarr(str(out)) as ds:
        assert ds.attrs["complete"] is True
    assert_stores_identical(out, results2)  # nothing lost, nothing computed twice differently


def test_real_peak_and_angle_stages(scan, client2, tmp_path):
    from laueflow.physics.geometry import Calibration

    out = tmp_path / "results.zarr"
    workflow = parse_workflow({"input": str(scan), "output": str(out), "chunk": [2, 5],
                               "stages": [{"peaks": {"max_peaks": 20}}, "angles"]})
    run_workflow(workflow, client2, progress=False, log=lambda *a: None)
    with xr.open_zarr(str(scan)) as s, xr.open_zarr(str(out)) as r:
        images = s.images.values[0]  # first row of points, all valid
        direct = peaks.find_peaks(images, max_peaks=20)
        np.testing.assert_array_equal(r.peak_col.values[0], direct["peak_col"])
        np.testing.assert_array_equal(r.peak_count.values[0], direct["peak_count"])
        cal = Calibration.from_dict(s.attrs["calibration"])
        ang = angles.peak_angles(direct["peak_col"], direct["peak_row"], cal)
        np.testing.assert_allclose(r.peak_two_theta.values[0], ang["peak_two_theta"], rtol=1e-6)


def _chunks_done(path) -> int:
    import zarr

    try:
        return int(np.asarray(zarr.open_group(str(path), mode="r", use_consolidated=False)
                              ["chunk_done"][...]).sum())
    except Exception:  # noqa: BLE001 - store still being created
        return 0


def test_resume_after_sigkill(scan, client2, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"type": "local", "n_workers": 2, "dashboard_address": ":0"}))
    out = tmp_path / "killed.zarr"
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "input": str(scan), "output": str(out), "chunk": [1, 1], "cluster": str(cluster),
        "plugins": ["test_pipeline_standin"],
        "stages": [{"test_peaks": {"delay_s": 0.25}}, "test_angles"]}))
    env = dict(os.environ)  # PYTHONPATH holds tests/ (conftest): the subprocess imports the plug-in
    assert str(TESTS) in env["PYTHONPATH"].split(os.pathsep)
    cmd = [sys.executable, "-m", "laueflow.cli.main", "run", str(wf), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while _chunks_done(out) < 4:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "run made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job: driver, nannies, workers
        proc.wait()
    done = _chunks_done(out)
    assert 4 <= done < 20, done

    resumed = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(rf"{20 - _already(resumed.stdout)} tiles .* {_already(resumed.stdout)} tiles were "
                     "already done", resumed.stdout)
    assert _already(resumed.stdout) >= done
    assert "dashboard: http" in resumed.stdout

    reference = tmp_path / "reference.zarr"  # same tiling and stages, uninterrupted, no delay
    run_workflow(_workflow(scan, reference, chunk=[1, 1]), client2, progress=False, log=lambda *a: None)
    assert_stores_identical(out, reference)


def _already(stdout: str) -> int:
    match = re.search(r"(\d+) tiles were already done", stdout)
    assert match, stdout
    return int(match.group(1))
