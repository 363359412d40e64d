"""`laueflow submit` on a real SLURM (the `slurm` fixture, tests/conftest.py): worker jobs, --batch
--wait, Ctrl-C, resume — results identical to a local `laueflow run`, logs where the help says."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import test_pipeline_standin as standin
from store_asserts import assert_stores_identical
from laueflow.cli.main import main
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import read_chunk_done
from laueflow.pipeline.workflow import load_workflow

N_TILES = 20  # 4 × 5 images, one per tile


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, invalid=[(1, 2)])
    return path


def _workflow_file(folder: Path, scan, out, peaks="test_peaks") -> Path:
    wf = folder / "wf.yaml"
    wf.write_text(yaml.safe_dump({"input": str(scan), "output": str(out), "chunk": [1, 1],
                                  "plugins": ["test_pipeline_standin"], "stages": [peaks, "test_angles"]}))
    return wf


@pytest.fixture(scope="module")
def reference(scan, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "results.zarr"
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client:
        assert run_workflow(load_workflow(_workflow_file(folder, scan, out)), client, progress=False,
                            log=lambda *a: None).complete
    return out


def _cluster_file(folder: Path, **options) -> Path:
    path = folder / "slurm.yaml"
    path.write_text(yaml.safe_dump({"type": "slurm", "cores": 1, "processes": 1, "memory": "1GB",
                                    "walltime": "00:10:00", "queue": "debug", "wait_timeout_s": 120,
                                    "dashboard_address": ":0", **options}))
    return path


def _squeue(ids) -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                          text=True).stdout.split()


def _done(out) -> int:
    try:
        return int(read_chunk_done(out).sum())
    except Exception:  # noqa: BLE001 - store still being created
        return 0


def test_submit_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    text = capsys.readouterr().out
    assert "laueflow submit workflows/demo.yaml --cluster cluster-configs/slurm-cpu.yaml --jobs 4" in text
    assert "--batch" in text and "--adapt MIN:MAX" in text


def test_submit_refuses_what_it_cannot_do(scan, tmp_path, capsys):
    wf = _workflow_file(tmp_path, scan, tmp_path / "out.zarr")
    local = tmp_path / "local.yaml"
    local.write_text("type: local\n")
    assert main(["submit", str(wf), "--cluster", str(local)]) == 2
    assert "needs a SLURM cluster config (type: slurm)" in capsys.readouterr().err
    assert main(["submit", str(wf), "--cluster", str(_cluster_file(tmp_path)), "--wait"]) == 2
    assert "--wait goes with --batch" in capsys.readouterr().err
    assert main(["submit", str(wf), "--cluster", str(_cluster_file(tmp_path)), "--adapt", "3"]) == 2
    assert "must be 'MIN:MAX'" in capsys.readouterr().err


def test_submit_with_worker_jobs(slurm, scan, reference, tmp_path, capsys):
    out = tmp_path / "results.zarr"
    args = ["submit", str(_workflow_file(tmp_path, scan, out)), "--cluster", str(_cluster_file(tmp_path)),
            "--adapt", "2:3", "--no-progress"]  # 2 jobs at once, a third when the work asks for it
    assert main(args) == 0
    stdout = capsys.readouterr().out
    ids = re.search(r"SLURM jobs (\d+), (\d+) \(squeue --me; worker logs in (\S+)\)", stdout)
    assert ids, stdout
    assert Path(ids.group(3)) == tmp_path / "results.slurm" / "workers"
    for job in ids.group(1, 2):  # the worker jobs' logs, where the output says
        assert (tmp_path / "results.slurm" / "workers" / f"dask-worker-{job}.err").is_file()
    port = re.search(r"dashboard http://[^:]+:(\d+)/status", stdout).group(1)
    assert re.search(rf"ssh -N -L 8787:\S+:{port} \S+@\S+", stdout), stdout
    assert f"{N_TILES} tiles" in stdout
    assert_stores_identical(out, reference)  # resuming: test_ctrl_c_cancels_the_jobs_and_the_same_command_resumes


def test_submit_batch_wait(slurm, scan, reference, tmp_path, capsys):
    out = tmp_path / "b.zarr"
    cluster = _cluster_file(tmp_path, cores=2, memory="2GB")
    rc = main(["submit", str(_workflow_file(tmp_path, scan, tmp_path / "unused.zarr")), "--cluster", str(cluster),
               "--batch", "--wait", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    job = re.search(r"batch job (\d+) \((\S+)\)", stdout).group(1)
    log = tmp_path / "b.slurm" / f"laueflow-run-{job}.log"
    assert f"log {log}" in stdout and f"squeue -j {job}" in stdout and f"ended: COMPLETED, exit status 0" in stdout
    text = log.read_text()
    assert ", 2 CPUs" in text and f"{N_TILES} tiles" in text, text  # the driver ran inside the allocation
    assert_stores_identical(out, reference)


def test_ctrl_c_cancels_the_jobs_and_the_same_command_resumes(slurm, scan, reference, tmp_path):
    out = tmp_path / "results.zarr"
    wf = _workflow_file(tmp_path, scan, out, peaks={"test_peaks": {"delay_s": 0.4}})
    cmd = [sys.executable, "-m", "laueflow.cli.main", "submit", str(wf), "--cluster", str(_cluster_file(tmp_path)),
           "--jobs", "1", "--no-progress"]
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as so, open(stderr, "w") as se:
        proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=so, stderr=se)
    try:
        deadline = time.monotonic() + 120
        while _done(out) < 3:
            assert proc.poll() is None, stdout.read_text() + stderr.read_text()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C (the driver: SLURM's jobs are in no terminal's group)
        assert proc.wait(timeout=60) == 130, stdout.read_text() + stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    ids = re.search(r"SLURM jobs ([\d, ]+) \(", stdout.read_text()).group(1).split(", ")
    deadline = time.monotonic() + 30
    while _squeue(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _squeue(ids), f"jobs {ids} still queued/running after Ctrl-C"
    done = int(read_chunk_done(out).sum())
    assert 3 <= done < N_TILES and f"{done} of {N_TILES} tiles are done and kept" in stderr.read_text()

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{done} tiles were already done" in resumed.stdout
    assert_stores_identical(out, reference)
