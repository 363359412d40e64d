"""Cluster configs and CPU sizing (no cluster is started here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from laueflow.pipeline import cluster as cl

REPO = Path(__file__).resolve().parents[2]  # tests/pipeline/ → the repository


@pytest.fixture
def cpus(monkeypatch):
    monkeypatch.setattr(cl.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.setattr(cl, "_cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(cl.os, "cpu_count", lambda: 128)
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_available_cpus_uses_affinity_slurm_and_cgroup(cpus):
    assert cl.available_cpus() == 6  # not os.cpu_count()
    cpus.setenv("SLURM_CPUS_ON_NODE", "4")
    assert cl.available_cpus() == 4
    cpus.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cl.available_cpus() == 3
    cpus.setattr(cl, "_cgroup_cpu_quota", lambda: 2)
    assert cl.available_cpus() == 2


def test_memory_of_the_allocation(cpus):
    for var in ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU"):
        cpus.delenv(var, raising=False)
    cgroup = cl.available_memory_bytes()  # None, or this machine's cgroup limit
    cpus.setenv("SLURM_MEM_PER_CPU", "1000")  # MB per CPU × the 6 CPUs of the fixture
    assert cl.available_memory_bytes() == min(6000 << 20, cgroup or 6000 << 20)
    cpus.setenv("SLURM_MEM_PER_NODE", "4000")  # wins over per-CPU
    assert cl.available_memory_bytes() == min(4000 << 20, cgroup or 4000 << 20)
    if not cgroup or cgroup > 4000 << 20:
        assert cl.local_cluster_kwargs(n_workers=4)["memory_limit"] == 1000 << 20  # split between workers
        assert cl.local_cluster_kwargs(n_workers=4, memory_limit="2GB")["memory_limit"] == "2GB"


def test_local_cluster_kwargs(cpus):
    kw = cl.local_cluster_kwargs()
    assert kw["n_workers"] == 6 and kw["threads_per_worker"] == 1 and kw["processes"] is True
    assert cl.local_cluster_kwargs(threads_per_worker=2)["n_workers"] == 3
    assert cl.local_cluster_kwargs(n_workers=2, resources={"GPU": 1})["resources"] == {"GPU": 1}


def test_shipped_configs_parse():
    local = cl.load_cluster_config(REPO / "cluster-configs" / "local.yaml")
    assert local.type == "local" and local.options["threads_per_worker"] == 1
    assert cl.load_cluster_config(REPO / "cluster-configs" / "slurm-cpu.yaml").type == "slurm"
    assert cl.load_cluster_config(REPO / "cluster-configs" / "local-cuda.yaml").type == "local-cuda"


@pytest.mark.parametrize("data, message", [
    ({"type": "kubernetes"}, r"unknown type 'kubernetes'; use one of local, scheduler, slurm, local-cuda"),
    ({"type": "local", "n_worker": 2}, r"unknown key 'n_worker' for type 'local' \(did you mean 'n_workers'\?\)"),
    ({"type": "local", "threads_per_worker": "1"}, r"'threads_per_worker' must be int"),
    ({"type": "local", "n_workers": "many"}, r"n_workers must be an integer or 'auto'"),
    ({"type": "scheduler"}, r"needs 'address: tcp://host:port'"),
    ([1, 2], r"must be a YAML mapping"),
])
def test_config_errors(data, message):
    with pytest.raises(cl.ClusterConfigError, match=message):
        cl.parse_cluster_config(data)


def test_missing_optional_backends_say_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name in ("dask_jobqueue", "dask_cuda"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(cl.ClusterConfigError, match="needs dask-jobqueue.*pip install dask-jobqueue"):
        cl.check_available(cl.parse_cluster_config({"type": "slurm", "cores": 4}))
    with pytest.raises(cl.ClusterConfigError, match="needs dask-cuda.*laueflow\\[gpu\\]"):
        cl.check_available(cl.parse_cluster_config({"type": "local-cuda"}))


def test_missing_config_file(tmp_path):
    with pytest.raises(cl.ClusterConfigError, match="does not exist"):
        cl.load_cluster_config(tmp_path / "nope.yaml")


def test_local_workers_get_the_worker_environment():
    """Fixed malloc thresholds and one BLAS thread reach every local worker process."""
    import os

    from laueflow.pipeline.cluster import ClusterConfig, connect, worker_environment

    with connect(ClusterConfig("local", {"n_workers": 2, "dashboard_address": ":0"})) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in worker_environment()})
    assert len(seen) == 2
    for env in seen.values():
        assert env == worker_environment()


def _interrupt_sync_before_its_coroutine_starts():
    """Ctrl-C in ``distributed.utils.sync`` while the event loop is busy: distributed's
    ``cancel()`` then reads an unassigned ``future`` (the race a CI run hit)."""
    import os
    import signal
    import threading
    import time

    from distributed.utils import LoopRunner, sync

    runner = LoopRunner(asynchronous=False)
    runner.start()
    try:
        runner.loop.add_callback(time.sleep, 0.5)  # the loop is busy: sync's coroutine waits

        async def work():
            return 1

        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            sync(runner.loop, work)
        timer.join()
        time.sleep(0.7)  # the loop runs the scheduled cancel()
    finally:
        runner.stop()


def test_the_sync_cancel_race_is_not_logged_as_a_crash(caplog):
    import logging

    cl.quiet_sync_cancel_race()
    cl.quiet_sync_cancel_race()  # once
    logger = logging.getLogger("tornado.application")
    assert sum(isinstance(f, cl._SyncCancelRaceFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger="tornado.application"):
        _interrupt_sync_before_its_coroutine_starts()
    assert not [r for r in caplog.records if r.name == "tornado.application"], caplog.text

    # any other error of a tornado callback is still logged, NameErrors elsewhere too
    def broken():
        return undefined_name  # noqa: F821

    try:
        broken()
    except NameError:
        import sys

        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "callback failed", (), sys.exc_info())
    assert all(f.filter(record) for f in logger.filters)
