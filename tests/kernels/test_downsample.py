"""Preprocessing of Laue frames for the autoencoder (crop, area-average, background, scale)."""
import numpy as np
import pytest

from laueflow.kernels.downsample import (block_means, block_means_reference, crop_geometry, gaussian_blur,
                                         preprocess_frames, scale_counts, subtract_background)


def test_crop_geometry_of_real_detectors():
    assert crop_geometry(2018, 2016) == (1, 0, 16, 126)  # sCMOS BM32: one row cropped top and bottom
    assert crop_geometry(2048, 2048) == (0, 0, 16, 128)
    assert crop_geometry(1024, 1030) == (0, 3, 8, 128)
    with pytest.raises(ValueError, match="smaller than"):
        crop_geometry(100, 200)


def test_block_means_match_slow_reference_with_mask(rng):
    frames = rng.integers(0, 65536, size=(2, 2018, 2016), dtype=np.uint16)
    mask = np.zeros((2018, 2016), bool)
    mask[rng.integers(0, 2018, 50), rng.integers(0, 2016, 50)] = True
    mask[1:17, 16:32] = True  # one whole block bad → the frame's median block
    fast = block_means(frames, mask)
    assert fast.shape == (2, 126, 126) and fast.dtype == np.float32
    for i in range(2):
        np.testing.assert_allclose(fast[i], block_means_reference(frames[i], mask), rtol=0, atol=2e-3)
    np.testing.assert_allclose(block_means(frames[0]), block_means_reference(frames[0]), rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="mask is"):
        block_means(frames, mask[:-1])


def test_background_removed_spots_kept(rng):
    """A smooth halo of +150 counts and a dark offset vanish; a spot survives, at its block."""
    rows, cols = 2018, 2016
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    halo = 1000 + 150 * np.exp(-(((r - 880) ** 2 + (c - 965) ** 2) / 800.0 ** 2) ** 0.9)
    frame = halo + rng.normal(0, 4, (rows, cols))
    frame += 3000 * np.exp(-((r - 500.3) ** 2 + (c - 1200.7) ** 2) / (2 * 1.2 ** 2))  # one spot
    image = preprocess_frames(np.rint(frame).astype(np.uint16)[None])[0]
    assert image.shape == (128, 128) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    spot = (1 + (500 - 1) // 16, 1 + 1200 // 16)  # +1: the 126 blocks are centred in 128
    assert image[spot] == image.max() and image[spot] > 0
    counts = preprocess_frames(np.rint(frame).astype(np.uint16)[None], scaling="linear")[0]
    # most of the spot's ≈ 27,000 counts (it sits 0.7 px from a block edge) over a 16 × 16 block
    assert counts[spot] == counts.max() and 70 < counts[spot] < 106
    others = np.delete(counts.ravel(), np.ravel_multi_index(spot, counts.shape))
    # the +150-count halo and the offset are gone: what is left (≤ 2 counts above the 1-count noise
    # floor) is noise and the curvature of the halo near its top that the bilinear background does
    # not follow
    assert np.percentile(others, 99) < 2.0 and np.median(others) < 0.35
    assert image[0].max() == 0 and image[:, -1].max() == 0  # padded margin


def test_scaling_is_monotone_and_bounded():
    counts = np.array([[[-5.0, 0.0, 1.0, 10.0, 100.0, 1e4]]], np.float32)
    log = scale_counts(np.append(counts, 1e5)[None, None])  # default: s0 = 256, max = 65536 counts
    assert np.all(np.diff(log[0, 0]) >= 0) and log[0, 0, 0] == 0 and log[0, 0, -1] == 1
    assert log[0, 0, 2] == 0  # at the noise floor (1 count): background is exactly 0
    np.testing.assert_allclose(log[0, 0, 3], np.log1p((10 - 1) / 256) / np.log1p(65536 / 256), rtol=1e-6)
    np.testing.assert_allclose(scale_counts(counts, log_scale_counts=4, log_max_counts=256)[0, 0, 3],
                               np.log1p((10 - 1) / 4) / np.log1p(256 / 4), rtol=1e-6)
    pct = scale_counts(counts, scaling="percentile", percentile=100, noise_floor_counts=0)
    np.testing.assert_allclose(pct[0, 0], [0, 0, 1e-4, 1e-3, 1e-2, 1], rtol=1e-5)
    linear = scale_counts(counts, scaling="linear")  # counts above the floor, not clipped
    np.testing.assert_array_equal(linear[0, 0], [0, 0, 0, 9, 99, 9999])
    assert linear.dtype == np.float32
    with pytest.raises(ValueError, match="scaling must be"):
        scale_counts(counts, scaling="sqrt")


def test_subtract_background_needs_dividing_block():
    with pytest.raises(ValueError, match="must divide"):
        subtract_background(np.zeros((1, 126, 126), np.float32), background_block=5)


def test_a_gain_per_image_scales_the_counts_above_the_noise_floor_before_the_scaling(rng):
    """``gain`` (the scan's median monitor over the point's) multiplies the counts above the noise
    floor: linear features scale by it exactly, the log scale sees the scaled counts."""
    frames = rng.poisson(1000, size=(3, 256, 256)).astype(np.uint16)
    frames[:, 100:103, 50:53] += np.array([400, 2000, 9000], np.uint16)[:, None, None]
    gain = np.array([0.5, 1.0, 2.5])
    for scaling in ("linear", "log"):
        plain = preprocess_frames(frames, scaling=scaling)
        scaled = preprocess_frames(frames, gain=gain, scaling=scaling)
        counts = preprocess_frames(frames, scaling="linear") * gain[:, None, None].astype(np.float32)
        expected = counts if scaling == "linear" else scale_counts(counts, noise_floor_counts=0)
        np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(scaled[1], plain[1])  # gain 1: unchanged
    for bad, message in ((np.ones(2), "one value per image"), (np.array([1.0, 0.0, 1.0]), "finite and > 0"),
                         (np.array([1.0, np.nan, 1.0]), "finite and > 0")):
        with pytest.raises(ValueError, match=message):
            preprocess_frames(frames, gain=bad, scaling="linear")


def test_gaussian_blur_is_scipys_constant_mode_filter_and_linear(rng):
    from scipy.ndimage import gaussian_filter

    images = rng.random((3, 40, 56)).astype(np.float32)
    for sigma in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(gaussian_blur(images, sigma),
                                   gaussian_filter(images, sigma=(0, sigma, sigma), mode="constant", truncate=4.0),
                                   atol=1e-6)
    mixed = gaussian_blur(0.7 * images[0] + 0.3 * images[1], 1.0)
    np.testing.assert_allclose(mixed, 0.7 * gaussian_blur(images[0], 1.0) + 0.3 * gaussian_blur(images[1], 1.0), atol=1e-6)
    same = gaussian_blur(images, 0)
    np.testing.assert_array_equal(same, images)
    assert same is not images
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sigma must be ≥ 0"):
            gaussian_blur(images, bad)
