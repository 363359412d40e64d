"""`laueflow evaluate` on a hand-made truth with known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from laueflow.pipeline.evaluate import (check_evaluated, check_stores, evaluate, format_report, segmentation_derived,
                                       with_segmentation)

NAN = np.nan


def _results():
    col = np.full((1, 3, 4), NAN, np.float32)
    row = np.full((1, 3, 4), NAN, np.float32)
    col[0, 0, :3], row[0, 0, :3] = [10.3, 51.0, 70.0], [10.4, 50.0, 70.0]
    col[0, 1, :2], row[0, 1, :2] = [20.0, 5.0], [21.2, 5.0]
    status = np.array([[0, 0, 1]], np.int8)
    return xr.Dataset({"peak_col": (("y", "x", "peak"), col), "peak_row": (("y", "x", "peak"), row),
                       "status": (("y", "x"), status)})


def _truth():
    # name: (y, x, col, row, amplitude, noise) — expected outcome in the comment
    spots = [
        (0, 0, 10, 10, 100, 10),  # A  SNR 10, found (0.5 px)
        (0, 0, 30, 30, 60, 10),   # B  SNR 6, missed
        (0, 0, 11, 10, 50, 10),   # C  1 px from brighter A: excluded (overlap)
        (0, 0, 50, 50, 30, 10),   # D  SNR 3, found (1.0 px), not in the recall set
        (0, 1, 20, 20, 200, 10),  # E  SNR 20, found (1.2 px)
        (0, 1, 40, 40, 10, 10),   # F  SNR 1, missed
        (0, 2, 10, 10, 100, 1),   # G  at an invalid point: excluded (unprocessed)
    ]
    a = np.array(spots, dtype=float)
    return xr.Dataset({
        "spot_y": ("spot", a[:, 0].astype(int)), "spot_x": ("spot", a[:, 1].astype(int)),
        "spot_col": ("spot", a[:, 2]), "spot_row": ("spot", a[:, 3]),
        "spot_amplitude": ("spot", a[:, 4]), "spot_noise_sigma": ("spot", a[:, 5]),
        "spot_quality": ("spot", np.zeros(len(a), np.int8)),
    })


def test_known_answers():
    report = evaluate(_results(), _truth())
    s = report["metrics"]["peaks"]["summary"]
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(3 / 5)
    assert (s["detected_peaks"], s["true_peaks"]) == (5, 3)
    assert s["position_error_median_px"] == pytest.approx(0.85)
    assert s["position_error_p95_px"] == pytest.approx(0.5 + 0.95 * 0.7)
    assert (s["excluded_overlapping"], s["excluded_unprocessed_points"], s["truth_spots_total"]) == (1, 1, 7)
    rows = report["metrics"]["peaks"]["tables"]["peak recall by SNR (amplitude / noise σ)"]
    assert [(r["truth_spots"], r["found"]) for r in rows] == [(1, 0), (1, 1), (1, 0), (1, 1), (1, 1)]
    assert "recall" in format_report(report)


def test_radius_and_snr_options():
    s = evaluate(_results(), _truth(), radius_px=1.0, snr_min=2.0)["metrics"]["peaks"]["summary"]
    assert s["truth_spots_recall_set"] == 4  # A B D E
    assert s["truth_spots_found"] == 2  # A (0.5), D (1.0); E at 1.2 px is now out
    s = evaluate(_results(), _truth(), overlap_px=0.5)["metrics"]["peaks"]["summary"]
    assert s["excluded_overlapping"] == 0 and s["truth_spots_recall_set"] == 4  # C joins (SNR 5)


def test_metric_skipped_without_variables():
    report = evaluate(_results().drop_vars(["peak_col"]), _truth())
    assert report["metrics"] == {} and "peak_col" in report["skipped"]["peaks"]


def test_wrong_grid_is_an_error():
    truth = _truth()
    truth["spot_x"][:] = 7
    with pytest.raises(ValueError, match="outside the results' 1×3 scan grid"):
        evaluate(_results(), truth)


def test_cli_json(tmp_path, capsys):
    from laueflow.cli.main import main

    # the markers of `laueflow run` and `laueflow simulate` stores, and the truth's scan grid
    _results().assign_attrs(laueflow_results=True, complete=True).to_zarr(
        tmp_path / "r.zarr", zarr_format=3, consolidated=False)
    truth = _truth().assign(n_spots=(("y", "x"), np.array([[4, 2, 1]], np.int32)))
    truth.assign_attrs(truth_format_version=1).to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
    out = tmp_path / "e.json"
    code = main(["evaluate", str(tmp_path / "r.zarr"), "--truth", str(tmp_path / "t.zarr"),
                 "--json", str(out)])
    assert code == 0
    assert "precision" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["metrics"]["peaks"]["summary"]["recall"] == pytest.approx(2 / 3)
    assert data["options"]["radius_px"] == 1.5
    assert main(["evaluate", str(tmp_path / "missing.zarr"), "--truth", str(tmp_path / "t.zarr")]) == 2


def _marked(results_shape=(1, 3), truth_shape=(1, 3)):
    """Minimal stores carrying the markers of `laueflow run` / `laueflow simulate` / `ingest`."""
    results = xr.Dataset({"status": (("y", "x"), np.zeros(results_shape, np.int8))},
                         attrs={"laueflow_results": True, "complete": True})
    truth = xr.Dataset({"n_spots": (("y", "x"), np.zeros(truth_shape, np.int32))},
                       attrs={"truth_format_version": 1})
    scan = xr.Dataset({"images": (("y", "x", "row", "col"), np.zeros((*results_shape, 2, 2), np.uint16))},
                      attrs={"laueflow_version": "0.1"})
    return results, truth, scan


def test_check_stores_kinds_and_shapes():
    results, truth, scan = _marked()
    check_stores(results, truth)
    with pytest.raises(ValueError, match=r"^R is a scan store \(written by `laueflow ingest`\), not a results"):
        check_stores(scan, truth, results_name="R")
    with pytest.raises(ValueError, match=r"^T is a results store \(written by `laueflow run`\), not a truth"):
        check_stores(results, results, truth_name="T")
    with pytest.raises(ValueError, match="R is not a laueflow store"):
        check_stores(xr.Dataset(), truth, results_name="R")
    with pytest.raises(ValueError, match="truth_format_version 99"):
        check_stores(results, truth.assign_attrs(truth_format_version=99))
    results, truth, _ = _marked(truth_shape=(3, 1))
    with pytest.raises(ValueError, match="shapes differ: the results store is 1×3 .* the truth store is 3×1"):
        check_stores(results, truth)


def test_nothing_evaluated_is_an_error():
    report = evaluate(_results().drop_vars(["peak_col"]), _truth())
    with pytest.raises(ValueError, match="no metric could be run: peaks: missing peak_col"):
        check_evaluated(report)
    check_evaluated(evaluate(_results(), _truth()))


def test_partial_results_are_flagged():
    done = xr.Dataset({"chunk_done": (("chunk_y", "chunk_x"), np.array([[True, False]]))})
    partial = _results().merge(done).assign_attrs(laueflow_results=True, complete=False)
    report = evaluate(partial, _truth())
    assert report["complete"] is False and report["tiles_done"] == [1, 2]
    assert "incomplete (1 of 2 tiles)" in format_report(report).splitlines()[0]
    assert evaluate(partial.assign_attrs(complete=True), _truth())["complete"] is True


def test_a_named_segmentation_replaces_the_runs_and_withholds_what_was_computed_from_it():
    derived = segmentation_derived()
    assert {"delegate_orientation", "delegate_material", "point_role", "phase_group"} <= derived
    assert not derived & {"cluster_label", "delegate_y", "features", "matching_rate", "peak_count"}
    run = xr.Dataset({"cluster_label": (("y", "x"), np.zeros((2, 3), np.int32)),
                      "delegate_material": (("y", "x"), np.zeros((2, 3), np.int16)),
                      "peak_count": (("y", "x"), np.full((2, 3), 7, np.int32))})
    named = xr.Dataset({"cluster_label": (("y", "x"), np.arange(6, dtype=np.int32).reshape(2, 3))})
    ds, withheld = with_segmentation(run, named, "six")
    np.testing.assert_array_equal(ds.cluster_label.values, np.arange(6).reshape(2, 3))
    assert "delegate_material" not in ds and (ds.peak_count.values == 7).all()
    assert withheld == {"delegate_material": "computed from the run's own segmentation, not from segmentations/six"}
    with pytest.raises(ValueError, match="segmentation 'empty' has no cluster_label"):
        with_segmentation(run, xr.Dataset(), "empty")
