"""The ``laueflow evaluate`` metrics called directly on numpy arrays (no stores, no xarray)."""
import numpy as np
import pytest

from laueflow.stages.evaluation import DEFAULT_OPTIONS, METRICS, StoreArrays
from laueflow.stages.evaluation.matching import peak_truth_table, spots_by_point
from laueflow.stages.evaluation.metrics import processed_points
from laueflow.stages.evaluation.peaks import peak_metrics


def test_builtin_metrics_are_registered_in_order():
    assert [m.name for m in METRICS][:4] == ["peaks", "descriptors", "indexing", "strain"]


def test_peak_truth_matching():
    peak_col = np.array([[[10.3, 30.0, np.nan], [5.0, np.nan, np.nan]]])  # (y=1, x=2, peak=3)
    peak_row = np.array([[[10.4, 31.5, np.nan], [5.0, np.nan, np.nan]]])
    spot_y, spot_x = np.array([0, 0, 0]), np.array([1, 0, 0])
    spot_col, spot_row = np.array([5.5, 10.0, 30.0]), np.array([5.0, 10.0, 30.0])
    assert [list(s) for s in spots_by_point(spot_y, spot_x, 1, 2)] == [[1, 2], [0]]
    table = peak_truth_table(peak_col, peak_row, spot_y, spot_x, spot_col, spot_row, radius_px=1.0)
    assert table.tolist() == [[[1, -1, -1], [0, -1, -1]]]  # (30, 31.5) is 1.5 px from its spot


def test_peak_metrics_on_arrays():
    results = StoreArrays({"peak_col": np.array([[[10.3, 70.0]]]), "peak_row": np.array([[[10.4, 70.0]]])})
    truth = StoreArrays({"spot_y": np.array([0, 0]), "spot_x": np.array([0, 0]),
                         "spot_col": np.array([10.0, 30.0]), "spot_row": np.array([10.0, 30.0]),
                         "spot_amplitude": np.array([100.0, 100.0]), "spot_noise_sigma": np.array([10.0, 10.0])})
    summary = peak_metrics(results, truth, DEFAULT_OPTIONS)["summary"]
    assert summary["recall"] == pytest.approx(0.5) and summary["precision"] == pytest.approx(0.5)
    assert summary["position_error_median_px"] == pytest.approx(0.5)


def test_points_the_peak_search_did_not_process_are_left_out():
    """peak_count −1: a point a delegates-first run did not select; status 1: an invalid image."""
    col = np.array([[[10.0], [np.nan], [np.nan]]])
    results = StoreArrays({"peak_col": col, "peak_row": col, "peak_count": np.array([[1, -1, 0]]),
                           "status": np.array([[0, 0, 0]], np.int8)})
    truth = StoreArrays({"spot_y": np.zeros(3, int), "spot_x": np.array([0, 1, 2]),
                         "spot_col": np.full(3, 10.0), "spot_row": np.full(3, 10.0),
                         "spot_amplitude": np.full(3, 100.0), "spot_noise_sigma": np.full(3, 10.0)})
    summary = peak_metrics(results, truth, DEFAULT_OPTIONS)["summary"]
    assert summary["excluded_unprocessed_points"] == 1 and summary["recall"] == pytest.approx(0.5)
    assert processed_points(results, (1, 3)).tolist() == [[True, False, True]]
    invalid = StoreArrays({**results.arrays, "status": np.array([[0, 0, 1]], np.int8)})
    assert processed_points(invalid, (1, 3)).tolist() == [[True, False, False]]
    assert peak_metrics(invalid, truth, DEFAULT_OPTIONS)["summary"]["recall"] == pytest.approx(1.0)
