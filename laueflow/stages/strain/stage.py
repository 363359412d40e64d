"""Pipeline entry of the strain stage: picks the spot positions and weights, resolves materials.

Positions (``positions`` parameter): ``"auto"`` uses the spot-descriptor stage's refined positions
and good-spot flags when that stage ran, else the peak centroids; ``"descriptors"`` requires them;
``"centroid"`` always uses the peak-search centroids. With ``good_only`` (default) spots flagged
bad by the descriptors never enter a fit.
"""
from __future__ import annotations

import numpy as np

from ...physics.materials import Material, get_materials
from . import STRAIN_DEFAULTS, refine_strain

__all__ = ["strain_stage", "STRAIN_STAGE_PARAMS"]

STRAIN_STAGE_PARAMS = {**STRAIN_DEFAULTS, "positions": "auto", "good_only": True}


def _materials(materials) -> list[Material]:
    out = get_materials(materials)
    if not out:
        raise ValueError("the strain stage needs the scan's materials (laueflow ingest --material ...)")
    return out


def strain_stage(peak_two_theta, peak_chi, peak_col, peak_row, orientation_matrix, grain_material,
                 calibration, materials, spot_col=None, spot_row=None, spot_good=None, *,
                 positions: str = "auto", good_only: bool = True, tolerances_deg=None, min_pairs: int = 8,
                 huber_px: float | None = 0.5, energy_band_kev=(5.0, 23.0), sample_tilt_deg: float = 40.0) -> dict:
    """Refine every indexed grain of a batch of images; see :func:`~laueflow.stages.strain.refine_strain`."""
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
        peak_weight=weight, tolerances_deg=tuple(tolerances_deg or STRAIN_DEFAULTS["tolerances_deg"]),
        min_pairs=min_pairs, huber_px=huber_px, energy_band_kev=tuple(energy_band_kev),
        sample_tilt_deg=sample_tilt_deg,
    )


def _register():
    from ..base import StageSpec, Variable, register_stage

    nan = float("nan")
    tensor = ("grain", "i3", "j3")
    return register_stage(StageSpec(
        name="strain",
        func="laueflow.stages.strain.stage:strain_stage",
        inputs={"peak_two_theta": "peak_two_theta", "peak_chi": "peak_chi", "peak_col": "peak_col",
                "peak_row": "peak_row", "orientation_matrix": "orientation_matrix",
                "grain_material": "grain_material", "calibration": "calibration", "materials": "materials"},
        optional_inputs={"spot_col": "spot_col", "spot_row": "spot_row", "spot_good": "spot_good"},
        outputs=(
            Variable("refined_orientation", tensor, "float64", nan, "1", "refined UB (q_lab = UB·B0·hkl), cell scale with tr F = 3"),
            Variable("strain_crystal", tensor, "float64", nan, "1", "deviatoric strain, direct crystal frame (x ∥ a, z ∥ c*)"),
            Variable("strain_lab", tensor, "float64", nan, "1", "deviatoric strain, LaueTools lab frame"),
            Variable("strain_sample", tensor, "float64", nan, "1", "deviatoric strain, sample frame (40° tilt)"),
            Variable("stress_crystal", tensor, "float64", nan, "GPa", "deviatoric stress C:ε, crystal frame (needs elastic constants)"),
            Variable("stress_sample", tensor, "float64", nan, "GPa", "deviatoric stress, sample frame"),
            Variable("von_mises_strain", ("grain",), "float64", nan, "1", "equivalent strain sqrt(2/3 ε:ε)"),
            Variable("lattice_parameters", ("grain", "k6"), "float64", nan, "Å, deg", "refined a, b, c (a fixed), alpha, beta, gamma"),
            Variable("strain_n_pairs", ("grain",), "int32", 0, "1", "matched spots used in the last fit"),
            Variable("strain_rms_px", ("grain",), "float32", nan, "px", "RMS pixel residual of the fit"),
            Variable("strain_status", ("grain",), "int8", 4, "1", "0 ok, 1 too few pairs, 2 ill-conditioned, 3 not converged, 4 empty slot"),
            Variable("peak_grain_refined", ("peak",), "int16", -1, "1", "grain slot the peak was matched to in the last fit"),
            Variable("peak_hkl_refined", ("peak", "i3"), "int32", 0, "1", "Miller indices of that match"),
        ),
        params=dict(STRAIN_STAGE_PARAMS),
        dim_sizes={"i3": 3, "j3": 3, "k6": 6},
        description="batched orientation + deviatoric-strain refinement of every indexed grain",
    ), replace=True)


STRAIN_STAGE = _register()
