"""`laueflow demo` checks every argument before it creates anything (no full demo here: minutes)."""
from __future__ import annotations

import pytest

from laueflow.cli.main import main

BAD = [
    (["--material", "Xx"], "unknown material"),
    (["--shape", "0x3"], "--shape"),
    (["--shape", "3by3"], "--shape"),
    (["--grains", "0"], "--grains"),
    (["--seed", "-1"], "--seed"),
    (["--workers", "two"], "--workers"),
    (["--workers", "0"], "--workers"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_creates_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # an empty folder of the user's stays empty (and does not block the next demo)
    out.mkdir()
    assert main(["demo", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "demo"
    out.write_text("mine")
    assert main(["demo", "--out", str(out)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_demo_stages_fit_the_scan():
    from laueflow.cli.demo import DEMO_STAGES, demo_stages

    assert demo_stages(100) == DEMO_STAGES
    assert "segmentation" in DEMO_STAGES and "features" in DEMO_STAGES and "delegate_map" in DEMO_STAGES
    small = demo_stages(12)
    assert small[DEMO_STAGES.index("segmentation")] == {"segmentation": {"pcs": 12}}
    assert [s if isinstance(s, str) else next(iter(s)) for s in small] == DEMO_STAGES
    assert demo_stages(2) == ["peaks", "angles", "descriptors", "index", "strain", "scan_summary"]


def test_the_demo_runs_the_whole_job_with_segmentation(tmp_path, capsys):
    """The README's main job on a 4 × 4 scan of two grains: both halves of the mission, scored
    against the simulator's truth (measured: ARI 1.0, every point within 1°)."""
    import json

    import xarray as xr

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--shape", "4x4", "--grains", "2", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "peaks → features → angles → descriptors → index → strain → scan_summary → segmentation → delegate_map" in text
    assert "segmentation: {pcs: 16}" in (out / "workflow.yaml").read_text()
    report = json.loads((out / "evaluation.json").read_text())
    assert report["complete"] and report["skipped"] == {}
    metrics = report["metrics"]
    assert metrics["indexing"]["summary"]["map_fraction_within_1deg_of_truth"] >= 0.9
    assert metrics["segmentation"]["summary"]["clusters"] == 2
    assert metrics["segmentation"]["summary"]["ari_domain_map"] >= 0.9
    assert metrics["delegate_map"]["summary"]["fraction_within_1deg_of_truth"] >= 0.9
    with xr.open_zarr(out / "results.zarr") as ds:
        assert ds.attrs["complete"] is True
        assert (ds.cluster_label.values >= 0).all() and ds.features.shape == (4, 4, 256)
    # a named segmentation is scored only when asked for, and never mixed with the run's delegates
    assert main(["segment", str(out / "results.zarr"), "--k", "3", "--pcs", "8", "--name", "three"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "results.zarr"), "--truth", str(out / "truth.zarr")]) == 0
    assert "segmentation scored: the run's own (root variables); named segmentations in this store: three" \
        in capsys.readouterr().out
    scored = tmp_path / "three.json"
    assert main(["evaluate", str(out / "results.zarr"), "--truth", str(out / "truth.zarr"), "--segmentation", "three",
                 "--json", str(scored)]) == 0
    assert "segmentation scored: segmentations/three" in capsys.readouterr().out
    report = json.loads(scored.read_text())
    assert report["metrics"]["segmentation"]["summary"]["clusters"] == 3
    assert report["metrics"]["indexing"] == metrics["indexing"]
    assert "computed from the run's own segmentation, not from segmentations/three" in report["skipped"]["delegate_map"]
    assert main(["evaluate", str(out / "results.zarr"), "--truth", str(out / "truth.zarr"),
                 "--segmentation", "four"]) == 2
    assert "has no finished segmentation named 'four'; its segmentations: three" in capsys.readouterr().err
