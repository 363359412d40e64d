"""Batched Levenberg–Marquardt fit of orientation + deviatoric strain for many grains at once.

Every grain has its own padded list of matched pairs (Miller indices ↔ observed pixel); a weight
of 0 marks padding. One iteration solves all grains' 8×8 normal equations together, with a
per-grain damping factor and optional Huber re-weighting of the pixel residuals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...physics.geometry import Calibration
from .model import N_PARAMS, apply_step, parameter_jacobian, predict_pixels

__all__ = ["FitResult", "fit_orientation_strain"]


@dataclass
class FitResult:
    """Per grain (G,): refined ``ub`` (G, 3, 3), ``rms_px``, ``converged``, ``condition`` (of JᵀWJ),
    ``residual_col``/``residual_row`` (G, S) observed − predicted (pixels, NaN for padding)."""

    ub: np.ndarray
    rms_px: np.ndarray
    converged: np.ndarray
    condition: np.ndarray
    residual_col: np.ndarray
    residual_row: np.ndarray


def _huber(residual_norm, scale):
    if scale is None:
        return np.ones_like(residual_norm)
    return np.where(residual_norm <= scale, 1.0, scale / np.maximum(residual_norm, 1e-300))


def fit_orientation_strain(
    ub0,
    b0,
    hkl,
    obs_col,
    obs_row,
    weight,
    calibration: Calibration,
    *,
    huber_px: float | None = 0.5,
    max_iterations: int = 40,
    tolerance: float = 1e-13,
) -> FitResult:
    """Minimise Σ w·ρ(|pixel_obs − pixel(UB·B0·h)|²) over rotation and the 5 strain terms.

    Parameters
    ----------
    ub0, b0 : (G, 3, 3) starting ``UB`` and reference ``B0`` of each grain.
    hkl : (G, S, 3) Miller indices of the matched pairs (any values where weight is 0).
    obs_col, obs_row : (G, S) observed 0-based pixel positions.
    weight : (G, S) ≥ 0 pair weights (0 = padding / unused).
    huber_px : Huber scale for robust re-weighting (None: plain least squares).
    """
    ub = np.array(ub0, dtype=float)
    hkl = np.asarray(hkl, dtype=float)
    weight = np.where(np.isfinite(obs_col) & np.isfinite(obs_row), np.asarray(weight, dtype=float), 0.0)
    obs_col = np.nan_to_num(obs_col)
    obs_row = np.nan_to_num(obs_row)
    n_grains = len(ub)
    damping = np.full(n_grains, 1e-3)
    converged = np.zeros(n_grains, bool)
    cost = _cost(ub, b0, hkl, obs_col, obs_row, weight, calibration, huber_px)
    for _ in range(max_iterations):
        active = ~converged
        if not active.any():
            break
        col, row, jac = parameter_jacobian(ub[active], b0[active], hkl[active], calibration)
        w = weight[active]
        rc, rr = obs_col[active] - col, obs_row[active] - row
        valid = np.isfinite(rc) & np.isfinite(rr) & (w > 0)
        w = np.where(valid, w * _huber(np.hypot(rc, rr), huber_px), 0.0)
        rc, rr = np.where(valid, rc, 0.0), np.where(valid, rr, 0.0)
        jac = np.where(valid[..., None, None], jac, 0.0)
        jtj = np.einsum("gs,gsap,gsaq->gpq", w, jac, jac)
        jtr = np.einsum("gs,gsap,gsa->gp", w, jac, np.stack([rc, rr], axis=-1))
        diag = np.einsum("gpp->gp", jtj)
        step, new_cost = _damped_steps(ub[active], b0[active], hkl[active], obs_col[active], obs_row[active], weight[active],
                                       calibration, huber_px, jtj, jtr, diag, damping[active])
        improved = new_cost <= cost[active]
        index = np.flatnonzero(active)
        ub[index[improved]] = apply_step(ub[index[improved]], step[improved])
        rel = (cost[active] - new_cost) / np.maximum(cost[active], 1e-300)
        small_step = np.abs(step).max(axis=1) < 1e-12
        done = improved & ((rel < tolerance) | small_step) | (~improved & (damping[active] > 1e8))
        cost[index[improved]] = new_cost[improved]
        damping[index] = np.where(improved, damping[index] / 10, damping[index] * 10)
        converged[index[done]] = True
    col, row, jac = parameter_jacobian(ub, b0, hkl, calibration)
    used = (weight > 0) & np.isfinite(col)
    res_c = np.where(used, obs_col - col, np.nan)
    res_r = np.where(used, obs_row - row, np.nan)
    n_used = used.sum(axis=1)
    rms = np.sqrt(np.nansum(res_c**2 + res_r**2, axis=1) / np.maximum(n_used, 1))
    jtj = np.einsum("gs,gsap,gsaq->gpq", used.astype(float), np.nan_to_num(jac), np.nan_to_num(jac))
    condition = _condition(jtj)
    return FitResult(ub, rms, converged, condition, res_c, res_r)


def _condition(jtj):
    scale = np.sqrt(np.maximum(np.einsum("gpp->gp", jtj), 1e-300))
    normalised = jtj / scale[:, :, None] / scale[:, None, :]
    eig = np.linalg.eigvalsh(normalised)
    return eig[:, -1] / np.maximum(eig[:, 0], 1e-300)


def _damped_steps(ub, b0, hkl, obs_col, obs_row, weight, calibration, huber_px, jtj, jtr, diag, damping):
    a = jtj + (damping[:, None] * np.maximum(diag, 1e-12))[:, :, None] * np.eye(N_PARAMS)
    try:
        step = np.linalg.solve(a, jtr[..., None])[..., 0]
    except np.linalg.LinAlgError:
        step = np.stack([np.linalg.lstsq(ai, bi, rcond=None)[0] for ai, bi in zip(a, jtr)])
    new_cost = _cost(apply_step(ub, step), b0, hkl, obs_col, obs_row, weight, calibration, huber_px)
    return step, new_cost


def _cost(ub, b0, hkl, obs_col, obs_row, weight, calibration, huber_px):
    q = np.einsum("gij,gsj->gsi", ub @ b0, hkl)
    col, row = predict_pixels(q, calibration)
    r = np.hypot(obs_col - col, obs_row - row)
    r = np.where(weight > 0, r, 0.0)
    bad = (weight > 0) & ~np.isfinite(r)
    r = np.where(np.isfinite(r), r, 0.0)
    if huber_px is None:
        rho = r * r
    else:
        rho = np.where(r <= huber_px, r * r, 2 * huber_px * r - huber_px**2)
    return np.sum(weight * rho, axis=1) + 1e6 * bad.sum(axis=1)
