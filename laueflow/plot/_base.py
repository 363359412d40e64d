"""Shared pieces of the maps: style, grain selection, µm extents, the "not indexed" grey."""
from __future__ import annotations

from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..pipeline.results import ResultsError, best_grain, grain as grain_slot

#: colour of points without a value (not indexed, not processed)
NOT_INDEXED = "#b0b0b0"
NOT_INDEXED_LABEL = "not indexed"

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 110, "savefig.dpi": 150,
         "image.interpolation": "nearest", "axes.spines.top": True}


@contextmanager
def style():
    """laueflow's figure defaults (readable fonts, nearest-pixel maps)."""
    with matplotlib.rc_context(STYLE):
        yield


def figure(n_axes: int = 1, ds=None, width_in: float = 4.6, **subplot_kw):
    """A constrained-layout Figure (no pyplot: nothing global) with ``n_axes`` side by side,
    sized to the scan's aspect when ``ds`` is given."""
    aspect = 1.0
    if ds is not None:
        (y0, y1), (x0, x1) = span_um(ds)
        aspect = min(2.5, max(0.3, (y1 - y0) / max(x1 - x0, 1e-9)))
    with style():
        fig = Figure(figsize=(width_in * n_axes, max(2.2, width_in * aspect * 0.85 + 0.6)), layout="constrained")
        axes = [fig.add_subplot(1, n_axes, i + 1, **subplot_kw) for i in range(n_axes)]
    return fig, axes


def check_dataset(ds):
    """Refuse a Dataset not opened with :func:`laueflow.open_results` (no µm positions)."""
    if "x_um" not in ds.coords or "y_um" not in ds.coords:
        raise ResultsError("plot: the Dataset has no x_um / y_um coordinates: open the store with "
                           "laueflow.open_results(path)")


def span_um(ds):
    """((y_min, y_max), (x_min, x_max)) of the pixel edges in µm."""
    out = []
    for dim in ("y_um", "x_um"):
        v = np.asarray(ds[dim].values, dtype=float)
        step = float(np.median(np.diff(v))) if v.size > 1 else 1.0
        out.append((v.min() - step / 2, v.max() + step / 2))
    return tuple(out)


def extent(ds):
    """``imshow`` extent (x left, right, y bottom, top) in µm, y down like the scan's rows."""
    (y0, y1), (x0, x1) = span_um(ds)
    return (x0, x1, y1, y0)


def select_grain(ds, grain):
    """One grain per point: the best (:func:`~laueflow.pipeline.results.best_grain`, ``grain=None``) or
    slot ``grain``."""
    if "grain" not in ds.dims:
        return ds
    return best_grain(ds) if grain is None else grain_slot(ds, int(grain))


def grain_label(grain) -> str:
    return "best grain" if grain is None else f"grain {grain}"


def map_axes(ax, ds, title: str):
    ax.set_title(title)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_aspect("equal")


def not_indexed_legend(ax, missing: bool, label: str = NOT_INDEXED_LABEL, extra=()):
    """A legend entry for the grey of points without a value (only when some exist), and the
    ``extra`` handles."""
    handles = [Patch(facecolor=NOT_INDEXED, edgecolor="0.3", label=label)] if missing else []
    handles += list(extra)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0), frameon=False, borderaxespad=3.2)


def mark_points(ax, ds, where: np.ndarray, label: str):
    """A small black dot on every ``(y, x)`` point where ``where`` is true; its legend handle."""
    from matplotlib.lines import Line2D

    x0, x1, y1, y0 = extent(ds)
    ny, nx = where.shape
    rows, cols = np.nonzero(where)
    ax.plot(x0 + (cols + 0.5) * (x1 - x0) / nx, y0 + (rows + 0.5) * (y1 - y0) / ny, ".", color="k",
            markersize=3, linestyle="none")
    return Line2D([], [], marker=".", color="k", linestyle="none", markersize=5, label=label)


def to_numpy(var) -> np.ndarray:
    return np.asarray(var.values)
