"""The scan's incident-intensity monitor: placed on the scan grid, checked, stored, read back.

``laueflow ingest --monitor SOURCE`` stores ``monitor (y, x)`` float64 in the scan store (NaN
where no image was planned), with attributes ``source``, ``median`` (over the planned points) and
``sha256``. ``laueflow run`` hands each tile's stages the ``monitor`` batch key — every valid
image's monitor divided by that median — and records the hash in the results' provenance, so a
resume with another monitor is refused. The ``features`` stage divides by it
(``normalize: auto``, ``docs/features.md``).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..io.monitor_file import read_monitor_values

__all__ = ["MonitorError", "monitor_map", "load_monitor", "write_monitor", "scan_monitor", "monitor_sha256"]


class MonitorError(ValueError):
    """Monitor values that do not fit the scan (the message says what to fix)."""


def monitor_sha256(monitor: np.ndarray) -> str:
    monitor = np.ascontiguousarray(monitor, dtype=np.float64)
    return hashlib.sha256(f"{monitor.shape}".encode() + monitor.tobytes()).hexdigest()


def monitor_map(values: np.ndarray, shape: tuple[int, int], points, order: str) -> np.ndarray:
    """``(ny, nx)`` float64 monitor of the scan (NaN where no image is planned).

    ``values``: 2-D ``(ny, nx)`` (a map, taken as it is) or 1-D in acquisition order (value ``k``
    goes where :func:`~laueflow.pipeline.ingest.scan_positions` puts scan index ``k``: ``order``
    raster or snake); ``points``: the
    ``(iy, ix)`` that have an image. Every one of them needs a finite value > 0.
    """
    ny, nx = shape
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        if values.shape != (ny, nx):
            raise MonitorError(f"--monitor: a map of {values.shape[0]}x{values.shape[1]} values for a "
                               f"{ny}x{nx} scan; give ny rows of nx values, or one value per point")
        grid, given = values.copy(), np.ones((ny, nx), bool)
    elif order not in ("raster", "snake"):
        raise MonitorError("--monitor: with --index-list the acquisition order is unknown; give a 2-D "
                           f"map of {ny} rows of {nx} values (row iy, column ix)")
    elif len(values) > ny * nx:
        raise MonitorError(f"--monitor: {len(values)} values for a {ny}x{nx} scan of {ny * nx} points; "
                           "check --shape (or --first-index)")
    else:
        iy, ix = np.divmod(np.arange(len(values)), nx)  # as ingest.scan_positions, all at once
        if order == "snake":
            ix = np.where(iy % 2 == 1, nx - 1 - ix, ix)
        grid, given = np.full((ny, nx), np.nan), np.zeros((ny, nx), bool)
        grid[iy, ix], given[iy, ix] = values, True
    planned = np.zeros((ny, nx), bool)
    where = np.array(list(points), dtype=np.int64).reshape(-1, 2)
    planned[where[:, 0], where[:, 1]] = True
    _check_values(grid, planned, given, len(values))
    grid[~planned] = np.nan
    return grid


def _check_values(grid: np.ndarray, planned: np.ndarray, given: np.ndarray, n_values: int) -> None:
    missing = planned & ~given
    if missing.any():
        first = tuple(int(v) for v in np.argwhere(missing)[0])
        raise MonitorError(f"--monitor: {n_values} values, but the points with an image that have none number "
                           f"{int(missing.sum())} (the first at iy, ix = {first}); give one value per scan point")
    bad = planned & ~(np.isfinite(grid) & (grid > 0))
    if bad.any():
        where = ", ".join(f"({iy}, {ix}): {grid[iy, ix]:g}" for iy, ix in np.argwhere(bad)[:5])
        raise MonitorError(f"--monitor: the monitor is not finite and > 0 at {int(bad.sum())} of the points with "
                           f"an image ({where}{', …' if bad.sum() > 5 else ''}). Was the beam off there? Leave "
                           "those points out of the scan (--index-list) or correct the values")


def load_monitor(source, shape, points, order) -> np.ndarray:
    """:func:`monitor_map` of the values read from ``source`` (:mod:`laueflow.io.monitor_file`)."""
    return monitor_map(read_monitor_values(source), shape, points, order)


def write_monitor(group, monitor: np.ndarray, source: str, log=print) -> None:
    """Store ``monitor (y, x)`` in the scan ``group``, replacing (and saying so) a different one."""
    digest = monitor_sha256(monitor)
    if "monitor" in group:
        if group["monitor"].attrs.get("sha256") == digest:
            return
        del group["monitor"]
        if log:
            log("the scan store's monitor is replaced by the one given; results computed with the old one "
                "cannot be resumed (their provenance records its hash)")
    arr = group.create_array("monitor", shape=monitor.shape, dtype="float64", dimension_names=("y", "x"),
                             fill_value=float("nan"), attributes={
                                 "long_name": "incident-intensity monitor (NaN: no image planned)",
                                 "units": "counts as given", "source": str(source),
                                 "median": float(np.nanmedian(monitor)), "sha256": digest})
    arr[...] = monitor


def scan_monitor(group) -> dict | None:
    """``{"values" (ny, nx), "median", "sha256", "min_relative", "max_relative"}`` of the scan
    store's monitor, or None without one."""
    if "monitor" not in group:
        return None
    values = np.asarray(group["monitor"][...], dtype=np.float64)
    attrs = dict(group["monitor"].attrs)
    median = float(attrs.get("median") or np.nanmedian(values))
    relative = values / median
    return {"values": values, "median": median, "sha256": attrs.get("sha256") or monitor_sha256(values),
            "min_relative": float(np.nanmin(relative)), "max_relative": float(np.nanmax(relative))}
