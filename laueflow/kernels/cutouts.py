"""Spot cutouts and the Laue spot descriptors of Kirstein, Petrich et al. (Materials 2023).

Arrays in, arrays out (numpy; the fit and the CNN move them to torch). Images are
``image[row, col]`` with **0-based** pixel centres at integers, as everywhere in laueflow.

Cutout
------
For a peak at the integer pixel ``s = (col, row)`` the cutout ``A(s)`` holds rows
``row−16 … row+15`` and columns ``col−16 … col+15`` (32×32): the peak pixel sits at index
``[16, 16]`` and pixel ``[i, j]`` of the cutout is at offset ``(j − 16, i − 16)`` (col, row) from
``s``. Pixels outside the frame are *padded*: they get the median of the cutout's pixels inside
the frame, a ``valid`` mask marks them (the Gaussian fit gives them zero weight) and the cutout's
``border`` flag is set.

Descriptors (``Desc``, what the CNN predicts; every component in [0, 1])
-----------------------------------------------------------------------
``Sim`` (``sim_from_sim0``), ``Pos*_1`` (column), ``Pos*_2`` (row) (``pos_star``), ``Asp`` and
``Area*`` (``area_star``) — see ``docs/spot-descriptors.md`` for the definitions and the intensity
normalisation. Their inverses (:func:`pos_from_star`, :func:`area_from_star`) turn CNN outputs
back into pixels; ``Area`` saturates at 5π px² and ``Pos − s`` at ±1.1 px by construction.

CNN input normalisation (:func:`normalise_cutouts`)
---------------------------------------------------
``x = (I − b) / h`` with ``b`` the median of the cutout's valid pixels (a robust per-cutout
background: a compact spot covers a few % of the 1024 pixels) and ``h = max(I − b)`` over the
central 7×7 pixels (the peak height), floored at 1 count; padded pixels become 0; values are
clipped to [−4, 8]. The network therefore sees the spot shape at unit height with the noise at
its true relative level (which is what ``Sim`` measures).
"""
from __future__ import annotations

import numpy as np

from .stats import median_last_axis

__all__ = [
    "CUTOUT_SIZE", "CUTOUT_CENTRE", "POS_LIMIT_PX", "AREA_LIMIT_PX2", "SIM0_THRESHOLD",
    "GOOD_SIM", "GOOD_DISTANCE_PX",
    "extract_cutouts", "extract_cutouts_batch", "extract_patches", "normalise_cutouts",
    "sim_from_sim0", "pos_star", "pos_from_star", "area_star", "area_from_star",
    "descriptor_targets", "good_spot", "dihedral_transform", "transform_targets",
]

CUTOUT_SIZE = 32
CUTOUT_CENTRE = 16  # index of the peak pixel s inside the cutout
POS_LIMIT_PX = 1.1  # Pos* saturates at |Pos − s| = 1.1 px
AREA_LIMIT_PX2 = 5.0 * np.pi  # Area* saturates at 5π px²
SIM0_THRESHOLD = 0.85
GOOD_SIM = 0.5
GOOD_DISTANCE_PX = 0.9


# ----------------------------------------------------------------------------- extraction
def extract_patches(image, col_int, row_int, *, before: int = 16, after: int = 15):
    """Square patches rows ``row−before … row+after`` (same for columns) of one 2-D image.

    Returns ``(patches float32 (m, w, w), valid bool (m, w, w), border bool (m,))`` with
    ``w = before + after + 1``. Pixels outside the frame are filled with the median of the
    patch's valid pixels (``valid`` False there, ``border`` True for that patch).
    """
    image = np.asarray(image)
    return _patches(image, None, col_int, row_int, before, after)


def _patches(images, image_index, col_int, row_int, before, after):
    """Patches of ``images[image_index]`` (a stack), or of ``images`` (one frame) when
    ``image_index`` is None; see :func:`extract_patches`."""
    n_rows, n_cols = images.shape[-2:]
    col_int = np.asarray(col_int, dtype=np.int64).reshape(-1)
    row_int = np.asarray(row_int, dtype=np.int64).reshape(-1)
    t = np.arange(-before, after + 1)
    rr = row_int[:, None] + t[None, :]
    cc = col_int[:, None] + t[None, :]
    row_ok = (rr >= 0) & (rr < n_rows)
    col_ok = (cc >= 0) & (cc < n_cols)
    ri = np.clip(rr, 0, n_rows - 1)[:, :, None]
    ci = np.clip(cc, 0, n_cols - 1)[:, None, :]
    if image_index is None:
        patches = images[ri, ci]
    else:
        patches = images[np.asarray(image_index, dtype=np.int64).reshape(-1)[:, None, None], ri, ci]
    patches = patches.astype(np.float32)
    valid = row_ok[:, :, None] & col_ok[:, None, :]
    border = ~valid.reshape(len(valid), -1).all(axis=1)
    if border.any():
        for k in np.flatnonzero(border):
            inside = patches[k][valid[k]]
            fill = np.median(inside) if inside.size else 0.0
            patches[k][~valid[k]] = fill
    return patches, valid, border


def extract_cutouts(image, col_int, row_int):
    """32×32 cutouts ``A(s)`` (rows/cols ``s−16 … s+15``) of one image; see :func:`extract_patches`."""
    return extract_patches(image, col_int, row_int, before=CUTOUT_CENTRE, after=CUTOUT_SIZE - CUTOUT_CENTRE - 1)


def extract_cutouts_batch(images, image_index, col_int, row_int):
    """:func:`extract_cutouts` of many frames in one gather: cutout ``j`` is cut from
    ``images[image_index[j]]`` (``images`` ``(n, rows, cols)``); same arrays as cutting each
    frame's peaks separately and concatenating."""
    images = np.asarray(images)
    return _patches(images, image_index, col_int, row_int, CUTOUT_CENTRE, CUTOUT_SIZE - CUTOUT_CENTRE - 1)


def normalise_cutouts(cutouts, valid=None):
    """CNN input normalisation ``(I − b) / h`` (see the module docstring); float32 (m, 32, 32)."""
    x = np.asarray(cutouts, dtype=np.float32)
    m = len(x)
    flat = x.reshape(m, -1)
    if valid is None:
        b = median_last_axis(flat)
    else:
        v = np.asarray(valid, dtype=bool).reshape(m, -1)
        b = np.where(v.all(axis=1), median_last_axis(flat), 0.0).astype(np.float32)
        for k in np.flatnonzero(~v.all(axis=1)):
            b[k] = np.median(flat[k][v[k]]) if v[k].any() else 0.0
    y = x - b[:, None, None].astype(np.float32)
    c = CUTOUT_CENTRE
    h = np.maximum(y[:, c - 3:c + 4, c - 3:c + 4].reshape(m, -1).max(axis=1), 1.0)
    y /= h[:, None, None]
    if valid is not None:
        y[~np.asarray(valid, dtype=bool)] = 0.0
    return np.clip(y, -4.0, 8.0).astype(np.float32)


# ----------------------------------------------------------------------------- definitions
def sim_from_sim0(sim0):
    """``Sim = 0`` if ``Sim0 ≤ 0.85`` else ``(Sim0 − 0.85) / 0.15``."""
    sim0 = np.asarray(sim0, dtype=np.float64)
    return np.where(sim0 <= SIM0_THRESHOLD, 0.0, (sim0 - SIM0_THRESHOLD) / (1.0 - SIM0_THRESHOLD))


def pos_star(offset_px):
    """``Pos*`` of a position offset ``Pos − s`` (px): 0 at ≤ −1.1, 1 at ≥ 1.1, linear between."""
    d = np.asarray(offset_px, dtype=np.float64)
    return np.clip((d + POS_LIMIT_PX) / (2 * POS_LIMIT_PX), 0.0, 1.0)


def pos_from_star(star):
    """Inverse of :func:`pos_star` on [0, 1] → offset ``Pos − s`` in px (within ±1.1)."""
    return np.asarray(star, dtype=np.float64) * (2 * POS_LIMIT_PX) - POS_LIMIT_PX


def area_star(area):
    """``Area* = 1`` if ``Area ≥ 5π`` else ``Area / 5π``."""
    return np.clip(np.asarray(area, dtype=np.float64) / AREA_LIMIT_PX2, 0.0, 1.0)


def area_from_star(star):
    """Inverse of :func:`area_star` (saturated at 5π px²)."""
    return np.asarray(star, dtype=np.float64) * AREA_LIMIT_PX2


def descriptor_targets(sim, dcol, drow, aspect, area):
    """``Desc = (Sim, Pos*_1, Pos*_2, Asp, Area*)`` as float32 (m, 5); index 1 = column, 2 = row."""
    return np.stack([np.asarray(sim, dtype=np.float64), pos_star(dcol), pos_star(drow),
                     np.asarray(aspect, dtype=np.float64), area_star(area)], axis=-1).astype(np.float32)


def good_spot(sim, dcol, drow):
    """Good spot: ``Sim > 0.5`` and ``‖Pos − s‖₂ ≤ 0.9 px``."""
    return (np.asarray(sim) > GOOD_SIM) & (np.hypot(dcol, drow) <= GOOD_DISTANCE_PX)


# ----------------------------------------------------------------------------- augmentation
def dihedral_transform(patches, k: int, flip: bool):
    """Rotate ``(m, w, w)`` patches by ``k`` quarter turns (``np.rot90`` on (row, col)) after an
    optional left-right reflection (col → −col), about the centre pixel (``w`` odd)."""
    p = np.asarray(patches)
    if flip:
        p = p[:, :, ::-1]
    return np.rot90(p, k, axes=(1, 2))


def transform_targets(targets, k: int, flip: bool):
    """``Desc`` after :func:`dihedral_transform`: ``Pos*`` moves with the pixels, the rest stays.

    ``np.rot90(·, 1, axes=(row, col))`` maps the offset ``(dc, dr)`` to ``(dr, −dc)``; the
    reflection maps it to ``(−dc, dr)``. In ``Pos*`` units a sign change is ``p → 1 − p``.
    """
    t = np.array(targets, dtype=np.float32, copy=True)
    pc, pr = t[..., 1].copy(), t[..., 2].copy()
    if flip:
        pc = 1.0 - pc
    for _ in range(k % 4):
        pc, pr = pr, 1.0 - pc
    t[..., 1], t[..., 2] = pc, pr
    return t
