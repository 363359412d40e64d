"""Shared fixtures of the test suite.

Layout: tests/<layer>/test_*.py mirrors the package (kernels, physics, models, stages, io, synth,
pipeline, cli); tests/ itself holds this file, the reference data (tests/data), package-wide tests
and helper modules imported by name (``test_pipeline_standin``: the workflow plug-in also imported
by Dask workers; ``tiny_models``: small model configurations; ``reference_data``: tests/data). ``pythonpath = ["tests"]`` (pyproject.toml) puts tests/ on
``sys.path``; :func:`_tests_on_worker_pythonpath` puts it on ``PYTHONPATH`` for worker processes
and ``laueflow run`` subprocesses.

Global state is restored after every test (:func:`_restore_global_state`): the stage registry,
the model kinds, ``sys.path`` and ``os.environ``.

GPU tests say what they need: ``@pytest.mark.requires_torch_cuda`` (skipped unless
``torch.cuda.is_available()``) or ``@pytest.mark.requires_cupy_gpu`` (skipped unless cupy imports
and sees a device); both imply the ``gpu`` marker. A ``gpu`` test without either is an error.
"""
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference_data import DATA, load_json  # noqa: F401  (tests/data: the LaueTools reference values)

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def geometry_vectors():
    return load_json("geometry_vectors.json")


@pytest.fixture(scope="session")
def simulated_spots_cases():
    return load_json("simulated_spots.json")["cases"]


@pytest.fixture(scope="session")
def strain_cases():
    return load_json("strain_cases.json")["cases"]


# --------------------------------------------------------------------------- GPU gates
@functools.cache
def torch_cuda_available() -> bool:
    """torch (a pinned dependency: imported, never skipped) sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


@functools.cache
def cupy_gpu_available() -> bool:
    """cupy (optional: the ``gpu`` extra) imports and sees a CUDA device."""
    from laueflow.backend import gpu_available

    return gpu_available()


#: marker → (probe, reason when it says no)
GPU_GATES = {
    "requires_torch_cuda": (torch_cuda_available, "needs torch with CUDA (torch.cuda.is_available() is False)"),
    "requires_cupy_gpu": (cupy_gpu_available, "needs cupy with a CUDA device (laueflow[gpu] not installed "
                                              "or no device)"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        gates = [name for name in GPU_GATES if item.get_closest_marker(name)]
        if not gates:
            if item.get_closest_marker("gpu"):
                raise pytest.UsageError(f"{item.nodeid} is marked gpu but does not say what it needs: mark it "
                                        "requires_torch_cuda or requires_cupy_gpu (tests/conftest.py)")
            continue
        item.add_marker(pytest.mark.gpu)
        for name in gates:
            probe, reason = GPU_GATES[name]
            if not probe():
                item.add_marker(pytest.mark.skip(reason=reason))  # only GPU gates skip
                break


# --------------------------------------------------------------------------- global state
@pytest.fixture(scope="session", autouse=True)
def _tests_on_worker_pythonpath():
    """tests/ on ``PYTHONPATH`` for the session: Dask worker processes and ``laueflow run``
    subprocesses import the stand-in plug-in ``test_pipeline_standin`` by name."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
        yield TESTS


def _module_of(ref) -> str | None:
    if isinstance(ref, str):
        return ref.partition(":")[0]
    return getattr(ref, "__module__", None)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """After each test: the stage registry, model kinds, ``sys.path`` and ``os.environ`` as before.

    A plug-in module first imported during the test registered its stages on import; it is
    forgotten (``sys.modules``) with them, so a later import registers them again.
    """
    from laueflow.stages import base

    base.registered_stages()  # built-ins loaded before the snapshot
    models = sys.modules.get("laueflow.pipeline.models")  # not imported here: it is not light
    registry, kinds = dict(base._REGISTRY), dict(models._KINDS) if models else None
    path, environ, modules = list(sys.path), dict(os.environ), set(sys.modules)
    yield
    with base._LOCK:
        added = [spec for name, spec in base._REGISTRY.items() if registry.get(name) is not spec]
        base._REGISTRY.clear()
        base._REGISTRY.update(registry)
    for spec in added:
        module = _module_of(spec.func)
        if module and module not in modules:
            sys.modules.pop(module, None)
    if models is not None:  # imported during the test: it holds only the built-in kinds
        models._KINDS.clear()
        models._KINDS.update(kinds)
    sys.path[:] = path
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    for key, value in environ.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


# --------------------------------------------------------------------------- SLURM
#: the config .ci/slurm/cluster.sh writes (used when SLURM_CONF is unset)
CI_SLURM_CONF = Path(os.environ.get("LAUEFLOW_SLURM_DIR", "/tmp/laueflow-slurm")) / "slurm.conf"


def _slurm_down(env: dict) -> str | None:
    """Why SLURM cannot run the tests' jobs here (None when a node of `debug` is up)."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "sinfo/sbatch not found"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%T"], capture_output=True, text=True,
                             timeout=30, env=env)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()[:300]}"
    states = out.stdout.split()
    if not any(s.rstrip("*~#").startswith(("idle", "mixed", "alloc")) for s in states):
        return f"no node of partition debug is up (sinfo states: {' '.join(states) or 'none'})"
    return None


@pytest.fixture
def slurm(monkeypatch):
    """A SLURM that runs jobs (partition ``debug``; the CI one has ``gpu`` and the GPU-less
    ``cpu`` too): skips without one — fails when ``LAUEFLOW_REQUIRE_SLURM=1`` (.ci/run).
    Sets ``SLURM_CONF`` to the CI cluster's config when it is unset and that config exists."""
    if not os.environ.get("SLURM_CONF") and CI_SLURM_CONF.is_file():
        monkeypatch.setenv("SLURM_CONF", str(CI_SLURM_CONF))
    reason = _slurm_down(dict(os.environ))
    if reason:
        message = (f"SLURM is not running: {reason}; start the test cluster with "
                   "`.ci/slurm/cluster.sh start --install` (as root)")
        if os.environ.get("LAUEFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(message + " — LAUEFLOW_REQUIRE_SLURM=1 makes this a failure")
        pytest.skip(message)
    return os.environ.get("SLURM_CONF")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def results_store(tmp_path_factory):
    """A small results store of known contents (tests/results_factory.py), shared by the tests of
    open_results, the maps, the report and the map exports: (path, the Dataset written)."""
    import results_factory

    path = tmp_path_factory.mktemp("results") / "results.zarr"
    return path, results_factory.build(path)
