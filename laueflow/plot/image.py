"""One detector image with its peaks: coloured by grain, labelled by hkl."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from ..pipeline.results import ResultsError
from ._base import figure, style

__all__ = ["image_view", "read_scan_image"]


def read_scan_image(ds, y: int, x: int, scan_store=None) -> np.ndarray:
    """Image (rows, cols) of point (y, x) from the scan store the results were computed from
    (``scan_store`` attribute, or the path given)."""
    import xarray as xr

    path = Path(scan_store or ds.attrs.get("scan_store", ""))
    if not str(path) or not (path / "zarr.json").exists():
        raise ResultsError(f"the scan store {str(path)!r} is not reachable: pass the image (or scan_store=)")
    with xr.open_zarr(path) as scan:
        return np.asarray(scan["images"].isel(y=y, x=x).values)


def _grain_hkl(point):
    """Per peak: grain slot (-1: none) and hkl (zeros: none) — the refined match when the strain
    stage ran, else the indexing's."""
    if "peak_grain_refined" in point:
        return np.asarray(point["peak_grain_refined"].values), np.asarray(point["peak_hkl_refined"].values)
    if "peak_grain" in point:
        return np.asarray(point["peak_grain"].values), np.asarray(point["hkl"].values)
    n = point.sizes["peak"]
    return np.full(n, -1), np.zeros((n, 3), int)


def image_view(ds, y: int, x: int, *, image=None, scan_store=None, max_labels: int = 25, ax=None,
               percentile: float = 99.99):
    """Detector image of scan point (``y``, ``x``) (indices) on a log-like grey scale, its peaks
    circled in their grain's colour (grey: not indexed), the brightest ``max_labels`` indexed
    peaks labelled by hkl. ``image``: the (rows, cols) array, else read from the scan store."""
    if "peak_col" not in ds:
        raise ResultsError("image_view: the Dataset has no peaks (a `peaks` stage is needed)")
    point = ds.isel(y=y, x=x).load()
    if image is None:
        image = read_scan_image(ds, y, x, scan_store)
    image = np.asarray(image, dtype=float)
    col = np.asarray(point["spot_col"].values if "spot_col" in point else point["peak_col"].values, dtype=float)
    row = np.asarray(point["spot_row"].values if "spot_row" in point else point["peak_row"].values, dtype=float)
    ok = np.isfinite(col) & np.isfinite(row)
    grains, hkl = _grain_hkl(point)
    intensity = np.asarray(point["peak_intensity"].values, dtype=float)
    fig, (ax,) = figure(1, None, width_in=6.0) if ax is None else (ax.figure, (ax,))
    with style():
        lo, hi = np.median(image), np.percentile(image, percentile)
        ax.imshow(np.arcsinh(np.clip(image - lo, 0, None) / max(hi - lo, 1e-9) * 20), cmap="gray_r", origin="upper",
                  interpolation="nearest", extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        handles = []
        for g in sorted(set(grains[ok].tolist())):
            sel = ok & (grains == g)
            color = "0.55" if g < 0 else f"C{g % 10}"
            ax.scatter(col[sel], row[sel], s=60, facecolors="none", edgecolors=color, linewidths=1.0)
            handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec=color,
                                  label=("not indexed" if g < 0 else f"grain {g}") + f" ({int(sel.sum())})"))
        indexed = np.flatnonzero(ok & (grains >= 0))
        for i in indexed[np.argsort(-np.nan_to_num(intensity[indexed], nan=-np.inf))][:max_labels]:
            ax.annotate(" ".join(str(int(v)) for v in hkl[i]), (col[i], row[i]), xytext=(4, 4),
                        textcoords="offset points", fontsize=6.5, color=f"C{grains[i] % 10}")
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px)")
        ax.set_title(f"point y={y}, x={x} ({float(ds['y_um'][y]):g}, {float(ds['x_um'][x]):g} µm): "
                     f"{int(ok.sum())} peaks")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
