"""Peak-search stage: a batch of images → NaN/-1 padded per-image peak tables.

Contract relied upon by the workflow runner (``laueflow run``)::

    find_peaks(images, *, threshold_sigma=6.0, threshold_counts=None, min_distance_px=3,
               box_size_px=5, max_peaks=DEFAULT_MAX_PEAKS, mask=None, method="laueflow",
               **other) -> dict[str, np.ndarray]

``images``: ``(n_images, n_rows, n_cols)`` numeric array (numpy or cupy; a single 2-D image is
accepted too and treated as a batch of one). Each image is searched on its own
(:func:`laueflow.kernels.peaks.find_peaks_2d`; never labelled across the stack). The outputs are
declared once, in :data:`STAGE` ``.outputs`` (names, dtypes, fills, units): numpy arrays
``(n_images, max_peaks)`` with peaks sorted by decreasing ``peak_intensity``,
``peak_count (n_images,)`` (peaks kept in the table) and ``peak_count_found (n_images,)`` (peaks
above the thresholds before the ``max_peaks`` cut).

**No silent truncation.** An image with more than ``max_peaks`` peaks keeps its brightest
``max_peaks`` (valid peaks: later stages use them as usual), ``peak_count_found`` records how many
there were and the image's status is ``peaks_truncated`` (code 4, :data:`PEAKS_TRUNCATED`). The
status is a record, not a stop: every later stage still runs on the image (the pipeline runs each
stage on every valid image whatever its status) — but since the first non-zero code of the chain
wins, a truncated image that the ``index`` stage then cannot index keeps code 4 (its
``grain_count`` 0 says so). ``laueflow run`` ends with a warning line naming the ``max_peaks``
that would keep every peak. The default, :data:`DEFAULT_MAX_PEAKS`, keeps every peak of the
dense real BM32 image of issue #12 (684 peaks at 6σ) with margin.

Two methods (parameter ``method``, :data:`PEAK_METHODS`):

- ``laueflow`` (default): detection on the 3×3 box sum at ``threshold_sigma`` × its local noise
  (the measured default); ``threshold_counts`` (counts of the *pixel* above laueflow's local
  background) alone or in addition; maxima ≥ ``min_distance_px`` apart in a square window.
- ``lauetools``: LaueTools' numbers with LaueTools' meaning, for users who bring a LaueTools
  peak-search setting (``readmccd.PeakSearch``): ``threshold_counts`` = ``IntensityThreshold``
  (counts of the pixel above LaueTools' auto-background, the 10-px minimum filter, ``A−B``;
  required), ``min_distance_px`` = ``PixelNearRadius`` (Euclidean: a maximum strictly closer
  than that to a more intense one is dropped), ``box_size_px`` = ``boxsize`` (half-size of the
  integration box); ``threshold_sigma`` is not used. With the BM32 numbers
  (:data:`LAUETOOLS_BM32`: 60, 10, 8) it finds 99.5–99.8 % of the peaks LaueTools 3.2.19 finds
  (``benchmarks/results.md``). ``peak_intensity`` and ``peak_background`` are then LaueTools'
  (pixel − its 10-px minimum filter, the minimum filter); centroids, integration and noise are
  laueflow's.

``max_peaks`` ≈ ``NumberMaxofFits`` except that the brightest ``max_peaks`` are kept (and the cut
recorded) instead of failing. Add 1 to columns/rows for LaueTools X, Y.
Extra keyword arguments (``**other``) are passed to the kernel when it knows them
(``background_block_px``, ``grow_sigma``) and otherwise ignored, so a workflow config may carry
parameters for later stages.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..backend import get_array_module, to_numpy
from ..kernels.peaks import PEAK_METHODS, find_peaks_2d, prepare_mask
from .base import StageSpec, Variable

__all__ = ["STAGE", "find_peaks", "DEFAULT_MAX_PEAKS", "LAUETOOLS_BM32", "NO_PEAKS", "PEAKS_TRUNCATED",
           "PEAK_METHODS"]

NAN = float("nan")

#: default ``max_peaks``: a dense real BM32 image held 684 peaks above 6σ (issue #12; LaueTools
#: finds up to 334 on the measured images at its coarser threshold, ``real-image-statistics.md``):
#: ≈ 2.2× margin. Cost: every ``(y, x, peak)`` variable has this many slots per image; measured in
#: docs/ingest.md (stored: +0.2 % from 500; in memory: 92 bytes per slot and image, whole chain)
DEFAULT_MAX_PEAKS = 1500

#: the LaueTools-compatible parameter set of BM32 users (LaueNN's LaueTools mode, ZnCuOCl:
#: ``IntensityThreshold`` 60, ``PixelNearRadius`` 10, ``boxsize`` 8) as peaks-stage parameters;
#: a workflow writes them out (docs/ingest.md)
LAUETOOLS_BM32 = {"method": "lauetools", "threshold_counts": 60.0, "min_distance_px": 10, "box_size_px": 8}

#: per-image status codes of the stage (results-store ``status``; never renumber)
NO_PEAKS = 2
PEAKS_TRUNCATED = 4

#: results-store variable → field of :func:`laueflow.kernels.peaks.find_peaks_2d`
_KERNEL_FIELD = {
    "peak_col": "col", "peak_row": "row", "peak_col_int": "col_int", "peak_row_int": "row_int",
    "peak_intensity": "intensity", "peak_integrated_intensity": "integrated_intensity",
    "peak_background": "background", "peak_noise": "noise",
}

_KERNEL_EXTRA = {
    name for name, p in inspect.signature(find_peaks_2d).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
} - {"threshold_sigma", "threshold_counts", "min_distance_px", "box_size_px", "max_peaks", "mask",
    "return_n_found", "method"}


def find_peaks(images, *, threshold_sigma=6.0, threshold_counts=None, min_distance_px=3,
               box_size_px=5, max_peaks=DEFAULT_MAX_PEAKS, mask=None, method="laueflow",
               **other) -> dict[str, np.ndarray]:
    """Search peaks in each image of a batch; see the module docstring for the outputs."""
    xp = get_array_module(images)
    images = xp.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"images must be (n_images, n_rows, n_cols), got shape {images.shape}")
    max_peaks = int(max_peaks)
    n = images.shape[0]
    out = STAGE.empty_outputs(n, {"max_peaks": max_peaks})
    out["peak_count"][:] = 0
    out["peak_count_found"][:] = 0
    kwargs = {k: v for k, v in other.items() if k in _KERNEL_EXTRA}
    mask = prepare_mask(mask, xp)  # bad pixels listed once per batch, not once per image
    for i in range(n):
        found, n_found = find_peaks_2d(images[i], threshold_sigma=threshold_sigma,
                                       threshold_counts=threshold_counts, min_distance_px=min_distance_px,
                                       box_size_px=box_size_px, max_peaks=max_peaks, mask=mask,
                                       return_n_found=True, method=method, **kwargs)
        k = int(found["col"].shape[0])
        out["peak_count"][i] = k
        out["peak_count_found"][i] = n_found
        for key, src in _KERNEL_FIELD.items():
            out[key][i, :k] = to_numpy(found[src])
    return out


def check_params(params) -> None:
    """Impossible peak-search parameters → ``ValueError`` saying which and why."""
    sigma, counts = params.get("threshold_sigma"), params.get("threshold_counts")
    method = params.get("method", "laueflow")
    if method not in PEAK_METHODS:
        raise ValueError(f"method must be one of {', '.join(PEAK_METHODS)}, got {method!r}")
    if method == "lauetools" and counts is None:
        raise ValueError("method lauetools needs threshold_counts (LaueTools IntensityThreshold, "
                         "counts above its background), e.g. 60")
    if sigma is None and counts is None:
        raise ValueError("give threshold_sigma and/or threshold_counts")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"threshold_sigma must be > 0 (noise units), got {sigma}")
    if counts is not None and not counts >= 0:
        raise ValueError(f"threshold_counts must be ≥ 0 counts above background, got {counts}")
    for name, low in (("max_peaks", 1), ("min_distance_px", 1), ("box_size_px", 1)):
        value = params.get(name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _status(outputs: dict) -> np.ndarray:
    """``no_peaks`` (2) without a peak; ``peaks_truncated`` (4) when more peaks were found than
    kept (a record: the image goes on to later stages); else 0."""
    kept, found = outputs["peak_count"], outputs["peak_count_found"]
    return np.where(kept == 0, NO_PEAKS, np.where(found > kept, PEAKS_TRUNCATED, 0)).astype(np.int8)


STAGE = StageSpec(
    name="peaks",
    func=find_peaks,
    inputs={"images": "images"},
    optional_inputs={"mask": "mask"},
    outputs=(
        Variable("peak_count", (), "int32", -1, "1",
                 "number of peaks kept in the peak tables, ≤ max_peaks (-1: image not processed)"),
        Variable("peak_count_found", (), "int32", -1, "1",
                 "number of peaks above the thresholds before the max_peaks cut; > peak_count: "
                 "truncated, the brightest max_peaks kept (-1: image not processed)"),
        Variable("peak_col", ("peak",), "float32", NAN, "px", "centroid column, 0-based pixel coordinates"),
        Variable("peak_row", ("peak",), "float32", NAN, "px", "centroid row, 0-based pixel coordinates"),
        Variable("peak_col_int", ("peak",), "int32", -1, "px", "column of the local maximum"),
        Variable("peak_row_int", ("peak",), "int32", -1, "px", "row of the local maximum"),
        Variable("peak_intensity", ("peak",), "float32", NAN, "counts", "peak height above background"),
        Variable("peak_integrated_intensity", ("peak",), "float32", NAN, "counts",
                 "background-subtracted sum over the integration box"),
        Variable("peak_background", ("peak",), "float32", NAN, "counts", "local background level"),
        Variable("peak_noise", ("peak",), "float32", NAN, "counts", "local noise sigma"),
    ),
    params={"threshold_sigma": 6.0, "threshold_counts": None, "min_distance_px": 3,
            "box_size_px": 5, "max_peaks": DEFAULT_MAX_PEAKS, "method": "laueflow"},
    dim_sizes={"peak": "max_peaks"},
    check=check_params,
    status=_status,
    status_codes={NO_PEAKS: "no_peaks", PEAKS_TRUNCATED: "peaks_truncated"},
    warning_codes={PEAKS_TRUNCATED},  # still fine: a later failure (not_indexed …) replaces it
    description="local-maximum peak search with centroid refinement",
)
