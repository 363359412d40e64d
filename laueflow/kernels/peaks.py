"""Peak search on one Laue image: local background and noise, threshold, local maxima, centroids.

Arrays in, arrays out: ``image`` may be a numpy or a cupy array; every operation goes through the
module returned by :func:`laueflow.backend.get_array_module` (and ``scipy.ndimage`` /
``cupyx.scipy.ndimage``), so the same code runs on CPU and GPU. Coordinates are **0-based**
``(col, row)`` array indices (LaueTools ``X = col + 1, Y = row + 1``).

Algorithm (one frame; stacks are looped over by the stage, never labelled across frames)
------------------------------------------------------------------------------------------
1. **Background** on a coarse grid: the image is cut into ``background_block_px`` blocks (default
   32 px, overlapping slightly so they tile the frame exactly); the background of a block is the
   median of every second pixel; blocks that differ from the 3×3 median of their neighbours by more
   than the noise (a block filled by a big spot) are replaced by it (a plain median filter would
   clip the top of the halo), and the grid is interpolated bilinearly back to pixels. This follows
   the smooth diffuse halo of real sCMOS images (≈ 1300 px radius) and the ≈ 1000-count offset.
2. **Noise** σ per block, robust and insensitive to background gradients: 1.4826·median(|d|)/√2 of
   the differences ``d`` between horizontally adjacent pixels; same 3×3 median clean-up.
3. **Detection statistic**: the 3×3 box sum ``S`` of the image (≈ matched to spots of σ ≈ 1 px:
   ≈ 1.6× the signal-to-noise of the hottest pixel, so spots whose peak is 5σ above background
   are found without lowering the threshold into the noise). Its noise σ_S is measured on ``S``
   itself (lag-3 differences: non-overlapping boxes), so correlated detector noise is accounted.
   A pixel is *hot* when ``S − 9B > threshold_sigma·σ_S``. With ``threshold_counts`` alone
   (``threshold_sigma=None``) a pixel is hot when it is itself more than ``threshold_counts``
   above ``B``, or next to such a pixel (the maximum of ``S`` may lie beside the hottest pixel):
   isolated noise pixels never pass a count threshold that a 3×3 sum would let through.
4. **Connected components** (``ndimage.label``, 8-connectivity, per frame) of the pixels with
   ``S − 9B > grow_sigma·σ_S`` (hysteresis): the pixels of a spot, for its centroid and ``npix``.
   (numpy: labelled in a 65×65 window around each peak when no peak's component reaches its
   window's edge — then they are the frame's components exactly — else over the whole frame.)
5. **Local maxima** of ``S``: a hot pixel is a peak when no pixel within ``min_distance_px``
   (Chebyshev distance: a square window of ``2·d+1`` px; *not* LaueTools' ``PixelNearRadius``,
   see below) has a larger ``S``; ties go to the lower flat index, so two maxima are never
   closer than ``min_distance_px``. Only hot pixels are examined (no full-image maximum filter),
   their 3×3 first: cost ∝ number of hot pixels. The peak's integer position is the hottest raw
   pixel of the 3×3 around the maximum of ``S``.
6. **Per peak**: ``intensity`` = hottest pixel − background (``threshold_counts``, counts of the
   pixel above ``B``, is applied to it, also when ``threshold_sigma`` detects); in a box of
   half-size ``box_size_px`` ((2·b+1)² pixels) ``integrated_intensity`` = Σ(I − B);
   centroid = (I − B)⁺-weighted mean position over the pixels of the peak's component within
   ``centroid_box_px`` (default 2: 5×5) of the hottest pixel (keeps neighbours out).
   The ``max_peaks`` highest peaks are kept, sorted by decreasing ``intensity``; with
   ``return_n_found=True`` the number of peaks before that cut comes back too (the stage records
   it, so a cut is never silent).

``mask`` (same shape, True = bad pixel: dead, hot, gaps) excludes pixels from being peaks, from
suppressing neighbours, from centroids and integration.

LaueTools method (``method="lauetools"``)
-----------------------------------------
LaueTools' numbers with LaueTools' meaning, so that a LaueTools setting (``readmccd.PeakSearch``
3.2.19 as BM32 users run it: ``Data_for_localMaxima="auto_background"``, ``formulaexpression
"A-B"``) finds the same peaks. What LaueTools does (read in its source):

- background ``B`` = ``scipy.ndimage.minimum_filter(A, size=10)`` of the raw image
  (``compute_autobackground_image``), ``D = clip(A − B, 0, saturation)``; the peak search runs
  on ``D``, the Gaussian fits on ``A``;
- ``local_maxima_search_method`` 0 (LaueNN/BM32): blobs = connected pixels with
  ``D > IntensityThreshold`` (4-connectivity), one candidate per blob at its hottest pixel;
  1 (``.psp`` default): pixels strictly above their neighbours along rows, columns and diagonals
  up to ``boxsize`` px, kept when ``D − min(D in the box) > IntensityThreshold``, then
  ``PixelNearRadius``: a candidate closer than that (Euclidean, strictly) to a more intense one is
  dropped (``generaltools.purgeClosePoints2``: whether or not that one is dropped itself);
  2: Mexican-hat convolution above ``thresholdConvolve``, then ``IntensityThreshold`` on ``D``
  above its minimum around the blob; the purge uses a fixed 10 px there;
- candidates closer than 2 px are merged, each is fitted (2-D Gaussian in a box of half-size
  ``boxsize``), fits that fail, drift more than ``FitPixelDev`` or are too small or too large are
  rejected, and fitted peaks closer than ``boxsize`` to a more intense one are dropped; peaks in
  the sCMOS junction bands (x or y in 997…1019) are removed.

Here: ``threshold_counts`` = ``IntensityThreshold`` on ``D`` with the same ``B``
(:data:`LAUETOOLS_BACKGROUND_PX`; computed exactly, but only where a 16-px block lower bound
lets a pixel pass); candidates = hot pixels (``D > threshold_counts``) that are the largest ``D``
of their 3×3; ``min_distance_px`` = ``PixelNearRadius`` with ``purgeClosePoints2``'s rule
(Euclidean, strictly closer, more intense = larger ``D``, ties to the lower flat index); peak =
the candidate pixel, ``intensity`` = its ``D``, ``background`` = its ``B``. Not reproduced: the
Gaussian fits and their rejections (centroids, ``integrated_intensity``, ``noise`` and ``npix``
are laueflow's, from laueflow's unbiased background) and the junction bands (use ``mask``).
Pixels at 0 counts (dead) are treated as masked: LaueTools' ``B`` drops to 0 around them and it
reports a faint spurious peak nearby. ``threshold_sigma`` is not used.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from .stats import median_last_axis

__all__ = ["PEAK_FIELDS", "PeakMask", "estimate_background", "find_peaks_2d", "interpolate_grid",
           "prepare_mask"]

#: keys of the dict returned by :func:`find_peaks_2d` (1-D arrays, one entry per peak)
PEAK_FIELDS = (
    "col_int", "row_int", "col", "row", "intensity", "integrated_intensity", "background", "noise",
    "npix",
)

_MAD_TO_SIGMA = 1.482602218505602
_MIN_NOISE = 0.5  # counts: floor for the noise of flat / quantised images


def _ndimage(xp):
    if xp is np:
        from scipy import ndimage
    else:  # cupy
        from cupyx.scipy import ndimage
    return ndimage


def _block_starts(n: int, block: int) -> np.ndarray:
    """Starts of ``ceil(n / block)`` blocks of ``block`` px spread to tile ``[0, n)`` exactly."""
    block = min(block, n)
    n_blocks = max(1, math.ceil(n / block))
    return np.round(np.linspace(0, n - block, n_blocks)).astype(np.intp), block


#: rows per stripe of the numpy full-frame passes (box sum, threshold): a stripe's temporaries
#: (≈ 4 × 32 rows × 2016 px × 4 B ≈ 1 MB) stay in the core's cache instead of streaming
#: frame-sized temporaries through memory (same arithmetic, same order: bit-identical results)
_STRIPE_ROWS = 32


def _box3_sum(image, xp):
    """3×3 box sum with edge replication (slicing only: ≈ 3 full-image passes)."""
    if xp is np:
        return _box3_sum_np(image)
    p = xp.pad(image, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def _box3_sum_np(image):
    """:func:`_box3_sum` by row stripes: ((up + mid) + down), then ((left + mid) + right), the
    order of the padded version, so the sums are bit-identical."""
    n_rows, n_cols = image.shape
    out = np.empty((n_rows, n_cols), dtype=image.dtype)
    rs = np.empty((min(_STRIPE_ROWS, n_rows), n_cols + 2), dtype=image.dtype)
    for r0 in range(0, n_rows, _STRIPE_ROWS):
        r1 = min(r0 + _STRIPE_ROWS, n_rows)
        m = r1 - r0
        band = rs[:m, 1:-1]
        up = image[r0 - 1:r1 - 1] if r0 > 0 else image[np.maximum(np.arange(r0, r1) - 1, 0)]
        down = image[r0 + 1:r1 + 1] if r1 < n_rows else image[np.minimum(np.arange(r0, r1) + 1, n_rows - 1)]
        np.add(up, image[r0:r1], out=band)
        np.add(band, down, out=band)
        rs[:m, 0] = rs[:m, 1]
        rs[:m, -1] = rs[:m, -2]
        o = out[r0:r1]
        np.add(rs[:m, :-2], band, out=o)
        np.add(o, rs[:m, 2:], out=o)
    return out


def _gather_blocks(image, block_px, row_step, xp):
    n_rows, n_cols = image.shape
    r0, br = _block_starts(n_rows, block_px)
    c0, bc = _block_starts(n_cols, block_px)
    rows = (r0[:, None] + np.arange(0, br, row_step)[None, :]).ravel()
    cols = (c0[:, None] + np.arange(bc)[None, :]).ravel()
    if xp is np:  # whole-row copies, and no column gather when the blocks tile the columns
        sub = image[rows]
        if not (len(cols) == n_cols and (cols == np.arange(n_cols)).all()):
            sub = sub[:, cols]
        sub = sub.astype(np.float32, copy=False)
    else:
        sub = image[xp.asarray(rows)][:, xp.asarray(cols)].astype(xp.float32, copy=False)
    sub = sub.reshape(len(r0), -1, len(c0), bc).transpose(0, 2, 1, 3)
    return sub, r0 + (br - 1) / 2.0, c0 + (bc - 1) / 2.0


def _median_last(x, xp, overwrite_input=False):
    """``xp.median(x, axis=-1)`` (numpy: :func:`~laueflow.kernels.stats.median_last_axis`, same
    values, several times faster; ``overwrite_input``: ``x`` is a scratch array)."""
    if xp is not np:
        return xp.median(x, axis=-1)
    return median_last_axis(x, overwrite_input=overwrite_input)


def _abs_diff(a, b, xp):
    """``|a − b|`` as a C-ordered array of their (broadcast) shape: numpy writes it in place of
    the strided copy ``xp.abs(a - b).reshape(...)`` would make (same values)."""
    if xp is not np:
        return xp.abs(a - b)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    np.subtract(a, b, out=out)
    return np.abs(out, out=out)


def _clean_grid(grid, xp):
    if grid.shape[0] >= 3 and grid.shape[1] >= 3:
        grid = _ndimage(xp).median_filter(grid, size=3, mode="nearest")
    return grid


def _block_noise(image, block_px, lag, row_step, xp):
    """Robust σ per block from differences of pixels ``lag`` columns apart (gradient-proof)."""
    sub, _, _ = _gather_blocks(image, block_px, row_step, xp)
    diff = _abs_diff(sub[..., lag:], sub[..., :-lag], xp).reshape(sub.shape[0], sub.shape[1], -1)
    noise = _median_last(diff, xp, overwrite_input=True) * (_MAD_TO_SIGMA / math.sqrt(2.0))
    return xp.maximum(_clean_grid(noise, xp), _MIN_NOISE).astype(xp.float32)


def estimate_background(image, block_px: int = 32):
    """Coarse background and noise grids of a 2-D image.

    Returns ``(background, noise, row_centres, col_centres)``: two ``(n_block_rows,
    n_block_cols)`` float32 arrays (of ``image``'s array module) and the 0-based pixel
    coordinates of the block centres (numpy float64), for :func:`interpolate_grid`.
    Background: median of every second pixel of every fourth row of each block; noise: 1.4826·median(|d|)/√2 of
    differences of adjacent pixels; both grids cleaned by a 3×3 median filter.
    """
    xp = get_array_module(image)
    block_px = max(8, int(block_px))
    sub, rc, cc = _gather_blocks(image, block_px, 4, xp)  # every 4th row: 128 samples per 32² block
    n_by, n_bx = sub.shape[:2]
    samples = sub[..., 0::2].reshape(n_by, n_bx, -1)  # a copy, unless the blocks are degenerate
    scratch = xp is np and not np.may_share_memory(samples, sub)
    background = _median_last(samples, xp, overwrite_input=scratch)
    diff = _abs_diff(sub[..., 1::2], sub[..., 0:-1:2][..., : sub[..., 1::2].shape[-1]], xp)
    noise = _median_last(diff.reshape(n_by, n_bx, -1), xp, overwrite_input=True)
    noise = noise * (_MAD_TO_SIGMA / math.sqrt(2.0))
    noise = xp.maximum(_clean_grid(noise, xp), _MIN_NOISE).astype(xp.float32)
    # replace only outlier blocks (a big spot, a dead region) by their 3x3 median: a plain median
    # filter would clip the top of the halo and bias the background low there
    cleaned = _clean_grid(background, xp)
    background = xp.where(xp.abs(background - cleaned) > noise, cleaned, background)
    return background.astype(xp.float32), noise, rc, cc


def _axis_weights(centres: np.ndarray, positions: np.ndarray):
    """Bilinear (clamped) interpolation indices/weights of ``positions`` on ``centres``."""
    if len(centres) == 1:
        zeros = np.zeros(len(positions), np.intp)
        return zeros, zeros, np.zeros(len(positions), np.float32)
    i1 = np.clip(np.searchsorted(centres, positions, side="right"), 1, len(centres) - 1)
    i0 = i1 - 1
    w = (positions - centres[i0]) / (centres[i1] - centres[i0])
    return i0, i1, np.clip(w, 0.0, 1.0).astype(np.float32)


def interpolate_grid(grid, row_centres, col_centres, shape=None, rows=None, cols=None):
    """Bilinear interpolation of a coarse grid, to a full ``shape`` image or at points.

    Give either ``shape=(n_rows, n_cols)`` (returns a float32 image) or ``rows, cols`` (integer
    or float 0-based positions, same array module as ``grid``; returns one value per point).
    """
    xp = get_array_module(grid)
    if shape is not None:
        ir0, ir1, wr = (xp.asarray(a) for a in _axis_weights(row_centres, np.arange(shape[0])))
        ic0, ic1, wc = (xp.asarray(a) for a in _axis_weights(col_centres, np.arange(shape[1])))
        tmp = grid[ir0] * (1 - wr)[:, None] + grid[ir1] * wr[:, None]
        return tmp[:, ic0] * (1 - wc) + tmp[:, ic1] * wc
    rows_h = np.asarray(_to_host(rows), dtype=np.float64)
    cols_h = np.asarray(_to_host(cols), dtype=np.float64)
    ir0, ir1, wr = (xp.asarray(a) for a in _axis_weights(row_centres, rows_h))
    ic0, ic1, wc = (xp.asarray(a) for a in _axis_weights(col_centres, cols_h))
    top = grid[ir0, ic0] * (1 - wc) + grid[ir0, ic1] * wc
    bottom = grid[ir1, ic0] * (1 - wc) + grid[ir1, ic1] * wc
    return top * (1 - wr) + bottom * wr


def _to_host(a):
    from ..backend import to_numpy

    return to_numpy(a)


def _empty(xp):
    out = {k: xp.zeros(0, xp.float32) for k in PEAK_FIELDS}
    for k in ("col_int", "row_int", "npix"):
        out[k] = xp.zeros(0, xp.int32)
    return out


class PeakMask:
    """A bad-pixel mask prepared once for many frames (:func:`prepare_mask`): the bool array and
    the flat indices of its bad pixels, so each frame does not rescan the whole mask."""

    __slots__ = ("mask", "bad")

    def __init__(self, mask, bad):
        self.mask = mask
        self.bad = bad


def prepare_mask(mask, xp=None):
    """``mask`` (2-D, True = bad pixel) → :class:`PeakMask` for :func:`find_peaks_2d` (None stays
    None; a :class:`PeakMask` passes through)."""
    if mask is None or isinstance(mask, PeakMask):
        return mask
    xp = xp or get_array_module(mask)
    mask = xp.asarray(mask, dtype=bool)
    return PeakMask(mask, xp.flatnonzero(mask))


def _pixel_tables(centres, n):
    """:func:`_axis_weights` of every integer pixel position ``0 … n−1`` (gathered per point,
    they equal what :func:`interpolate_grid` computes at integer positions)."""
    return _axis_weights(centres, np.arange(n))


def _interp_at_pixels(grid, rt, ct, rows, cols):
    """:func:`interpolate_grid` at integer pixels (numpy), from :func:`_pixel_tables`."""
    ir0, ir1, wr = rt[0][rows], rt[1][rows], rt[2][rows]
    ic0, ic1, wc = ct[0][cols], ct[1][cols], ct[2][cols]
    top = grid[ir0, ic0] * (1 - wc) + grid[ir0, ic1] * wc
    bottom = grid[ir1, ic0] * (1 - wc) + grid[ir1, ic1] * wc
    return top * (1 - wr) + bottom * wr


def _above_interpolated(values, grid, rt, ct):
    """``values > interpolate_grid(grid, shape=values.shape)`` (numpy) by row stripes: the
    frame-sized level image is never built; same float32 operations, bit-identical result."""
    n_rows, n_cols = values.shape
    ir0, ir1, wr = rt
    ic0, ic1, wc = ct
    tmp = grid[ir0] * (1 - wr)[:, None] + grid[ir1] * wr[:, None]
    wc1 = 1 - wc
    counts0, counts1 = _run_counts(ic0, tmp.shape[1]), _run_counts(ic1, tmp.shape[1])
    out = np.empty((n_rows, n_cols), dtype=bool)
    for r0 in range(0, n_rows, _STRIPE_ROWS):
        r1 = min(r0 + _STRIPE_ROWS, n_rows)
        t = tmp[r0:r1]
        a = _columns(t, ic0, counts0)
        a *= wc1
        b = _columns(t, ic1, counts1)
        b *= wc
        a += b
        np.greater(values[r0:r1], a, out=out[r0:r1])
    return out


def _run_counts(index, n):
    """Run lengths of a non-decreasing gather index (``np.repeat`` counts), else None."""
    if len(index) and (np.diff(index) < 0).any():
        return None
    return np.bincount(index, minlength=n)


def _columns(t, index, counts):
    """``t[:, index]``: a ``np.repeat`` of the columns when ``index`` is sorted (≈ 3× faster)."""
    return np.repeat(t, counts, axis=1) if counts is not None else t[:, index]


#: half-size of the windows in which the components of the peaks are labelled (numpy path;
#: spot components of real and simulated frames reach ≲ 20 px from their peak)
_LABEL_HALF_PX = 32


def _windowed_components(low, smax, prow, pcol, half):
    """Connected components (8-connectivity) of ``low`` seen from each peak, labelled in a
    ``(2·half+1)²`` window around the peak pixel instead of over the whole frame.

    Returns ``(labels (k, w, w), peak_label (k,), npix (k,))`` or None when some peak's component
    reaches the window's edge inside the frame (then only a whole-frame labelling is exact). A
    component that does not reach the edge lies entirely inside the window, so its pixels and size
    are the same as in the whole-frame labelling.
    """
    n_rows, n_cols = low.shape
    k, w = len(prow), 2 * half + 1
    win = np.zeros((k, w, w), dtype=bool)  # pixels outside the frame stay False
    interior = (prow >= half) & (prow < n_rows - half) & (pcol >= half) & (pcol < n_cols - half)
    if interior.any():  # whole windows: block copies from a strided view
        blocks = np.lib.stride_tricks.sliding_window_view(low, (w, w))
        win[interior] = blocks[prow[interior] - half, pcol[interior] - half]
    edge = np.flatnonzero(~interior)
    if edge.size:  # windows that cross the frame border: gathered pixel by pixel
        ar = np.arange(-half, half + 1)
        rr = prow[edge, None] + ar[None, :]
        cc = pcol[edge, None] + ar[None, :]
        inside = ((rr >= 0) & (rr < n_rows))[:, :, None] & ((cc >= 0) & (cc < n_cols))[:, None, :]
        win[edge] = low[np.clip(rr, 0, n_rows - 1)[:, :, None], np.clip(cc, 0, n_cols - 1)[:, None, :]] & inside
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity inside a window, never across windows
    labels, _ = _ndimage(np).label(win, structure=structure)
    sr, sc = smax // n_cols, smax % n_cols
    peak_label = labels[np.arange(k), sr - prow + half, sc - pcol + half]
    ring = np.concatenate([labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]], axis=1)
    if (ring == peak_label[:, None]).any():
        return None
    npix = np.bincount(labels.ravel(), minlength=int(peak_label.max()) + 1)[peak_label]
    return labels, peak_label, npix


#: LaueTools' background for the peak search (``Data_for_localMaxima="auto_background"``):
#: ``compute_autobackground_image(boxsizefilter=10)`` = ``scipy.ndimage.minimum_filter(A, size=10)``
LAUETOOLS_BACKGROUND_PX = 10

#: block size of the lower bound of the LaueTools background (≥ ``LAUETOOLS_BACKGROUND_PX``)
_LT_BLOCK_PX = 16

#: above this fraction of candidate pixels the exact minimum filter of the whole frame is cheaper
_LT_MAX_CANDIDATE_FRACTION = 0.02

PEAK_METHODS = ("laueflow", "lauetools")


def _window_min_at(img, flat, size, xp, chunk=1 << 14):
    """``scipy.ndimage.minimum_filter(img, size)`` at the flat pixels ``flat`` only: the minimum
    over rows ``r − size//2 … r + (size−1)//2`` and the same columns (scipy's window for an even
    size). scipy's default border mode ``reflect`` only repeats pixels already in the window, so
    the window is clipped to the frame."""
    n_rows, n_cols = img.shape
    lo, hi = -(size // 2), (size - 1) // 2
    ar = xp.arange(lo, hi + 1)
    img_flat = img.ravel()
    out = []
    for start in range(0, int(flat.shape[0]), chunk):
        idx = flat[start:start + chunk]
        r, c = idx // n_cols, idx % n_cols
        rows = xp.clip(r[:, None] + ar[None, :], 0, n_rows - 1)  # (k, size)
        cols = xp.clip(c[:, None] + ar[None, :], 0, n_cols - 1)
        rowmin = None
        for j in range(size):  # one window row at a time: (k, size) gathers
            v = img_flat[rows[:, j:j + 1] * n_cols + cols].min(axis=1)
            rowmin = v if rowmin is None else xp.minimum(rowmin, v)
        out.append(rowmin)
    if not out:
        return xp.zeros(0, img.dtype)
    return xp.concatenate(out) if len(out) > 1 else out[0]


def _block_min(img, block, xp):
    """Minimum of each ``block``×``block`` block (the last ones partial), a coarse grid."""
    def rows_min(a):  # blocks of rows of a 2-D array: reshaped views, no copy of the frame
        n = a.shape[0] // block
        out = a[: n * block].reshape(n, block, a.shape[1]).min(axis=1)
        if a.shape[0] > n * block:
            out = xp.concatenate([out, a[n * block:].min(axis=0)[None]])
        return out

    return rows_min(rows_min(img).T).T


def _lauetools_hot(img, threshold, xp):
    """Flat indices (ascending) and ``D = A − B`` of the pixels with ``D > threshold``, where
    ``B = minimum_filter(A, LAUETOOLS_BACKGROUND_PX)`` is LaueTools' auto-background.

    ``B`` is evaluated only where it can matter: a pixel passes only if it is more than
    ``threshold`` above the minimum of the 3×3 blocks of 16 px around it (a lower bound of ``B``:
    the 10-px window lies inside them), then ``B`` is taken exactly at those candidates. When
    candidates are many (a low threshold) the whole frame is filtered instead."""
    n_rows, n_cols = img.shape
    size, block = LAUETOOLS_BACKGROUND_PX, _LT_BLOCK_PX
    ndi = _ndimage(xp)
    level = ndi.minimum_filter(_block_min(img, block, xp), size=3, mode="nearest") + float(threshold)
    lev_cols = xp.repeat(level, block, axis=1)[:, :n_cols]  # (n_block_rows, n_cols)
    n_full = n_rows // block
    parts = [xp.flatnonzero(img[: n_full * block].reshape(n_full, block, n_cols) > lev_cols[:n_full, None, :])]
    if n_rows > n_full * block:
        parts.append(xp.flatnonzero(img[n_full * block:] > lev_cols[n_full][None, :]) + n_full * block * n_cols)
    cand = xp.concatenate(parts)
    if cand.size > _LT_MAX_CANDIDATE_FRACTION * img.size:
        d = (img - ndi.minimum_filter(img, size=size)).ravel()
        hot = xp.flatnonzero(d > float(threshold))
        return hot, d[hot]
    d = img.ravel()[cand] - _window_min_at(img, cand, size, xp)
    keep = d > float(threshold)
    return cand[keep], d[keep]


def _lauetools_maxima(img, hot, d, min_distance_px, n_cols, xp):
    """LaueTools-style local maxima of ``D`` among the hot pixels ``hot`` (ascending flat indices).

    Candidates: hot pixels whose ``D`` is the largest of their 3×3 neighbourhood (ties: the lower
    flat index; a pixel that is not hot has ``D ≤`` threshold, below any hot pixel). Then the
    neighbour rule of LaueTools (``generaltools.purgeClosePoints2`` with ``PixelNearRadius``):
    a candidate is dropped when a candidate with a larger ``D`` (ties: lower flat index) lies
    closer than ``min_distance_px`` (Euclidean), whether or not that one is itself dropped.
    Returns ``(flat indices, D)`` of the peaks, ascending flat index."""
    n_rows = img.shape[0]
    r, c = hot // n_cols, hot % n_cols
    is_max = xp.ones(hot.shape, dtype=bool)
    n_hot = int(hot.shape[0])
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if not (dr or dc):
                continue
            q = hot + (dr * n_cols + dc)
            valid = (r + dr >= 0) & (r + dr < n_rows) & (c + dc >= 0) & (c + dc < n_cols)
            pos = xp.minimum(xp.searchsorted(hot, q), n_hot - 1)
            present = valid & (hot[pos] == q)
            dq = d[pos]
            is_max &= ~present | (d > dq) | ((d == dq) & (hot < q))
    cand, dc_ = hot[is_max], d[is_max]
    radius = int(min_distance_px)
    if cand.shape[0] < 2 or radius <= 1:  # 3x3 maxima are ≥ 2 px apart already
        return cand, dc_
    from scipy.spatial import cKDTree

    cand_h, d_h = _to_host(cand).astype(np.int64), _to_host(dc_).astype(np.float64)
    xy = np.c_[cand_h // n_cols, cand_h % n_cols].astype(np.float64)
    # integer positions: distance < radius  <=>  d² ≤ radius² − 1
    pairs = cKDTree(xy).query_pairs(math.sqrt(radius * radius - 0.5), output_type="ndarray")
    if len(pairs) == 0:
        return cand, dc_
    rank = np.empty(len(cand_h), np.int64)
    rank[np.lexsort((cand_h, -d_h))] = np.arange(len(cand_h))
    i, j = pairs[:, 0], pairs[:, 1]
    drop = np.where(rank[i] > rank[j], i, j)
    keep = np.ones(len(cand_h), bool)
    keep[drop] = False
    keep = xp.asarray(keep)
    return cand[keep], dc_[keep]


class _BackgroundMap:
    """One frame's local background and noise grids (:func:`estimate_background`) and how to
    read them at pixels: per-axis weight tables on numpy (``fast``), interpolation on cupy."""

    def __init__(self, img, block_px: int, fast: bool):
        self.grid, self.noise_grid, self.rc, self.cc = estimate_background(img, block_px)
        self.shape, self.fast = img.shape, fast
        if fast:
            self.rt, self.ct = _pixel_tables(self.rc, self.shape[0]), _pixel_tables(self.cc, self.shape[1])

    def at(self, grid, flat):
        """``grid`` (a grid of this frame's blocks) interpolated at the flat pixel indices ``flat``."""
        rows, cols = flat // self.shape[1], flat % self.shape[1]
        if self.fast:
            return _interp_at_pixels(grid, self.rt, self.ct, rows, cols)
        return interpolate_grid(grid, self.rc, self.cc, rows=rows, cols=cols)

    def above(self, values, grid):
        """bool ``(rows, cols)``: ``values`` greater than ``grid`` interpolated at every pixel."""
        if self.fast:
            return _above_interpolated(values, grid, self.rt, self.ct)
        return values > interpolate_grid(grid, self.rc, self.cc, shape=self.shape)


def find_peaks_2d(
    image,
    *,
    threshold_sigma: float | None = 6.0,
    threshold_counts: float | None = None,
    min_distance_px: int = 3,
    box_size_px: int = 5,
    max_peaks: int | None = 500,
    mask=None,
    background_block_px: int = 32,
    grow_sigma: float = 2.0,
    centroid_box_px: int = 2,
    chunk_pixels: int = 1 << 18,
    return_n_found: bool = False,
    method: str = "laueflow",
):
    """Find the peaks of one 2-D image (numpy or cupy). See the module docstring.

    Returns a dict of 1-D arrays (``PEAK_FIELDS``), one entry per peak, sorted by decreasing
    ``intensity``: ``col_int, row_int`` (int32, hottest pixel), ``col, row`` (float32 centroid),
    ``intensity`` (hottest pixel − background), ``integrated_intensity`` (Σ I − B in the box),
    ``background``, ``noise`` (local per-pixel σ, counts), ``npix`` (int32, pixels of the spot's
    3×3-smoothed component above ``grow_sigma``).

    ``return_n_found``: return ``(peaks, n_found)`` instead, ``n_found`` (int) = the number of
    peaks above the thresholds before the ``max_peaks`` cut (``> max_peaks``: only the brightest
    ``max_peaks`` were kept).

    ``method="lauetools"``: LaueTools' meaning of the numbers (module docstring, "LaueTools
    method"); ``threshold_counts`` is required and ``threshold_sigma`` is not used.
    """
    _check_arguments(image, method, threshold_sigma, threshold_counts)
    lauetools = method == "lauetools"
    xp = get_array_module(image, mask.mask if isinstance(mask, PeakMask) else mask)
    fast = xp is np  # numpy: stripe-wise full-frame passes, table interpolation, windowed labels
    arr = xp.asarray(image)
    img = arr.astype(xp.float32, copy=False)
    background = _BackgroundMap(img, background_block_px, fast)
    mask, bad = _bad_pixels(arr, mask, lauetools, xp)
    if bad is not None and bad.size:  # neutralise bad pixels: replace them by the local background
        if img is arr or not fast:  # never write into the caller's array
            img = img.copy()
        img.ravel()[bad] = background.at(background.grid, bad)
    # detection statistic: 3x3 box sum S (matched to spots of sigma ~ 1 px, ~1.6x the S/N of
    # the hottest pixel); its noise is measured on S itself (lag-3 differences: independent boxes)
    smooth = _box3_sum(img, xp)
    noise_s = _block_noise(smooth, max(8, int(background_block_px)), 3, 4, xp)
    by_sigma = threshold_sigma is not None and not lauetools
    excess_low = noise_s * float(grow_sigma)
    if by_sigma:
        excess_low = xp.minimum(excess_low, noise_s * float(threshold_sigma))
    elif not lauetools:  # counts only: the components' level as before (≤ the counts on S)
        excess_low = xp.minimum(excess_low, float(threshold_counts))
    low = _component_pixels(smooth, 9.0 * background.grid + excess_low, background, mask, bad)
    measure = dict(low=low, mask=mask, max_peaks=max_peaks, box_size_px=box_size_px,
                   centroid_box_px=centroid_box_px, return_n_found=return_n_found, fast=fast, xp=xp)
    if lauetools:
        peaks, height = _lauetools_peaks(img, threshold_counts, min_distance_px, mask, xp)
        if peaks.size == 0:
            return (_empty(xp), 0) if return_n_found else _empty(xp)
        bg = background.at(background.grid, peaks).astype(xp.float32)
        noise = background.at(background.noise_grid, peaks).astype(xp.float32)
        lauetools_background = (img.ravel()[peaks] - height).astype(xp.float32)
        return _measure_peaks(img, smax=peaks, peaks=peaks, height=height, bg=bg, background=lauetools_background,
                              noise=noise, **measure)
    if by_sigma:
        high = 9.0 * background.grid + noise_s * float(threshold_sigma)
        flat_hot = _hot_by_statistic(smooth, low, high, background, xp)
    else:
        flat_hot = _hot_by_counts(img, background, threshold_counts, mask, xp)
    smax = _local_maxima(smooth, flat_hot, min_distance_px, chunk_pixels, xp)
    if smax.size == 0:
        return (_empty(xp), 0) if return_n_found else _empty(xp)
    peaks = _hottest_of_3x3(img, smax, mask, xp)
    bg = background.at(background.grid, peaks).astype(xp.float32)
    noise = background.at(background.noise_grid, peaks).astype(xp.float32)
    height = img.ravel()[peaks] - bg
    if threshold_counts is not None:  # LaueTools IntensityThreshold: counts above background
        keep = height > float(threshold_counts)
        peaks, smax, bg, noise, height = peaks[keep], smax[keep], bg[keep], noise[keep], height[keep]
        if peaks.size == 0:
            return (_empty(xp), 0) if return_n_found else _empty(xp)
    return _measure_peaks(img, smax=smax, peaks=peaks, height=height, bg=bg, background=bg, noise=noise, **measure)


def _check_arguments(image, method, threshold_sigma, threshold_counts) -> None:
    if image.ndim != 2:
        raise ValueError(f"find_peaks_2d takes one 2-D image, got shape {image.shape}")
    if method not in PEAK_METHODS:
        raise ValueError(f"method must be one of {', '.join(PEAK_METHODS)}, got {method!r}")
    if method == "lauetools" and threshold_counts is None:
        raise ValueError("method lauetools needs threshold_counts (LaueTools IntensityThreshold)")
    if threshold_sigma is None and threshold_counts is None:
        raise ValueError("give threshold_sigma and/or threshold_counts")


def _bad_pixels(arr, mask, lauetools: bool, xp):
    """``(mask, bad)``: the bool mask (or None) and the flat indices of its bad pixels (or None).
    With ``lauetools`` the dead (0-count) pixels are added: they would pull LaueTools'
    minimum-filter background to 0."""
    bad = None
    if isinstance(mask, PeakMask):
        mask, bad = mask.mask, mask.bad
    elif mask is not None:
        mask = xp.asarray(mask, dtype=bool)
        bad = xp.flatnonzero(mask)
    if lauetools:
        dead = xp.flatnonzero(arr.ravel() == 0)
        if dead.size:
            bad = dead if bad is None else xp.unique(xp.concatenate([bad, dead]))
            mask = xp.zeros(arr.shape, dtype=bool) if mask is None else mask.copy()
            mask.ravel()[dead] = True
    return mask, bad


def _component_pixels(smooth, level, background: _BackgroundMap, mask, bad):
    """bool ``(rows, cols)``: the good pixels whose ``S`` is above ``level`` (a block grid) —
    the pixels of the spots' connected components."""
    low = background.above(smooth, level)
    if background.fast:
        if bad is not None and bad.size:
            low.ravel()[bad] = False
    elif mask is not None:
        low &= ~mask
    return low


def _hot_by_statistic(smooth, low, level, background: _BackgroundMap, xp):
    """Flat indices of the pixels whose ``S`` is above ``level`` (a block grid), looked for
    among the ``low`` pixels only: the level is interpolated at those few."""
    flat_low = xp.flatnonzero(low)
    return flat_low[smooth.ravel()[flat_low] > background.at(level, flat_low)]


def _hot_by_counts(img, background: _BackgroundMap, threshold_counts, mask, xp):
    """Flat indices of the good pixels more than ``threshold_counts`` above the background and
    of their 3×3 neighbours (the maximum of ``S`` may lie next to the hottest pixel)."""
    n_rows, n_cols = img.shape
    flat_above = xp.flatnonzero(background.above(img, background.grid + float(threshold_counts)))
    if mask is not None:
        flat_above = flat_above[~mask.ravel()[flat_above]]
    rows, cols = flat_above // n_cols, flat_above % n_cols
    flat_hot = xp.unique(xp.concatenate([
        xp.clip(rows + dr, 0, n_rows - 1) * n_cols + xp.clip(cols + dc, 0, n_cols - 1)
        for dr in (-1, 0, 1) for dc in (-1, 0, 1)]))
    if mask is not None:
        flat_hot = flat_hot[~mask.ravel()[flat_hot]]
    return flat_hot


def _local_maxima(smooth, flat_hot, min_distance_px: int, chunk_pixels: int, xp):
    """The hot pixels (flat indices) that are maxima of ``S``: larger than (or equal to and
    earlier than) every pixel of the ``(2d+1)²`` window. Examined in chunks to bound memory; the
    3×3 neighbours are tested first (a maximum of the window is one of its 3×3), so the whole
    window is only gathered around the few pixels that pass (same result, far fewer gathers)."""
    if flat_hot.size == 0:
        return flat_hot
    n_rows, n_cols = smooth.shape
    d = max(1, int(min_distance_px))
    near3 = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    offsets = near3 + [(dr, dc) for dr in range(-d, d + 1) for dc in range(-d, d + 1)
                       if max(abs(dr), abs(dc)) > 1]
    s_flat = smooth.ravel()
    keep_parts = []
    for start in range(0, int(flat_hot.size), chunk_pixels):
        idx = flat_hot[start:start + chunk_pixels]
        for group in (offsets[:8], offsets[8:]):
            if not group or idx.size == 0:
                continue
            r, c = idx // n_cols, idx % n_cols
            v = s_flat[idx]
            is_max = xp.ones(idx.shape, dtype=bool)
            for dr, dc in group:
                nidx = xp.clip(r + dr, 0, n_rows - 1) * n_cols + xp.clip(c + dc, 0, n_cols - 1)
                nv = s_flat[nidx]
                is_max &= (v > nv) | ((v == nv) & (idx <= nidx))
            idx = idx[is_max]
        keep_parts.append(idx)
    return xp.concatenate(keep_parts) if len(keep_parts) > 1 else keep_parts[0]


def _hottest_of_3x3(img, smax, mask, xp):
    """Flat index of the hottest good raw pixel of the 3×3 around each maximum of ``S``: the
    peaks' integer positions."""
    n_rows, n_cols = img.shape
    sr, sc = smax // n_cols, smax % n_cols
    n3 = xp.stack([xp.clip(sr + dr, 0, n_rows - 1) * n_cols + xp.clip(sc + dc, 0, n_cols - 1)
                   for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=1)
    n3v = img.ravel()[n3]
    if mask is not None:
        n3v = xp.where(mask.ravel()[n3], -xp.inf, n3v)
    return n3[xp.arange(n3.shape[0]), xp.argmax(n3v, axis=1)]


def _lauetools_peaks(img, threshold_counts, min_distance_px, mask, xp):
    """Peaks of ``method="lauetools"``: flat indices and heights ``D = A − B`` above LaueTools'
    background (:func:`_lauetools_hot`, :func:`_lauetools_maxima`); masked pixels never peak."""
    n_cols = img.shape[1]
    hot, d = _lauetools_hot(img, threshold_counts, xp)
    if mask is not None and hot.size:
        ok = ~mask.ravel()[hot]
        hot, d = hot[ok], d[ok]
    if hot.size == 0:
        return hot, d
    return _lauetools_maxima(img, hot, d, min_distance_px, n_cols, xp)


def _measure_peaks(img, low, mask, smax, peaks, height, bg, background, noise, max_peaks, box_size_px,
                   centroid_box_px, return_n_found, fast, xp):
    """Sort, cut at ``max_peaks``, integrate and centroid the peaks (both methods).

    ``bg``: laueflow's local background at the peaks (integration, centroid weights);
    ``background``: the background reported (the one ``height`` is measured from)."""
    n_rows, n_cols = img.shape
    img_flat = img.ravel()
    prow, pcol = peaks // n_cols, peaks % n_cols
    # sort by decreasing height, ties by flat index (lexsort: last key is primary)
    order = xp.lexsort(xp.stack([peaks.astype(xp.float64), -height.astype(xp.float64)]))
    n_found = int(order.shape[0])
    if max_peaks is not None:
        order = order[: int(max_peaks)]
    peaks, prow, pcol, smax = peaks[order], prow[order], pcol[order], smax[order]
    bg, background, noise, height = bg[order], background[order], noise[order], height[order]
    low.ravel()[smax] = True  # the seed of each component (a counts-only peak may lie below it)

    # box of half-size b around each peak: (n_peaks, (2b+1)^2) gathers
    b = int(box_size_px)
    ar = xp.arange(-b, b + 1)
    zeros = xp.zeros((2 * b + 1, 2 * b + 1), dtype=ar.dtype)
    box_r = (prow[:, None, None] + ar[None, :, None] + zeros[None]).reshape(len(peaks), -1)
    box_c = (pcol[:, None, None] + ar[None, None, :] + zeros[None]).reshape(len(peaks), -1)
    inside = (box_r >= 0) & (box_r < n_rows) & (box_c >= 0) & (box_c < n_cols)
    bidx = xp.clip(box_r, 0, n_rows - 1) * n_cols + xp.clip(box_c, 0, n_cols - 1)
    if mask is not None:
        inside &= ~mask.ravel()[bidx]
    sub = (img_flat[bidx] - bg[:, None]) * inside
    integrated = sub.sum(axis=1)

    # connected components (per frame) of the low-threshold pixels of S: the spot's own pixels
    near = (xp.abs(box_r - prow[:, None]) <= centroid_box_px) & (
        xp.abs(box_c - pcol[:, None]) <= centroid_box_px)
    half = max(_LABEL_HALF_PX, int(centroid_box_px) + 1)
    windowed = None
    if fast and len(peaks) * (2 * half + 1) ** 2 < low.size:  # else labelling the frame is cheaper
        windowed = _windowed_components(low, smax, prow, pcol, half)
    if windowed is not None:  # exact: every peak's component lies inside its window
        win_labels, peak_label, npix = windowed
        wr_ = np.clip(box_r - prow[:, None] + half, 0, 2 * half)
        wc_ = np.clip(box_c - pcol[:, None] + half, 0, 2 * half)
        same = win_labels[np.arange(len(peaks))[:, None], wr_, wc_] == peak_label[:, None]
        member = inside & near & same
    else:
        labels, _ = _ndimage(xp).label(low, structure=xp.ones((3, 3), dtype=bool))
        lab_flat = labels.ravel()
        peak_label = lab_flat[smax]
        member = inside & near & (lab_flat[bidx] == peak_label[:, None])
        npix = xp.bincount(lab_flat)[peak_label]  # peaks are hot, hence labelled (≥ 1)
    w = xp.where(member, xp.maximum(sub, 0), 0).astype(xp.float32)
    wsum = w.sum(axis=1)
    ok = wsum > 0
    wsafe = xp.where(ok, wsum, 1)
    col = xp.where(ok, (w * box_c).sum(axis=1) / wsafe, pcol.astype(xp.float32))
    row = xp.where(ok, (w * box_r).sum(axis=1) / wsafe, prow.astype(xp.float32))
    out = {
        "col_int": pcol.astype(xp.int32),
        "row_int": prow.astype(xp.int32),
        "col": col.astype(xp.float32),
        "row": row.astype(xp.float32),
        "intensity": height.astype(xp.float32),
        "integrated_intensity": integrated.astype(xp.float32),
        "background": background,
        "noise": noise,
        "npix": npix.astype(xp.int32),
    }
    return (out, n_found) if return_n_found else out
