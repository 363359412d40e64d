"""Issue #12, materials: a user's materials file accepted by the commands, full definitions in the
stores, materials matched by name (never by position), and the scan, the model and the workflow
made to agree before a run starts."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from ingest_helpers import write_tiffs
from tiny_models import TINY
from laueflow.cli.main import main
from laueflow.physics import materials as materials_module
from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.physics.materials import get_material, get_materials, material_from_dict

ZNCUOCL = """\
ZnCuOCl:
  lattice: [6.83972, 6.83972, 14.08845, 90, 90, 120]
  space_group: "R -3 m:H"
  lauetools_extinction: SG166
  source: test sample, hexagonal axes
"""


@pytest.fixture(autouse=True)
def _no_user_materials(monkeypatch):
    """Each test starts (and leaves) with no user materials registered in this process."""
    monkeypatch.setattr(materials_module, "_USER_MATERIALS", {})


def _frame(k):
    rng = np.random.default_rng(k)
    return (1000 + rng.integers(0, 20, (48, 64))).astype(np.uint16)


def test_a_materials_file_works_from_the_cli_and_the_store_carries_the_definition(tmp_path, capsys):
    (tmp_path / "mats.yaml").write_text(ZNCUOCL)
    write_tiffs(tmp_path / "images", 4, _frame)
    (tmp_path / "calib.det").write_text("70, 32, 24, 0, 0, 0.0734, 48, 64\n")
    args = ["ingest", str(tmp_path / "images"), "--out", str(tmp_path / "scan.zarr"), "--shape", "2x2",
            "--calibration", str(tmp_path / "calib.det"), "--material", "ZnCuOCl", "--serial", "--no-progress"]
    assert main(args) == 2  # unknown without the file
    assert "unknown material 'ZnCuOCl'" in capsys.readouterr().err
    assert main([*args, "--materials-file", str(tmp_path / "mats.yaml")]) == 0
    attrs = zarr.open_group(str(tmp_path / "scan.zarr"), mode="r").attrs
    assert attrs["materials"] == ["ZnCuOCl"]
    materials_module._USER_MATERIALS.clear()  # a later process: no file, the store says it all
    from laueflow.pipeline.run import scan_materials

    (material,) = get_materials(scan_materials(dict(attrs)))
    assert material.name == "ZnCuOCl" and material.lattice_parameters == (6.83972, 6.83972, 14.08845, 90, 90, 120)
    assert material.space_group_number == 166 and material.lauetools_extinction == "SG166"
    assert main(["train", "indexer", "--material", "Cu", "--materials-file", str(tmp_path / "none.yaml")]) == 2
    assert "--materials-file" in capsys.readouterr().err


def test_definitions_round_trip_every_library_material():
    for name in materials_module.list_materials():
        m = get_material(name)
        back = material_from_dict(m.to_dict())
        assert back.to_dict() == m.to_dict()
        hkl = np.array([[1, 0, 0], [1, 1, 1], [2, 0, 0], [2, 2, 0], [1, 0, 1], [0, 0, 2]])
        np.testing.assert_array_equal(back.allowed(hkl), m.allowed(hkl))


def test_workflow_materials_file_must_agree_with_the_scan(tmp_path):
    from laueflow.pipeline.run import validate_inputs
    from laueflow.pipeline.workflow import WorkflowError, parse_workflow

    import test_pipeline_standin as standin

    scan = tmp_path / "scan.zarr"
    standin.make_scan_store(scan)  # materials: Cu (library, by name)
    (tmp_path / "same.yaml").write_text("Cu:\n  lattice: [3.6149, 3.6149, 3.6149, 90, 90, 90]\n"
                                        "  space_group: \"F m -3 m\"\n")
    (tmp_path / "other.yaml").write_text("Cu:\n  lattice: [3.6, 3.6, 3.6, 90, 90, 90]\n  space_group: \"F m -3 m\"\n")
    (tmp_path / "none.yaml").write_text(ZNCUOCL)
    out = tmp_path / "results.zarr"

    def workflow(materials_file):
        return parse_workflow({"input": str(scan), "output": str(out), "stages": ["peaks", "angles"],
                               "materials_file": str(tmp_path / materials_file)})

    validate_inputs(workflow("same.yaml"), log=lambda *a: None)
    with pytest.raises(WorkflowError, match=r"Cu: lattice \[3.6, .*in the materials file, \[3.6149"):
        validate_inputs(workflow("other.yaml"), log=lambda *a: None)
    with pytest.raises(WorkflowError, match="Cu not defined in the materials file"):
        validate_inputs(workflow("none.yaml"), log=lambda *a: None)
    assert not out.exists()


def test_a_pinned_model_is_matched_to_the_scan_by_name(tmp_path):
    """Found: a pinned indexer whose material order differed from the scan's labelled Si grains
    GaN (grain_material in the model's order, strain and attrs in the scan's), exit 0."""
    from laueflow.pipeline.indexers import check_index_model, get_indexer
    from laueflow.stages.indexing.stage import index_stage
    from laueflow.stages.indexing.training import simulate_patterns

    indexer = get_indexer(["Cu", "Si"], DEFAULT_CALIBRATION, TINY, cache_dir=tmp_path, verbose=False, threads=1)
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.array([[0, 1]] * 6), seed=7, mode="none")
    model_order = index_stage(ps.two_theta, ps.chi, ps.intensity, model=indexer, max_grains=2)
    scan_order = index_stage(ps.two_theta, ps.chi, ps.intensity, materials=["Si", "Cu"], model=indexer, max_grains=2)
    found = model_order["grain_material"][:, 0] >= 0
    assert found.sum() >= 4 and (model_order["grain_material"][found, 0] == 1).all()  # Si in the model's list
    assert (scan_order["grain_material"][found, 0] == 0).all()  # Si in the scan's list
    peaks = scan_order["peak_material"] >= 0
    assert peaks.any() and (scan_order["peak_material"][peaks] == 0).all()
    # per-material caps are given in the scan's order and applied to the right material
    si_allowed = index_stage(ps.two_theta, ps.chi, ps.intensity, materials=["Si", "Cu"], model=indexer,
                             max_grains=2, max_grains_per_material=[1, 0])
    assert (si_allowed["grain_material"][found, 0] == 0).all()
    si_forbidden = index_stage(ps.two_theta, ps.chi, ps.intensity, materials=["Si", "Cu"], model=indexer,
                               max_grains=2, max_grains_per_material=[0, 1])
    assert not (si_forbidden["grain_material"] == 0).any()

    context = {"materials": ["Cu", "Si", "GaN"], "calibration": DEFAULT_CALIBRATION}
    with pytest.raises(ValueError, match="GaN only in the scan"):
        check_index_model({"model": str(indexer.path)}, context)
    other_cu = materials_module.Material("Cu", (3.6, 3.6, 3.6, 90, 90, 90), "F m -3 m")
    with pytest.raises(ValueError, match=r"Cu: lattice .* in the model, \[3.6, 3.6"):
        check_index_model({"model": str(indexer.path)}, {**context, "materials": [other_cu, "Si"]})
    check_index_model({"model": str(indexer.path)}, {**context, "materials": ["Si", "Cu"]})  # any order
    check_index_model({"model": str(indexer.path), "max_grains_per_material": [1, 0]},
                      {**context, "materials": ["Si", "Cu"]})
