"""Forward model of the orientation + deviatoric-strain fit (batched over grains and spots).

Parametrisation (LaueTools ``fit_on_demand_strain``): ``UB = Δ(θ) · UB_c · T(t)`` with small
rotations ``θ = (θ1, θ2, θ3)`` (rad) about lab x, y, z and the upper-triangular
``T = [[1, a12, a13], [0, b/a, a23], [0, 0, c/a]]`` (T11 ≡ 1: the cell scale is not observable
in white-beam Laue). The fit re-linearises at ``θ = 0, T = I`` around the current ``UB_c`` after
every step, so only derivatives at the identity are needed. Parameter vector (8,):
``(θx, θy, θz, b/a − 1, c/a − 1, a12, a13, a23)``.
"""
from __future__ import annotations

import numpy as np

from ...physics.geometry import Calibration, LAUETOOLS_PIXEL_OFFSET

__all__ = ["N_PARAMS", "apply_step", "predict_pixels", "pixel_jacobian"]

N_PARAMS = 8
#: generators of small rotations about lab x, y, z
_GENERATORS = np.array(
    [
        [[0, 0, 0], [0, 0, -1], [0, 1, 0]],
        [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 0]],
    ],
    dtype=float,
)
#: positions in T of (b/a, c/a, a12, a13, a23)
_T_INDEX = [(1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]


def _rotation(theta):
    """Exact rotation matrices (G, 3, 3) for rotation vectors ``theta`` (G, 3) in rad."""
    angle = np.linalg.norm(theta, axis=-1)[:, None, None]
    k = np.einsum("gi,ijk->gjk", theta, _GENERATORS)
    safe = np.where(angle > 1e-300, angle, 1.0)
    s = np.where(angle > 1e-300, np.sin(safe) / safe, 1.0)
    c = np.where(angle > 1e-300, (1 - np.cos(safe)) / safe**2, 0.5)
    return np.eye(3) + s * k + c * (k @ k)


def apply_step(ub, step):
    """``UB ← Δ(θ) · UB · T(t)`` for a parameter step (G, 8)."""
    t = np.repeat(np.eye(3)[None], len(step), axis=0)
    for column, (i, j) in enumerate(_T_INDEX):
        t[:, i, j] += step[:, 3 + column]
    return _rotation(step[:, :3]) @ ub @ t


def predict_pixels(q, calibration: Calibration):
    """Scattering vectors ``q`` (..., 3) → 0-based pixel ``(col, row)`` and a validity mask.

    Invalid where ``q_x ≥ 0`` (no Bragg solution) or the ray misses the detector plane.
    """
    col, row, _ = _project(q, calibration, jacobian=False)
    return col, row


def pixel_jacobian(q, calibration: Calibration):
    """Pixels and their derivatives with respect to ``q``: col, row (...), d(col,row)/dq (..., 2, 3)."""
    return _project(q, calibration, jacobian=True)


def _project(q, calibration, jacobian):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _project_unsafe(q, calibration, jacobian)


def _project_unsafe(q, calibration, jacobian):
    beta = np.deg2rad(calibration.xbet_deg)
    gam = np.deg2rad(calibration.xgam_deg)
    normal = np.array([np.sin(beta), 0.0, np.cos(beta)])
    w = np.array([np.cos(beta), 0.0, -np.sin(beta)])
    q2 = np.einsum("...i,...i->...", q, q)
    qx = q[..., 0]
    lam = -2.0 * qx / q2
    u = lam[..., None] * q
    u[..., 0] += 1.0
    along = u @ normal
    ok = (qx < 0) & (along > 1e-12)
    along = np.where(ok, along, 1.0)
    d = calibration.distance_mm
    a = -d * u[..., 1] / along
    c = d * (u @ w) / along
    p = calibration.pixel_size_mm
    col = calibration.xcen_px - LAUETOOLS_PIXEL_OFFSET + (np.cos(gam) * a - np.sin(gam) * c) / p
    row = calibration.ycen_px - LAUETOOLS_PIXEL_OFFSET + (np.sin(gam) * a + np.cos(gam) * c) / p
    col = np.where(ok, col, np.nan)
    row = np.where(ok, row, np.nan)
    if not jacobian:
        return col, row, None
    # du/dq = λ I + q ⊗ dλ/dq,  dλ/dq = −2 e_x/|q|² + 4 q_x q/|q|⁴
    dlam = 4.0 * qx[..., None] * q / (q2 * q2)[..., None]
    dlam[..., 0] -= 2.0 / q2
    du = lam[..., None, None] * np.eye(3) + q[..., :, None] * dlam[..., None, :]
    e_y = np.array([0.0, 1.0, 0.0])
    da_du = -d * e_y / along[..., None] + (d * u[..., 1] / along**2)[..., None] * normal
    dc_du = d * w / along[..., None] - (d * (u @ w) / along**2)[..., None] * normal
    da = np.einsum("...i,...ij->...j", da_du, du)
    dc = np.einsum("...i,...ij->...j", dc_du, du)
    dcol = (np.cos(gam) * da - np.sin(gam) * dc) / p
    drow = (np.sin(gam) * da + np.cos(gam) * dc) / p
    return col, row, np.stack([dcol, drow], axis=-2)


def parameter_jacobian(ub, b0, hkl, calibration):
    """Pixels (G, S) and d(col,row)/d(params) (G, S, 2, 8) at the identity step.

    ``ub`` (G, 3, 3), ``b0`` (G, 3, 3), ``hkl`` (G, S, 3) float.
    """
    g = np.einsum("gij,gsj->gsi", b0, hkl)  # B0 h (crystal frame)
    q = np.einsum("gij,gsj->gsi", ub, g)
    col, row, dpix_dq = pixel_jacobian(q, calibration)
    # rotations: dq/dθ_k = G_k q ; strain: dq/dt_m = UB E_m B0 h
    dq = np.empty(q.shape + (N_PARAMS,))
    for k in range(3):
        dq[..., k] = q @ _GENERATORS[k].T
    for m, (i, j) in enumerate(_T_INDEX):
        dq[..., 3 + m] = ub[:, None, :, i] * g[..., j, None]
    jac = np.einsum("gsai,gsip->gsap", dpix_dq, dq)
    return col, row, jac
