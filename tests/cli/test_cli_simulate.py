"""`laueflow simulate --out`: a file is not a folder; --overwrite deletes only what simulate wrote."""
from __future__ import annotations

import json

import pytest

from laueflow.cli.main import main

SMALL = ["--grains", "1", "--quiet", "--prefix", "img"]


def _simulate(out, *extra, shape="1x2"):
    return main(["simulate", "--out", str(out), "--shape", shape, *SMALL, *extra])


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_is_a_file(tmp_path, capsys, overwrite):
    out = tmp_path / "scan.txt"
    out.write_text("my notes")
    assert _simulate(out, *overwrite) == 2
    assert f"--out {out} is a file, not a folder; choose a folder" in capsys.readouterr().err
    assert out.read_text() == "my notes"


def test_overwrite_refuses_files_simulate_did_not_write(tmp_path, capsys):
    out = tmp_path / "beamtime"
    (out / "images").mkdir(parents=True)
    (out / "calib.det").write_text("my real calibration")
    (out / "images" / "img_0000.tif").write_bytes(b"my real image")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert _simulate(out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "calib.det" in err and "img_0000.tif" in err and "did not write" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing deleted, nothing added
    assert (out / "calib.det").read_text() == "my real calibration"
    assert (out / "images" / "img_0000.tif").read_bytes() == b"my real image"


def test_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "sim"
    assert _simulate(out) == 0
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["written_by"] == "laueflow simulate"
    assert sorted(manifest["files"]) == ["calib.det", "images/img_0000.tif", "images/img_0001.tif",
                                         "mask.tif", "truth.zarr"]
    (out / "notes.txt").write_text("keep me")
    assert _simulate(out, "--overwrite", shape="1x1") == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img_0000.tif"]  # img_0001 was ours
    assert "images/img_0001.tif" not in json.loads((out / "simulation.json").read_text())["files"]
    # a file the user added among simulate's images is not simulate's: refused, kept
    (out / "images" / "img_0005.tif").write_bytes(b"mine")
    capsys.readouterr()
    assert _simulate(out, "--overwrite") == 2
    assert "images/img_0005.tif" in capsys.readouterr().err
    assert (out / "images" / "img_0005.tif").read_bytes() == b"mine" and (out / "truth.zarr").is_dir()


def test_overwrite_refuses_a_manifest_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "calib.det").write_text("mine")
    (out / "simulation.json").write_text(json.dumps({"files": ["calib.det"]}))
    assert _simulate(out, "--overwrite") == 2
    assert "simulation.json" in capsys.readouterr().err
    assert (out / "calib.det").read_text() == "mine"


@pytest.mark.parametrize("material, law, hint", [("quartz", "sigma3", "use --twin-law dauphine"),
                                                  ("Cu", "dauphine", "use --twin-law sigma3"),
                                                  ("Ti", "dauphine", "laueflow simulates no twin law of this crystal")])
def test_twins_need_a_twin_law_of_the_material(tmp_path, capsys, material, law, hint):
    """Σ3 (60° about [111]) is a twin of cubic crystals only, Dauphiné (60° about c) of trigonal
    ones; anything else would be a made-up orientation relation, so nothing is written."""
    out = tmp_path / "scan"
    assert _simulate(out, "--material", material, "--twins", "0.5", "--twin-law", law) == 2
    err = capsys.readouterr().err
    assert f"--twin-law {law} is not a twin of {material}" in err and hint in err
    assert not out.exists()
