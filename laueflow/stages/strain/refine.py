"""Refine orientation and deviatoric strain of every indexed grain of a batch of images.

For each grain: simulate its spots from the current ``UB``, match them to the observed peaks of
its image within an angular tolerance (one observed peak per simulated spot and vice versa),
fit (:func:`~laueflow.stages.strain.fit.fit_orientation_strain`), and repeat with decreasing
tolerance (default 0.5° → 0.1° in 5 steps). Everything is batched over all grains at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...physics.geometry import Calibration, angles_to_qhat
from ...physics.materials import Material
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV, simulate_spots
from ...physics.strain import normalise_ub_scale
from .fit import fit_orientation_strain

__all__ = ["STATUS", "RefinementResult", "refine_grains", "match_spots"]

#: status codes of a refined grain
STATUS = {0: "ok", 1: "too few pairs", 2: "ill-conditioned (spots nearly collinear)", 3: "not converged", 4: "no grain"}
DEFAULT_TOLERANCES_DEG = (0.5, 0.4, 0.3, 0.2, 0.1)


@dataclass
class RefinementResult:
    """Per grain (G,): ``ub`` (G, 3, 3), ``status`` int8, ``n_pairs``, ``rms_px``;
    per pair (G, S): ``pair_peak`` (index into the image's peaks, -1 padding), ``pair_hkl`` (G, S, 3)."""

    ub: np.ndarray
    status: np.ndarray
    n_pairs: np.ndarray
    rms_px: np.ndarray
    pair_peak: np.ndarray
    pair_hkl: np.ndarray


def _padded_simulation(ub, grain_material, materials, calibration, energy_band_kev):
    """Simulated spots of every grain as padded arrays: hkl (G, S, 3), qhat (G, S, 3), mask (G, S)."""
    n = len(ub)
    pattern_parts, hkl_parts, tth_parts, chi_parts = [], [], [], []
    for m_index in np.unique(grain_material):
        grains = np.flatnonzero(grain_material == m_index)
        spots = simulate_spots(materials[m_index], ub[grains], calibration, energy_band_kev)
        pattern_parts.append(grains[spots.pattern])
        hkl_parts.append(spots.hkl)
        tth_parts.append(spots.two_theta)
        chi_parts.append(spots.chi)
    pattern = np.concatenate(pattern_parts)
    order = np.argsort(pattern, kind="stable")
    pattern = pattern[order]
    counts = np.bincount(pattern, minlength=n)
    slot = np.arange(len(pattern)) - np.repeat(np.cumsum(counts) - counts, counts)
    size = max(int(counts.max()) if n else 0, 1)
    hkl = np.zeros((n, size, 3))
    qhat = np.full((n, size, 3), np.nan)
    mask = np.zeros((n, size), bool)
    hkl[pattern, slot] = np.concatenate(hkl_parts)[order]
    qhat[pattern, slot] = angles_to_qhat(np.concatenate(tth_parts)[order], np.concatenate(chi_parts)[order])
    mask[pattern, slot] = True
    return hkl, qhat, mask


def match_spots(sim_qhat, sim_mask, obs_qhat, obs_mask, tolerance_deg):
    """One-to-one nearest matches between simulated and observed spots of each grain.

    ``sim_qhat`` (G, S, 3), ``obs_qhat`` (G, P, 3) unit vectors. Returns ``obs_index`` (G, S)
    (-1: unmatched) and the angular distance (G, S) in degrees.
    """
    cos = np.einsum("gsi,gpi->gsp", np.nan_to_num(sim_qhat), np.nan_to_num(obs_qhat))
    cos = np.where(sim_mask[:, :, None] & obs_mask[:, None, :], cos, -2.0)
    best = cos.argmax(axis=2)
    best_cos = np.take_along_axis(cos, best[..., None], axis=2)[..., 0]
    ok = best_cos >= np.cos(np.deg2rad(tolerance_deg))
    # an observed peak keeps only its closest simulated spot
    g, s = np.nonzero(ok)
    key = g * cos.shape[2] + best[g, s]
    order = np.lexsort((-best_cos[g, s], key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = np.zeros_like(ok)
    keep[g[order][first], s[order][first]] = True
    obs_index = np.where(keep, best, -1)
    distance = np.where(keep, np.rad2deg(np.arccos(np.clip(best_cos, -1, 1))), np.nan)
    return obs_index, distance


def refine_grains(
    ub0,
    grain_image,
    grain_material,
    materials: Sequence[Material],
    peak_two_theta,
    peak_chi,
    peak_col,
    peak_row,
    calibration: Calibration,
    *,
    peak_weight=None,
    tolerances_deg: Sequence[float] = DEFAULT_TOLERANCES_DEG,
    min_pairs: int = 8,
    energy_band_kev=DEFAULT_ENERGY_BAND_KEV,
    huber_px: float | None = 0.5,
    max_condition: float = 1e10,
) -> RefinementResult:
    """Refine ``G`` grains found in a batch of images.

    Parameters
    ----------
    ub0 : (G, 3, 3) starting orientation matrices (e.g. from indexing).
    grain_image : (G,) index of each grain's image in the peak arrays.
    grain_material : (G,) index into ``materials``.
    peak_two_theta, peak_chi, peak_col, peak_row : (n_images, P) observed peaks, NaN padded
        (degrees; 0-based pixels — use the spot descriptors' refined positions when available).
    peak_weight : (n_images, P) ≥ 0 weights (e.g. the good-spot flag); 0 excludes a peak.
    tolerances_deg : successive matching tolerances.
    """
    ub = np.array(ub0, dtype=float).reshape(-1, 3, 3)
    n = len(ub)
    grain_image = np.asarray(grain_image, dtype=np.int64)
    grain_material = np.asarray(grain_material, dtype=np.int64)
    col = np.asarray(peak_col, dtype=float)
    row = np.asarray(peak_row, dtype=float)
    weight = np.ones_like(col) if peak_weight is None else np.asarray(peak_weight, dtype=float)
    obs_mask_all = np.isfinite(col) & np.isfinite(row) & np.isfinite(peak_two_theta) & (weight > 0)
    obs_qhat_all = angles_to_qhat(np.nan_to_num(peak_two_theta), np.nan_to_num(peak_chi))
    status = np.where(np.isfinite(ub).all(axis=(1, 2)), 0, 4).astype(np.int8)
    b0_all = np.stack([m.b_matrix for m in materials])
    empty = RefinementResult(ub, status, np.zeros(n, np.int32), np.full(n, np.nan), np.full((n, 1), -1), np.zeros((n, 1, 3), np.int32))
    if n == 0 or not (status == 0).any():
        return empty
    n_pairs = np.zeros(n, np.int32)
    rms = np.full(n, np.nan)
    pair_peak = np.full((n, 1), -1)
    pair_hkl = np.zeros((n, 1, 3), np.int32)
    for tolerance in tolerances_deg:
        active = np.flatnonzero(status == 0)
        if not len(active):
            break
        images = grain_image[active]
        hkl, sim_qhat, sim_mask = _padded_simulation(ub[active], grain_material[active], materials, calibration, energy_band_kev)
        obs_index, _ = match_spots(sim_qhat, sim_mask, obs_qhat_all[images], obs_mask_all[images], tolerance)
        matched = obs_index >= 0
        counts = matched.sum(axis=1)
        safe = np.maximum(obs_index, 0)
        pair_col = np.where(matched, np.take_along_axis(col[images], safe, axis=1), np.nan)
        pair_row = np.where(matched, np.take_along_axis(row[images], safe, axis=1), np.nan)
        pair_w = np.where(matched, np.take_along_axis(weight[images], safe, axis=1), 0.0)
        enough = counts >= min_pairs
        status[active[~enough]] = 1
        n_pairs[active] = counts
        if not enough.any():
            break
        sel = np.flatnonzero(enough)
        b0 = b0_all[grain_material[active[sel]]]
        fit = fit_orientation_strain(ub[active[sel]], b0, hkl[sel], pair_col[sel], pair_row[sel], pair_w[sel], calibration, huber_px=huber_px)
        ill = fit.condition > max_condition
        ub[active[sel[~ill]]] = fit.ub[~ill]
        status[active[sel[ill]]] = 2
        rms[active[sel]] = fit.rms_px
        width = obs_index.shape[1]
        if pair_peak.shape[1] < width:
            pair_peak = np.pad(pair_peak, ((0, 0), (0, width - pair_peak.shape[1])), constant_values=-1)
            pair_hkl = np.pad(pair_hkl, ((0, 0), (0, width - pair_hkl.shape[1]), (0, 0)))
        pair_peak[active] = -1
        pair_peak[active, :width] = obs_index
        pair_hkl[active] = 0
        pair_hkl[active, :width] = np.where(matched[..., None], hkl, 0).astype(np.int32)
    ub = _normalised(ub, grain_material, materials)
    return RefinementResult(ub, status, n_pairs, rms, pair_peak, pair_hkl)


def _normalised(ub, grain_material, materials):
    out = ub.copy()
    finite = np.isfinite(ub).all(axis=(1, 2))
    for m_index in np.unique(grain_material):
        sel = finite & (grain_material == m_index)
        out[sel] = normalise_ub_scale(ub[sel], materials[m_index].lattice_parameters)
    return out
