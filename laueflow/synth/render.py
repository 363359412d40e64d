"""Pure image kernels of the synthetic detector: background, spot profiles, noise.

Arrays in, arrays out; no files, no randomness hidden in globals (callers pass a
``numpy.random.Generator``). Images are ``image[row, col]`` with 0-based pixel centres at
integers, as everywhere in laueflow.

Noise model (documented in ``docs/truth-format.md``): a pixel's value is
``round(dark + halo + spots + n)`` clipped to ``[0, saturation]``, with ``n`` Gaussian of variance
``read_noise² + gain · (halo + spots)`` — read noise plus shot noise with an effective gain
(counts of variance per count of signal), approximated by a Gaussian in float32. The background
part of ``n`` (``read_noise² + gain · halo``) is drawn for every pixel; the spot part
(``gain · spots``) is drawn only on the pixels of the spot patches, which gives the same total
variance because independent Gaussian variances add.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "PATCH_HALF_WIDTHS",
    "background_model",
    "noise_sigma",
    "render_components",
    "compose_image",
]

#: half widths (px) of the square patches spots are drawn in; a component goes to the smallest
#: class that holds its profile down to ≈0.5 count
PATCH_HALF_WIDTHS = (3, 5, 8, 12, 18, 27, 40)


def background_model(
    frame_shape,
    *,
    dark_offset: float = 1002.0,
    halo_amplitude: float = 90.0,
    halo_centre=(880.0, 965.0),
    halo_radius: float = 800.0,
    halo_power: float = 1.8,
    quadrant_offsets=(0.0, 0.0, 0.0, 0.0),
    quadrant_split=None,
):
    """Noiseless detector background, as two float32 images ``(dark, halo)``.

    ``dark`` = dark offset plus a per-quadrant offset (sCMOS quadrants; ``quadrant_offsets`` in
    order top-left, top-right, bottom-left, bottom-right; ``quadrant_split = (row, col)`` where they
    meet, default the frame centre). ``halo`` = diffuse scattering,
    ``halo_amplitude · exp(−(r / halo_radius)^halo_power)`` with ``r`` the distance (px) from
    ``halo_centre = (row, col)``. Real BM32 sCMOS images: offset ≈1000, halo +35…150 counts
    centred near row 880, col 965, falling over ≈1300 px (``real-image-statistics.md``).
    """
    n_rows, n_cols = (int(v) for v in frame_shape)
    split_row, split_col = (n_rows // 2, n_cols // 2) if quadrant_split is None else quadrant_split
    q = np.asarray(quadrant_offsets, dtype=np.float32)
    top = np.arange(n_rows) < split_row
    left = np.arange(n_cols) < split_col
    row_part = np.where(top, 0, 2)[:, None]
    col_part = np.where(left, 0, 1)[None, :]
    dark = (np.float32(dark_offset) + q[row_part + col_part]).astype(np.float32)
    r2 = (np.arange(n_rows, dtype=np.float32)[:, None] - np.float32(halo_centre[0])) ** 2 + (
        np.arange(n_cols, dtype=np.float32)[None, :] - np.float32(halo_centre[1])
    ) ** 2
    halo = np.float32(halo_amplitude) * np.exp(-((r2 / np.float32(halo_radius) ** 2) ** np.float32(halo_power / 2)))
    return dark, halo.astype(np.float32)


def noise_sigma(signal_above_dark, read_noise: float = 2.5, gain: float = 0.08):
    """Noise σ (counts) for a noiseless signal above the dark offset: ``sqrt(read² + gain·s)``."""
    s = np.maximum(np.asarray(signal_above_dark, dtype=np.float32), 0)
    return np.sqrt(np.float32(read_noise) ** 2 + np.float32(gain) * s)


def _half_width(amplitude, sigma_major):
    """Smallest patch class holding the profile down to 0.5 count (at most the largest class)."""
    reach = sigma_major * np.sqrt(2.0 * np.log(np.maximum(2.0 * np.abs(amplitude), np.e)))
    classes = np.asarray(PATCH_HALF_WIDTHS)
    index = np.minimum(np.searchsorted(classes, np.ceil(reach)), len(classes) - 1)
    return classes[index]


def render_components(col, row, amplitude, sigma_major, sigma_minor, angle, frame_shape, *, half_width=None):
    """Rasterise elliptical Gaussian components on a frame, as a sparse list of pixel values.

    ``amplitude · exp(−½ (u²/σ_major² + v²/σ_minor²))`` sampled at pixel centres, ``u`` along the
    direction at ``angle`` (radians, from +col towards +row) through ``(col, row)``. Components are
    grouped by patch size (:data:`PATCH_HALF_WIDTHS`) and each group is drawn in one vectorised
    pass. Returns ``(component, flat_index, value)`` (int64, int64, float32): one entry per pixel
    per component inside the frame; ``flat_index = row · n_cols + col``. Overlaps are not summed
    (accumulate with ``np.add.at`` or ``np.bincount``).
    """
    n_rows, n_cols = frame_shape
    col = np.asarray(col, dtype=np.float64)
    row = np.asarray(row, dtype=np.float64)
    amplitude = np.asarray(amplitude, dtype=np.float32)
    sigma_major = np.asarray(sigma_major, dtype=np.float32)
    sigma_minor = np.asarray(sigma_minor, dtype=np.float32)
    angle = np.asarray(angle, dtype=np.float32)
    hw = _half_width(amplitude, sigma_major) if half_width is None else np.broadcast_to(half_width, col.shape)
    out_c, out_i, out_v = [], [], []
    for h in np.unique(hw):
        sel = np.flatnonzero(hw == h)
        ic = np.rint(col[sel]).astype(np.int64)
        ir = np.rint(row[sel]).astype(np.int64)
        fc = (col[sel] - ic).astype(np.float32)  # sub-pixel offset of the centre
        fr = (row[sel] - ir).astype(np.float32)
        t = np.arange(-h, h + 1)
        dc = t[None, None, :] - fc[:, None, None]  # (n, 1, w): pixel col - centre col
        dr = t[None, :, None] - fr[:, None, None]  # (n, w, 1)
        ca = np.cos(angle[sel])[:, None, None]
        sa = np.sin(angle[sel])[:, None, None]
        u = dc * ca + dr * sa
        v = dr * ca - dc * sa
        inv_a = (0.5 / sigma_major[sel] ** 2)[:, None, None]
        inv_b = (0.5 / sigma_minor[sel] ** 2)[:, None, None]
        value = amplitude[sel][:, None, None] * np.exp(-(u * u * inv_a + v * v * inv_b))
        pc = ic[:, None, None] + t[None, None, :]
        pr = ir[:, None, None] + t[None, :, None]
        inside = (pc >= 0) & (pc < n_cols) & (pr >= 0) & (pr < n_rows)
        flat = pr * n_cols + pc
        inside = np.broadcast_to(inside, value.shape)
        out_c.append(np.broadcast_to(sel[:, None, None], value.shape)[inside])
        out_i.append(np.broadcast_to(flat, value.shape)[inside])
        out_v.append(value[inside].astype(np.float32))
    if not out_c:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(out_c), np.concatenate(out_i), np.concatenate(out_v)


def compose_image(
    dark,
    halo,
    background_sigma,
    spot_index,
    spot_value,
    rng: np.random.Generator,
    *,
    halo_scale: float = 1.0,
    gain: float = 0.08,
    saturation: int = 65535,
    dead_pixels=None,
):
    """One uint16 detector image: background + spots + Gaussian noise, rounded and clipped.

    ``dark``, ``halo``, ``background_sigma`` (float32, frame shape) are precomputed once per scan
    (``background_sigma = noise_sigma(halo)``; the halo scale is a small per-point factor and its
    effect on σ is neglected). ``spot_index``/``spot_value`` are the sparse spot pixels (see
    :func:`render_components`); each entry gets its own shot noise of variance ``gain · value``.
    ``dead_pixels`` = flat indices set to 0.
    """
    shape = dark.shape
    n = dark.size
    img = rng.standard_normal(n, dtype=np.float32)
    img *= background_sigma.reshape(-1)
    img += dark.reshape(-1)
    if halo_scale == 1.0:
        img += halo.reshape(-1)
    else:
        img += np.float32(halo_scale) * halo.reshape(-1)
    if len(spot_index):
        shot = rng.standard_normal(len(spot_value), dtype=np.float32)
        shot *= np.sqrt(np.float32(gain) * np.maximum(spot_value, 0))
        shot += spot_value
        np.add.at(img, spot_index, shot)
    img += np.float32(0.5)  # round half up with the truncating cast below
    np.clip(img, 0, saturation, out=img)
    result = img.astype(np.uint16).reshape(shape)
    if dead_pixels is not None and len(dead_pixels):
        result.reshape(-1)[np.asarray(dead_pixels)] = 0
    return result
