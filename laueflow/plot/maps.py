"""Scalar and categorical maps of a results Dataset (``laueflow.open_results``): axes in µm,
colour bars with units, points without a value in grey ("not indexed")."""
from __future__ import annotations

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from ..pipeline.results import TENSOR_COMPONENTS, ResultsError
from ._base import (NOT_INDEXED, check_dataset, extent, figure, grain_label, map_axes, not_indexed_legend,
                    select_grain, style, to_numpy)

__all__ = ["scalar_map", "matching_rate_map", "peak_count_map", "von_mises_map", "strain_map",
           "status_map", "tensor_maps", "STRAIN_COMPONENTS"]

#: strain/stress tensor components by name → (i, j)
STRAIN_COMPONENTS = TENSOR_COMPONENTS


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=NOT_INDEXED)


def show_values(ds, values, *, title: str, label: str, cmap="viridis", vmin=None, vmax=None, ax=None,
                missing_label: str = "not indexed"):
    """Draw a (y, x) float array (NaN: grey) with a colour bar labelled ``label``; returns the Figure."""
    check_dataset(ds)
    values = np.asarray(values, dtype=float)
    fig, (ax,) = figure(1, ds) if ax is None else (ax.figure, (ax,))
    with style():
        image = ax.imshow(np.ma.masked_invalid(values), cmap=_cmap(cmap), vmin=vmin, vmax=vmax,
                          extent=extent(ds), origin="upper", interpolation="nearest")
        fig.colorbar(image, ax=ax, label=label, shrink=0.9, aspect=35)
        map_axes(ax, ds, title)
        not_indexed_legend(ax, bool(np.isnan(values).any()), missing_label)
    return fig


def scalar_map(ds, name: str, *, grain=None, cmap="viridis", vmin=None, vmax=None, scale=1.0,
               label=None, title=None, ax=None):
    """Map of the (y, x[, grain]) variable ``name``; ``grain``: None = best grain, or slot k."""
    if name not in ds:
        raise ResultsError(f"scalar_map: the Dataset has no variable {name!r}")
    has_grain = "grain" in ds[name].dims or ds[name].attrs.get("selected_grain") == "best"  # after best_grain
    sel = select_grain(ds, grain) if has_grain else ds
    var = sel[name]
    if var.dims != ("y", "x"):
        raise ResultsError(f"scalar_map: {name!r} has dims {var.dims}, not (y, x[, grain])")
    values = to_numpy(var).astype(float) * scale
    fill = var.attrs.get("fill_value")
    if fill is not None and np.dtype(var.dtype).kind in "iu":
        values[to_numpy(var) == fill] = np.nan
    units = var.attrs.get("units", "")
    if label is None:
        label = f"{name} ({units})" if units not in ("", "1") else name
    title = (title or name) + (f"\n{grain_label(grain)}" if has_grain else "")
    return show_values(ds, values, title=title, label=label, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax)


def matching_rate_map(ds, *, grain=None, ax=None):
    """Matching rate (%) of the best grain (or slot ``grain``), 0–100."""
    return scalar_map(ds, "matching_rate", grain=grain, vmin=0, vmax=100, label="matching rate (%)",
                      title="matching rate", ax=ax)


def peak_count_map(ds, *, ax=None):
    """Peaks kept per image; grey: image not processed."""
    fig = scalar_map(ds, "peak_count", cmap="magma", label="peaks per image", title="peaks per image", ax=ax)
    return fig


def _symmetric_limit(values, percentile=99.0) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(np.percentile(finite, percentile)) if finite.size and np.percentile(finite, percentile) > 0 else 1.0


def strain_map(ds, component: str = "xx", *, frame: str = "sample", grain=None, quantity: str = "strain",
               title=None, ax=None):
    """Deviatoric strain (10⁻³) or stress (GPa) component ``component`` (xx, yy, zz, xy, xz, yz) in
    ``frame`` (sample, lab, crystal); diverging colours, limits ± the 99th percentile of |value|."""
    if component not in STRAIN_COMPONENTS:
        raise ValueError(f"component must be one of {list(STRAIN_COMPONENTS)}, got {component!r}")
    name = f"{quantity}_{frame}"
    if name not in ds:
        raise ResultsError(f"strain_map: the Dataset has no {name!r} (a `strain` stage is needed; stress needs "
                           "elastic constants)")
    i, j = STRAIN_COMPONENTS[component]
    sel = select_grain(ds, grain)
    values = to_numpy(sel[name].isel(i3=i, j3=j)).astype(float)
    symbol = "ε" if quantity == "strain" else "σ"
    scale, units = (1e3, "10⁻³") if quantity == "strain" else (1.0, "GPa")
    values = values * scale
    limit = _symmetric_limit(values)
    title = title or f"deviatoric {quantity} {symbol}_{component}, {frame} frame\n{grain_label(grain)}"
    return show_values(ds, values, title=title, label=f"{symbol}_{component} ({units})", cmap="RdBu_r",
                       vmin=-limit, vmax=limit, ax=ax)


def von_mises_map(ds, *, grain=None, ax=None):
    """Equivalent (von Mises) deviatoric strain, 10⁻³."""
    return scalar_map(ds, "von_mises_strain", grain=grain, scale=1e3, cmap="inferno", vmin=0,
                      label="von Mises strain (10⁻³)", title="von Mises equivalent strain", ax=ax)


#: fixed colours of the status codes (by name, so a legend means the same in every map)
STATUS_COLORS = {"ok": "#4daf4a", "invalid_input": "#404040", "no_peaks": "#e41a1c", "not_indexed": "#ff7f00",
                 "peaks_truncated": "#377eb8"}
_EXTRA = ["#984ea3", "#a65628", "#f781bf", "#999999", "#66c2a5"]


def status_map(ds, *, name: str = "status", ax=None):
    """Per-point status as categories, the legend naming each code present (the store's names)."""
    check_dataset(ds)
    codes = to_numpy(ds[name]).astype(int)
    flag_values = list(ds[name].attrs.get("flag_values", []))
    meanings = str(ds[name].attrs.get("flag_meanings", "")).split()
    if not flag_values or len(flag_values) != len(meanings):
        raise ResultsError("status_map: the status variable carries no names: open the store with laueflow.open_results")
    names = dict(zip(flag_values, meanings))
    present = [c for c in flag_values if (codes == c).any()]
    colors = [STATUS_COLORS.get(names[c], _EXTRA[i % len(_EXTRA)]) for i, c in enumerate(present)]
    index = np.full(codes.shape, -1)
    for i, c in enumerate(present):
        index[codes == c] = i
    fig, (ax,) = figure(1, ds, width_in=5.6) if ax is None else (ax.figure, (ax,))
    with style():
        cmap = ListedColormap(colors or ["white"])
        ax.imshow(index, cmap=cmap, norm=BoundaryNorm(np.arange(len(present) + 1) - 0.5, max(1, len(present))),
                  extent=extent(ds), origin="upper", interpolation="nearest")
        counts = {c: int((codes == c).sum()) for c in present}
        handles = [Patch(facecolor=col, edgecolor="0.3", label=f"{c} {names[c]} ({counts[c]})")
                   for c, col in zip(present, colors)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="status")
        map_axes(ax, ds, "status per point")
    return fig


def tensor_maps(ds, *, quantity: str = "strain", frame: str = "sample", grain=None):
    """The six components of deviatoric strain (10⁻³) or stress (GPa) in one 2 × 3 figure."""
    from matplotlib.figure import Figure

    name = f"{quantity}_{frame}"
    if name not in ds:
        raise ResultsError(f"tensor_maps: the Dataset has no {name!r} (a `strain` stage is needed; stress needs "
                           "elastic constants)")
    check_dataset(ds)
    sel = select_grain(ds, grain)  # once, for the six panels
    with style():
        fig = Figure(figsize=(12, 6.5), layout="constrained")
        for i, component in enumerate(STRAIN_COMPONENTS):
            strain_map(sel, component, frame=frame, quantity=quantity, title=f"{component}",
                       ax=fig.add_subplot(2, 3, i + 1))
        fig.suptitle(f"deviatoric {quantity}, {frame} frame — {grain_label(grain)}")
    return fig
