"""Histograms of strain components and spot descriptors."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from ..pipeline.results import ResultsError
from ._base import figure, select_grain, style
from .maps import STRAIN_COMPONENTS

__all__ = ["strain_histograms", "descriptor_histograms", "DESCRIPTORS"]

#: spot descriptors shown by default: variable → (label, log x)
DESCRIPTORS = {"spot_similarity": ("similarity to a 2-D Gaussian (1)", False),
               "spot_area": ("spot area π σ₁ σ₂ (px²)", True),
               "spot_aspect": ("aspect min σ / max σ (1)", False),
               "peak_intensity": ("peak height (counts)", True)}


def strain_histograms(ds, *, frame: str = "sample", grain=None, bins: int = 40):
    """Histograms of the six deviatoric strain components and von Mises (10⁻³), one grain per point."""
    name = f"strain_{frame}"
    if name not in ds:
        raise ResultsError(f"strain_histograms: the Dataset has no {name!r} (a `strain` stage is needed)")
    sel = select_grain(ds, grain)
    strain = np.asarray(sel[name].values, dtype=float) * 1e3
    fig, axes = figure(4, None, width_in=2.4)
    with style():
        groups = [("xx", "yy", "zz"), ("xy", "xz", "yz")]
        for ax, comps in zip(axes[:2], groups):
            values = [strain[..., i, j].ravel() for i, j in (STRAIN_COMPONENTS[c] for c in comps)]
            finite = np.concatenate([v[np.isfinite(v)] for v in values])
            edges = np.histogram_bin_edges(finite if finite.size else [0, 1], bins=bins)
            for v, c in zip(values, comps):
                ax.hist(v[np.isfinite(v)], bins=edges, histtype="step", lw=1.2, label=f"ε_{c}")
            ax.set_xlabel(f"strain, {frame} frame (10⁻³)")
            ax.set_ylabel("points")
            ax.legend()
        if "von_mises_strain" in sel:
            vm = np.asarray(sel["von_mises_strain"].values, dtype=float).ravel() * 1e3
            axes[2].hist(vm[np.isfinite(vm)], bins=bins, color="C3")
        axes[2].set_xlabel("von Mises strain (10⁻³)")
        axes[2].set_ylabel("points")
        if "strain_rms_px" in sel:
            rms = np.asarray(sel["strain_rms_px"].values, dtype=float).ravel()
            axes[3].hist(rms[np.isfinite(rms)], bins=bins, color="C4")
        axes[3].set_xlabel("fit RMS residual (px)")
        axes[3].set_ylabel("points")
        fig.suptitle("deviatoric strain of the " + ("best grain" if grain is None else f"grain {grain}") + " per point")
    return fig


def descriptor_histograms(ds, names=None, *, bins: int = 50, max_values: int = 2_000_000):
    """Histograms of spot descriptors over all peaks of the scan (``names``: variables with a
    ``peak`` dim; default: those of :data:`DESCRIPTORS` present). Reads at most ``max_values``
    per variable (a regular subsample of points beyond)."""
    names = [n for n in (names or DESCRIPTORS) if n in ds]
    if not names:
        raise ResultsError("descriptor_histograms: none of the spot descriptors is in the Dataset "
                           f"(looked for {list(DESCRIPTORS)}; a `descriptors` stage writes them)")
    fig, axes = figure(len(names), None, width_in=2.6)
    n_points = ds.sizes["y"] * ds.sizes["x"]
    stride = max(1, int(np.ceil(n_points * ds.sizes.get("peak", 1) / max_values)))
    with style():
        for ax, name in zip(axes, names):
            var = ds[name].stack(point=("y", "x")).isel(point=slice(None, None, stride))
            values = np.asarray(var.values, dtype=float).ravel()
            values = values[np.isfinite(values)]
            label, log = DESCRIPTORS.get(name, (f"{name} ({ds[name].attrs.get('units', '')})", False))
            if log and values.size and (values > 0).any():
                values = values[values > 0]
                edges = np.geomspace(values.min(), values.max(), bins + 1) if values.min() < values.max() else bins
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                edges = bins
            ax.hist(values, bins=edges, color="C0")
            ax.set_xlabel(label)
            ax.set_ylabel("peaks")
        fig.suptitle(f"spot descriptors ({'every' if stride == 1 else f'1 in {stride}'} point)")
    return fig
