"""Segmentation maps (docs/segmentation.md): cluster labels, PCA-labeler and direct-coloring RGB,
silhouette / Calinski–Harabasz curves. A segmentation group: ``open_results(path, group=...)``."""
from __future__ import annotations

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap

from ..pipeline.results import ResultsError
from ._base import NOT_INDEXED, check_dataset, extent, figure, map_axes, not_indexed_legend, style

__all__ = ["cluster_map", "phase_group_map", "rgb_map", "segmentation_scores"]


#: the stage that writes each variable these maps need (default: segmentation)
_WRITTEN_BY = {"phase_group": "phase_groups"}


def _need(ds, name, what):
    if name not in ds:
        stage = _WRITTEN_BY.get(name, "segmentation")
        raise ResultsError(f"{what}: the Dataset has no {name!r} (no {stage} stage in the run of this store "
                           "or group)")


def cluster_map(ds, *, ax=None):
    """Cluster label of each point (natural labeler), one colour per cluster;
    grey: not processed (-1)."""
    return _label_map(ds, "cluster_label", "cluster_map", "cluster", "clusters (natural labeler, {n} clusters)", ax)


def phase_group_map(ds, *, ax=None):
    """Index-free phase group of each point (``phase_groups`` stage: the clusters grouped by
    spot count and spot-pair angles; numbered by increasing spot count); grey: none (-1)."""
    return _label_map(ds, "phase_group", "phase_group_map", "phase group",
                      "index-free phase groups ({n} groups, by increasing spot count)", ax)


def _label_map(ds, name: str, what: str, label: str, title: str, ax):
    check_dataset(ds)
    _need(ds, name, what)
    from matplotlib import colormaps

    labels = np.asarray(ds[name].values).astype(int)
    n = max(1, int(labels.max()) + 1)
    base = colormaps["tab20"].colors if n > 10 else colormaps["tab10"].colors
    cmap = ListedColormap([base[i % len(base)] for i in range(n)]).with_extremes(bad=NOT_INDEXED)
    fig, (ax,) = figure(1, ds) if ax is None else (ax.figure, (ax,))
    with style():
        image = ax.imshow(np.ma.masked_less(labels, 0), cmap=cmap, norm=BoundaryNorm(np.arange(n + 1) - 0.5, n),
                          extent=extent(ds), origin="upper", interpolation="nearest")
        bar = fig.colorbar(image, ax=ax, ticks=np.arange(n), label=label, shrink=0.9, aspect=35)
        if n > 20:
            bar.set_ticks(np.arange(0, n, max(1, n // 10)))
        map_axes(ax, ds, title.format(n=n))
        not_indexed_legend(ax, bool((labels < 0).any()), "not processed")
    return fig


def rgb_map(ds, name: str = "pca_labeler_rgb", *, ax=None):
    """``pca_labeler_rgb`` (cluster colours) or ``direct_rgb`` (each point's first 3 PCs) as an RGB
    image; grey: not processed."""
    check_dataset(ds)
    _need(ds, name, "rgb_map")
    rgb = np.asarray(ds[name].values, dtype=float)
    missing = ~np.isfinite(rgb).all(-1)
    shown = np.where(missing[..., None], 0.69, np.clip(rgb, 0, 1))
    titles = {"pca_labeler_rgb": "PCA labeler (cluster centroids' first 3 PCs as RGB)",
              "direct_rgb": "direct coloring (first 3 PCs as RGB)"}
    fig, (ax,) = figure(1, ds) if ax is None else (ax.figure, (ax,))
    with style():
        ax.imshow(shown, extent=extent(ds), origin="upper", interpolation="nearest")
        map_axes(ax, ds, titles.get(name, name))
        not_indexed_legend(ax, bool(missing.any()), "not processed")
    return fig


def segmentation_scores(ds):
    """Silhouette and Calinski–Harabasz scores against K, the suggested K marked, and on the
    silhouette the level it had to reach (the highest minus the segmentation's
    ``silhouette_tolerance``, when the store records it)."""
    _need(ds, "silhouette_score", "segmentation_scores")
    k = np.asarray(ds["score_k"].values)
    silhouette = np.asarray(ds["silhouette_score"].values, dtype=float)
    ch = np.asarray(ds["calinski_harabasz_score"].values, dtype=float)
    suggested = int(ds["suggested_k"].values) if "suggested_k" in ds else -1
    tolerance = _silhouette_tolerance(ds)
    fig, (ax1, ax2) = figure(2, None, width_in=3.4)
    with style():
        for ax, values, name in ((ax1, silhouette, "silhouette score"), (ax2, ch, "Calinski–Harabasz score")):
            ok = np.isfinite(values) & (k > 0)
            ax.plot(k[ok], values[ok], "o-", color="C0", ms=4)
            if ax is ax1 and tolerance and ok.any():
                ax.axhline(np.max(values[ok]) - tolerance, color="0.5", ls=":", lw=1,
                           label=f"highest − {tolerance:g} (the fewest K above it)")
            if suggested > 0:
                ax.axvline(suggested, color="C3", ls="--", lw=1, label=f"suggested K = {suggested}")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best")
            ax.set_xlabel("K (clusters)")
            ax.set_ylabel(name)
            ax.set_title(name)
            ax.grid(alpha=0.3)
    return fig


def _silhouette_tolerance(ds) -> float | None:
    """The ``silhouette_tolerance`` the segmentation of ``ds`` used: from a ``laueflow segment``
    group's ``info`` or a run's ``reduce_info``; None when the store does not record it (older stores)."""
    info = ds.attrs.get("info") or (ds.attrs.get("reduce_info") or {}).get("segmentation") or {}
    value = info.get("silhouette_tolerance") if isinstance(info, dict) else None
    return float(value) if value is not None else None
