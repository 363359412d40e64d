"""The best-grain rule shared by the delegate map, the evaluation and the results' maps: the
brightest indexed grain, then the highest matching rate, then the first slot."""
from __future__ import annotations

import numpy as np

from laueflow.stages.grain_choice import best_grains, best_indexed_grain, brightest_grain, grain_peak_intensity


def test_grain_peak_intensity_is_the_mean_height_of_each_grain_s_peaks():
    peak_grain = np.array([[0, 0, 1, -1, 0], [1, 1, -1, -1, -1]])
    height = np.array([[10.0, 80.0, 5.0, 99.0, 30.0], [7.0, 9.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(grain_peak_intensity(peak_grain, height, 3),  # (median: 30)
                                  [[40.0, 5.0, np.nan], [np.nan, 8.0, np.nan]])


def test_brightness_decides_first_then_the_matching_rate_then_the_first_slot():
    indexed = np.array([[True, True], [True, True], [True, True], [False, True], [False, False]])
    rate = np.array([[100.0, 100.0], [60.0, 90.0], [80.0, 80.0], [99.0, 40.0], [np.nan, np.nan]])
    height = np.array([[500.0, 1700.0], [np.nan, np.nan], [300.0, 300.0], [9e3, 10.0], [np.nan, np.nan]])
    # row 0: equal rates, the brighter second; row 1: no heights → rate; row 2: full tie → first;
    # row 3: the bright slot is not indexed; row 4: nothing indexed
    np.testing.assert_array_equal(best_indexed_grain(indexed, rate, height), [1, 1, 0, 1, -1])
    np.testing.assert_array_equal(best_indexed_grain(indexed, rate), [0, 1, 0, 1, -1])


def test_best_grains_counts_only_grains_with_a_material_and_an_orientation():
    orientation = np.broadcast_to(np.eye(3), (2, 2, 3, 3)).copy()
    orientation[1, 1] = np.nan
    material = np.array([[-1, 0], [0, 0]])
    height = np.array([[900.0, 1.0], [1.0, 900.0]])
    np.testing.assert_array_equal(best_grains(orientation, material, None, height), [1, 0])


def test_brightest_grain_keeps_the_leading_dims_and_ignores_peaks_of_empty_slots():
    # (2, 2) points, 3 grain slots, 4 peaks; slot 2 is empty but some peaks point at it
    rate = np.full((2, 2, 3), np.nan)
    rate[..., 0], rate[..., 1] = 100.0, 100.0
    rate[1, 1] = np.nan  # no grain at this point
    peak_grain = np.array([0, 1, 1, 2]) * np.ones((2, 2, 1), int)
    heights = np.array([[[50.0, 400, 300, 9e4], [800, 100, 90, 9e4]],
                        [[50.0, 10, 20, 9e4], [1.0, 2, 3, 4]]])
    np.testing.assert_array_equal(brightest_grain(rate, peak_grain, heights), [[1, 0], [0, -1]])
