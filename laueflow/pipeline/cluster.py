"""Where a workflow runs: cluster configs (``cluster-configs/*.yaml``) → a Dask client.

Schema (one YAML mapping; every key but ``type`` optional)::

    type: local                 # local | scheduler | slurm | local-cuda
    # local / local-cuda
    n_workers: auto             # auto: CPUs this process may use // threads_per_worker
    threads_per_worker: 1
    memory_limit: auto          # per worker, e.g. "4GB"; auto splits the machine's memory
    processes: true
    dashboard_address: ":8787"  # ":0" picks a free port
    resources: {}               # Dask worker resources, e.g. {GPU: 1}
    # scheduler
    address: tcp://host:8786
    # slurm (dask-jobqueue SLURMCluster; every other key is passed to SLURMCluster and must be
    # one of its keywords: cluster-configs/slurm-cpu.yaml and slurm-gpu.yaml explain them)
    jobs: 1                     # SLURM jobs kept running (lost ones are replaced)
    adapt: "1:4"                # or: scale between MIN and MAX jobs with the work left
    account_required: false     # true: refuse a config without `account` (sites that need one)
    cores: 8
    memory: 32GB
    queue: gpu
    walltime: "01:00:00"
    wait_timeout_s: 300         # how long to wait for the first worker

SLURM configs are checked twice: keys and values when loaded (:func:`parse_cluster_config`), and
against the SLURM of this machine before any job is submitted (:func:`check_slurm_site`: the
partition exists, and has GPUs when the config asks for them — when ``sinfo`` can tell).

Local worker processes start with :func:`worker_environment` (thread and ``malloc`` settings,
applied before each worker process starts; see there why) and leave Ctrl-C to the driver
(:func:`_sigint_to_driver_only`): the driver stops the run and shuts the cluster down.

"Auto" sizes come from the CPUs this process may actually use — its CPU affinity, the SLURM
allocation (``SLURM_CPUS_PER_TASK`` / ``SLURM_CPUS_ON_NODE``) and a cgroup CPU quota — never
from ``os.cpu_count()``, which counts the whole node.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..backend import gpu_available

__all__ = [
    "ClusterConfigError",
    "ClusterConfig",
    "available_cpus",
    "available_memory_bytes",
    "local_cluster_kwargs",
    "worker_environment",
    "load_cluster_config",
    "parse_cluster_config",
    "connect",
]

CLUSTER_TYPES = ("local", "scheduler", "slurm", "local-cuda")

_COMMON_KEYS = {"type": str, "wait_timeout_s": (int, float)}
_LOCAL_KEYS = {
    "n_workers": (int, str),
    "threads_per_worker": int,
    "memory_limit": (str, int, float),
    "processes": bool,
    "dashboard_address": str,
    "resources": dict,
}
_KEYS = {
    "local": _LOCAL_KEYS,
    "local-cuda": {**_LOCAL_KEYS, "CUDA_VISIBLE_DEVICES": (str, list), "rmm_pool_size": (str, int)},
    "scheduler": {"address": str},
    "slurm": None,  # SLURMCluster's keywords and laueflow's own: checked in pipeline/slurm.py
}


class ClusterConfigError(ValueError):
    """A cluster config that cannot be used (message says what and how to fix it)."""


def _cgroup_cpu_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except OSError:
        return None
    if len(text) == 2 and text[0] != "max":
        return max(1, math.floor(int(text[0]) / int(text[1])))
    return None


def available_cpus() -> int:
    """CPUs this process may use: affinity ∩ SLURM allocation ∩ cgroup quota (≥ 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = min(n, int(value.split("(")[0].split(",")[0]))
            except ValueError:
                pass
            break  # SLURM_CPUS_PER_TASK, when set, is the allocation of this task
    quota = _cgroup_cpu_quota()
    if quota:
        n = min(n, quota)
    return max(1, n)


def available_memory_bytes() -> int | None:
    """Memory this process may use when something limits it: the SLURM allocation
    (``SLURM_MEM_PER_NODE`` MB, or ``SLURM_MEM_PER_CPU`` MB × :func:`available_cpus`) and a cgroup
    limit (``memory.max``), the smaller; None when neither limits it (then the machine's memory)."""
    limits = []
    per_node, per_cpu = os.environ.get("SLURM_MEM_PER_NODE", ""), os.environ.get("SLURM_MEM_PER_CPU", "")
    if per_node.isdigit() and int(per_node) > 0:
        limits.append(int(per_node) << 20)
    elif per_cpu.isdigit() and int(per_cpu) > 0:
        limits.append((int(per_cpu) << 20) * available_cpus())
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    return min(limits) if limits else None


def local_cluster_kwargs(
    n_workers: int | str | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | float | None = "auto",
    processes: bool = True,
    dashboard_address: str = ":8787",
    resources: dict | None = None,
) -> dict:
    """Keyword arguments for ``distributed.LocalCluster`` sized to this process's CPUs.

    ``n_workers`` None/"auto": :func:`available_cpus` // ``threads_per_worker`` (at least 1);
    ``memory_limit`` "auto": :func:`available_memory_bytes` split between the workers when an
    allocation or cgroup limits it (else distributed's "auto": the machine's memory).
    """
    threads_per_worker = max(1, int(threads_per_worker))
    if n_workers in (None, "auto"):
        n_workers = max(1, available_cpus() // threads_per_worker)
    kwargs = {
        "n_workers": int(n_workers),
        "threads_per_worker": threads_per_worker,
        "processes": bool(processes),
        "dashboard_address": dashboard_address,
    }
    if memory_limit == "auto" and available_memory_bytes():  # a SLURM allocation or cgroup limit
        memory_limit = available_memory_bytes() // int(n_workers)
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    if resources:
        kwargs["resources"] = dict(resources)
    return kwargs


#: glibc malloc thresholds of worker processes (bytes). Any explicit threshold turns glibc's
#: dynamic mmap threshold off; distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers,
#: which leaves every allocation above 128 kB to mmap: each frame-sized temporary (a 2018×2016
#: float32 frame is 16 MB; the peak search makes ~20 per image) was mmap'ed and page-faulted
#: afresh, and the peak search ran 1.6–2.5× slower in a worker than in a plain process. With
#: these, frame-sized blocks are reused from the heap (32 MiB is glibc's largest mmap threshold).
MALLOC_MMAP_THRESHOLD_BYTES = 32 << 20
MALLOC_TRIM_THRESHOLD_BYTES = 256 << 20


#: Dask settings of local workers: distributed's statistical profiler (a stack sample of every
#: thread each 10 ms, for the dashboard's Profile page) costs the busy workers ≈ 5 % throughput
WORKER_DASK_CONFIG = {"distributed.worker.profile.enabled": False}

#: worker preload of local clusters: its ``dask_setup`` makes the worker process ignore SIGINT and
#: keeps the cluster's closing from logging tracebacks (:mod:`laueflow.pipeline.worker_process`)
WORKER_PRELOAD = "laueflow.pipeline.worker_process"


def worker_environment() -> dict[str, str]:
    """Environment of local worker processes, set before each starts (distributed's
    ``pre-spawn-environ``): one OpenMP/MKL/OpenBLAS (hence torch) thread per task (the workers
    already fill the CPUs with processes × task threads; more would oversubscribe them, as
    distributed's defaults also say) and the ``malloc`` thresholds above."""
    return {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD_BYTES),
        "MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM_THRESHOLD_BYTES),
    }


@contextlib.contextmanager
def _worker_environment(env: dict[str, str]) -> Iterator[None]:
    """Make worker processes started inside the block use ``env`` (and :data:`WORKER_DASK_CONFIG`,
    and the preload :data:`WORKER_PRELOAD`, which nannies also read when they are created).

    Nannies read ``distributed.nanny.pre-spawn-environ`` (and the Dask config they hand to their
    worker) when they are created, but a variable already in ``os.environ`` wins over it, and
    every nanny copies its variables into ``os.environ`` (so an earlier cluster of this process
    would impose distributed's defaults): both are set for the duration of the block. Restarted
    workers keep what their nanny read.
    """
    import dask  # deferred: dask is heavy; the CLI imports this module

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    preload = list(dask.config.get("distributed.worker.preload", None) or [])
    if WORKER_PRELOAD not in preload:
        preload.append(WORKER_PRELOAD)
    try:
        with dask.config.set({**WORKER_DASK_CONFIG, "distributed.nanny.pre-spawn-environ": {
                **dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env},
                "distributed.worker.preload": preload}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _sigint_to_driver_only() -> Iterator[None]:
    """Start a local cluster inside the block: its worker processes never get SIGINT.

    A terminal sends Ctrl-C's SIGINT to every process of its foreground process group: the
    worker processes of a local cluster too, which printed a ``KeyboardInterrupt`` traceback each
    and died with the tiles they were finishing. SIGINT is blocked in this thread for the block:
    the threads that start here (the cluster's event loop, which starts the worker processes now
    and again when one is restarted) and the processes they start inherit the signal mask, so
    Ctrl-C reaches only the driver (a Ctrl-C during the start-up is delivered when the block
    ends). Second line: the workers' preload (:data:`WORKER_PRELOAD`) ignores SIGINT.
    multiprocessing's resource tracker, when it starts, unblocks SIGINT in the thread that starts
    it: it is started first, here.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _SyncCancelRaceFilter(logging.Filter):
    """Drop distributed's log of its own ``sync`` cancel race (distributed 2026.8).

    A Ctrl-C that lands while ``Client.sync`` waits, before its coroutine has started on the event
    loop, schedules ``cancel()``, which reads the coroutine's not yet assigned ``future`` and
    raises ``NameError``; tornado logs it with a traceback after laueflow has already said
    "interrupted". Nothing is lost (the coroutine runs to its end; the client is closed next),
    but the traceback looks like a crash. Only that record is dropped: a ``NameError`` raised in
    ``cancel`` of ``distributed/utils.py``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, NameError) or exc.__traceback__ is None:
            return True
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        return not (code.co_name == "cancel" and Path(code.co_filename).match("distributed/utils.py"))


def quiet_sync_cancel_race() -> None:
    """Install :class:`_SyncCancelRaceFilter` on tornado's callback logger (once)."""
    logger = logging.getLogger("tornado.application")
    if not any(isinstance(f, _SyncCancelRaceFilter) for f in logger.filters):
        logger.addFilter(_SyncCancelRaceFilter())


@dataclass
class ClusterConfig:
    """A validated cluster config."""

    type: str = "local"
    options: dict = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict:
        return {"type": self.type, **self.options}


def _where(source) -> str:
    return f" in {source}" if source else ""


def parse_cluster_config(data: Any, source: str | None = None) -> ClusterConfig:
    """Validate a cluster-config mapping (see the module docstring for the schema)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ClusterConfigError(f"cluster config{_where(source)} must be a YAML mapping, "
                                 f"got {type(data).__name__}")
    data = dict(data)
    kind = data.pop("type", "local")
    if kind not in CLUSTER_TYPES:
        raise ClusterConfigError(f"cluster config{_where(source)}: unknown type {kind!r}; "
                                 f"use one of {', '.join(CLUSTER_TYPES)}")
    allowed = _KEYS[kind]
    if allowed is not None:
        allowed = {**_COMMON_KEYS, **allowed}
        for key, value in data.items():
            if key not in allowed:
                hint = difflib.get_close_matches(key, list(allowed), n=1)
                fix = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ClusterConfigError(
                    f"cluster config{_where(source)}: unknown key {key!r} for type {kind!r}{fix}; "
                    f"allowed keys: {', '.join(sorted(k for k in allowed if k != 'type'))}")
            types = allowed[key]
            if not isinstance(value, types) or (isinstance(value, bool) and types is int):
                names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
                raise ClusterConfigError(f"cluster config{_where(source)}: {key!r} must be {names}, "
                                         f"got {value!r}")
        if isinstance(data.get("n_workers"), str) and data["n_workers"] != "auto":
            raise ClusterConfigError(f"cluster config{_where(source)}: n_workers must be an "
                                     f"integer or 'auto', got {data['n_workers']!r}")
    if kind == "slurm" and _has_jobqueue():
        from .slurm import validate_slurm_options  # deferred: imports dask_jobqueue

        validate_slurm_options(data, _where(source))
    if kind == "scheduler" and not data.get("address"):
        raise ClusterConfigError(f"cluster config{_where(source)}: type 'scheduler' needs "
                                 "'address: tcp://host:port'")
    return ClusterConfig(kind, data, source)


def load_cluster_config(path: str | os.PathLike) -> ClusterConfig:
    path = Path(path)
    if not path.is_file():
        raise ClusterConfigError(f"cluster config {path} does not exist; see cluster-configs/local.yaml "
                                 "for an example")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClusterConfigError(f"cluster config {path} is not valid YAML: {err}") from None
    return parse_cluster_config(data, str(path))


def _has_jobqueue() -> bool:
    import importlib.util

    return importlib.util.find_spec("dask_jobqueue") is not None


def _check_slurm():
    try:
        from .slurm import import_jobqueue  # deferred: dask_jobqueue is heavy

        import_jobqueue()
    except ImportError:
        raise ClusterConfigError("cluster type 'slurm' needs dask-jobqueue, which is not installed: "
                                 "pip install dask-jobqueue") from None


def _check_cuda():
    try:
        import dask_cuda  # noqa: F401  # deferred: optional package (GPU extra), checked here
    except ImportError:
        raise ClusterConfigError("cluster type 'local-cuda' needs dask-cuda, which is not installed: "
                                 "pip install 'laueflow[gpu]' (dask-cuda[cu12] + cupy)") from None
    if not gpu_available():
        raise ClusterConfigError("cluster type 'local-cuda' needs a CUDA GPU and none is visible; "
                                 "use cluster-configs/local.yaml on this machine")


def check_available(config: ClusterConfig) -> None:
    """Raise :class:`ClusterConfigError` if the config's cluster type cannot start here."""
    if config.type == "slurm":
        _check_slurm()
    elif config.type == "local-cuda":
        _check_cuda()


def describe(client) -> dict:
    """A JSON-able description of the cluster behind a client (for provenance)."""
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    workers = info.get("workers", {})
    resources: dict = {}
    largest: dict = {}  # the most of each resource one worker offers (what one task can get)
    for w in workers.values():
        for k, v in (w.get("resources") or {}).items():
            resources[k] = resources.get(k, 0) + v
            largest[k] = max(largest.get(k, 0), v)
    return {
        "scheduler_address": client.scheduler.address,
        "dashboard_link": client.dashboard_link,
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "worker_resources": resources,
        "largest_worker_resources": largest,
    }


def _accepts_n_workers(client) -> bool:
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def _wait_for_a_worker(client, timeout_s: float) -> None:
    """Wait for the first SLURM worker; a job SLURM refused is only logged by dask-jobqueue."""
    from distributed.client import TimeoutError as DaskTimeoutError  # deferred: heavy

    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (TimeoutError, DaskTimeoutError):
        raise ClusterConfigError(
            f"no SLURM worker joined within wait_timeout_s = {timeout_s:.0f} s: the jobs may still be queued "
            "(squeue --me), refused by sbatch (see the log above), or unable to reach this scheduler "
            "(firewall, network interface: see docs/clusters.md § Troubleshooting)") from None


@contextlib.contextmanager
def connect(config: ClusterConfig | None = None, *, address: str | None = None) -> Iterator:
    """Start (or connect to) the cluster a config describes; yields a ``distributed.Client``.

    ``address`` (``--scheduler tcp://…``) overrides the config. Clusters started here are closed
    on exit; an external scheduler is left running.
    """
    from distributed import Client, LocalCluster  # deferred: distributed is heavy; the CLI imports this module

    quiet_sync_cancel_race()
    config = config or ClusterConfig()
    if address:
        config = ClusterConfig("scheduler", {"address": address})
    check_available(config)
    opts = dict(config.options)
    timeout = float(opts.pop("wait_timeout_s", 300))
    if config.type == "scheduler":
        client = Client(opts["address"], timeout=f"{int(timeout)}s")
        try:
            yield client
        finally:
            client.close()
        return
    from .live_map import register

    register()  # the /laueflow page on the dashboards of the schedulers started here
    cluster = None
    try:  # a Ctrl-C held back while a local cluster starts lands as soon as it has: close it then too
        if config.type == "local":
            kwargs = local_cluster_kwargs(**opts)
            with _worker_environment(worker_environment()), _sigint_to_driver_only():
                cluster = LocalCluster(**kwargs)
        elif config.type == "local-cuda":
            from dask_cuda import LocalCUDACluster  # deferred: optional package (GPU extra)

            opts.setdefault("resources", {"GPU": 1})
            opts.pop("processes", None)
            if opts.get("n_workers") == "auto":
                opts.pop("n_workers")
            with _worker_environment(worker_environment()), _sigint_to_driver_only():
                cluster = LocalCUDACluster(**opts)
        else:  # slurm: jobs kept (or adapted) by cluster.adapt, so a job that ends is replaced
            from .slurm import check_slurm_site, start_slurm_cluster  # deferred: imports dask_jobqueue

            check_slurm_site(opts, _where(config.source))
            cluster = start_slurm_cluster(opts)
        client = Client(cluster)
        try:
            if config.type == "slurm":
                _wait_for_a_worker(client, timeout)
            yield client
        finally:
            if config.type in ("local", "local-cuda"):
                _announce_shutdown(client)
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _announce_shutdown(client) -> None:
    """Tell the local workers the cluster is closing, so that a heartbeat caught by the closing
    scheduler is not logged as a crash (:mod:`laueflow.pipeline.worker_process`). Best effort:
    a Ctrl-C or a lost worker here must not keep the cluster from closing."""
    from .worker_process import expect_shutdown

    try:
        client.run(expect_shutdown, on_error="ignore")
    except Exception:  # noqa: BLE001 - closing goes on (a Ctrl-C still propagates)
        pass
