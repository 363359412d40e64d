"""``laueflow submit``: run a workflow on a SLURM cluster — the driver here with SLURM jobs as
Dask workers, or (``--batch``) the whole run inside one sbatch job."""
from __future__ import annotations

import argparse
import getpass
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml

from ..pipeline.cluster import ClusterConfig, ClusterConfigError, load_cluster_config, parse_cluster_config
from ..pipeline.workflow import WorkflowError, load_workflow
from .main import UserError
from .run import execute

EXAMPLE = """\
examples:
  laueflow submit workflows/demo.yaml --cluster cluster-configs/slurm-cpu.yaml --jobs 4
  laueflow submit workflows/demo.yaml --cluster cluster-configs/slurm-cpu.yaml --adapt 1:16
  laueflow submit workflows/demo.yaml --cluster cluster-configs/slurm-cpu.yaml --batch   # then log out

Without --batch the driver and the Dask scheduler run here (keep the shell alive: tmux/screen) and
each SLURM job is a Dask worker host: the job ids, the dashboard address and the `ssh -L` command
that tunnels it to your computer are printed first. A job that ends (scancel, walltime, node
failure) is replaced; Ctrl-C cancels the jobs and keeps the finished tiles; the same command
resumes. --batch writes one job script (into <output>.slurm/ next to the results store, or
--script-dir) that runs `laueflow run` inside the allocation on a local cluster sized to it, and
sbatch-es it. Logs: <output>.slurm/laueflow-run-<jobid>.log (--batch) and
<output>.slurm/workers/ (the worker jobs' stdout/stderr). Guide: docs/clusters.md.
"""

#: the local cluster of the driver inside a --batch allocation: sized to it (SLURM_CPUS_PER_TASK,
#: SLURM_MEM_PER_NODE; laueflow/pipeline/cluster.py)
IN_ALLOCATION = {"type": "local", "n_workers": "auto", "threads_per_worker": 1, "memory_limit": "auto",
                 "processes": True, "dashboard_address": ":0"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "submit", help="run a workflow on a SLURM cluster (jobs as Dask workers, or one batch job)",
        description="Run a workflow on SLURM through a `type: slurm` cluster config "
                    "(cluster-configs/slurm-cpu.yaml): same results and resume as `laueflow run`.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", help="workflow YAML file (see workflows/demo.yaml)")
    parser.add_argument("--cluster", metavar="YAML",
                        help="slurm cluster config (default: the workflow's 'cluster:')")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--jobs", type=int, metavar="N", help="keep N worker jobs (overrides the config)")
    scale.add_argument("--adapt", metavar="MIN:MAX", help="scale between MIN and MAX worker jobs with the work left")
    parser.add_argument("--batch", action="store_true",
                        help="sbatch one job that runs the whole workflow inside its allocation, then return")
    parser.add_argument("--wait", action="store_true", help="with --batch: wait until the job ends (its exit status)")
    parser.add_argument("--script-dir", metavar="DIR",
                        help="where job scripts and logs go (default: <output>.slurm next to the results store)")
    parser.add_argument("--output", metavar="ZARR", help="results store (overrides the workflow's 'output:')")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing results store and start again (default: resume)")
    parser.add_argument("--allow-incomplete-scan", action="store_true",
                        help="run on a scan store whose ingest did not finish (see laueflow run --help)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=submit_command)
    return parser


def job_dir(output: Path, script_dir: str | None) -> Path:
    """Where job scripts and logs go: ``--script-dir`` or ``<output>.slurm`` next to the store."""
    output = Path(output).resolve()
    return Path(script_dir).resolve() if script_dir else output.with_name(output.stem + ".slurm")


def _slurm_config(args, workflow) -> ClusterConfig:
    path = args.cluster or workflow.cluster
    if not path:
        raise UserError("no cluster config: give --cluster cluster-configs/slurm-cpu.yaml (or 'cluster:' "
                        "in the workflow)")
    config = load_cluster_config(path)
    if config.type != "slurm":
        raise UserError(f"laueflow submit needs a SLURM cluster config (type: slurm); {path} has type "
                        f"{config.type!r}: use `laueflow run` for it")
    options = dict(config.options)
    if args.jobs is not None:
        options.pop("adapt", None)
        options["jobs"] = args.jobs
    elif args.adapt is not None:
        options.pop("jobs", None)
        options["adapt"] = args.adapt
    return parse_cluster_config({"type": "slurm", **options}, config.source)


def submit_command(args) -> int:
    if args.wait and not args.batch:
        raise UserError("--wait goes with --batch (without --batch the command runs until the workflow is done)")
    try:
        workflow = load_workflow(args.workflow, output=args.output)
        config = _slurm_config(args, workflow)
    except (WorkflowError, ClusterConfigError) as err:
        raise UserError(str(err)) from None
    folder = job_dir(workflow.output, args.script_dir)
    if args.batch:
        return _batch(args, workflow, config, folder)

    def with_logs(_config, _workflow):
        options = dict(config.options)
        options.setdefault("log_directory", str(folder / "workers"))
        return ClusterConfig("slurm", options, config.source)

    return execute(args, adjust_config=with_logs, announce=lambda client: _announce(client, folder))


def _announce(client, folder: Path) -> None:
    from ..pipeline.slurm import job_ids  # deferred: imports dask_jobqueue

    cluster = client.cluster
    print(f"laueflow submit: SLURM jobs {', '.join(job_ids(cluster)) or '(none yet)'} "
          f"(squeue --me; worker logs in {folder / 'workers'})")
    print(f"laueflow submit: dashboard {client.dashboard_link}")
    print(f"laueflow submit: from your computer: {tunnel_command(client.dashboard_link)}  "
          "then open http://localhost:8787/status")
    sys.stdout.flush()


def tunnel_command(dashboard_link: str) -> str:
    """The ``ssh -L`` command that forwards local port 8787 to the dashboard through this host."""
    url = urlparse(dashboard_link)
    host = url.hostname or "localhost"
    if host in ("127.0.0.1", "localhost", "0.0.0.0"):
        host = "localhost"
    login = socket.getfqdn()
    if login.startswith("localhost"):
        login = socket.gethostname()
    return f"ssh -N -L 8787:{host}:{url.port or 8787} {getpass.getuser()}@{login}"


# --------------------------------------------------------------------------- --batch
def _batch(args, workflow, config: ClusterConfig, folder: Path) -> int:
    from ..pipeline.slurm import batch_script, check_slurm_site, python_executable  # deferred: dask_jobqueue
    from .run import _validate

    try:
        _validate(workflow, args)  # what needs no cluster, before anything is queued
        check_slurm_site(config.options, f" in {config.source}")
    except (WorkflowError, ClusterConfigError, ValueError) as err:
        raise UserError(str(err)) from None
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / "in-allocation.yaml"
    local.write_text("# the driver's local cluster inside the batch job, sized to the allocation\n"
                     + yaml.safe_dump(IN_ALLOCATION, sort_keys=False))
    command = [python_executable(config.options), "-m", "laueflow.cli.main", "run",
               str(Path(args.workflow).resolve()), "--output", str(Path(workflow.output).resolve()),
               "--cluster", str(local), "--no-progress"]
    command += ["--overwrite"] * args.overwrite + ["--allow-incomplete-scan"] * args.allow_incomplete_scan
    script = folder / "laueflow-run.sbatch"
    log_pattern = folder / "laueflow-run-%j.log"
    script.write_text(batch_script(command, config.options, log_path=log_pattern,
                                   job_name=f"laueflow-{Path(workflow.output).stem}"))
    job_id = _sbatch(script)
    log = Path(str(log_pattern).replace("%j", job_id))
    print(f"laueflow submit: batch job {job_id} ({script})")
    print(f"laueflow submit: log {log}")
    print(f"laueflow submit: follow it with `squeue -j {job_id}` and `tail -f {log}`; run the same command "
          f"again{' without --overwrite' if args.overwrite else ''} to resume an unfinished run", flush=True)
    if not args.wait:
        return 0
    try:
        state, status = wait_for_job(job_id)
    except KeyboardInterrupt:  # Ctrl-C while waiting: the job goes on
        print(f"laueflow submit: no longer waiting; job {job_id} goes on (scancel {job_id} stops it)",
              file=sys.stderr)
        raise
    print(f"laueflow submit: job {job_id} ended: {state}, exit status {status}")
    status = status if state == "COMPLETED" or status else 1
    if status != 0 and log.exists():
        print("".join(log.read_text().splitlines(keepends=True)[-20:]), file=sys.stderr)
    return 0 if status == 0 else 1


def _sbatch(script: Path) -> str:
    """sbatch a script; its job id."""
    try:
        out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("sbatch not found: --batch needs a SLURM login node (or SLURM_CONF pointing to one)") from None
    job_id = out.stdout.strip().split(";")[0]
    if out.returncode != 0 or not job_id.isdigit():
        raise UserError(f"sbatch refused {script}: {(out.stdout + out.stderr).strip()}")
    return job_id


#: SLURM job states after which a job never runs again
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}


def job_state(job_id: str) -> tuple[str, int]:
    """``(state, exit status)`` of a job from ``scontrol`` (or ``sacct`` once scontrol forgot it);
    ``("UNKNOWN", 1)`` when neither knows it."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f) if out.returncode == 0 else {}
    if not fields and shutil.which("sacct"):
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"],
                              capture_output=True, text=True, timeout=60)
        line = acct.stdout.strip().splitlines()[:1]
        if acct.returncode == 0 and line and "|" in line[0]:
            fields = dict(zip(("JobState", "ExitCode"), line[0].split("|")))
    if not fields:
        return "UNKNOWN", 1
    state = fields.get("JobState", "UNKNOWN").split()[0]
    return state, int(fields.get("ExitCode", "0:0").split(":")[0] or 0)


def wait_for_job(job_id: str, poll_s: float = 1.0, max_poll_s: float = 15.0) -> tuple[str, int]:
    """Wait until a job is in a final state: ``(state, exit status)``; polls every ``poll_s``,
    slowing down to ``max_poll_s`` (a long job is not asked about every second)."""
    while True:
        state, status = job_state(job_id)
        if state in FINAL_STATES or state == "UNKNOWN":
            return state, status
        time.sleep(poll_s)
        poll_s = min(max_poll_s, poll_s * 1.1)
