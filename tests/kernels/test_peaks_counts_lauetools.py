"""Count thresholds and the LaueTools method of the peak search (issue #12: LaueTools' numbers).

No LaueTools here: its behaviour is restated from its source (``laueflow/kernels/peaks.py``,
"LaueTools method") and checked on frames with known spots; the side-by-side comparison with
LaueTools itself is ``benchmarks/bench_peaks_vs_lauetools.py``.
"""
import numpy as np
import pytest
from scipy import ndimage

from laueflow.kernels.peaks import (LAUETOOLS_BACKGROUND_PX, _lauetools_hot, find_peaks_2d)
from laueflow.kernels.testing import synthetic_frame
from laueflow.pipeline.workflow import _parse_stage
from laueflow.stages.peaks import LAUETOOLS_BM32, STAGE, find_peaks


def _frame(spots, shape=(128, 160), noise=2.0, halo=True, seed=0):
    """Offset 1000, a smooth halo (+60 … +0 counts), Gaussian noise; ``spots`` = (row, col,
    peak height above the background, σ px), centred on pixels so the hottest pixel is the height."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    image = 1000.0 + (60.0 * np.exp(-((rr - 40) ** 2 + (cc - 50) ** 2) / (2 * 80.0 ** 2)) if halo else 0.0)
    for r, c, a, s in spots:
        image = image + a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s ** 2))
    image = image + rng.normal(0.0, noise, shape)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _positions(res):
    return set(zip(res["row_int"].tolist(), res["col_int"].tolist()))


# --------------------------------------------------------------------------- threshold_counts


def test_counts_threshold_is_the_pixel_height_above_the_local_background():
    """threshold_counts 100: spots whose hottest pixel is 115 counts above the (halo) background
    are found, 85 not — also a broad spot (σ 3 px) whose 3×3 box sum is ≈ 9 × 80 counts above."""
    above = [(30, 40, 115.0, 1.0), (90, 120, 115.0, 1.2), (60, 20, 118.0, 0.9)]
    below = [(30, 120, 85.0, 1.0), (95, 40, 85.0, 1.3), (60, 80, 80.0, 3.0)]
    image = _frame(above + below)
    for kwargs in ({"threshold_sigma": None}, {}):  # alone, and on top of the 6σ detection
        res = find_peaks_2d(image, threshold_counts=100, **kwargs)
        assert _positions(res) == {(r, c) for r, c, _, _ in above}, kwargs
        assert (res["intensity"] > 100).all()
    # every spot is there at a lower count threshold (the misses above are the threshold's doing)
    assert len(find_peaks_2d(image, threshold_sigma=None, threshold_counts=60)["col"]) == 6


def test_isolated_noise_pixels_never_pass_a_count_threshold():
    """Pure noise (σ 4) and a 3×3 patch 20 counts above the background (box sum +180 ≫ 60, no
    pixel above 60): nothing passes threshold_counts 30 / 60; a single pixel 70 above does."""
    image = _frame([], shape=(256, 256), noise=4.0, halo=False, seed=3).astype(np.int32)
    assert len(find_peaks_2d(image.astype(np.uint16), threshold_sigma=None, threshold_counts=30)["col"]) == 0
    image[100:103, 100:103] += 20
    assert len(find_peaks_2d(image.astype(np.uint16), threshold_sigma=None, threshold_counts=60)["col"]) == 0
    image[200, 50] += 90
    res = find_peaks_2d(image.astype(np.uint16), threshold_sigma=None, threshold_counts=60)
    assert _positions(res) == {(200, 50)}


def test_counts_only_search_keeps_the_measured_bars():
    """threshold_counts alone on the kernel's own synthetic frames: every spot whose peak is
    well above the threshold is found, nothing is found away from a true spot."""
    for seed in range(3):
        image, spots = synthetic_frame((384, 400), 120, seed=seed, min_snr=2.0)
        res = find_peaks_2d(image, threshold_sigma=None, threshold_counts=40, max_peaks=None)
        det = np.c_[res["col_int"], res["row_int"]]
        truth = np.c_[spots["col"], spots["row"]]
        d_truth = np.hypot(*(truth[:, None, :] - det[None, :, :]).transpose(2, 0, 1)).min(axis=1)
        strong = spots["amplitude"] > 60
        assert (d_truth[strong] <= 1.5).mean() >= 0.98
        d_det = np.hypot(*(det[:, None, :] - truth[None, :, :]).transpose(2, 0, 1)).min(axis=1)
        assert (d_det <= 2.0).all()


# --------------------------------------------------------------------------- LaueTools method


@pytest.mark.parametrize("shape, threshold", [((200, 232), 60.0), ((211, 250), 60.0), ((211, 250), 3.0)])
def test_lauetools_background_is_its_minimum_filter(shape, threshold):
    """D = A − minimum_filter(A, 10) (LaueTools' auto-background, A−B) exactly: at the pixels the
    block bound lets through (threshold 60) and over the whole frame (threshold 3: many pixels)."""
    image, _ = synthetic_frame(shape, 30, seed=1)
    img = image.astype(np.float32)
    hot, d = _lauetools_hot(img, threshold, np)
    ref = (img - ndimage.minimum_filter(img, size=LAUETOOLS_BACKGROUND_PX)).ravel()
    np.testing.assert_array_equal(hot, np.flatnonzero(ref > threshold))
    np.testing.assert_array_equal(d, ref[hot])
    assert LAUETOOLS_BACKGROUND_PX == 10


def test_lauetools_neighbour_rule_is_a_radius():
    """min_distance_px 10 = PixelNearRadius: two spots 12 px apart diagonally are both found
    (the square window of the laueflow method drops the fainter), 7.8 px apart only the brighter;
    exactly 10 px apart both (LaueTools drops only strictly closer ones)."""
    pairs = {"diag12": ((40, 40, 3000.0), (48, 49, 800.0)),   # 12.04 px, Chebyshev 9
             "near8": ((40, 110, 3000.0), (45, 116, 800.0)),  # 7.8 px
             "exact10": ((95, 40, 3000.0), (101, 48, 800.0))}  # 10.0 px
    spots = [(r, c, a, 1.0) for pair in pairs.values() for r, c, a in pair]
    image = _frame(spots, shape=(128, 160))
    res = find_peaks_2d(image, method="lauetools", threshold_counts=60, min_distance_px=10, box_size_px=8)
    found = _positions(res)
    assert found == {(40, 40), (48, 49), (40, 110), (95, 40), (101, 48)}
    square = _positions(find_peaks_2d(image, threshold_sigma=None, threshold_counts=60, min_distance_px=10))
    assert (40, 40) in square and (48, 49) not in square


def test_lauetools_purge_drops_a_peak_next_to_a_dropped_brighter_one():
    """purgeClosePoints2: A > B > C in a row 8 px apart, radius 10: B goes (A is brighter and
    near), and C goes too (B is brighter and near, though B itself is dropped)."""
    image = _frame([(60, 40, 5000.0, 1.0), (60, 48, 2000.0, 1.0), (60, 56, 900.0, 1.0)])
    res = find_peaks_2d(image, method="lauetools", threshold_counts=60, min_distance_px=10)
    assert _positions(res) == {(60, 40)}
    res = find_peaks_2d(image, method="lauetools", threshold_counts=60, min_distance_px=8)
    assert _positions(res) == {(60, 40), (60, 48), (60, 56)}  # 8 px is not closer than 8


def test_lauetools_method_threshold_outputs_and_dead_pixels():
    """The threshold is on D (pixel − its 10-px minimum filter): a spot 70 counts above that is
    found at 60 and not at 80; intensity + background = the pixel; a dead (0) pixel makes no peak."""
    image = _frame([(30, 40, 200.0, 1.0), (90, 120, 70.0, 1.0)], noise=1.0)
    image[60, 80] = 0  # dead pixel: the minimum filter would be 0 in its 10x10 neighbourhood
    img = image.astype(np.float32)
    d_ref = img - ndimage.minimum_filter(img, size=10)
    res = find_peaks_2d(image, method="lauetools", threshold_counts=60)
    assert _positions(res) == {(30, 40), (90, 120)}
    np.testing.assert_array_equal(res["intensity"], d_ref[res["row_int"], res["col_int"]])
    np.testing.assert_array_equal(res["intensity"] + res["background"], img[res["row_int"], res["col_int"]])
    assert _positions(find_peaks_2d(image, method="lauetools", threshold_counts=80)) == {(30, 40)}
    assert abs(res["col"][0] - 40) < 0.2 and abs(res["row"][0] - 30) < 0.2  # laueflow's centroid
    mask = np.zeros(image.shape, bool)
    mask[28:33, 38:43] = True
    assert _positions(find_peaks_2d(image, method="lauetools", threshold_counts=60, mask=mask)) == {(90, 120)}


def test_lauetools_method_needs_counts_and_a_known_method():
    image = _frame([])
    with pytest.raises(ValueError, match="method lauetools needs threshold_counts"):
        find_peaks_2d(image, method="lauetools")
    with pytest.raises(ValueError, match="method must be one of laueflow, lauetools"):
        find_peaks_2d(image, method="magic")


def test_lauetools_parameter_set_in_a_workflow_and_the_stage():
    """The documented BM32 set (IntensityThreshold 60, PixelNearRadius 10, boxsize 8) is a valid
    peaks-stage configuration and runs through the stage."""
    assert LAUETOOLS_BM32 == {"method": "lauetools", "threshold_counts": 60.0, "min_distance_px": 10,
                              "box_size_px": 8}
    assert STAGE.params["method"] == "laueflow"  # the default stays laueflow's own search
    config = _parse_stage({"peaks": {"method": "lauetools", "threshold_counts": 60, "min_distance_px": 10,
                                     "box_size_px": 8}}, 0, "")
    assert {k: config.params[k] for k in LAUETOOLS_BM32} == LAUETOOLS_BM32
    image = _frame([(30, 40, 200.0, 1.0), (90, 120, 70.0, 1.0)])
    res = find_peaks(np.stack([image, image]), **{**STAGE.params, **LAUETOOLS_BM32})
    assert res["peak_count"].tolist() == [2, 2]
    assert (res["peak_intensity"][:, :2] > 60).all()
    assert (res["peak_col_int"][:, :2] == [[40, 120], [40, 120]]).all()


@pytest.mark.requires_cupy_gpu
def test_lauetools_and_counts_methods_on_cupy_match_numpy():
    import cupy  # optional dependency (laueflow[gpu]); the marker skips where it is absent

    image, _ = synthetic_frame((512, 512), 80, seed=2)
    image[100, 100] = 0
    for kwargs in ({"method": "lauetools", "threshold_counts": 60, "min_distance_px": 10, "box_size_px": 8},
                   {"threshold_sigma": None, "threshold_counts": 40}):
        cpu = find_peaks_2d(image, **kwargs)
        gpu = find_peaks_2d(cupy.asarray(image), **kwargs)
        np.testing.assert_array_equal(cupy.asnumpy(gpu["col_int"]), cpu["col_int"])
        np.testing.assert_array_equal(cupy.asnumpy(gpu["intensity"]), cpu["intensity"])
        np.testing.assert_allclose(cupy.asnumpy(gpu["col"]), cpu["col"], atol=1e-3)
