"""Index-free phase grouping: descriptors of real simulated patterns (Cu, Si, GaN, W) group by
phase whatever the orientations."""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.kernels.phase_groups import cluster_descriptors, group_clusters, spot_descriptors
from laueflow.physics.geometry import qhat_to_angles
from laueflow.kernels.vectors import angles_to_qhat
from laueflow.physics.orientations import random_orientations
from peak_lists import simulated_peak_lists as _lists


def test_descriptors_count_spots_and_do_not_depend_on_the_orientation():
    tth, chi = _lists("Cu", 1, 3)
    count, hist = spot_descriptors(tth, chi)
    assert count[0] == np.isfinite(tth).sum() > 20
    assert hist.shape == (1, 30) and np.isclose(hist.sum(), 1.0)
    # the same spots turned by a rotation: the pair angles, hence the histogram, are the same
    q = angles_to_qhat(tth[0, :count[0]], chi[0, :count[0]])
    turn = random_orientations(1, 9)[0]
    turned_tth, turned_chi = qhat_to_angles(q @ turn.T)
    count2, hist2 = spot_descriptors(turned_tth[None], turned_chi[None])
    assert count2[0] == count[0]
    np.testing.assert_allclose(hist2, hist, atol=1.5 / (count[0] * (count[0] - 1) / 2))  # ≤ 1 pair changes bin
    few = spot_descriptors(np.array([[10.0, np.nan]]), np.array([[0.0, np.nan]]))
    assert few[0][0] == 1 and not few[1].any()  # one spot: no pair


@pytest.mark.parametrize("a, b", [("Cu", "Si"), ("Si", "GaN"), ("Cu", "W"), ("Si", "Ge")])
def test_clusters_of_two_phases_are_grouped_by_phase(a, b):
    tth_a, chi_a = _lists(a, 6, 1)
    tth_b, chi_b = _lists(b, 6, 2)
    tth, chi = np.concatenate([tth_a, tth_b]), np.concatenate([chi_a, chi_b])
    order = np.random.default_rng(0).permutation(12)  # clusters in any order
    count, hist = spot_descriptors(tth[order], chi[order])
    log_count, cluster_hist, points = cluster_descriptors(np.arange(12), count, hist, 12)
    assert (points == 1).all()
    groups = group_clusters(log_count, cluster_hist, 2)
    phase = (order >= 6).astype(int)
    fewer = int(np.median(count[phase == 1]) < np.median(count[phase == 0]))
    np.testing.assert_array_equal(groups, phase ^ fewer)  # group 0: the phase with fewer spots


def test_cluster_descriptors_take_the_least_mixed_point_and_edge_cases():
    hist = np.eye(3)[[0, 0, 1, 2]]
    # the point with the fewest spots (≥ 2) of each cluster; a point without a cluster is ignored
    log_count, out, points = cluster_descriptors(np.array([0, 0, 0, -1]), np.array([40, 1, 12, 5]), hist, 3)
    assert np.isclose(log_count[0], np.log(12)) and points.tolist() == [2, 0, 0]
    np.testing.assert_allclose(out[0], [0, 1, 0])
    assert np.isnan(log_count[1:]).all()
    groups = group_clusters(np.array([1.0, np.nan, 2.0, 3.0]), np.zeros((4, 2)), 1)
    assert groups.tolist() == [0, -1, 0, 0]  # one phase; a cluster without a descriptor: −1
    assert group_clusters(np.array([3.0, 1.0]), np.zeros((2, 2)), 3).tolist() == [1, 0]  # fewer clusters than groups
    assert group_clusters(np.full(3, 2.0), np.ones((3, 2)), 2).tolist() == [0, 0, 0]  # all alike: one group
    assert group_clusters(np.full(2, np.nan), np.zeros((2, 2)), 2).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="n_groups"):
        group_clusters(np.zeros(2), np.zeros((2, 2)), 0)
