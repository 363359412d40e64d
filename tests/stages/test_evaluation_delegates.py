"""The delegate_map metric of `laueflow evaluate` on hand-made stores' arrays."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from laueflow.physics.materials import get_material
from laueflow.physics.symmetry import rotation_operators
from laueflow.stages.evaluation.delegates import delegate_map_metrics
from laueflow.stages.evaluation.metrics import StoreArrays


def _rot(axis, deg):
    return Rotation.from_rotvec(np.deg2rad(deg) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()


def test_fractions_and_medians_against_truth_and_indexing():
    r = _rot([1, 2, 3], 50)
    cubic = rotation_operators(get_material("Cu"))[7]
    truth_ub = np.full((2, 2, 2, 3, 3), np.nan)
    truth_ub[..., 0, :, :] = r
    truth_ub[1, 1, 0] = _rot([0, 0, 1], 30) @ r  # another grain here
    truth = StoreArrays({"grain_map": np.array([[0, 0], [0, 1]]), "grain_id": np.array([[[0, -1], [0, -1]],
                                                                                       [[0, -1], [1, -1]]]),
                         "orientation_matrix": truth_ub, "grain_material": np.zeros((2, 2, 2), np.int16)},
                        {"materials": ["Cu"]})
    delegate = np.broadcast_to(r, (2, 2, 3, 3)).copy()
    delegate[0, 1] = _rot([1, 0, 0], 0.5) @ r @ cubic  # 0.5° off, a symmetry-equivalent description
    delegate[1, 0] = np.nan  # unmapped
    material = np.array([[0, 0], [-1, 0]], np.int16)
    full = np.full((2, 2, 2, 3, 3), np.nan)
    full[:, :, 1] = r  # the best grain is the second (matching rate)
    full[:, :, 0] = _rot([0, 1, 0], 20) @ r
    results = StoreArrays({"delegate_orientation": delegate, "delegate_material": material,
                           "delegate_map_status": np.array([[0, 0], [3, 0]], np.int8),
                           "orientation_matrix": full, "grain_material": np.zeros((2, 2, 2), np.int16),
                           "matching_rate": np.tile(np.array([40.0, 90.0], np.float32), (2, 2, 1))},
                          {"materials": ["Cu"]})
    s = delegate_map_metrics(results, truth, {})["summary"]
    assert s["points_with_truth"] == 4 and s["points_mapped"] == 3
    assert s["fraction_within_1deg_of_truth"] == 0.5  # (0,0) and (0,1); (1,0) unmapped, (1,1) 30° off
    assert s["misorientation_vs_truth_median_deg"] == pytest.approx(0.5, abs=1e-6)
    assert s["points_inhomogeneous_cluster"] == 1
    assert s["points_compared_with_indexing"] == 3 and s["fraction_within_1deg_of_indexing"] == 1.0
    assert s["indexing_fraction_within_1deg_of_truth"] == 0.75


def test_phase_map_ari_from_the_delegates_material():
    r = _rot([1, 2, 3], 50)
    ub = np.broadcast_to(r, (2, 3, 1, 3, 3)).copy()
    true_material = np.array([[0, 0, 1], [0, 1, 1]], np.int16)
    truth = StoreArrays({"grain_map": np.array([[0, 0, 1], [0, 1, 1]]),
                         "grain_id": np.array([[0, 0, 1], [0, 1, 1]])[..., None],
                         "orientation_matrix": ub, "grain_material": true_material[..., None]},
                        {"materials": ["Cu", "Si"]})
    results = {"delegate_orientation": ub[:, :, 0], "delegate_material": true_material}
    s = delegate_map_metrics(StoreArrays(results, {"materials": ["Cu", "Si"]}), truth, {})["summary"]
    assert s["ari_phase_map"] == 1.0
    wrong = {**results, "delegate_material": np.array([[0, 0, 1], [0, 0, 1]], np.int16)}  # one point of Si mapped Cu
    s = delegate_map_metrics(StoreArrays(wrong, {"materials": ["Cu", "Si"]}), truth, {})["summary"]
    assert 0 < s["ari_phase_map"] < 1
    one_phase = StoreArrays({**truth.arrays, "grain_material": np.zeros((2, 3, 1), np.int16)}, {"materials": ["Cu"]})
    s = delegate_map_metrics(StoreArrays(results, {"materials": ["Cu", "Si"]}), one_phase, {})["summary"]
    assert "ari_phase_map" not in s


def test_the_map_metric_scores_the_brightest_grain_against_the_dominant_true_grain():
    from laueflow.stages.evaluation.stage_metrics import best_grain_map_summary

    parent, twin = _rot([1, 2, 3], 50), _rot([1, 1, 1], 60) @ _rot([1, 2, 3], 50)
    truth_ub = np.stack([np.broadcast_to(parent, (1, 3, 3, 3)), np.broadcast_to(twin, (1, 3, 3, 3))], axis=2)
    truth = StoreArrays({"grain_map": np.array([[0, 0, 1]]), "grain_id": np.array([[[0, 1], [0, 1], [0, 1]]]),
                         "orientation_matrix": truth_ub, "grain_material": np.zeros((1, 3, 2), np.int16)},
                        {"materials": ["Cu"]})
    # three points see both variants, both indexed at 100 %, the twin listed first; the last point
    # is not indexed. The parent's spots are bright at points 0, 1; the twin's at point 2.
    found = np.stack([np.broadcast_to(twin, (1, 3, 3, 3)), np.broadcast_to(parent, (1, 3, 3, 3))], axis=2).copy()
    material = np.zeros((1, 3, 2), np.int16)
    peak_grain = np.tile(np.array([0, 1, 0, 1], np.int16), (1, 3, 1))
    height = np.array([[[100.0, 900, 120, 800], [50, 700, 60, 650], [900, 100, 800, 90]]])
    results = StoreArrays({"orientation_matrix": found, "grain_material": material,
                           "matching_rate": np.full((1, 3, 2), 100.0), "peak_grain": peak_grain,
                           "peak_intensity": height}, {"materials": ["Cu"]})
    materials = [get_material("Cu")]
    s = best_grain_map_summary(results, truth, materials)
    assert s == {"map_points_with_truth": 3, "map_points_not_indexed": 0, "map_fraction_within_1deg_of_truth": 1.0}
    by_rate = StoreArrays({k: v for k, v in results.arrays.items() if k != "peak_intensity"}, results.attrs)
    assert best_grain_map_summary(by_rate, truth, materials)["map_fraction_within_1deg_of_truth"] == 0.3333
