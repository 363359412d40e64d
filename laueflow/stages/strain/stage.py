"""Pipeline entry of the strain stage: picks the spot positions and weights, resolves materials.

Positions (``positions`` parameter): ``"auto"`` uses the spot-descriptor stage's refined positions
and good-spot flags when that stage ran, else the peak centroids; ``"descriptors"`` requires them;
``"centroid"`` always uses the peak-search centroids. With ``good_only`` (default) spots flagged
bad by the descriptors never enter a fit.
"""
from __future__ import annotations

import numpy as np

from ...physics.materials import Material, get_materials
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV
from . import refine_strain
from .refine import DEFAULT_TOLERANCES_DEG

__all__ = ["strain_stage"]


def _materials(materials) -> list[Material]:
    out = get_materials(materials)
    if not out:
        raise ValueError("the strain stage needs the scan's materials (laueflow ingest --material ...)")
    return out


def strain_stage(peak_two_theta, peak_chi, peak_col, peak_row, orientation_matrix, grain_material,
                 calibration, materials, spot_col=None, spot_row=None, spot_good=None, *,
                 positions: str = "auto", good_only: bool = True, tolerances_deg=None, min_pairs: int = 8,
                 huber_px: float | None = 0.5, energy_band_kev=DEFAULT_ENERGY_BAND_KEV, sample_tilt_deg: float = 40.0) -> dict:
    """Refine every indexed grain of a batch of images; see :func:`~laueflow.stages.strain.refine_strain`.

    ``energy_band_kev`` None: the simulator's default band, which is also the indexer's default (a
    workflow always sets both stages to its one band, see ``laueflow.pipeline.workflow``)."""
    if energy_band_kev is None:
        energy_band_kev = DEFAULT_ENERGY_BAND_KEV
    if positions not in ("auto", "descriptors", "centroid"):
        raise ValueError(f"positions must be 'auto', 'descriptors' or 'centroid', got {positions!r}")
    have_descriptors = spot_col is not None and spot_row is not None
    if positions == "descriptors" and not have_descriptors:
        raise ValueError("positions='descriptors' needs the 'descriptors' stage before 'strain' in the workflow")
    col, row = np.asarray(peak_col, float), np.asarray(peak_row, float)
    weight = np.ones_like(col)
    if have_descriptors and positions != "centroid":
        refined_col, refined_row = np.asarray(spot_col, float), np.asarray(spot_row, float)
        usable = np.isfinite(refined_col) & np.isfinite(refined_row)
        col = np.where(usable, refined_col, col)
        row = np.where(usable, refined_row, row)
    if have_descriptors and good_only and spot_good is not None:
        weight = np.where(np.asarray(spot_good, bool), 1.0, 0.0)
    return refine_strain(
        peak_two_theta, peak_chi, col, row, orientation_matrix, grain_material, _materials(materials), calibration,
        peak_weight=weight, tolerances_deg=tuple(tolerances_deg or DEFAULT_TOLERANCES_DEG),
        min_pairs=min_pairs, huber_px=huber_px, energy_band_kev=tuple(energy_band_kev),
        sample_tilt_deg=sample_tilt_deg,
    )
