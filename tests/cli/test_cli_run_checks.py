"""`laueflow run` refuses bad input before it starts any worker: an unfinished ingest, a results
store computed from another scan, a busy store — exit 2, the reason and the fix, nothing created."""
from __future__ import annotations

import subprocess
import sys
import time

import yaml
import zarr

import test_pipeline_standin as standin
from laueflow.cli.main import main
from laueflow.io.store_lock import lock_path


def _workflow_file(tmp_path, scan, out):
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({"input": str(scan), "output": str(out), "chunk": [1, 1],
                                  "plugins": ["test_pipeline_standin"], "stages": ["test_peaks", "test_angles"]}))
    return wf


def _run(args, capsys):
    t = time.perf_counter()
    rc = main(["run", *args, "--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, time.perf_counter() - t


def test_run_refuses_before_any_worker_starts(tmp_path, capsys):
    scan, other = tmp_path / "scan.zarr", tmp_path / "other.zarr"
    standin.make_scan_store(scan, seed=0)
    standin.make_scan_store(other, seed=1)
    out = tmp_path / "results.zarr"
    zarr.open_group(str(scan), mode="r+").attrs["ingest_complete"] = False  # a killed ingest
    rc, stdout, err, _ = _run([str(_workflow_file(tmp_path, scan, out))], capsys)
    assert rc == 2 and "ingest did not finish" in err and "--allow-incomplete-scan" in err
    assert "dashboard" not in stdout and not out.exists() and not lock_path(out).exists()

    zarr.open_group(str(scan), mode="r+").attrs["ingest_complete"] = True
    from laueflow.pipeline.cluster import ClusterConfig, connect
    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import load_workflow

    with connect(ClusterConfig("local", {"n_workers": 1, "processes": False, "dashboard_address": ":0"})) as client:
        run_workflow(load_workflow(_workflow_file(tmp_path, scan, out)), client, max_tiles=2, progress=False,
                     log=lambda *a: None)
    rc, stdout, err, _ = _run([str(_workflow_file(tmp_path, other, out))], capsys)  # resume, another scan
    assert rc == 2 and "scan_id: stored \"standin-0\", given \"standin-1\"" in err and "--overwrite" in err
    assert "dashboard" not in stdout

    holder = subprocess.Popen([sys.executable, "-c", (  # another process writes it: busy
        "import sys, time; from laueflow.io.store_lock import StoreLock\n"
        f"lock = StoreLock({str(out)!r}, 'run').acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, stdout, err, _ = _run([str(_workflow_file(tmp_path, scan, out))], capsys)
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2 and f"being written by `run` pid {holder.pid}" in err and "dashboard" not in stdout
