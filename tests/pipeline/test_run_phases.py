"""`laueflow run` phases: validation before any store, reduce stages (resume, 1 vs 2 workers),
stage groups with per-stage resources, typed tasks, device resolution — real clusters and stores."""
from __future__ import annotations

import os
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

# the stand-in plug-in: tests/ is on sys.path (pyproject `pythonpath`) and on PYTHONPATH for the
# workers (tests/conftest.py)
import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import _tile_chain, run_workflow, stage_groups, validate_run
from laueflow.pipeline.tasks import resolve_device
from laueflow.pipeline.workflow import WorkflowError, parse_workflow
from laueflow.stages.base import StageSpec, Variable, get_stage, register_stage, unregister_stage
from laueflow.stages.summary import scan_summary

QUIET = {"progress": False, "log": lambda *a: None}


def _workflow(scan, out, stages, **extra):
    return parse_workflow({"input": str(scan), "output": str(out), "images_per_task": 3,
                           "plugins": ["test_pipeline_standin"], "stages": stages, **extra})


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=[(1, 2)], empty=[(3, 0)])
    return path


@pytest.fixture(scope="module")
def client2():
    """Two workers that offer the GPU resource (the stand-in stages run on their CPUs)."""
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0",
                                         "resources": {"GPU": 1}})) as client:
        yield client


# --------------------------------------------------------------------------- validate
@pytest.mark.parametrize("stage, message", [
    ({"peaks": {"threshold_sigma": -5.0}}, "threshold_sigma must be > 0"),
    ({"peaks": {"max_peaks": 0}}, "max_peaks must be an integer ≥ 1"),
    ({"peaks": {"max_peaks": -1}}, "max_peaks must be an integer ≥ 1"),
    ({"peaks": {"box_size_px": -3}}, "box_size_px must be an integer ≥ 1"),
    ({"descriptors": {"method": "magic"}}, "method must be 'cnn' or 'fit'"),
    ({"descriptors": {"device": "gpu"}}, "device must be one of auto, cpu, cuda"),
])
def test_impossible_parameters_fail_before_any_store(scan, client2, tmp_path, stage, message):
    out = tmp_path / "results.zarr"
    stages = [stage] if "peaks" in stage else ["peaks", stage]
    with pytest.raises(WorkflowError, match=message):  # already when the workflow is read
        parse_workflow({"input": str(scan), "output": str(out), "stages": stages})
    wf = parse_workflow({"input": str(scan), "output": str(out), "stages": ["peaks"]})
    wf.stages[-1].params.update(next(iter(stage.values())) if "peaks" in stage else {})
    if "peaks" in stage:  # and again by the run (a workflow built in Python, not read from YAML)
        with pytest.raises(WorkflowError, match=message):
            run_workflow(wf, client2, **QUIET)
    assert not out.exists()


def test_missing_gpu_fails_before_any_store(scan, tmp_path):
    out = tmp_path / "results.zarr"
    wf = parse_workflow({"input": str(scan), "output": str(out),
                         "stages": ["peaks", {"descriptors": {"device": "cuda", "method": "fit"}}]})
    cpu_only = {"n_workers": 1, "worker_resources": {}, "largest_worker_resources": {}}
    with pytest.raises(WorkflowError, match=r"descriptors need Dask resources \{'GPU': 1\}.*device: cpu"):
        validate_run(wf, None, cluster_description=cpu_only)
    assert not out.exists()


def test_failing_prepare_hook_leaves_no_store_and_the_fix_runs_without_overwrite(scan, client2, tmp_path):
    calls = []

    def prepare(params, context):
        calls.append(1)
        if params["broken"]:
            raise ValueError("the model for this stage could not be made")
        return {k: v for k, v in params.items() if k != "broken"}  # the function does not take it

    register_stage(replace(get_stage("test_angles"), name="prepared_angles", prepare=prepare,
                           params={"broken": True}))
    try:
        out = tmp_path / "results.zarr"
        with pytest.raises(WorkflowError, match="could not be made"):
            run_workflow(_workflow(scan, out, ["test_peaks", "prepared_angles"]), client2, **QUIET)
        assert calls and not out.exists()
        fixed = _workflow(scan, out, ["test_peaks", {"prepared_angles": {"broken": False}}])
        assert run_workflow(fixed, client2, **QUIET).complete
    finally:
        unregister_stage("prepared_angles")


# --------------------------------------------------------------------------- reduce
def test_scan_summary_values(scan, client2, tmp_path):
    out = tmp_path / "results.zarr"
    summary = run_workflow(_workflow(scan, out, ["test_peaks", "test_angles", "scan_summary"]), client2, **QUIET)
    assert summary.complete and set(summary.reduce_timings_s) == {"scan_summary"}
    with xr.open_zarr(str(out)) as ds:
        counts = ds.peak_count.values
        median = np.median(counts[counts >= 0])
        assert ds.peak_count_median.values == median and median >= 3
        expected = np.where(counts >= 0, counts / median, np.nan).astype(np.float32)
        np.testing.assert_array_equal(ds.peak_count_normalised.values, expected)
        assert np.isnan(ds.peak_count_normalised.values[1, 2])  # invalid image
        assert (ds.matching_rate_histogram.values == -1).all()  # no index stage
        edges = ds.matching_rate_bin_edges.values
        assert edges.shape == (20, 2) and edges[0].tolist() == [0, 5] and edges[-1].tolist() == [95, 100]
        assert ds.attrs["reduce_done"] == ["scan_summary"] and ds.attrs["complete"] is True


def test_scan_summary_histogram_counts_grains():
    import dask.array as da
    from distributed import Client

    rates = np.full((2, 3, 4), np.nan, np.float32)
    rates[0, 0, :2] = [100.0, 51.0]
    rates[1, 2, 0] = 4.9
    rates[1, 1, 3] = 95.0
    written = {}

    class Writer:
        def write(self, name, array):
            written[name] = np.asarray(array.compute() if hasattr(array, "compute") else array)

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        scan_summary(da.from_array(np.array([[3, 4, 5], [-1, 5, 6]], np.int32), chunks=(1, 3)),
                     da.from_array(rates, chunks=(1, 3, 4)), client=client, writer=Writer(), matching_rate_bins=20)
    assert written["peak_count_median"] == 5.0
    np.testing.assert_allclose(written["peak_count_normalised"][0], [0.6, 0.8, 1.0])
    hist = written["matching_rate_histogram"]
    assert hist.sum() == 4 and hist[0] == 1 and hist[10] == 1 and hist[19] == 2


def test_reduce_one_and_two_workers_identical(scan, client2, tmp_path):
    stages = ["test_peaks", "test_angles", "scan_summary"]
    two = tmp_path / "two.zarr"
    run_workflow(_workflow(scan, two, stages), client2, **QUIET)
    one = tmp_path / "one.zarr"
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client:
        run_workflow(_workflow(scan, one, stages), client, **QUIET)
    assert_stores_identical(one, two)


def _flaky_summary(peak_count, *, client, writer, fail_while_exists=""):
    if fail_while_exists and os.path.exists(fail_while_exists):
        writer.write("peak_total", np.int64(-5))  # half-written, then killed
        raise RuntimeError("reduce killed")
    writer.write("peak_total", np.int64(client.compute(peak_count.clip(0, None).sum()).result()))


FLAKY = StageSpec(name="flaky_total", kind="reduce", func=_flaky_summary, inputs={"peak_count": "peak_count"},
                  outputs=(Variable("peak_total", (), "int64", -1, "1", "Σ peaks", per_point=False),),
                  params={"fail_while_exists": ""})


def test_killed_reduce_resumes_without_redoing_tiles(scan, client2, tmp_path):
    register_stage(FLAKY)
    try:
        out, marker = tmp_path / "results.zarr", tmp_path / "broken"
        marker.write_text("remove me")
        stages = ["test_peaks", "scan_summary", {"flaky_total": {"fail_while_exists": str(marker)}}]
        with pytest.raises(RuntimeError, match="reduce stage 'flaky_total' failed.*re-run to resume"):
            run_workflow(_workflow(scan, out, stages), client2, **QUIET)
        with xr.open_zarr(str(out)) as ds:
            assert ds.chunk_done.values.all() and ds.attrs["complete"] is False
            assert "reduce killed" in ds.attrs["history"][-1]["error"]
            assert ds.attrs["reduce_done"] == ["scan_summary"]
        marker.unlink()
        again = run_workflow(_workflow(scan, out, stages), client2, **QUIET)
        assert again.n_tiles_run == 0 and set(again.reduce_timings_s) == {"flaky_total"} and again.complete
        reference = tmp_path / "reference.zarr"
        run_workflow(_workflow(scan, reference, stages), client2, **QUIET)
        assert_stores_identical(out, reference)
        with xr.open_zarr(str(out)) as ds:
            assert ds.peak_total.values == np.clip(ds.peak_count.values, 0, None).sum()
    finally:
        unregister_stage("flaky_total")


def test_reduce_and_map_inputs_are_checked(scan, tmp_path):
    register_stage(replace(get_stage("scan_summary"), name="bad_reduce", inputs={"images": "images"}))
    register_stage(replace(get_stage("test_angles"), name="late_map", inputs={
        "peak_col": "peak_count_normalised", "peak_row": "peak_row", "calibration": "calibration"}))
    try:
        with pytest.raises(WorkflowError, match="reduce stage 'bad_reduce' needs 'images'"):
            _workflow(scan, tmp_path / "r.zarr", ["test_peaks", "bad_reduce"])
        with pytest.raises(WorkflowError, match="map stage 'late_map' needs 'peak_count_normalised'.*reduce"):
            _workflow(scan, tmp_path / "r.zarr", ["test_peaks", "scan_summary", "late_map"])
    finally:
        unregister_stage("bad_reduce")
        unregister_stage("late_map")


# --------------------------------------------------------------------------- groups, tasks, devices
def test_stage_groups_follow_resources(scan, tmp_path):
    wf = parse_workflow({"input": str(scan), "output": str(tmp_path / "r.zarr"),
                         "stages": ["peaks", "angles", "descriptors", "index", "strain"]})
    gpu = {"largest_worker_resources": {"GPU": 1}}
    names = lambda groups: [[s.name for s in stages] for stages, _ in groups]  # noqa: E731
    assert names(stage_groups(wf.stages, gpu)) == [["peaks", "angles"], ["descriptors", "index"], ["strain"]]
    assert [res for _, res in stage_groups(wf.stages, gpu)] == [{}, {"GPU": 1}, {}]
    assert names(stage_groups(wf.stages, {"largest_worker_resources": {}})) == [
        ["peaks", "angles", "descriptors", "index", "strain"]]
    assert names(stage_groups(wf.stages, gpu, "whole")) == [["peaks", "angles", "descriptors", "index", "strain"]]
    assert stage_groups(wf.stages, gpu, "whole")[0][1] == {"GPU": 1}


def test_split_groups_on_gpu_resource_workers_give_identical_results(scan, client2, tmp_path):
    """Three stage groups per tile (the middle one needs GPU=1), intermediate results passed
    between tasks: identical to one task per tile."""
    register_stage(replace(get_stage("test_angles"), name="gpu_angles", resources={"GPU": 1}))
    try:
        split = tmp_path / "split.zarr"
        stages = ["test_peaks", "gpu_angles", "scan_summary"]
        summary = run_workflow(_workflow(scan, split, stages), client2, **QUIET)
        with xr.open_zarr(str(split)) as ds:
            assert ds.attrs["history"][-1]["stage_groups"] == [["test_peaks"], ["gpu_angles"]]
        whole = tmp_path / "whole.zarr"
        run_workflow(_workflow(scan, whole, stages), client2, grouping="whole", **QUIET)
        with xr.open_zarr(str(whole)) as ds:
            assert ds.attrs["history"][-1]["stage_groups"] == [["test_peaks", "gpu_angles"]]
        assert_stores_identical(split, whole)
        assert summary.warm_ms_per_image and "gpu_angles" in summary.warm_ms_per_image
    finally:
        unregister_stage("gpu_angles")


def test_tasks_are_frozen_with_absolute_paths(scan, client2, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel_scan = os.path.relpath(scan, tmp_path)
    wf = parse_workflow({"input": rel_scan, "output": "results.zarr", "stages": ["test_peaks", "test_angles"],
                         "plugins": ["test_pipeline_standin"]})
    plan = validate_run(wf, client2)
    (task, resources), = _tile_chain(plan, {s.name: s.params for s in wf.stages}, 0, 0, slice(0, 1), slice(0, 3), 0.0)
    assert Path(task.scan.path).is_absolute() and Path(task.results).is_absolute()
    assert task.write and [c.spec.name for c in task.stages] == ["test_peaks", "test_angles"]
    with pytest.raises(FrozenInstanceError):
        task.results = "elsewhere"
    assert not (tmp_path / "results.zarr").exists()  # validation created nothing


def test_device_resolution_follows_worker_resources():
    assert resolve_device("auto", {}) == "cpu"
    assert resolve_device("cpu", {"GPU": 1}) == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto", {"GPU": 1}) == "cuda"
    else:
        with pytest.raises(RuntimeError, match="offers the GPU resource"):
            resolve_device("auto", {"GPU": 1})
