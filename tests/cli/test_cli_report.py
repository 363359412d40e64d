"""`laueflow report`: every available map as a PNG, one HTML page linking and embedding them all,
with the scan summary; maps the store cannot give are listed with the reason."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import json
import re

import pytest

from laueflow.cli.main import main


@pytest.fixture(scope="module")
def report(results_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    evaluation = out.parent / "evaluation.json"
    evaluation.write_text(json.dumps({"metrics": {"peaks": {"summary": {"recall": 0.987}}}, "skipped": {}}))
    assert main(["report", str(results_store[0]), "--out", str(out), "--evaluation", str(evaluation),
                 "--frame", "lab"]) == 0
    return out


def test_the_page_links_and_embeds_every_png(report):
    page = (report / "index.html").read_text()
    pngs = sorted(p.name for p in report.glob("*.png"))
    links = sorted(set(re.findall(r"href='([^']+)'", page)))
    assert links == pngs  # every link resolves to a file, every file is linked
    assert page.count("src='data:image/png;base64,") == len(pngs)  # self-contained
    expected = {"status", "ipf_x", "ipf_y", "ipf_z", "ipf_z_delegates", "matching_rate", "peak_count", "von_mises", "strain_xx",
                "strain_yz", "pole_figure_100", "pole_figure_111", "strain_histograms", "descriptor_histograms",
                "clusters", "pca_labeler_rgb", "direct_rgb", "segmentation_scores"}
    assert expected <= {p[:-4] for p in pngs}
    assert all((report / p).stat().st_size > 5000 for p in pngs)


def test_the_page_summarises_the_scan(report):
    page = (report / "index.html").read_text()
    assert "4 × 5 = 20" in page
    assert "<td>3</td><td>not_indexed</td><td>1</td>" in page and "<td>0</td><td>ok</td><td>17</td>" in page
    assert "<td>index</td><td>2.500</td>" in page  # stage timings
    assert "ab" * 32 in page  # model hash
    assert "recall" in page and "0.987" in page  # the evaluation table
    assert "Detector image" in page and "not reachable" in page  # no scan store: said, not drawn


def test_bad_arguments(results_store, tmp_path, capsys):
    assert main(["report", str(results_store[0]), "--out", str(tmp_path / "r"), "--point", "9,9"]) == 2
    assert "outside the 4×5 scan" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_truth_of_another_scan_is_refused_as_by_evaluate(results_store, tmp_path, capsys):
    from laueflow.synth.scan import simulate_scan

    simulate_scan(tmp_path / "sim", shape=(1, 3), grains=1, seed=0, progress=False)
    assert main(["report", str(results_store[0]), "--out", str(tmp_path / "r"),
                 "--truth", str(tmp_path / "sim" / "truth.zarr")]) == 2
    assert f"scan shapes differ: {results_store[0]} is 4×5 (y × x)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_segmentation_groups_get_their_maps(tmp_path):
    import warnings

    import numpy as np
    import xarray as xr

    import laueflow
    import results_factory as rf
    from laueflow.cli.report import _segmentation_figures

    path = tmp_path / "seg.zarr"
    rf.build(path, attrs_update={"segmentations": [{"name": "k3 pcs8", "group": "segmentations/k3"}]})
    labels = np.arange(rf.NY * rf.NX, dtype=np.int32).reshape(rf.NY, rf.NX) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated metadata is not in the v3 spec
        xr.Dataset({"cluster_label": (("y", "x"), labels)}).to_zarr(path, group="segmentations/k3", mode="w")
    figures = _segmentation_figures(path, laueflow.open_results(path))
    assert [stem for stem, _, _ in figures] == ["seg_k3_pcs8_clusters", "seg_k3_pcs8_pca_labeler_rgb",
                                                "seg_k3_pcs8_direct_rgb", "seg_k3_pcs8_scores"]
    clusters = figures[0][2]()
    assert set(np.unique(clusters.axes[0].images[0].get_array().compressed())) == {0, 1, 2}


def test_the_summary_says_whether_the_features_were_divided_by_a_monitor():
    from laueflow.cli.report import monitor_use

    with_monitor = {"laueflow_provenance": {"monitor_sha256": "ab" * 32}}
    assert monitor_use({}).startswith("none")
    assert monitor_use({**with_monitor, "workflow": {"stages": ["peaks", "features"]}}) == \
        f"recorded (sha256 {'ab' * 6}…): features divided by it"
    assert monitor_use({**with_monitor, "workflow": {"stages": [{"features": {"normalize": "none"}}]}}).endswith("not used")
    assert monitor_use({**with_monitor, "workflow": {"stages": ["peaks"]}}).endswith("not used")


def test_the_delegate_map_status_is_counted_by_name():
    from pathlib import Path

    import numpy as np
    import xarray as xr

    from laueflow.cli.report import delegate_status_rows, render_html

    status = np.array([[0, 0, 3], [4, 4, 1]], np.int8)
    ds = xr.Dataset({"delegate_map_status": (("y", "x"), status)})
    assert delegate_status_rows(ds) == [(0, "ok", 2), (1, "no_cluster", 1), (3, "cluster_inhomogeneous", 1),
                                        (4, "nearest_indexed_point", 2)]
    page = render_html(ds, Path("r.zarr"), [], [], None)
    assert "Delegate map status" in page and "<td>4</td><td>nearest_indexed_point</td><td>2</td>" in page
