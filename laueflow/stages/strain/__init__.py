"""Strain refinement stage: batched orientation + deviatoric-strain fits of indexed grains.

:func:`refine_strain` works on padded per-image arrays (per-grain arrays out);
:func:`~laueflow.stages.strain.refine.refine_grains` on a flat list of grains; the pipeline entry
is :func:`laueflow.stages.strain.stage.strain_stage`. :data:`STAGE` declares the ``strain``
stage and its outputs (the only place they are declared).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...physics.geometry import Calibration
from ...physics.materials import Material
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV
from ..base import StageSpec, Variable
from .outputs import deviatoric_stress, stiffness_matrix, strain_outputs
from .refine import DEFAULT_TOLERANCES_DEG, STATUS, RefinementResult, refine_grains

#: strain-stage default weight of a spot the descriptors flag bad (fitted at its peak-search
#: centroid) relative to a good one (refined position); 0 leaves bad spots out (before issue #12).
#: Chosen on simulated real-like frames: ``benchmarks/bench_good_flag.py``, docs/strain.md
BAD_SPOT_WEIGHT = 0.2

__all__ = ["STAGE", "BAD_SPOT_WEIGHT", "refine_strain", "refine_grains", "strain_outputs", "stiffness_matrix",
           "deviatoric_stress", "STATUS", "RefinementResult"]


def refine_strain(
    peak_two_theta,
    peak_chi,
    peak_col,
    peak_row,
    grain_orientation,
    grain_material,
    materials: Sequence[Material],
    calibration: Calibration,
    *,
    peak_weight=None,
    tolerances_deg=DEFAULT_TOLERANCES_DEG,
    min_pairs: int = 8,
    huber_px: float | None = 0.5,
    energy_band_kev=DEFAULT_ENERGY_BAND_KEV,
    sample_tilt_deg: float = 40.0,
) -> dict[str, np.ndarray]:
    """Refine every grain of a batch of images.

    Parameters
    ----------
    peak_two_theta, peak_chi, peak_col, peak_row : (n, P) observed peaks (deg, 0-based px), NaN fill.
    grain_orientation : (n, M, 3, 3) starting ``UB`` per image and grain slot, NaN where empty.
    grain_material : (n, M) index into ``materials`` (-1 where empty).
    peak_weight : (n, P) weights (e.g. good-spot flags); 0 excludes a peak.

    Returns
    -------
    dict of arrays with leading dims (n, M): ``refined_orientation`` (…, 3, 3), ``strain_crystal``,
    ``strain_lab``, ``strain_sample`` (…, 3, 3), ``von_mises_strain``, ``lattice_parameters`` (…, 6),
    ``strain_n_pairs``, ``strain_rms_px``, ``strain_status`` (int8, see :data:`STATUS`; 4 = empty
    slot), ``stress_crystal``/``stress_sample`` (…, 3, 3, GPa; NaN without elastic constants), and per
    peak (n, P): ``peak_grain_refined`` (slot index, -1) and ``peak_hkl_refined`` (n, P, 3).
    """
    orientation = np.asarray(grain_orientation, dtype=float)
    n, m = orientation.shape[:2]
    material_index = np.asarray(grain_material, dtype=np.int64)
    present = np.isfinite(orientation).all(axis=(2, 3)) & (material_index >= 0)
    image, slot = np.nonzero(present)
    result = refine_grains(
        orientation[image, slot], image, material_index[image, slot], materials,
        peak_two_theta, peak_chi, peak_col, peak_row, calibration,
        peak_weight=peak_weight, tolerances_deg=tolerances_deg, min_pairs=min_pairs,
        huber_px=huber_px, energy_band_kev=energy_band_kev,
    )
    out = STAGE.empty_outputs(n, {}, grain=m, peak=np.shape(peak_col)[1])
    ok = result.status == 0
    out["strain_status"][image, slot] = result.status
    out["strain_n_pairs"][image, slot] = result.n_pairs
    out["strain_rms_px"][image, slot] = result.rms_px
    out["refined_orientation"][image[ok], slot[ok]] = result.ub[ok]
    for m_index in np.unique(material_index[image, slot]) if len(image) else []:
        sel = ok & (material_index[image, slot] == m_index)
        for name, values in strain_outputs(result.ub[sel], materials[m_index], tilt_deg=sample_tilt_deg).items():
            if name in out:
                out[name][image[sel], slot[sel]] = values
    grain, pair = np.nonzero((result.pair_peak >= 0) & ok[:, None])
    peaks = result.pair_peak[grain, pair]
    out["peak_grain_refined"][image[grain], peaks] = slot[grain]
    out["peak_hkl_refined"][image[grain], peaks] = result.pair_hkl[grain, pair]
    return out


def check_params(params) -> None:
    """Impossible strain-refinement parameters → ``ValueError``."""
    if params["positions"] not in ("auto", "descriptors", "centroid"):
        raise ValueError(f"positions must be 'auto', 'descriptors' or 'centroid', got {params['positions']!r}")
    tolerances = params["tolerances_deg"]
    if not tolerances or any(not t > 0 for t in tolerances):
        raise ValueError(f"tolerances_deg must be a non-empty list of angles > 0, got {tolerances!r}")
    if not isinstance(params["min_pairs"], int) or params["min_pairs"] < 4:
        raise ValueError(f"min_pairs must be an integer ≥ 4 (8 unknowns need ≥ 4 spot pairs), "
                         f"got {params['min_pairs']!r}")
    if params["huber_px"] is not None and not params["huber_px"] > 0:
        raise ValueError(f"huber_px must be > 0 px or null, got {params['huber_px']!r}")
    w = params["bad_spot_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
        raise ValueError(f"bad_spot_weight must be a number in [0, 1] (weight of a spot the descriptors flag "
                         f"bad, at its centroid; 0 leaves them out), got {w!r}")
    band = params["energy_band_kev"]  # null: the workflow's band (top-level energy_band_kev / the index stage's)
    if band is not None and not (isinstance(band, (list, tuple)) and len(band) == 2
                                 and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in band)
                                 and 0 < band[0] < band[1]):
        raise ValueError(f"energy_band_kev must be [low, high] keV with 0 < low < high (or null: the "
                         f"workflow's band), got {band!r}")


_NAN = float("nan")
_TENSOR = ("grain", "i3", "j3")

STAGE = StageSpec(
    name="strain",
    func="laueflow.stages.strain.stage:strain_stage",
    inputs={"peak_two_theta": "peak_two_theta", "peak_chi": "peak_chi", "peak_col": "peak_col",
            "peak_row": "peak_row", "orientation_matrix": "orientation_matrix",
            "grain_material": "grain_material", "calibration": "calibration", "materials": "materials"},
    optional_inputs={"spot_col": "spot_col", "spot_row": "spot_row", "spot_good": "spot_good"},
    outputs=(
        Variable("refined_orientation", _TENSOR, "float64", _NAN, "1", "refined UB (q_lab = UB·B0·hkl), cell scale with tr F = 3"),
        Variable("strain_crystal", _TENSOR, "float64", _NAN, "1", "deviatoric strain, direct crystal frame (x ∥ a, z ∥ c*)"),
        Variable("strain_lab", _TENSOR, "float64", _NAN, "1", "deviatoric strain, LaueTools lab frame"),
        Variable("strain_sample", _TENSOR, "float64", _NAN, "1", "deviatoric strain, sample frame (40° tilt)"),
        Variable("stress_crystal", _TENSOR, "float64", _NAN, "GPa", "deviatoric stress C:ε, crystal frame (needs elastic constants)"),
        Variable("stress_sample", _TENSOR, "float64", _NAN, "GPa", "deviatoric stress, sample frame"),
        Variable("von_mises_strain", ("grain",), "float64", _NAN, "1", "equivalent strain sqrt(2/3 ε:ε)"),
        Variable("lattice_parameters", ("grain", "k6"), "float64", _NAN, "Å, deg", "refined a, b, c (a fixed), alpha, beta, gamma"),
        Variable("strain_n_pairs", ("grain",), "int32", 0, "1", "matched spots used in the last fit"),
        Variable("strain_rms_px", ("grain",), "float32", _NAN, "px", "RMS pixel residual of the fit"),
        Variable("strain_status", ("grain",), "int8", 4, "1", "0 ok, 1 too few pairs, 2 ill-conditioned, 3 not converged, 4 empty slot"),
        Variable("peak_grain_refined", ("peak",), "int16", -1, "1", "grain slot the peak was matched to in the last fit"),
        Variable("peak_hkl_refined", ("peak", "i3"), "int32", 0, "1", "Miller indices of that match"),
    ),
    params={"tolerances_deg": list(DEFAULT_TOLERANCES_DEG), "min_pairs": 8, "huber_px": 0.5,
            "energy_band_kev": None, "sample_tilt_deg": 40.0,  # None: the workflow's one band
            "positions": "auto", "bad_spot_weight": BAD_SPOT_WEIGHT},
    dim_sizes={"i3": 3, "j3": 3, "k6": 6},
    check=check_params,
    description="batched orientation + deviatoric-strain refinement of every indexed grain",
)
