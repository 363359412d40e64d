"""Laue frames → small images for the autoencoder: crop, area-average, background, scale.

:func:`preprocess_frames` turns detector frames ``(…, rows, cols)`` (uint16 counts) and an
optional bad-pixel mask into ``(…, size, size)`` float32 images in ``[0, 1]``, in four steps:

1. **crop to a square** of side ``S = min(rows, cols)``, centred, then to ``n · b`` with the block
   ``b = ceil(S / size)`` and ``n = S // b`` whole blocks per side (2018 × 2016 → 2016 × 2016,
   ``b = 16``, ``n = 126``: one row cropped at the top and at the bottom, no column lost);
2. **area-average** each ``b × b`` block (:func:`block_means`), leaving out the bad pixels of
   ``mask`` (a block's mean is over its good pixels; a block with none is the median of the frame).
   Sums are float32 and exact (256 × 65535 < 2²⁴);
3. **background**: the ``n × n`` means are edge-padded to ``size × size`` (centred), and a smooth
   background — the median of every ``background_block × background_block`` group of blocks,
   interpolated bilinearly — is subtracted (:func:`subtract_background`): the detector offset,
   the diffuse halo and its per-point scale go, sparse spots stay. The padded margin is then 0;
4. **scale** (:func:`scale_counts`) the counts ``s`` above background minus a noise floor
   (``noise_floor_counts``, ≈ 4–5 σ of a block mean's noise; below → 0, so the background is
   exactly 0) to ``[0, 1]``: ``log`` (default) ``log1p(s / log_scale_counts) / log1p(log_max_counts
   / log_scale_counts)``, clipped at 1, the same for every image; or ``percentile``: ``s`` divided
   by the image's own ``percentile``-th percentile, clipped at 1; or ``linear``: ``s`` itself
   (counts, not clipped), so the image of a point that sees two domains is the weighted sum of
   their images (what the segmentation's unmixing assumes; ``method: pixels`` uses it).
   An optional per-frame ``gain`` (``(…,)``, e.g. the scan's median monitor over the point's
   monitor) multiplies the counts above the noise floor before the scaling, so every point is
   put on the same incident intensity.

The defaults were chosen by measurement (``docs/features.md``). Arrays in, arrays out (numpy, or
cupy through :mod:`laueflow.backend`); :func:`block_means_reference` is the slow, obvious
reference used by the tests.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module

__all__ = ["PREPROCESS_DEFAULTS", "SCALINGS", "crop_geometry", "block_means", "block_means_reference",
           "subtract_background", "scale_counts", "preprocess_frames", "gaussian_blur"]

#: the preprocessing of the shipped autoencoder (stored with its weights; docs/features.md)
PREPROCESS_DEFAULTS = {
    "size": 128,
    "background_block": 8,
    "scaling": "log",
    "noise_floor_counts": 1.0,
    "log_scale_counts": 256.0,
    "log_max_counts": 65536.0,
    "percentile": 99.9,
}
SCALINGS = ("log", "percentile", "linear")


def crop_geometry(rows: int, cols: int, size: int = 128) -> tuple[int, int, int, int]:
    """``(row0, col0, block, n_blocks)``: the cropped square ``[row0, row0 + n·b) × [col0, …)``
    of a ``rows × cols`` frame, its block side ``b`` (px) and ``n`` blocks per side (≤ size)."""
    side = min(int(rows), int(cols))
    if side < size:
        raise ValueError(f"frames of {rows} × {cols} px are smaller than the {size} × {size} output; "
                         f"use a smaller size")
    block = math.ceil(side / size)
    n = side // block
    used = n * block
    return (int(rows) - used) // 2, (int(cols) - used) // 2, block, n


def block_means(images, mask=None, *, size: int = 128):
    """Mean counts of each ``b × b`` block of the cropped square, ``(…, n, n)`` float32.

    ``images (…, rows, cols)`` integer or float counts; ``mask (rows, cols)`` bool, True = bad
    pixel (left out of its block's mean). Vectorised over the batch: one pass adding ``b`` rows,
    one summing ``b`` columns (float32 sums, exact for uint16 blocks of ≤ 256 pixels).
    """
    xp = get_array_module(images)
    images = xp.asarray(images)
    *lead, rows, cols = images.shape
    r0, c0, b, n = crop_geometry(rows, cols, size)
    crop = images[..., r0:r0 + n * b, c0:c0 + n * b]
    sums = crop.reshape(*lead, n, b, n * b).sum(axis=-2, dtype=np.float32)
    sums = sums.reshape(*lead, n, n, b).sum(axis=-1)
    if mask is None or not bool(xp.asarray(mask).any()):
        return sums * np.float32(1.0 / (b * b))
    mask = xp.asarray(mask, dtype=bool)
    if mask.shape != (rows, cols):
        raise ValueError(f"mask is {mask.shape} but frames are {(rows, cols)}; give the detector's mask")
    bad_r, bad_c = xp.nonzero(mask[r0:r0 + n * b, c0:c0 + n * b])
    block_index = (bad_r // b) * n + bad_c // b  # few bad pixels: subtract them block by block
    flat = sums.reshape(-1, n * n)
    values = crop[..., bad_r, bad_c].reshape(-1, len(bad_r)).astype(np.float32)
    for i in range(flat.shape[0]):
        flat[i] -= xp.bincount(block_index, weights=values[i], minlength=n * n).astype(np.float32)
    good = (b * b - xp.bincount(block_index, minlength=n * n)).astype(np.float32)
    means = flat / xp.maximum(good, 1)
    if bool((good == 0).any()):
        means[:, good == 0] = xp.median(means[:, good > 0], axis=1)[:, None]
    return means.reshape(*lead, n, n)


def block_means_reference(image, mask=None, *, size: int = 128) -> np.ndarray:
    """Slow reference of :func:`block_means` for one image (a loop over blocks, float64)."""
    image = np.asarray(image, dtype=np.float64)
    r0, c0, b, n = crop_geometry(*image.shape, size)
    good = np.ones(image.shape, bool) if mask is None else ~np.asarray(mask, bool)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            rs, cs = slice(r0 + i * b, r0 + (i + 1) * b), slice(c0 + j * b, c0 + (j + 1) * b)
            g = good[rs, cs]
            out[i, j] = image[rs, cs][g].mean() if g.any() else np.nan
    if np.isnan(out).any():
        out[np.isnan(out)] = np.median(out[~np.isnan(out)])
    return out


def _interpolation_matrix(n_out: int, n_in: int, xp):
    """``(n_out, n_in)`` bilinear weights from ``n_in`` cell centres to ``n_out`` cell centres
    (the same extent), constant beyond the first and last centre."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return xp.asarray(m)


def subtract_background(means, *, size: int = 128, background_block: int = 8):
    """``(…, n, n)`` block means → ``(…, size, size)`` counts above a smooth background.

    The means are edge-padded (centred) to ``size``; the background is the median of each
    ``background_block²`` group of blocks, bilinearly interpolated; the padded margin is 0.
    """
    xp = get_array_module(means)
    *lead, n, _ = means.shape
    if size % background_block:
        raise ValueError(f"background_block {background_block} must divide size {size}")
    lo = (size - n) // 2
    pad = [(0, 0)] * len(lead) + [(lo, size - n - lo)] * 2
    padded = xp.pad(means, pad, mode="edge")
    g = size // background_block
    groups = padded.reshape(*lead, g, background_block, g, background_block)
    groups = xp.moveaxis(groups, -3, -2).reshape(*lead, g, g, background_block ** 2)
    coarse = xp.median(groups, axis=-1).astype(np.float32)
    interp = _interpolation_matrix(size, g, xp)
    background = interp @ coarse @ interp.T
    out = padded - background
    if lo or size - n - lo:
        keep = xp.zeros((size, size), bool)
        keep[lo:lo + n, lo:lo + n] = True
        out = xp.where(keep, out, np.float32(0))
    return out.astype(np.float32, copy=False)


def scale_counts(counts, *, scaling: str = "log", noise_floor_counts: float = PREPROCESS_DEFAULTS["noise_floor_counts"],
                 log_scale_counts: float = PREPROCESS_DEFAULTS["log_scale_counts"],
                 log_max_counts: float = PREPROCESS_DEFAULTS["log_max_counts"], percentile: float = 99.9,
                 gain=None):
    """Counts above background ``(…, h, w)`` → float32 in ``[0, 1]`` (``linear``: counts above
    the noise floor, unscaled) (module docstring). ``gain``: None or ``(…,)`` finite factors > 0,
    one per image, applied to the counts above the noise floor before the scaling."""
    xp = get_array_module(counts)
    if not noise_floor_counts >= 0:
        raise ValueError(f"noise_floor_counts must be ≥ 0, got {noise_floor_counts}")
    s = xp.maximum(counts - np.float32(noise_floor_counts), 0).astype(np.float32, copy=False)
    if gain is not None:
        s = s * _per_image(gain, s.shape[:-2], xp)
    if scaling == "log":
        if not 0 < log_scale_counts < log_max_counts:
            raise ValueError(f"need 0 < log_scale_counts < log_max_counts, got {log_scale_counts}, {log_max_counts}")
        y = xp.log1p(s * np.float32(1 / log_scale_counts)) * np.float32(1 / math.log1p(log_max_counts / log_scale_counts))
    elif scaling == "percentile":
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        *lead, h, w = s.shape
        top = xp.percentile(s.reshape(*lead, h * w), percentile, axis=-1).astype(np.float32)
        y = s / xp.maximum(top, np.float32(1e-6))[..., None, None]
    elif scaling == "linear":
        return s
    else:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    return xp.minimum(y, np.float32(1)).astype(np.float32, copy=False)


def _per_image(gain, lead: tuple, xp):
    """``gain`` as float32 ``(*lead, 1, 1)``; refuses a wrong shape or values that are not finite and > 0."""
    gain = xp.asarray(gain, dtype=np.float32)
    if gain.shape != tuple(lead):
        raise ValueError(f"gain must have one value per image, shape {tuple(lead)}, got {gain.shape}")
    if not bool(xp.all(xp.isfinite(gain) & (gain > 0))):
        raise ValueError("gain must be finite and > 0 for every image")
    return gain[..., None, None]


def preprocess_frames(images, mask=None, gain=None, **params):
    """Frames ``(…, rows, cols)`` + bad-pixel mask → ``(…, size, size)`` float32 in [0, 1].

    ``gain``: None or ``(…,)`` per-frame factors on the counts above background (module
    docstring). ``params``: any of :data:`PREPROCESS_DEFAULTS` (unknown names are an error).
    """
    unknown = set(params) - set(PREPROCESS_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown preprocessing parameters {sorted(unknown)}; known: {sorted(PREPROCESS_DEFAULTS)}")
    p = {**PREPROCESS_DEFAULTS, **params}
    means = block_means(images, mask, size=p["size"])
    counts = subtract_background(means, size=p["size"], background_block=p["background_block"])
    return scale_counts(counts, scaling=p["scaling"], noise_floor_counts=p["noise_floor_counts"],
                        log_scale_counts=p["log_scale_counts"], log_max_counts=p["log_max_counts"],
                        percentile=p["percentile"], gain=gain)


def gaussian_blur(images, sigma_px: float):
    """``images (…, rows, cols)`` float convolved with a Gaussian of σ = ``sigma_px`` pixels
    along the last two axes; zero outside the image; the kernel truncated at 4 σ and normalised
    to sum 1 (as ``scipy.ndimage.gaussian_filter(mode="constant")``). Linear: the blur of a
    weighted sum of images is the weighted sum of their blurs. ``sigma_px`` 0: a float32 copy.
    One matrix product per axis (numpy or cupy)."""
    xp = get_array_module(images)
    images = xp.asarray(images, dtype=xp.float32)
    sigma = float(sigma_px)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the blur's sigma must be ≥ 0 pixels, got {sigma_px!r}")
    if sigma == 0:
        return images.copy()
    rows, cols = images.shape[-2:]
    return xp.matmul(xp.matmul(_gaussian_matrix(rows, sigma, xp), images), _gaussian_matrix(cols, sigma, xp).T)


def _gaussian_matrix(n: int, sigma: float, xp):
    """``(n, n)`` float32: row i holds the truncated, normalised Gaussian centred on pixel i."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]
    inside = np.abs(offset) <= radius
    matrix = np.where(inside, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    return xp.asarray(matrix, dtype=xp.float32)
