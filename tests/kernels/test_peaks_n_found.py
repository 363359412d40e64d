"""find_peaks_2d(return_n_found=True): the number of peaks before the max_peaks cut."""
import numpy as np

from laueflow.kernels.peaks import PEAK_FIELDS, find_peaks_2d
from laueflow.kernels.testing import synthetic_frame


def test_n_found_is_the_uncut_count_and_the_kept_peaks_its_head():
    image, spots = synthetic_frame((256, 256), 40, min_snr=30.0, seed=2)  # every spot ≥ 30σ
    uncut = find_peaks_2d(image, max_peaks=None)
    assert len(uncut["col"]) == len(spots["col"]) == 40  # the true spots, all found, nothing else
    for max_peaks in (1, 15, 39, 40, 41, 500):
        kept, n_found = find_peaks_2d(image, max_peaks=max_peaks, return_n_found=True)
        assert n_found == 40 and set(kept) == set(PEAK_FIELDS)
        for key in PEAK_FIELDS:
            np.testing.assert_array_equal(kept[key], uncut[key][:max_peaks])
        # the default return is unchanged: the dict alone
        plain = find_peaks_2d(image, max_peaks=max_peaks)
        assert isinstance(plain, dict) and len(plain["col"]) == min(max_peaks, 40)


def test_n_found_without_peaks_is_zero():
    blank = np.full((64, 64), 1000, np.uint16)
    kept, n_found = find_peaks_2d(blank, return_n_found=True)
    assert n_found == 0 and all(len(kept[k]) == 0 for k in PEAK_FIELDS)
    image = np.full((64, 80), 1000, np.uint16)
    image[20, 20] = 1100  # above 6σ of a flat frame, below threshold_counts
    assert find_peaks_2d(image, threshold_counts=500, return_n_found=True)[1] == 0
