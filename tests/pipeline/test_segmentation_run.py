"""The segmentation reduce stage in real runs: a scan of three regions segmented from stand-in
features, and a run SIGKILLed half-way through the segmentation (some outputs written) that
resumes to results identical to an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import yaml
from sklearn.metrics import adjusted_rand_score

# stand-ins: tests/ is on sys.path (pyproject `pythonpath`) and on PYTHONPATH for the workers
# and subprocesses (tests/conftest.py)
import test_segmentation_standin as standin
from store_asserts import assert_stores_identical, documented_variables
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import read_chunk_done, read_reduce_done
from laueflow.pipeline.workflow import parse_workflow

SEGMENTATION_OUTPUTS = [v.name for v in standin.SEGMENTATION.outputs]
QUIET = {"progress": False, "log": lambda *a: None}
INVALID = [(1, 2)]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    return path, standin.make_region_scan(path, invalid=INVALID)


@pytest.fixture(scope="module")
def client():
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as c:
        yield c


def _config(scan_path, out, segmentation):
    return {"input": str(scan_path), "output": str(out), "images_per_task": 9,
            "plugins": ["test_segmentation_standin"], "stages": ["test_features", segmentation]}


def test_a_run_segments_the_regions_of_the_scan(scan, client, tmp_path):
    scan_path, regions = scan
    out = tmp_path / "results.zarr"
    summary = run_workflow(parse_workflow(_config(scan_path, out, {"segmentation": {"k_max": 8}})), client, **QUIET)
    assert summary.complete and set(summary.reduce_timings_s) == {"segmentation"}
    with xr.open_zarr(str(out)) as ds:
        labels = ds.cluster_label.values
        ok = np.ones_like(labels, bool)
        for y, x in INVALID:
            assert labels[y, x] == -1 and np.isnan(ds.direct_rgb.values[y, x]).all()
            ok[y, x] = False
        assert adjusted_rand_score(regions[ok], labels[ok]) == 1.0
        assert int(ds.suggested_k) == 3 and int(ds.n_clusters) == 3
        assert ds.principal_components.dims == ("y", "x", "pc") and ds.sizes["pc"] == 32
        info = ds.attrs["reduce_info"]["segmentation"]
        assert info["path"] == "in_memory" and info["k"] == 3 and "0.0 MB ≤ 256 MB" in info["path_reason"]
        for c in range(3):  # delegates: points of their cluster
            assert labels[int(ds.delegate_y[c]), int(ds.delegate_x[c])] == c
        doc = documented_variables()  # every output as docs/results-schema.md says
        for name in SEGMENTATION_OUTPUTS:
            _, dims, dtype, fill, units, _ = doc[name]
            assert (() if dims == "()" else tuple(d.strip() for d in dims.split(","))) == ds[name].dims, name
            assert ds[name].dtype == np.dtype(dtype) and ds[name].attrs["units"] == units, name


def test_a_run_killed_during_the_segmentation_resumes_identically(scan, client, tmp_path):
    scan_path, _ = scan
    marker = tmp_path / "pause"
    stage = {"pausing_segmentation": {"k_max": 6, "path": "distributed", "pause_while_exists": str(marker)}}
    reference = tmp_path / "reference.zarr"
    assert run_workflow(parse_workflow(_config(scan_path, reference, stage)), client, **QUIET).complete

    out = tmp_path / "results.zarr"
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"type": "local", "n_workers": 2, "dashboard_address": ":0"}))
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({**_config(scan_path, out, stage), "cluster": str(cluster)}))
    marker.write_text("pause the segmentation after its third output")
    cmd = [sys.executable, "-m", "laueflow.cli.main", "run", str(workflow), "--no-progress"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "pause.paused").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached the pause"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # driver and workers, mid-reduce
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert read_chunk_done(out).all() and read_reduce_done(out) == []
    with xr.open_zarr(str(out)) as ds:  # half-written: PCs, labels and direct colours, not the rest
        assert np.isfinite(ds.principal_components.values).any() and (ds.cluster_label.values >= 0).any()
        assert np.isnan(ds.pca_labeler_rgb.values).all() and (ds.delegate_y.values == -1).all()
        assert ds.attrs.get("complete") is not True

    marker.unlink()
    again = run_workflow(parse_workflow(_config(scan_path, out, stage)), client, **QUIET)
    assert again.n_tiles_run == 0 and set(again.reduce_timings_s) == {"pausing_segmentation"} and again.complete
    assert_stores_identical(out, reference)


@pytest.mark.parametrize("params, message", [
    ({"pcs": 54, "k_max": 60}, "pcs = 54 principal components need at least 54 points; the scan has 53 valid points: "
                               "set pcs ≤ 53"),
    ({"k": 54, "k_max": 60}, "k = 54 clusters asked of a scan of 53 valid points: set k ≤ 53"),
])
def test_a_scan_too_small_for_the_segmentation_is_refused_before_any_tile(scan, tmp_path, params, message):
    """54 points, one of them invalid: refused at validation, no results store created."""
    from laueflow.pipeline.run import validate_inputs
    from laueflow.pipeline.workflow import WorkflowError

    scan_path, _ = scan
    out = tmp_path / "results.zarr"
    with pytest.raises(WorkflowError, match="stage 'segmentation': " + message.replace("(", r"\(")):
        validate_inputs(parse_workflow(_config(scan_path, out, {"segmentation": params})))
    assert not out.exists()
    validate_inputs(parse_workflow(_config(scan_path, out, {"segmentation": {"pcs": 53, "k_max": 60}})))  # fits
