"""Exactness of the fast kernels: the sort-based median and the batched cutout gather."""
import numpy as np
import pytest

from laueflow.kernels.cutouts import extract_cutouts, extract_cutouts_batch
from laueflow.kernels.stats import median_last_axis


@pytest.mark.parametrize("shape, dtype", [((50, 7), np.float32), ((40, 8), np.float64), ((30, 1024), np.float32),
                                          ((20, 9), np.int32), ((3, 4, 5), np.uint16)])
def test_median_last_axis_equals_numpy(rng, shape, dtype):
    x = (rng.normal(100, 30, shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 500, shape)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x[0, ..., 2] = np.nan  # a row with a NaN gives NaN, as np.median does
    expected = np.median(x, axis=-1)
    got = median_last_axis(x.copy())
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(median_last_axis(x.copy(), overwrite_input=True), expected)


def test_batched_cutouts_equal_per_image_cutouts(rng):
    images = rng.integers(0, 60000, size=(3, 80, 90)).astype(np.uint16)
    image_index = np.array([0, 0, 1, 2, 2, 2])
    cols = np.array([0, 45, 89, 3, 60, 88])  # border cutouts on both sides
    rows = np.array([0, 40, 79, 77, 2, 40])
    cut, valid, border = extract_cutouts_batch(images, image_index, cols, rows)
    for j, (i, c, r) in enumerate(zip(image_index, cols, rows)):
        c1, v1, b1 = extract_cutouts(images[i], [c], [r])
        np.testing.assert_array_equal(cut[j], c1[0])
        np.testing.assert_array_equal(valid[j], v1[0])
        assert border[j] == b1[0]
    assert border.tolist() == [True, False, True, True, True, True]
