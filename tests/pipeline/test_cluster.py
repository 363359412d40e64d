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
