"""Scattering angles of peaks: 0-based pixel positions → (2θ, χ) in degrees.

``peak_angles(peak_col, peak_row, calibration)`` accepts arrays of any shape (e.g. the padded
``(n_images, max_peaks)`` tables of :func:`laueflow.stages.peaks.find_peaks`), numpy or cupy,
and returns ``{"peak_two_theta", "peak_chi"}`` of the same shape. NaN positions (padding) give
NaN angles. The computation is float64 (:func:`laueflow.physics.geometry.pixel_to_angles`);
results are returned as float32 when both inputs are float32 (the peak-table dtype; float32
resolves 2θ to ≈ 1e-5°, far below a pixel ≈ 0.05°), else as float64.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..physics.geometry import Calibration, pixel_to_angles
from .base import StageSpec, Variable

__all__ = ["STAGE", "peak_angles"]


def peak_angles(peak_col, peak_row, calibration: Calibration) -> dict:
    xp = get_array_module(peak_col, peak_row)
    col = xp.asarray(peak_col)
    row = xp.asarray(peak_row)
    two_theta, chi = pixel_to_angles(col, row, calibration)
    finite = xp.isfinite(col) & xp.isfinite(row)
    two_theta = xp.where(finite, two_theta, xp.nan)
    chi = xp.where(finite, chi, xp.nan)
    dtype = xp.float32 if (col.dtype == xp.float32 and row.dtype == xp.float32) else xp.float64
    return {"peak_two_theta": two_theta.astype(dtype), "peak_chi": chi.astype(dtype)}


STAGE = StageSpec(
    name="angles",
    func=peak_angles,
    inputs={"peak_col": "peak_col", "peak_row": "peak_row", "calibration": "calibration"},
    outputs=(
        Variable("peak_two_theta", ("peak",), "float32", float("nan"), "deg", "scattering angle 2θ of the peak"),
        Variable("peak_chi", ("peak",), "float32", float("nan"), "deg", "azimuth χ of the peak (LaueTools)"),
    ),
    description="pixel → (2θ, χ) with the scan's detector calibration",
)
