"""Interrupted runs, with real processes and real signals: Ctrl-C on `laueflow run` (SIGINT to the
whole foreground process group, as a terminal sends it) and a worker process killed mid-run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

# the stand-in plug-in: tests/ is on sys.path (pyproject `pythonpath`) and on PYTHONPATH for the
# workers and subprocesses (tests/conftest.py)
import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import _tile_chain, run_workflow, validate_run
from laueflow.pipeline.store import prepare_results_store, read_chunk_done
from laueflow.pipeline.tasks import TileReport, TileState, run_tile_group
from laueflow.pipeline.workflow import parse_workflow
from laueflow.stages.base import get_stage, register_stage

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")

TESTS = Path(standin.__file__).parent
INVALID = [(1, 2)]
EMPTY = [(3, 0)]
N_TILES = 20  # 4 × 5 images, one per tile
QUIET = {"progress": False, "log": lambda *a: None}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=INVALID, empty=EMPTY)
    return path


def _workflow(scan, out, stages=("test_peaks", "test_angles"), **extra):
    return parse_workflow({"input": str(scan), "output": str(out), "chunk": [1, 1],
                           "plugins": ["test_pipeline_standin"], "stages": list(stages), **extra})


@pytest.fixture(scope="module")
def reference(scan, tmp_path_factory):
    """The uninterrupted run the interrupted ones must end up identical to."""
    out = tmp_path_factory.mktemp("reference") / "results.zarr"
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client:
        assert run_workflow(_workflow(scan, out), client, **QUIET).complete
    return out


def _chunks_done(path) -> int:
    try:
        return int(read_chunk_done(path).sum())
    except Exception:  # noqa: BLE001 - store still being created
        return 0


def _alive_in_group(pgid: int) -> list[str]:
    """Command lines of the processes of process group ``pgid`` that are still running."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # exited meanwhile
            continue
        if int(pgrp) == pgid and state != "Z":
            alive.append(f"{entry.name}: {cmdline}")
    return alive


# --------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(scan, reference, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"type": "local", "n_workers": 2, "dashboard_address": ":0"}))
    out = tmp_path / "results.zarr"
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "input": str(scan), "output": str(out), "chunk": [1, 1], "cluster": str(cluster),
        "plugins": ["test_pipeline_standin"], "stages": [{"test_peaks": {"delay_s": 0.3}}, "test_angles"]}))
    env = dict(os.environ)  # PYTHONPATH holds tests/ (conftest): the subprocess imports the plug-in
    assert str(TESTS) in env["PYTHONPATH"].split(os.pathsep)
    cmd = [sys.executable, "-m", "laueflow.cli.main", "run", str(wf), "--no-progress"]
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as so, open(stderr, "w") as se:
        # its own session and process group: the test plays the terminal, which sends Ctrl-C's
        # SIGINT to every process of the foreground group (driver and worker processes)
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stdout=so, stderr=se)
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 60
        while _chunks_done(out) < 3:
            assert proc.poll() is None, stdout.read_text() + stderr.read_text()
            assert time.monotonic() < deadline, "run made no progress"
            time.sleep(0.05)
        os.killpg(pgid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130, stdout.read_text() + stderr.read_text()
        deadline = time.monotonic() + 15  # the cluster is shut down: no worker, nanny or tracker left
        while _alive_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive_in_group(pgid)
    finally:
        if _alive_in_group(pgid):
            os.killpg(pgid, signal.SIGKILL)
    err = stderr.read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    done = read_chunk_done(out)
    match = re.search(r"laueflow run: interrupted — (\d+) of (\d+) tiles are done and kept; "
                      r"run the same command again to resume", err)
    assert match, err
    assert int(match.group(1)) == done.sum() and int(match.group(2)) == N_TILES == done.size
    assert 3 <= done.sum() < N_TILES
    with xr.open_zarr(str(out)) as ds:  # finalized as an unfinished attempt
        assert ds.attrs["complete"] is False and "interrupted" in ds.attrs["history"][-1]["error"]

    resumed = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{N_TILES - done.sum()} tiles" in resumed.stdout
    assert f"{done.sum()} tiles were already done" in resumed.stdout, resumed.stdout
    with xr.open_zarr(str(out)) as ds:
        assert ds.attrs["complete"] is True
    assert_stores_identical(out, reference)


# --------------------------------------------------------------------------- a worker killed
def _recording_find_peaks():
    """The stand-in peak finder, which first appends ``"y x"`` of each image it computes to the
    file ``record_to``. Made in a function, so that Dask pickles it by value: worker processes
    cannot import test modules."""
    find_peaks = standin.standin_find_peaks

    def recording_find_peaks(images, scan_index, *, record_to="", **params):
        if record_to:
            with open(record_to, "a") as f:  # one write per tile: appends do not interleave
                f.write("".join(f"{y} {x}\n" for y, x in scan_index))
        return find_peaks(images, **params)

    return recording_find_peaks


def _register_recording_peaks():
    peaks = get_stage("test_peaks")
    return register_stage(replace(peaks, name="recording_peaks", func=_recording_find_peaks(),
                                  inputs={**peaks.inputs, "scan_index": "scan_index"},
                                  params={**peaks.params, "record_to": ""}))


def _computed(path) -> Counter:
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(tuple(int(v) for v in line.split()) for line in lines)


def test_a_killed_worker_never_recomputes_a_finished_tile(scan, reference, tmp_path):
    _register_recording_peaks()
    record = tmp_path / "computed.txt"
    out = tmp_path / "results.zarr"
    wf = _workflow(scan, out, stages=[{"recording_peaks": {"delay_s": 0.3, "record_to": str(record)}},
                                      "test_angles"])
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1,
                                         "dashboard_address": ":0"})) as client:
        victim = sorted(client.run(os.getpid).values())[0]
        killed: dict = {}

        def kill_a_worker():  # once a third of the tiles are done; the run goes on meanwhile
            deadline = time.monotonic() + 60
            while _chunks_done(out) < 7 and time.monotonic() < deadline:
                time.sleep(0.02)
            killed["done"] = read_chunk_done(out)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_a_worker, daemon=True)
        killer.start()
        summary = run_workflow(wf, client, **QUIET)
        killer.join(timeout=60)
    assert summary.complete
    done_before = killed["done"]
    assert 7 <= done_before.sum() < N_TILES, "the worker was not killed mid-run"
    computed = _computed(record)
    valid = {(y, x) for y in range(4) for x in range(5)} - set(INVALID)
    assert set(computed) == valid
    twice = {tile for tile, n in computed.items() if n > 1}
    for tile in set(zip(*(i.tolist() for i in np.nonzero(done_before)))) & valid:
        assert computed[tile] == 1, f"tile {tile} was done before the worker died, and computed again"
    assert len(twice) <= 1 and max(computed.values()) <= 2, computed  # only the tile it was running
    assert_stores_identical(out, reference)


def test_a_done_tile_is_skipped_by_its_tasks(scan, tmp_path):
    """Each task of a tile's chain (here two stage groups) first checks the tile's ``chunk_done``:
    once set, they return at once, with a report that says so, reading and writing nothing."""
    register_stage(replace(get_stage("test_angles"), name="gpu_angles", resources={"GPU": 1}))
    _register_recording_peaks()
    record = tmp_path / "computed.txt"
    out = tmp_path / "results.zarr"
    wf = _workflow(scan, out, stages=[{"recording_peaks": {"record_to": str(record)}}, "gpu_angles"])
    plan = validate_run(wf, None, cluster_description={"n_workers": 1, "worker_resources": {"GPU": 1},
                                                       "largest_worker_resources": {"GPU": 1}})
    prepare_results_store(out, plan.layout, coords=plan.coords, attrs=plan.attrs)
    params = {s.name: s.params for s in wf.stages}
    (first, _), (last, _) = _tile_chain(plan, params, 0, 1, slice(0, 1), slice(1, 2), 0.0)

    def run_chain():
        state = run_tile_group(first)
        assert isinstance(state, TileState)
        return state, run_tile_group(last, state)

    state, report = run_chain()
    assert not state.skipped and not report.skipped and report.n_valid == 1
    assert read_chunk_done(out)[0, 1] and _computed(record) == {(0, 1): 1}
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*")
               if p.is_file() and re.search(r"/c/0/1(/|$)", p.as_posix())}  # the tile's chunks
    assert len(written) > 3

    state, report = run_chain()  # the same tile again, e.g. recomputed after its worker died
    assert state.skipped and isinstance(report, TileReport) and report.skipped
    assert (report.tile, report.n_images, report.n_valid) == ((0, 1), 1, 0)
    assert _computed(record) == {(0, 1): 1}  # no stage ran
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing rewritten
