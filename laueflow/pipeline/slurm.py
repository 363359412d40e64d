"""SLURM through dask-jobqueue: config checks, the site check (``sinfo``), starting a
``SLURMCluster`` whose lost jobs are replaced, and the one-job script of ``laueflow submit --batch``.

A slurm cluster config (``type: slurm``) holds :data:`OWN_KEYS` (read here) and keywords of
``dask_jobqueue.SLURMCluster`` (:func:`slurm_keywords`; anything else is refused with a "did you
mean"). Jobs are always managed by ``cluster.adapt``: ``jobs: N`` keeps N jobs (a job that ends —
``scancel``, walltime, a node failure — is replaced after ``distributed.deploy.lost-worker-timeout``),
``adapt: "MIN:MAX"`` scales with the work left. Worker ``--lifetime`` (shorter than the walltime)
retires a worker cleanly before SLURM kills its job: its tasks move elsewhere, adapt starts a new job.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .cluster import ClusterConfigError

__all__ = ["OWN_KEYS", "slurm_keywords", "validate_slurm_options", "parse_adapt", "wants_gpu",
           "sinfo_partitions", "check_slurm_site", "start_slurm_cluster", "job_ids", "batch_script"]

#: keys of a slurm config that laueflow reads itself (the others go to SLURMCluster)
OWN_KEYS = {"type": str, "wait_timeout_s": (int, float), "jobs": int, "adapt": (str, list),
            "account_required": bool}
#: SLURMCluster keywords whose YAML value must be a list of strings
LIST_KEYS = ("job_extra_directives", "worker_extra_args", "job_script_prologue", "job_directives_skip")
#: constructor parameters that are not config keys (set by the cluster itself)
_INTERNAL = {"self", "scheduler", "name", "job_cls", "loop", "asynchronous", "job_kwargs",
             "base_class_kwargs", "n_workers", "kwargs"}
_GPU_DIRECTIVE = re.compile(r"^(--gres=(\S+,)?gpu|--gpus(-per-\w+)?=|-G\s*\d|--gpus\s)")


def import_jobqueue():
    """``import dask_jobqueue``, keeping Ctrl-C a KeyboardInterrupt: dask-jobqueue 0.9's
    ``runner`` module, imported with the package, replaces the SIGINT handler with ``sys.exit()``
    — Ctrl-C would end the driver with exit status 0, silently, its jobs left to the atexit hooks."""
    import signal
    import threading

    import dask_jobqueue  # deferred: heavy

    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGINT)
        if getattr(handler, "__module__", "").startswith("dask_jobqueue"):
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return dask_jobqueue


@functools.cache
def slurm_keywords() -> frozenset:
    """Keywords ``dask_jobqueue.SLURMCluster`` accepts (cluster, SLURM job and generic job ones)."""
    SLURMCluster = import_jobqueue().SLURMCluster
    from dask_jobqueue.core import Job
    from dask_jobqueue.slurm import SLURMJob

    names = set()
    for func in (SLURMCluster.__init__, SLURMJob.__init__, Job.__init__):
        names.update(inspect.signature(func).parameters)
    return frozenset(names - _INTERNAL)


def parse_adapt(value, where: str = "") -> tuple[int, int]:
    """``"MIN:MAX"`` or ``[MIN, MAX]`` → ``(min_jobs, max_jobs)`` with 1 ≤ MIN ≤ MAX (the driver
    needs a worker before it submits: it checks the workers' resources against the stages)."""
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        lo, hi = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ClusterConfigError(f"adapt{where} must be 'MIN:MAX' (numbers of jobs, e.g. '1:8'), got {value!r}") from None
    if not 1 <= lo <= hi:
        raise ClusterConfigError(f"adapt{where}: need 1 <= MIN <= MAX (numbers of jobs; the run starts once a "
                                 f"worker has joined), got {lo}:{hi}")
    return lo, hi


def _seconds(value, what: str, where: str) -> float:
    """A SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or a Dask duration
    (``50m``, ``3000s``) → seconds."""
    text = str(value).strip()
    days, body = 0, text
    dashed = re.fullmatch(r"(\d+)-(.+)", text)
    if dashed:
        days, body = int(dashed.group(1)), dashed.group(2)
    parts = body.split(":")
    if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        n = [int(p) for p in parts]
        if dashed:
            h, m, s = n + [0] * (3 - len(n))
        else:
            h, m, s = {1: (0, n[0], 0), 2: (0, *n), 3: tuple(n)}[len(n)]
        return days * 86400 + h * 3600 + m * 60 + s
    from dask.utils import parse_timedelta  # deferred: dask is heavy

    try:
        return float(parse_timedelta(text))
    except (ValueError, KeyError):
        raise ClusterConfigError(f"{what}{where} is not a duration: {value!r} (e.g. '01:00:00' or '50m')") from None


def _option(args: list, name: str):
    """The value of ``--name V`` or ``--name=V`` in a worker argument list (None if absent)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def wants_gpu(options: dict) -> bool:
    """Whether the jobs of a slurm config ask SLURM for GPUs (``--gres=gpu…``, ``--gpus…``)."""
    return any(_GPU_DIRECTIVE.match(str(d).strip()) for d in options.get("job_extra_directives") or [])


def _offers_gpu(options: dict) -> bool:
    resources = _option([str(a) for a in options.get("worker_extra_args") or []], "--resources") or ""
    return bool(re.search(r"(^|[,\s])GPU=", resources))


def validate_slurm_options(data: dict, where: str = "") -> None:
    """Refuse a slurm config that cannot work: unknown keys (with "did you mean"), wrong types,
    a missing ``account`` where ``account_required``, workers offering a GPU their jobs do not
    ask for, a worker ``--lifetime`` not shorter than the walltime."""
    allowed = set(OWN_KEYS) | set(slurm_keywords())
    for key, value in data.items():
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            fix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ClusterConfigError(f"cluster config{where}: unknown key {key!r} for type 'slurm'{fix}; "
                                     "allowed: laueflow's jobs, adapt, account_required, wait_timeout_s and "
                                     "the keywords of dask_jobqueue.SLURMCluster (see cluster-configs/slurm-cpu.yaml)")
        types = OWN_KEYS.get(key)
        if types and (not isinstance(value, types) or (isinstance(value, bool) and types is int)):
            raise ClusterConfigError(f"cluster config{where}: {key!r} must be "
                                     f"{'/'.join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))}, got {value!r}")
        if key in LIST_KEYS and not (isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)):
            raise ClusterConfigError(f"cluster config{where}: {key!r} must be a list of strings, got {value!r}")
    if "jobs" in data and data["jobs"] < 1:
        raise ClusterConfigError(f"cluster config{where}: jobs must be >= 1, got {data['jobs']}")
    if "jobs" in data and "adapt" in data:
        raise ClusterConfigError(f"cluster config{where}: give either 'jobs' (a fixed number) or 'adapt' (MIN:MAX), not both")
    if "adapt" in data:
        parse_adapt(data["adapt"], f" in cluster config{where}")
    if data.get("account_required") and not data.get("account"):
        raise ClusterConfigError(f"cluster config{where}: this site needs a SLURM account (account_required: true) "
                                 "and the config has no 'account:'; add your project's account "
                                 "(`sacctmgr show associations user=$USER format=account` lists yours)")
    if _offers_gpu(data) and not wants_gpu(data):
        raise ClusterConfigError(f"cluster config{where}: workers offer the GPU resource (worker_extra_args "
                                 "--resources GPU=…) but the jobs ask SLURM for no GPU: add '--gres=gpu:1' to "
                                 "job_extra_directives")
    args = [str(a) for a in data.get("worker_extra_args") or []]
    lifetime = _option(args, "--lifetime")
    if lifetime and data.get("walltime"):
        life = _seconds(lifetime, "--lifetime", where) + _seconds(_option(args, "--lifetime-stagger") or "0s",
                                                                   "--lifetime-stagger", where)
        wall = _seconds(data["walltime"], "walltime", where)
        if life >= wall:
            raise ClusterConfigError(f"cluster config{where}: worker --lifetime + --lifetime-stagger ({life:.0f} s) "
                                     f"must be shorter than the walltime ({wall:.0f} s), or SLURM kills workers "
                                     "mid-task; leave a few minutes for the last task to finish")


# --------------------------------------------------------------------------- the site (sinfo)
def sinfo_partitions() -> tuple[dict[str, set[str]], str | None] | None:
    """``({partition: {gres of its nodes}}, default partition)`` from ``sinfo``; None when this
    machine has no SLURM client or no controller answers (nothing can be told then)."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    partitions: dict[str, set[str]] = {}
    default = None
    for line in out.stdout.splitlines():
        name, _, gres = line.strip().partition("|")
        if name.endswith("*"):
            name = name[:-1]
            default = name
        if name:
            partitions.setdefault(name, set()).update(g for g in gres.split(",") if g and g != "(null)")
    return partitions, default


def check_slurm_site(options: dict, where: str = "") -> None:
    """Refuse a config this SLURM cannot run: no ``sbatch`` here; and when ``sinfo`` answers, an
    unknown partition (``queue``), or GPU jobs on a partition whose nodes have no GPU gres."""
    if not shutil.which("sbatch"):
        raise ClusterConfigError(f"cluster config{where} is for SLURM, but this machine has no `sbatch`: run on a "
                                 "SLURM login node (or install the SLURM client and set SLURM_CONF)")
    info = sinfo_partitions()
    if info is None:
        return
    partitions, default = info
    queue = options.get("queue") or default
    if queue is None:
        return
    if queue not in partitions:
        raise ClusterConfigError(f"cluster config{where}: SLURM has no partition {queue!r} (queue); "
                                 f"sinfo lists: {', '.join(sorted(partitions)) or 'none'}")
    if wants_gpu(options) and not any(g.startswith("gpu") for g in partitions[queue]):
        raise ClusterConfigError(f"cluster config{where}: the jobs ask for a GPU but partition {queue!r} has none "
                                 f"(sinfo: gres {', '.join(sorted(partitions[queue])) or 'none'}); use a GPU "
                                 "partition (queue:) — " + ", ".join(p for p, g in sorted(partitions.items())
                                                                     if any(x.startswith("gpu") for x in g)))


# --------------------------------------------------------------------------- the cluster
def start_slurm_cluster(options: dict):
    """A ``SLURMCluster`` from a validated config's options (own keys removed), its jobs managed by
    ``adapt`` (``jobs: N`` → N to N, ``adapt: MIN:MAX``): a job that ends is replaced."""
    SLURMCluster = import_jobqueue().SLURMCluster
    opts = {k: v for k, v in options.items() if k not in OWN_KEYS}
    opts["job_script_prologue"] = worker_prologue() + list(opts.get("job_script_prologue") or [])
    lo, hi = parse_adapt(options["adapt"]) if "adapt" in options else (options.get("jobs", 1),) * 2
    if "dashboard_address" in opts:  # SLURMCluster takes it only inside scheduler_options
        opts["scheduler_options"] = {"dashboard_address": str(opts.pop("dashboard_address")),
                                     **(opts.get("scheduler_options") or {})}
    cluster = SLURMCluster(**opts)
    try:
        cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
    except BaseException:
        cluster.close()
        raise
    return cluster


def worker_prologue() -> list[str]:
    """Job-script lines giving SLURM workers what local workers get (cluster.py): one BLAS thread
    per task, the malloc thresholds, no statistical profiler (the config's prologue comes after
    and may override them)."""
    from .cluster import WORKER_DASK_CONFIG, worker_environment

    env = dict(worker_environment())
    for key, value in WORKER_DASK_CONFIG.items():  # distributed.worker.profile.enabled → DASK_DISTRIBUTED__…
        env["DASK_" + "__".join(k.upper().replace("-", "_") for k in key.split("."))] = str(value)
    return ["export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())]


def job_ids(cluster) -> list[str]:
    """SLURM job ids of the cluster's jobs submitted so far."""
    return sorted({str(job.job_id) for job in getattr(cluster, "workers", {}).values()
                   if getattr(job, "job_id", None)})


# --------------------------------------------------------------------------- --batch
def batch_script(command: list[str], options: dict, *, log_path: Path, job_name: str) -> str:
    """One sbatch script that runs ``command`` (the driver, with a local cluster) in an allocation
    shaped by a slurm config: one task with ``cores`` CPUs and ``memory``, its partition,
    account, walltime, extra directives and prologue."""
    lines = ["#!/usr/bin/env bash", f"#SBATCH --job-name={job_name}", "#SBATCH --ntasks=1",
             f"#SBATCH --output={log_path}"]
    if options.get("cores"):
        lines.append(f"#SBATCH --cpus-per-task={int(options['cores'])}")
    if options.get("memory"):
        lines.append(f"#SBATCH --mem={_slurm_memory(options['memory'])}")
    for key, flag in (("queue", "--partition"), ("account", "--account"), ("walltime", "--time")):
        if options.get(key):
            lines.append(f"#SBATCH {flag}={options[key]}")
    lines += [f"#SBATCH {d}" for d in options.get("job_extra_directives") or []]
    lines += ["", "set -e", *[str(p) for p in options.get("job_script_prologue") or []],
              f"echo \"laueflow: job $SLURM_JOB_ID on $(hostname), $SLURM_CPUS_PER_TASK CPUs\"",
              "exec " + shlex.join(command), ""]
    return "\n".join(lines)


def _slurm_memory(memory) -> str:
    """A Dask memory size ("4GB", "3.5 GiB") → SLURM's ``--mem`` in whole MiB ("3815M")."""
    from dask.utils import parse_bytes  # deferred: dask is heavy

    return f"{max(1, int(parse_bytes(str(memory)) // 2**20))}M"


def python_executable(options: dict) -> str:
    """The Python of the jobs: the config's ``python``, else this one (same venv on the nodes)."""
    return str(options.get("python") or sys.executable)
