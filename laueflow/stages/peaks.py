"""Peak-search stage: a batch of images → NaN/-1 padded per-image peak tables.

Contract relied upon by the workflow runner (``laueflow run``)::

    find_peaks(images, *, threshold_sigma=6.0, threshold_counts=None, min_distance_px=3,
               box_size_px=5, max_peaks=500, mask=None, **other) -> dict[str, np.ndarray]

``images``: ``(n_images, n_rows, n_cols)`` numeric array (numpy or cupy; a single 2-D image is
accepted too and treated as a batch of one). Each image is searched on its own
(:func:`laueflow.kernels.peaks.find_peaks_2d`; never labelled across the stack). Returned numpy
arrays, shape ``(n_images, max_peaks)``, peaks sorted by decreasing ``peak_intensity``:

=============================== ======= ====== ==============================================
key                             dtype   fill   meaning
=============================== ======= ====== ==============================================
``peak_col_int, peak_row_int``  int32   -1     hottest pixel, 0-based column / row
``peak_col, peak_row``          float32 NaN    background-subtracted centroid (0-based)
``peak_intensity``              float32 NaN    hottest pixel − local background (counts)
``peak_integrated_intensity``   float32 NaN    Σ(I − background) in the (2·box+1)² box
``peak_background``             float32 NaN    local background (counts)
``peak_noise``                  float32 NaN    local per-pixel noise σ (counts)
``peak_count``                  int32          (n_images,) number of peaks kept
=============================== ======= ====== ==============================================

LaueTools users: ``threshold_counts`` ≈ ``IntensityThreshold`` (counts above the local
background, auto-background ``A−B``), ``min_distance_px`` ≈ ``PixelNearRadius``,
``box_size_px`` ≈ ``boxsize`` (half-size), ``max_peaks`` ≈ ``NumberMaxofFits`` except that the
brightest ``max_peaks`` are kept instead of failing. Add 1 to columns/rows for LaueTools X, Y.
Extra keyword arguments (``**other``) are passed to the kernel when it knows them
(``background_block_px``, ``grow_sigma``) and otherwise ignored, so a workflow config may carry
parameters for later stages.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..backend import get_array_module, to_numpy
from ..kernels.peaks import find_peaks_2d

__all__ = ["PEAK_SEARCH_DEFAULTS", "PEAK_OUTPUTS", "find_peaks"]

#: defaults of :func:`find_peaks` (documented above); the runner may read and override them
PEAK_SEARCH_DEFAULTS: dict = {
    "threshold_sigma": 6.0,     # detection threshold, in units of the local noise (3x3 box sum)
    "threshold_counts": None,   # optional absolute threshold, counts above local background
    "min_distance_px": 3,       # two peaks are at least this far apart (Chebyshev), px
    "box_size_px": 5,           # half-size of the centroid / integration box, px
    "max_peaks": 500,           # keep at most this many (the brightest) per image
    "mask": None,               # (n_rows, n_cols) bool, True = bad pixel to ignore
}

#: output key -> (kernel key, dtype, fill)
PEAK_OUTPUTS = {
    "peak_col_int": ("col_int", np.int32, -1),
    "peak_row_int": ("row_int", np.int32, -1),
    "peak_col": ("col", np.float32, np.nan),
    "peak_row": ("row", np.float32, np.nan),
    "peak_intensity": ("intensity", np.float32, np.nan),
    "peak_integrated_intensity": ("integrated_intensity", np.float32, np.nan),
    "peak_background": ("background", np.float32, np.nan),
    "peak_noise": ("noise", np.float32, np.nan),
}

_KERNEL_EXTRA = {
    name for name, p in inspect.signature(find_peaks_2d).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
} - set(PEAK_SEARCH_DEFAULTS)


def find_peaks(images, *, threshold_sigma=6.0, threshold_counts=None, min_distance_px=3,
               box_size_px=5, max_peaks=500, mask=None, **other) -> dict[str, np.ndarray]:
    """Search peaks in each image of a batch; see the module docstring for the outputs."""
    xp = get_array_module(images)
    images = xp.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"images must be (n_images, n_rows, n_cols), got shape {images.shape}")
    max_peaks = int(max_peaks)
    n = images.shape[0]
    out = {key: np.full((n, max_peaks), fill, dtype=dtype)
           for key, (_, dtype, fill) in PEAK_OUTPUTS.items()}
    out["peak_count"] = np.zeros(n, dtype=np.int32)
    kwargs = {k: v for k, v in other.items() if k in _KERNEL_EXTRA}
    if mask is not None:
        mask = xp.asarray(mask, dtype=bool)
    for i in range(n):
        found = find_peaks_2d(images[i], threshold_sigma=threshold_sigma,
                              threshold_counts=threshold_counts, min_distance_px=min_distance_px,
                              box_size_px=box_size_px, max_peaks=max_peaks, mask=mask, **kwargs)
        k = int(found["col"].shape[0])
        out["peak_count"][i] = k
        for key, (src, _, _) in PEAK_OUTPUTS.items():
            out[key][i, :k] = to_numpy(found[src])
    return out
