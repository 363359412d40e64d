"""SLURM clusters: config checks (no SLURM needed) and runs on a real SLURM (the `slurm` fixture:
.ci/slurm/cluster.sh starts a one-node cluster; skipped without one unless LAUEFLOW_REQUIRE_SLURM=1)
— results identical to a LocalCluster's, a worker job cancelled mid-run replaced without
recomputing a finished tile, a job reaching its walltime retired and replaced."""
from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import dask
import pytest
from dask.utils import key_split
from distributed import get_task_stream

import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.pipeline.cluster import (ClusterConfig, ClusterConfigError, connect, describe, load_cluster_config,
                                       parse_cluster_config)
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.slurm import batch_script, check_slurm_site, job_ids, parse_adapt, wants_gpu
from laueflow.pipeline.store import read_chunk_done
from laueflow.pipeline.workflow import parse_workflow
from laueflow.stages.base import get_stage, register_stage

REPO = Path(__file__).resolve().parents[2]
QUIET = {"progress": False, "log": lambda *a: None}
INVALID = [(1, 2)]
#: one small job per worker on the CI node (2 CPUs)
JOB = {"cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:10:00", "queue": "debug",
       "wait_timeout_s": 120}


# --------------------------------------------------------------------------- config checks
def test_shipped_slurm_configs_parse():
    cpu = load_cluster_config(REPO / "cluster-configs" / "slurm-cpu.yaml")
    gpu = load_cluster_config(REPO / "cluster-configs" / "slurm-gpu.yaml")
    assert cpu.type == gpu.type == "slurm"
    assert not wants_gpu(cpu.options) and wants_gpu(gpu.options)
    assert gpu.options["worker_extra_args"][:2] == ["--resources", "GPU=1"]


@pytest.mark.parametrize("data, message", [
    ({"walltme": "01:00:00"}, r"unknown key 'walltme' for type 'slurm' \(did you mean 'walltime'\?\)"),
    ({"job_extra_directive": []}, r"did you mean 'job_extra_directives'"),
    ({"jobs": 0}, r"jobs must be >= 1"),
    ({"jobs": 2, "adapt": "1:4"}, r"either 'jobs' .* or 'adapt'"),
    ({"adapt": "4:1"}, r"need 1 <= MIN <= MAX"),
    ({"adapt": "0:4"}, r"need 1 <= MIN <= MAX .* the run starts once a worker has joined"),
    ({"adapt": "many"}, r"adapt in cluster config must be 'MIN:MAX'"),
    ({"job_extra_directives": "--gres=gpu:1"}, r"'job_extra_directives' must be a list of strings"),
    ({"account_required": True}, r"needs a SLURM account \(account_required: true\).*sacctmgr"),
    ({"worker_extra_args": ["--resources", "GPU=1"]}, r"offer the GPU resource .* add '--gres=gpu:1'"),
    ({"walltime": "00:30:00", "worker_extra_args": ["--lifetime", "28m", "--lifetime-stagger", "2m"]},
     r"\(1800 s\) must be shorter than the walltime \(1800 s\)"),
    ({"walltime": "1-00:00", "worker_extra_args": ["--lifetime", "25h"]}, r"\(90000 s\) .* walltime \(86400 s\)"),
])
def test_slurm_config_errors(data, message):
    with pytest.raises(ClusterConfigError, match=message):
        parse_cluster_config({"type": "slurm", **data})


def test_good_slurm_configs_pass():
    ok = {"walltime": "01:00:00", "account": "p1", "account_required": True, "adapt": [1, 8],
          "job_extra_directives": ["--gres=gpu:2"], "worker_extra_args": ["--resources", "GPU=1", "--lifetime", "50m"]}
    assert parse_cluster_config({"type": "slurm", **ok}).options["account"] == "p1"
    assert parse_adapt("1:3") == (1, 3) and parse_adapt([2, 2]) == (2, 2)
    assert wants_gpu({"job_extra_directives": ["--gpus-per-node=4"]})
    assert not wants_gpu({"job_extra_directives": ["--gres=tmpfs:10G"]})


def test_batch_script_directives():
    text = batch_script(["python", "-m", "laueflow.cli.main", "run", "/a b/wf.yaml"],
                        {"cores": 4, "memory": "8GB", "queue": "cpu", "account": "p1", "walltime": "02:00:00",
                         "job_extra_directives": ["--gres=gpu:1"], "job_script_prologue": ["module load x"]},
                        log_path=Path("/logs/run-%j.log"), job_name="laueflow-r")
    for line in ("#SBATCH --cpus-per-task=4", "#SBATCH --mem=7629M", "#SBATCH --partition=cpu",
                 "#SBATCH --account=p1", "#SBATCH --time=02:00:00", "#SBATCH --gres=gpu:1",
                 "#SBATCH --output=/logs/run-%j.log", "module load x",
                 "exec python -m laueflow.cli.main run '/a b/wf.yaml'"):
        assert line in text.splitlines(), line


# --------------------------------------------------------------------------- the site (sinfo)
def test_site_check_with_the_real_slurm(slurm):
    gpu = {"job_extra_directives": ["--gres=gpu:1"]}
    check_slurm_site({"queue": "gpu", **gpu})  # the CI node has a (fake) GPU gres
    check_slurm_site({"queue": "debug"})
    with pytest.raises(ClusterConfigError, match=r"ask for a GPU but partition 'cpu' has none .* use a GPU "
                                                 r"partition \(queue:\) — debug, gpu"):
        check_slurm_site({"queue": "cpu", **gpu})
    with pytest.raises(ClusterConfigError, match=r"SLURM has no partition 'nope' \(queue\); sinfo lists: cpu, debug, gpu"):
        check_slurm_site({"queue": "nope"})


# --------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=INVALID)
    return path


def _workflow(scan, out, stages=("test_peaks", "test_angles")):
    return parse_workflow({"input": str(scan), "output": str(out), "chunk": [1, 1],
                           "plugins": ["test_pipeline_standin"], "stages": list(stages)})


@pytest.fixture(scope="module")
def reference(scan, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "results.zarr"
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client:
        assert run_workflow(_workflow(scan, out), client, **QUIET).complete
    return out


def _slurm_config(tmp_path, **options) -> ClusterConfig:
    return parse_cluster_config({"type": "slurm", **JOB, "log_directory": str(tmp_path / "logs"),
                                 "scheduler_options": {"dashboard_address": ":0"}, **options})


def _squeue(ids) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True)
    return out.stdout.split()


def test_a_slurm_run_is_identical_to_a_local_run(slurm, scan, reference, tmp_path):
    out = tmp_path / "results.zarr"
    with connect(_slurm_config(tmp_path, jobs=2)) as client:
        ids = job_ids(client.cluster)
        with get_task_stream(client) as stream:
            summary = run_workflow(_workflow(scan, out), client, **QUIET)
        with urllib.request.urlopen(client.dashboard_link, timeout=30) as page:  # the dashboard answers
            assert page.status == 200 and b"Dask" in page.read()
        with urllib.request.urlopen(client.dashboard_link.rsplit("/", 1)[0] + "/laueflow", timeout=30) as page:
            assert page.status == 200 and b"laueflow: live maps" in page.read()  # docs/clusters.md
    assert summary.complete and len(ids) == 2
    tiles = {t["key"] for t in stream.data if key_split(t["key"]) == "test_peaks+test_angles"}  # readable names
    assert len(tiles) == 20 and "test_peaks+test_angles-p1-g0-tile-1-2-" in " ".join(tiles)
    assert_stores_identical(out, reference)
    assert {p.name for p in (tmp_path / "logs").iterdir()} >= {f"dask-worker-{i}.err" for i in ids}
    deadline = time.monotonic() + 30  # closing the cluster cancels its jobs
    while _squeue(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _squeue(ids)


def _recording_find_peaks():
    """The stand-in peak finder appending "y x" of each image it computes to ``record_to``
    (made in a function: Dask pickles it by value, the workers cannot import test modules)."""
    find_peaks = standin.standin_find_peaks

    def recording_find_peaks(images, scan_index, *, record_to="", **params):
        if record_to:
            with open(record_to, "a") as f:
                f.write("".join(f"{y} {x}\n" for y, x in scan_index))
        return find_peaks(images, **params)

    return recording_find_peaks


def _recording_workflow(scan, out, record, delay_s):
    peaks = get_stage("test_peaks")
    register_stage(replace(peaks, name="recording_peaks", func=_recording_find_peaks(),
                           inputs={**peaks.inputs, "scan_index": "scan_index"}, params={**peaks.params, "record_to": ""}))
    return _workflow(scan, out, stages=[{"recording_peaks": {"delay_s": delay_s, "record_to": str(record)}},
                                        "test_angles"])


def _computed(path) -> Counter:
    return Counter(tuple(int(v) for v in line.split()) for line in path.read_text().splitlines())


def _done(out) -> int:
    try:
        return int(read_chunk_done(out).sum())
    except Exception:  # noqa: BLE001 - store still being created
        return 0


def _assert_nothing_finished_was_recomputed(record, done_before):
    computed = _computed(record)
    valid = {(y, x) for y in range(4) for x in range(5)} - set(INVALID)
    assert set(computed) == valid
    finished = {(int(y), int(x)) for y, x in zip(*done_before.nonzero())} & valid
    assert all(computed[t] == 1 for t in finished), computed
    assert max(computed.values()) <= 2 and sum(n > 1 for n in computed.values()) <= 1, computed


def test_a_cancelled_worker_job_is_replaced_and_nothing_finished_is_recomputed(slurm, scan, reference, tmp_path):
    """One worker job, scancel-led after a few tiles: the run can only finish if adapt replaces it."""
    out, record = tmp_path / "results.zarr", tmp_path / "computed.txt"
    workflow = _recording_workflow(scan, out, record, delay_s=0.3)
    seen: dict = {}
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
            connect(_slurm_config(tmp_path, jobs=1)) as client:
        first = job_ids(client.cluster)

        def cancel_the_job():
            deadline = time.monotonic() + 60
            while _done(out) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["done"] = read_chunk_done(out)
            subprocess.run(["scancel", *first], check=True)

        killer = threading.Thread(target=cancel_the_job, daemon=True)
        killer.start()
        summary = run_workflow(workflow, client, **QUIET)
        killer.join(timeout=60)
        later = job_ids(client.cluster)
    assert summary.complete and len(first) == 1
    assert set(later) - set(first), f"no job replaced the cancelled one ({first} → {later})"
    assert 5 <= seen["done"].sum() < 19, "the job was not cancelled mid-run"
    _assert_nothing_finished_was_recomputed(record, seen["done"])
    assert_stores_identical(out, reference)


def _run_watching_jobs(workflow, config):
    """Run ``workflow`` on ``config``'s SLURM cluster (lost workers noticed after 1 s), noting every
    job the run had: ``(summary, the first job ids, all job ids)``."""
    jobs: set = set()
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), connect(config) as client:
        first = job_ids(client.cluster)
        stop = threading.Event()

        def watch_jobs():
            while not stop.is_set():
                jobs.update(job_ids(client.cluster))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_jobs, daemon=True)
        watcher.start()
        try:
            summary = run_workflow(workflow, client, **QUIET)
        finally:
            stop.set()
            watcher.join(timeout=10)
    return summary, first, jobs


def test_a_job_at_its_walltime_is_retired_and_replaced(slurm, scan, reference, tmp_path):
    """walltime 1 min, worker --lifetime 8 s: the worker retires before SLURM would kill it, the
    job ends, adapt submits another; nothing is lost, and only the tile the worker was running when
    it retired may be computed again (its result was not handed over: the store tells its
    successor which tiles are done)."""
    out, record = tmp_path / "results.zarr", tmp_path / "computed.txt"
    workflow = _recording_workflow(scan, out, record, delay_s=0.6)  # 19 tiles ≥ 11 s on one worker
    config = _slurm_config(tmp_path, jobs=1, walltime="00:01:00", nanny=False,  # no nanny: faster job starts
                           worker_extra_args=["--lifetime", "8s", "--lifetime-stagger", "1s"])
    summary, first, jobs = _run_watching_jobs(workflow, config)
    assert summary.complete
    assert jobs - set(first), f"the worker outlived its lifetime in job {first}"
    computed = _computed(record)
    retirements = len(jobs) - 1
    assert len(computed) == 19 and max(computed.values()) <= 2
    assert sum(n > 1 for n in computed.values()) <= retirements, (computed, jobs)
    assert_stores_identical(out, reference)


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "?")


def test_a_job_killed_by_slurm_at_its_walltime_is_replaced_and_nothing_is_lost(slurm, scan, reference, tmp_path):
    """No --lifetime: SLURM itself kills the worker's job at its 1-minute walltime (state TIMEOUT)
    while tiles remain (19 tiles of ≥ 5 s on one worker); adapt submits another job, the run
    completes identical, and only the tile running at the kill may be computed twice."""
    out, record = tmp_path / "results.zarr", tmp_path / "computed.txt"
    workflow = _recording_workflow(scan, out, record, delay_s=5.0)
    summary, first, jobs = _run_watching_jobs(workflow, _slurm_config(tmp_path, jobs=1, walltime="00:01:00"))
    assert summary.complete and len(first) == 1
    assert _job_state(first[0]) == "TIMEOUT", f"job {first[0]} ended {_job_state(first[0])}, not at its walltime"
    assert jobs - set(first), f"no job replaced the one killed at its walltime ({first} → {jobs})"
    computed = _computed(record)
    assert len(computed) == 19 and max(computed.values()) <= 2
    assert sum(n > 1 for n in computed.values()) <= len(jobs) - 1, (computed, jobs)
    assert_stores_identical(out, reference)


def test_gpu_jobs_get_the_gres_and_run_the_gpu_stage(slurm, scan, reference, tmp_path):
    """slurm-gpu.yaml's recipe on the CI node's fake GPU gres: the job asks for --gres=gpu:1 in the
    `gpu` partition, SLURM hands it a device, its worker offers GPU=1 and the stage that needs a
    GPU runs there; the results are those of the CPU run (the stand-in stage computes the same)."""
    register_stage(replace(get_stage("test_angles"), name="gpu_angles", resources={"GPU": 1}))
    out = tmp_path / "results.zarr"
    config = _slurm_config(tmp_path, jobs=1, queue="gpu", job_extra_directives=["--gres=gpu:1"],
                           worker_extra_args=["--resources", "GPU=1"])
    with connect(config) as client:
        seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        summary = run_workflow(_workflow(scan, out, stages=("test_peaks", "gpu_angles")), client, **QUIET)
        resources = describe(client)["worker_resources"]
    assert list(seen.values()) == ["0"] and resources == {"GPU": 1}
    assert summary.complete
    assert_stores_identical(out, reference)
