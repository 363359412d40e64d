"""Issue #12: a new (rhombohedral) material from its parameters to a strain map, from the command
line only — materials file → simulate → ingest → train (in the run) → run → evaluate → export.
The walkthrough of docs/real-sample-walkthrough.md, on a simulated 1×2 scan."""
from __future__ import annotations

import json

import pytest
import yaml

from tiny_models import TINY
from laueflow.cli.main import main
from laueflow.physics import materials as materials_module

MATERIALS = """\
ZnCuOCl:
  lattice: [6.83972, 6.83972, 14.08845, 90, 90, 120]
  space_group: "R -3 m:H"
  lauetools_extinction: SG166
  source: "hexagonal axes"
"""


@pytest.fixture(autouse=True)
def _no_user_materials(monkeypatch):
    monkeypatch.setattr(materials_module, "_USER_MATERIALS", {})


def test_rhombohedral_material_from_the_cli_to_strain(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mats.yaml").write_text(MATERIALS)
    assert main(["simulate", "--materials-file", "mats.yaml", "--material", "ZnCuOCl", "--shape", "1x2",
                 "--grains", "1", "--out", "sim", "--quiet"]) == 0
    materials_module._USER_MATERIALS.clear()  # each command is its own process in real life
    assert main(["ingest", "sim/images", "--materials-file", "mats.yaml", "--material", "ZnCuOCl",
                 "--calibration", "sim/calib.det", "--mask", "sim/mask.tif", "--shape", "1x2",
                 "--out", "scan.zarr", "--serial", "--no-progress"]) == 0
    materials_module._USER_MATERIALS.clear()
    config = TINY.to_dict()  # a small indexer (≈ 70 s of training on 2 cores, ≈ 95 % validation accuracy)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"type": "local", "n_workers": 1, "threads_per_worker": 2,
                                                           "dashboard_address": ":0"}))
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump({
        "input": "scan.zarr", "output": "results.zarr", "images_per_task": 2, "materials_file": "mats.yaml",
        "cluster": "cluster.yaml",
        "stages": ["peaks", "angles", {"descriptors": {"device": "cpu"}},
                   {"index": {"indexer_config": config, "cache_dir": "models", "max_grains": 2, "device": "cpu"}},
                   "strain"]}))
    assert main(["run", "wf.yaml", "--no-progress"]) == 0
    assert main(["evaluate", "results.zarr", "--truth", "sim/truth.zarr", "--json", "eval.json"]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    indexing, strain = report["indexing"]["summary"], report["strain"]["summary"]
    assert indexing["found_precise"] == indexing["n_truth_grains"] == 2 and indexing["spurious"] == 0
    assert indexing["wrong_material"] == 0 and indexing["hkl_accuracy"] > 0.99
    assert strain["grains_compared"] == 2 and strain["strain_error_median"] < 2e-5
    assert main(["export", "results.zarr", "--point", "0,1", "--out", "exported", "--ub-variant", "identity"]) == 0
    fit = (tmp_path / "exported" / "laueflow_y0_x1_g0.fit").read_text()
    assert "ZnCuOCl" in fit
