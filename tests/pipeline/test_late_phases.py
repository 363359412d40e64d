"""Late map phases (map stages with ``points:``): they run after the reduce stage that selects the
points, only on those points and only on tiles that have one; a run SIGKILLed in a late phase
resumes it to a store identical to an uninterrupted run; impossible orders are refused."""
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

import test_phases_standin  # noqa: F401  (registers the stand-ins here; workers import it as a plug-in)
import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import read_chunk_done, read_phase_done, read_reduce_done
from laueflow.pipeline.workflow import WorkflowError, parse_workflow, workflow_steps

QUIET = {"progress": False, "log": lambda *a: None}
INVALID = (1, 2)
#: selected: two points of tile (0, 0), the invalid point alone in tile (1, 0), one of tile (2, 1)
#: and the spot-less point of tile (3, 0); tiles (0, 1), (1, 1), (2, 0), (3, 1) have none
CHOSEN = [[0, 0], [0, 1], [1, 2], [2, 4], [3, 0]]
COMPUTED = {(0, 0), (0, 1), (2, 4), (3, 0)}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=[INVALID], empty=[(3, 0)])
    return path


@pytest.fixture(scope="module")
def client():
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as c:
        yield c


def _config(scan, out, calls, *, hold_while_exists=""):
    late = {"points": "chosen", "calls_file": str(calls), "hold_point": [2, 4], "hold_while_exists": hold_while_exists}
    return {"input": str(scan), "output": str(out), "images_per_task": 3, "plugins": ["test_phases_standin"],
            "stages": ["test_peaks", "test_angles", {"test_choose": {"chosen_points": CHOSEN}},
                       {"test_late": late}, {"test_late_half": {"points": "chosen"}}, "test_late_total"]}


def _calls(path) -> list:
    return [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_late_phase_runs_only_on_the_selected_points(scan, client, tmp_path):
    out, calls = tmp_path / "results.zarr", tmp_path / "calls.txt"
    logs = []
    summary = run_workflow(parse_workflow(_config(scan, out, calls)), client, progress=False, log=logs.append)
    assert summary.complete and set(summary.reduce_timings_s) == {"test_choose", "test_late_total"}
    assert sorted(_calls(calls)) == sorted(COMPUTED)  # each selected valid point once, nothing else
    assert any("map phase 2 (test_late, test_late_half) on the 5 points where chosen: 4 tile(s) to run" in line
               for line in logs), logs
    with xr.open_zarr(str(out)) as ds:
        chosen = ds.chosen.values
        computed = np.zeros_like(chosen)
        for y, x in COMPUTED:
            computed[y, x] = True
        images = xr.open_zarr(str(scan)).images.values.reshape(*chosen.shape, -1).sum(axis=-1)
        np.testing.assert_array_equal(ds.late_sum.values[computed], images[computed])
        np.testing.assert_array_equal(ds.late_half.values[computed], images[computed] / 2)
        np.testing.assert_array_equal(ds.late_peaks.values[computed], 2 * ds.peak_count.values[computed])
        assert np.isnan(ds.late_sum.values[~computed]).all() and (ds.late_peaks.values[~computed] == -1).all()
        status = ds.status_phase2.values
        assert status[INVALID] == 1 and status[3, 0] == 21 and status[0, 0] == 0 and status[2, 4] == 0
        assert (status[~chosen] == -1).all()
        assert not (ds.status.values == 21).any()  # the first phase's status is its own
        assert float(ds.late_total) == images[computed].sum()
        assert ds.late_phase_done.values.all() and ds.attrs["complete"] is True
        assert ds.attrs["history"][-1]["late_phases"] == [
            {"phase": 2, "points": "chosen", "stage_groups": [["test_late", "test_late_half"]]}]
    assert summary.n_tiles_run == 8 + 4  # every tile of phase 1, the 4 tiles with a selected point of phase 2


def test_a_run_killed_in_a_late_phase_resumes_it_identically(scan, client, tmp_path):
    calls, marker = tmp_path / "calls.txt", tmp_path / "hold"
    reference = tmp_path / "reference.zarr"
    assert run_workflow(parse_workflow(_config(scan, reference, calls, hold_while_exists=str(marker))), client,
                        **QUIET).complete
    calls.unlink()

    out = tmp_path / "results.zarr"
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"type": "local", "n_workers": 2, "dashboard_address": ":0"}))
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({**_config(scan, out, calls, hold_while_exists=str(marker)),
                                        "cluster": str(cluster)}))
    marker.write_text("hold the tile of point (2, 4) in phase 2")
    cmd = [sys.executable, "-m", "laueflow.cli.main", "run", str(workflow), "--no-progress"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        # held: the tile of (2, 4); every other tile of phase 2 done (3 run, 4 without points)
        while not ((tmp_path / "hold.paused").exists() and out.exists() and "late_phase_done" in os.listdir(out)
                   and read_phase_done(out, 2).sum() == 7):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached the held tile"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # driver and workers, mid-phase 2
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert read_chunk_done(out).all() and read_reduce_done(out) == ["test_choose"]
    assert not read_phase_done(out, 2)[2, 1]
    with xr.open_zarr(str(out), consolidated=False) as ds:
        assert np.isnan(ds.late_sum.values[2, 4]) and ds.attrs.get("complete") is not True
    assert sorted(_calls(calls)) == sorted(COMPUTED)  # (2, 4) was being computed when killed
    calls.unlink()

    marker.unlink()
    again = run_workflow(parse_workflow(_config(scan, out, calls, hold_while_exists=str(marker))), client, **QUIET)
    assert again.complete and again.n_tiles_run == 1 and set(again.reduce_timings_s) == {"test_late_total"}
    assert _calls(calls) == [(2, 4)]  # only the unfinished tile's point
    assert_stores_identical(out, reference)


# --------------------------------------------------------------------------- validation
def _parse(scan, tmp_path, stages):
    return parse_workflow({"input": str(scan), "output": str(tmp_path / "r.zarr"), "plugins": ["test_phases_standin"],
                           "stages": ["test_peaks", *stages]})


@pytest.mark.parametrize("stages, message", [
    ([{"test_late": {"points": "nope"}}], "points 'nope' is not written by any earlier reduce stage"),
    ([{"test_late": {"points": "chosen"}}, "test_choose"], "points 'chosen' is not written by any earlier reduce"),
    (["test_angles", {"test_late": {"points": "peak_two_theta"}}], "'peak_two_theta' is the output of a map stage"),
    (["test_choose", {"test_late": {"points": "chosen_weight"}}], "float32 with dims .* not a boolean per-point"),
    (["test_choose", {"test_late": {"points": "chosen_n"}}], "not a boolean per-point"),
    (["test_choose", "test_uses_weight"], r"needs 'chosen_weight', the output of reduce stage 'test_choose'.*"
                                          r"give 'test_uses_weight' `points: VARIABLE`"),
    (["test_choose", {"test_late": {"points": "chosen"}}, "test_late_half"],
     r"needs 'late_sum', the output of 'test_late'.*give 'test_late_half' `points: chosen` too"),
    ([{"test_choose": {"points": "chosen"}}], "test_choose is a reduce stage|'test_choose' is a reduce stage"),
    (["test_choose", {"test_late": {"points": 3}}], "must name a boolean per-point output"),
])
def test_impossible_phase_orders_are_refused(scan, tmp_path, stages, message):
    with pytest.raises(WorkflowError, match=message):
        _parse(scan, tmp_path, stages)


def test_every_map_stage_with_points_is_refused(scan, tmp_path):
    with pytest.raises(WorkflowError, match="needs at least one map stage without it"):
        parse_workflow({"input": str(scan), "output": str(tmp_path / "r.zarr"), "plugins": ["test_phases_standin"],
                        "stages": [{"test_peaks": {"points": "chosen"}}, "test_choose"]})


def test_steps_in_execution_order(scan, tmp_path):
    wf = _parse(scan, tmp_path, ["test_choose", {"test_late": {"points": "chosen"}}, "test_angles",
                                 {"test_late_half": {"points": "chosen"}}, "test_late_total"])
    steps = [(s.kind, s.phase, s.points, s.names) for s in workflow_steps(wf.stages)]
    assert steps == [("map", 1, None, "test_peaks, test_angles"), ("reduce", 0, None, "test_choose"),
                     ("map", 2, "chosen", "test_late, test_late_half"), ("reduce", 0, None, "test_late_total")]
    assert wf.to_dict()["stages"][2] == {"test_late": {**wf.stages[2].params, "points": "chosen"}}
