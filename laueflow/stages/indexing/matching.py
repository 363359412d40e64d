"""Matching simulated patterns of candidate orientations against measured spots (batched).

Everything here works on unit scattering vectors ``q̂`` (lab frame): measured ones from
(2θ, χ), theoretical ones from :func:`laueflow.physics.simulate.simulate_spots` for a batch of
candidate ``UB`` matrices at once. For every theoretical spot the nearest measured spot (largest
``q̂·q̂'``) is found; it is *matched* when the angle is below ``tolerance_deg``.

Matching rate (LaueNN): ``MR = 100 · #matched theoretical spots / #theoretical spots`` (our
simulator removes harmonics and clips to the frame, so the theoretical count is the number of
distinct in-frame spots).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...physics.geometry import Calibration, angles_to_qhat, pixel_to_angles
from ...physics.materials import Material
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV, simulate_spots

__all__ = ["CandidateScores", "score_candidates", "q_solid_angle_sr", "match_one", "refine_orientation", "orientation_from_pairs"]


@dataclass
class CandidateScores:
    """Per candidate (K,): matching rate (%), matched theoretical spots, distinct measured spots
    matched, mean residual (deg), overlap (fraction of its matched measured spots that are
    already ``claimed``), ``n_new`` (distinct *unclaimed* measured spots matched) and
    ``free_rate`` (%): the matching rate on the spots no accepted grain explains —
    theoretical spots matched to unclaimed measured spots / theoretical spots not matched to a
    claimed one (a spot shared with an accepted grain tells nothing either way)."""

    matching_rate: np.ndarray
    n_theoretical: np.ndarray
    n_matched: np.ndarray
    n_distinct: np.ndarray
    mean_residual_deg: np.ndarray
    overlap: np.ndarray
    n_new: np.ndarray
    free_rate: np.ndarray
    #: matches expected by chance: theoretical spots not on claimed ones × the probability that a
    #: random direction falls within the tolerance of an unclaimed measured spot (their density
    #: over the detector's q̂ solid angle, :func:`q_solid_angle_sr`)
    chance_matches: np.ndarray | None = None


#: final matching (and refinement) simulate a slightly wider band and frame, so that a spot at
#: an edge of the band or the detector is still matched when the found orientation is ~0.05° off
EDGE_BAND_FRACTION = 0.002
EDGE_MARGIN_PX = -3.0


@lru_cache(maxsize=32)
def q_solid_angle_sr(calibration: Calibration, step_px: int = 16) -> float:
    """Solid angle (sr) of the unit scattering vectors q̂ that reach the detector: the frame's
    pixel grid (every ``step_px``) mapped to q̂, the spherical area of each cell (two triangles)
    summed. Cached per calibration (a frozen dataclass)."""
    rows, cols = calibration.frame_shape
    c, r = np.meshgrid(np.linspace(0, cols, cols // step_px + 1), np.linspace(0, rows, rows // step_px + 1))
    q = angles_to_qhat(*pixel_to_angles(c, r, calibration))
    a, b, d, e = q[:-1, :-1], q[:-1, 1:], q[1:, :-1], q[1:, 1:]
    area = 0.5 * (np.linalg.norm(np.cross(b - a, d - a), axis=-1) + np.linalg.norm(np.cross(b - e, d - e), axis=-1))
    return float(np.nansum(area))


def _theoretical(material, ub, calibration, energy_band_kev, edges: bool = False):
    if edges:
        e0, e1 = energy_band_kev
        s = simulate_spots(material, ub, calibration, (e0 * (1 - EDGE_BAND_FRACTION), e1 * (1 + EDGE_BAND_FRACTION)),
                           margin_px=EDGE_MARGIN_PX)
    else:
        s = simulate_spots(material, ub, calibration, energy_band_kev)
    return s, angles_to_qhat(s.two_theta, s.chi)


def score_candidates(material: Material, ub, q_exp: np.ndarray, calibration: Calibration,
                     energy_band_kev=DEFAULT_ENERGY_BAND_KEV, tolerance_deg: float = 0.5,
                     claimed: np.ndarray | None = None) -> CandidateScores:
    """Score K candidate orientations ``ub`` (K, 3, 3) against measured ``q_exp`` (m, 3)."""
    ub = np.asarray(ub, dtype=float).reshape(-1, 3, 3)
    k = len(ub)
    m = len(q_exp)
    s, q_th = _theoretical(material, ub, calibration, energy_band_kev)
    n_th = np.bincount(s.pattern, minlength=k)
    if m == 0 or len(s) == 0:
        z = np.zeros(k)
        return CandidateScores(z, n_th, z.astype(int), z.astype(int), np.full(k, np.inf), z, z.astype(int), z, z)
    dots = q_th @ q_exp.T
    nearest = dots.argmax(axis=1)
    ang = np.rad2deg(np.arccos(np.clip(dots[np.arange(len(nearest)), nearest], -1, 1)))
    ok = ang < tolerance_deg
    n_match = np.bincount(s.pattern, weights=ok, minlength=k)
    res_sum = np.bincount(s.pattern, weights=np.where(ok, ang, 0.0), minlength=k)
    pairs = np.unique(s.pattern[ok] * m + nearest[ok])
    cand = pairs // m
    n_distinct = np.bincount(cand, minlength=k)
    if claimed is not None and claimed.any():
        n_claimed = np.bincount(cand, weights=claimed[pairs % m], minlength=k)
        on_claimed = ok & claimed[nearest]  # theoretical spots explained by an accepted grain
    else:
        n_claimed = np.zeros(k)
        on_claimed = np.zeros(len(ok), bool)
    n_on_claimed = np.bincount(s.pattern, weights=on_claimed, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mr = np.where(n_th > 0, 100.0 * n_match / n_th, 0.0)
        mean_res = np.where(n_match > 0, res_sum / n_match, np.inf)
        overlap = np.where(n_distinct > 0, n_claimed / n_distinct, 1.0)
        n_free_th = n_th - n_on_claimed
        free = np.where(n_free_th > 0, 100.0 * (n_match - n_on_claimed) / n_free_th, 0.0)
    m_free = m - (int(claimed.sum()) if claimed is not None else 0)
    cone = np.pi * np.deg2rad(tolerance_deg) ** 2
    p_chance = -np.expm1(-m_free / q_solid_angle_sr(calibration) * cone)
    return CandidateScores(mr, n_th, n_match.astype(int), n_distinct, mean_res, overlap,
                           (n_distinct - n_claimed).astype(int), free, np.maximum(n_free_th, 0) * p_chance)


def match_one(material: Material, ub, q_exp: np.ndarray, calibration: Calibration,
              energy_band_kev=DEFAULT_ENERGY_BAND_KEV, tolerance_deg: float = 0.5, *, intensity: bool = False):
    """Match one orientation: ``(exp_index (t,), hkl (t, 3), residual_deg (t,), n_theoretical)``,
    and with ``intensity`` the predicted intensities ``(t,)`` (:func:`simulate_spots`) appended.

    One row per measured spot matched (each measured spot keeps its closest theoretical spot).
    The simulation is slightly widened at the band and frame edges (``EDGE_*``).
    """
    s, q_th = _theoretical(material, np.asarray(ub, float)[None], calibration, energy_band_kev, edges=True)
    if len(s) == 0 or len(q_exp) == 0:
        empty = (np.zeros(0, int), np.zeros((0, 3), int), np.zeros(0), len(s))
        return empty + (np.zeros(0),) if intensity else empty
    dots = q_th @ q_exp.T
    nearest = dots.argmax(axis=1)
    ang = np.rad2deg(np.arccos(np.clip(dots[np.arange(len(nearest)), nearest], -1, 1)))
    ok = np.flatnonzero(ang < tolerance_deg)
    order = ok[np.argsort(ang[ok])]
    _, first = np.unique(nearest[order], return_index=True)
    sel = order[first]
    if intensity:
        return nearest[sel], s.hkl[sel], ang[sel], len(s), s.intensity[sel]
    return nearest[sel], s.hkl[sel], ang[sel], len(s)


def _kabsch(g: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Rotation R minimising Σ |R g_i − q_i|² (rows are vectors)."""
    h = q.T @ g
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def refine_orientation(material: Material, ub, q_exp: np.ndarray, calibration: Calibration,
                       energy_band_kev=DEFAULT_ENERGY_BAND_KEV, tolerances_deg=(0.5, 0.3, 0.2, 0.15, 0.1), min_pairs: int = 6):
    """Least-squares rotation on matched (B0·h, q̂) pairs, re-matched at each tolerance.

    Decreasing tolerances drop noisy spots from the fit; a step with fewer than ``min_pairs``
    matches stops the refinement (the previous rotation is kept).
    """
    u = np.asarray(ub, dtype=float)
    b0 = material.b_matrix
    for tol in tolerances_deg:
        idx, hkl, _, _ = match_one(material, u, q_exp, calibration, energy_band_kev, tol)
        if len(idx) < min_pairs:
            break
        g = hkl @ b0.T
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        u = _kabsch(g, q_exp[idx])
    return u


def orientation_from_pairs(g1, g2, q1, q2) -> np.ndarray:
    """Rotations U (≤K, 3, 3) with ``U ĝ1 = q̂1`` and ``U ĝ2`` in the plane (q̂1, q̂2) (batched;
    degenerate (anti)parallel pairs are dropped).

    ``g*`` are crystal-frame (B0·h) vectors, ``q*`` lab unit vectors, all (K, 3).
    """
    def triad(a, b):
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        c = np.cross(a, b)
        n = np.linalg.norm(c, axis=-1, keepdims=True)
        c = c / np.where(n > 1e-9, n, np.nan)  # (anti)parallel vectors: undefined → NaN
        return np.stack([a, c, np.cross(a, c)], axis=-1)  # columns

    tg = triad(g1, g2)
    tq = triad(q1, q2)
    u = tq @ np.swapaxes(tg, -1, -2)
    return u[np.isfinite(u).all(axis=(1, 2))]
