"""The wheel ships what laueflow needs at run time: the spot CNN weights with their recorded sha256,
and the materials table. Missing package data is a broken release, never a skipped test."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import laueflow

PACKAGE = Path(laueflow.__file__).resolve().parent
REPO = PACKAGE.parent
DATA_FILES = ("laueflow/data/spotcnn.pt", "laueflow/data/spotcnn.json", "laueflow/data/materials.yaml",
              "laueflow/data/autoencoder.pt", "laueflow/data/autoencoder.json")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the source (the build writes nothing into the tree)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(PACKAGE, src / "laueflow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--disable-pip-version-check", "-w", str(out), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [whl] = out.glob("laueflow-*.whl")
    return whl


def test_wheel_ships_model_weights_and_materials(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [name for name in DATA_FILES if name not in names]
        assert not missing, f"{wheel.name} lacks {missing} (pyproject.toml [tool.setuptools.package-data])"
        weights = zf.read("laueflow/data/spotcnn.pt")
        meta = json.loads(zf.read("laueflow/data/spotcnn.json"))
        materials = zf.read("laueflow/data/materials.yaml")
    assert hashlib.sha256(weights).hexdigest() == meta["sha256"]
    # the shipped files are the source tree's, byte for byte
    assert weights == (PACKAGE / "data" / "spotcnn.pt").read_bytes()
    assert materials == (PACKAGE / "data" / "materials.yaml").read_bytes()


def test_wheel_holds_every_subpackage_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    packages = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)
    assert packages and [p for p in packages if p not in names] == []
    assert "laueflow = laueflow.cli.main:main" in scripts
