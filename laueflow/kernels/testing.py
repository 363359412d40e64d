"""Small synthetic Laue frames with known Gaussian spots, for kernel tests and benchmarks.

Not the scan simulator (``laueflow simulate``): one frame, no physics, just what the peak search
must cope with (measured on real BM32 images, ``real-image-statistics.md``): a ≈ 1000-count dark
offset, a broad off-centre halo (+120 counts, Gaussian σ 600 px like the real ≈ 1300 px fall-off), Gaussian noise σ ≈ 4, compact spots
(σ 0.8–1.6 px, some elongated) whose amplitudes span three decades, one dead pixel.
"""
from __future__ import annotations

import numpy as np

__all__ = ["synthetic_frame"]


def synthetic_frame(shape=(256, 256), n_spots=40, *, noise_sigma=4.0, offset=1000.0,
                    halo_counts=120.0, halo_sigma_px=600.0, min_snr=3.0, max_amplitude=30000.0, min_separation=8.0,
                    margin=3, seed=0):
    """Return ``(image uint16, spots)``; ``spots`` is a dict of 1-D arrays: ``col, row``
    (0-based centre), ``amplitude`` (Gaussian peak above background), ``sigma_col, sigma_row``,
    ``noise_sigma``. Spots are at least ``min_separation`` px apart."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = shape
    rr, cc = np.mgrid[0:n_rows, 0:n_cols].astype(np.float32)
    r0, c0 = 0.44 * n_rows, 0.48 * n_cols
    image = offset + halo_counts * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * halo_sigma_px ** 2))
    cols, rows = [], []
    while len(cols) < n_spots:
        c = rng.uniform(margin, n_cols - 1 - margin)
        r = rng.uniform(margin, n_rows - 1 - margin)
        if all((c - c2) ** 2 + (r - r2) ** 2 >= min_separation ** 2 for c2, r2 in zip(cols, rows)):
            cols.append(c)
            rows.append(r)
    cols, rows = np.array(cols), np.array(rows)
    amplitude = np.exp(rng.uniform(np.log(min_snr * noise_sigma), np.log(max_amplitude), n_spots))
    sc = rng.uniform(0.8, 1.6, n_spots)
    sr = sc * rng.uniform(0.8, 1.4, n_spots)
    for c, r, a, s1, s2 in zip(cols, rows, amplitude, sc, sr):
        r_lo, r_hi = max(0, int(r) - 12), min(n_rows, int(r) + 13)
        c_lo, c_hi = max(0, int(c) - 12), min(n_cols, int(c) + 13)
        y, x = rr[r_lo:r_hi, c_lo:c_hi], cc[r_lo:r_hi, c_lo:c_hi]
        image[r_lo:r_hi, c_lo:c_hi] += a * np.exp(-((x - c) ** 2 / (2 * s1 ** 2) + (y - r) ** 2 / (2 * s2 ** 2)))
    image = image + rng.normal(0.0, noise_sigma, shape)
    image = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
    image[rng.integers(n_rows), rng.integers(n_cols)] = 0  # one dead pixel
    spots = {"col": cols, "row": rows, "amplitude": amplitude, "sigma_col": sc, "sigma_row": sr,
             "noise_sigma": np.full(n_spots, noise_sigma)}
    return image, spots
