"""Matching detected peaks to the simulator's truth spots of the same scan point."""
from __future__ import annotations

import numpy as np

__all__ = ["spots_by_point", "overlapped_spots", "peak_truth_table"]


def spots_by_point(spot_y, spot_x, ny: int, nx: int) -> list[np.ndarray]:
    """Indices of the truth spots of every scan point, in raster order (``ny · nx`` arrays)."""
    point = np.asarray(spot_y) * nx + np.asarray(spot_x)
    order = np.argsort(point, kind="stable")
    starts = np.searchsorted(point[order], np.arange(ny * nx + 1))
    return [order[starts[p]:starts[p + 1]] for p in range(ny * nx)]


def overlapped_spots(cols, rows, amps, overlap_px) -> np.ndarray:
    """True for spots within ``overlap_px`` of a brighter spot (ties: the later one)."""
    d2 = (cols[:, None] - cols[None, :]) ** 2 + (rows[:, None] - rows[None, :]) ** 2
    near = d2 <= overlap_px ** 2
    np.fill_diagonal(near, False)
    idx = np.arange(len(amps))
    brighter = (amps[None, :] > amps[:, None]) | ((amps[None, :] == amps[:, None]) & (idx[None, :] < idx[:, None]))
    return (near & brighter).any(axis=1)


def peak_truth_table(peak_col, peak_row, spot_y, spot_x, spot_col, spot_row, radius_px: float = 1.5) -> np.ndarray:
    """For every detected peak ``(y, x, peak)``: the index of its truth spot (−1: none within radius)."""
    pc, pr = np.asarray(peak_col, np.float64), np.asarray(peak_row, np.float64)
    sc, sr = np.asarray(spot_col, np.float64), np.asarray(spot_row, np.float64)
    ny, nx, _ = pc.shape
    spot = np.full(pc.shape, -1, np.int64)
    for p, sel in enumerate(spots_by_point(np.asarray(spot_y, np.int64), np.asarray(spot_x, np.int64), ny, nx)):
        y, x = divmod(p, nx)
        ok = np.isfinite(pc[y, x])
        if not len(sel) or not ok.any():
            continue
        d = np.hypot(pc[y, x][ok][:, None] - sc[sel][None], pr[y, x][ok][:, None] - sr[sel][None])
        nearest = d.argmin(axis=1)
        spot[y, x, np.flatnonzero(ok)] = np.where(d.min(axis=1) <= radius_px, sel[nearest], -1)
    return spot
