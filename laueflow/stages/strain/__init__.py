"""Strain refinement stage: batched orientation + deviatoric-strain fits of indexed grains.

:func:`refine_strain` is the pipeline entry point (padded per-image arrays in, per-grain arrays
out); :func:`~laueflow.stages.strain.refine.refine_grains` works on a flat list of grains.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...physics.geometry import Calibration
from ...physics.materials import Material
from .outputs import deviatoric_stress, stiffness_matrix, strain_outputs
from .refine import DEFAULT_TOLERANCES_DEG, STATUS, RefinementResult, refine_grains

__all__ = ["refine_strain", "refine_grains", "strain_outputs", "stiffness_matrix", "deviatoric_stress", "STATUS", "RefinementResult", "STRAIN_DEFAULTS"]

STRAIN_DEFAULTS = {
    "tolerances_deg": list(DEFAULT_TOLERANCES_DEG),
    "min_pairs": 8,
    "huber_px": 0.5,
    "energy_band_kev": [5.0, 23.0],
    "sample_tilt_deg": 40.0,
}


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
    energy_band_kev=(5.0, 23.0),
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
    out = _empty_outputs(n, m, np.shape(peak_col)[1])
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


def _empty_outputs(n, m, n_peaks):
    nan = lambda *shape: np.full(shape, np.nan)  # noqa: E731
    return {
        "refined_orientation": nan(n, m, 3, 3),
        "strain_crystal": nan(n, m, 3, 3),
        "strain_lab": nan(n, m, 3, 3),
        "strain_sample": nan(n, m, 3, 3),
        "stress_crystal": nan(n, m, 3, 3),
        "stress_sample": nan(n, m, 3, 3),
        "von_mises_strain": nan(n, m),
        "lattice_parameters": nan(n, m, 6),
        "strain_n_pairs": np.zeros((n, m), np.int32),
        "strain_rms_px": nan(n, m),
        "strain_status": np.full((n, m), 4, np.int8),
        "peak_grain_refined": np.full((n, n_peaks), -1, np.int32),
        "peak_hkl_refined": np.zeros((n, n_peaks, 3), np.int32),
    }
