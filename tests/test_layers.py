"""The layer contract of ``pyproject.toml`` (``[tool.importlinter]``) bites: ``lint-imports`` fails
on an upward import added to a copy of the package, and passes on the unmodified copy."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import laueflow

PYPROJECT = next(p / "pyproject.toml" for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def _lint_imports(tmp_path: Path, append: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` on a copy of the package (``append``: {module file: line to add})."""
    shutil.copytree(Path(laueflow.__file__).parent, tmp_path / "laueflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    for relative, line in (append or {}).items():
        with open(tmp_path / relative, "a") as fh:
            fh.write(f"\n{line}\n")
    command = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(command), "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("relative, line, expected", [
    ("laueflow/kernels/vectors.py", "from laueflow.pipeline import store",
     "laueflow.kernels.vectors -> laueflow.pipeline.store"),
    ("laueflow/physics/geometry.py", "from laueflow.io import images",
     "laueflow.physics.geometry -> laueflow.io.images"),
    ("laueflow/stages/angles.py", "import zarr", "laueflow.stages.angles -> zarr"),
    ("laueflow/kernels/cutouts.py", "import dask.array", "laueflow.kernels.cutouts -> dask"),
])
def test_contract_rejects_a_forbidden_import(tmp_path, relative, line, expected):
    result = _lint_imports(tmp_path, {relative: line})
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert expected in result.stdout, result.stdout


def test_unmodified_package_keeps_the_contract(tmp_path):
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
