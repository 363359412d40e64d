"""Hot pixels: pixels that are a one-pixel peak in most images of a scan.

A diffraction spot is never one pixel wide (σ ≥ 0.7 px on real sCMOS frames,
``../shared/docs/real-image-statistics.md``: its brightest neighbour carries ≥ 36 % of its peak), so a pixel that stands far above *all* eight neighbours
is a detector defect. :func:`single_pixel_peaks` flags those in one image;
:func:`hot_pixel_mask` keeps the pixels flagged in most of a sample of images. Arrays in, arrays out.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["single_pixel_peaks", "hot_pixel_mask"]

_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)


def single_pixel_peaks(image, *, min_excess_sigma: float = 8.0, max_neighbour_share: float = 0.2) -> np.ndarray:
    """Bool ``(rows, cols)``: pixels that exceed their brightest 8-neighbour by more than
    ``min_excess_sigma`` × the image's noise σ (robust, from pixel differences) while that
    neighbour carries less than ``max_neighbour_share`` of the pixel's height above the local
    background (5×5 median). A spot of σ ≥ 0.7 px puts ≥ 36 % on its brightest neighbour."""
    image = np.asarray(image, dtype=np.float32)
    ring_max = ndimage.maximum_filter(image, footprint=_RING, mode="nearest")
    diff = np.diff(image[:, ::4], axis=1).ravel()  # noise from neighbouring-pixel differences
    sigma = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2) or 1.0
    out = (image - ring_max) > min_excess_sigma * sigma  # candidates (few): test only those
    rows, cols = np.nonzero(out)
    if len(rows):
        padded = np.pad(image, 2, mode="edge")
        window = np.stack([padded[rows + dr, cols + dc] for dr in range(5) for dc in range(5)], axis=1)
        background = np.median(window, axis=1)
        share = (ring_max[rows, cols] - background) < max_neighbour_share * (image[rows, cols] - background)
        out[rows[~share], cols[~share]] = False
    return out


def hot_pixel_mask(flags, *, min_fraction: float = 0.5, min_images: int = 3) -> np.ndarray:
    """Bool ``(rows, cols)``: pixels flagged in more than ``min_fraction`` of the images of
    ``flags (n_images, rows, cols)``; all False when there are fewer than ``min_images``."""
    flags = np.asarray(flags, dtype=bool)
    if flags.shape[0] < min_images:
        return np.zeros(flags.shape[1:], bool)
    return flags.mean(axis=0) > min_fraction
