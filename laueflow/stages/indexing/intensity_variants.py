"""Orientation variants that put every spot at the same place, told apart by intensities.

Some pseudo-symmetric variants ``U · V`` of an orientation predict the *same* spot positions as
``U``: ``V`` is a symmetry of the lattice but not of the crystal (merohedry). Quartz (Laue group
−3m, hexagonal lattice 6/mmm) and its Dauphiné twin, 60° about c, are the classic case; cubic
m−3 crystals (pyrite) and 90° about <100>, tetragonal 4/m and 90° about a, trigonal −3 … too.
Positions cannot choose between them: only the structure factors differ, so the spot
*intensities* do (the energies, angles and therefore every geometric factor are the same).

:func:`settle_by_intensity` looks, for each indexed grain, for variants (coincidence ≥
``variant_min_coincidence`` of the directions, :mod:`.pseudosymmetry`) whose matched measured
spots are the grain's own (symmetric difference ≤ 1 spot or 2 %). When such a variant exists:

* with measured intensities (≥ ``min_matched`` spots matched by every candidate and by no other
  grain of the image, intensity > 0),
  each candidate's fit ``log I = a + b · log I_pred`` of the measured intensities (free scale
  and slope ``b ≥ 0``) gives a residual variance σ²; the log-likelihood of candidate k is
  ``−n/2 · log σ²_k``. A grain and its variant seen together (both in the beam) are tested
  too: ``I_pred = f · I_a + (1 − f) · I_b`` over beam fractions f; the variant is added as a grain
  of its own when the mixture leads by ≥ ``variant_mixture_log_odds`` (13.8: odds 10⁶ : 1 — a
  false twin is a wrong grain, a missed one at a boundary only a grain fewer) with a beam
  fraction ≥ ``variant_min_fraction``, and the grain is flagged when it leads by less.
  The best is kept (the grain is replaced by it if needed); it is *decided* when it beats every
  other equivalent by ≥ ``variant_log_odds`` (default 6.9 = odds 1000 : 1);
* otherwise (no intensities, too few, or not decisive) the grain keeps its orientation and is
  flagged ``ambiguous``: it may be the variant. The index stage stores the flag
  (``variant_ambiguous``), ``laueflow index`` reports it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .matching import match_one
from .pseudosymmetry import coincidence_fraction, pseudo_symmetry_variants, unit_directions

__all__ = ["position_equivalent_variants", "intensity_log_likelihood", "settle_by_intensity"]

_CACHE: dict = {}


def position_equivalent_variants(material, min_coincidence: float = 0.9) -> np.ndarray:
    """Crystal-frame rotations ``V`` (K, 3, 3) of the pseudo-symmetric variants that map ≥
    ``min_coincidence`` of the observable directions onto observable directions (K = 0 for most
    materials; quartz: 1, its Dauphiné twin). Cached per material."""
    key = (material.name, tuple(material.lattice_parameters), material.extinction_rule, min_coincidence)
    if key not in _CACHE:
        v = pseudo_symmetry_variants(material)
        if len(v):
            frac = coincidence_fraction(v, unit_directions(material, 3), unit_directions(material, 5), 0.2)
            v = v[frac >= min_coincidence]
        _CACHE[key] = v
    return _CACHE[key]


def intensity_log_likelihood(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Log-likelihood (K,) of K intensity predictions (K, n) of the same n measured spots (n,)
    (all > 0) under ``log I = a + b · log I_pred + ε``, ε ~ N(0, σ²), with ``a``, ``b ≥ 0`` and σ²
    fitted: ``−n/2 · log σ̂²``. The free slope ``b`` absorbs what compresses a detector's intensity
    range (peak heights instead of integrated intensities, extinction, saturation, a spectrum
    that is not the model's); what counts is how the predictions vary from spot to spot."""
    y = np.log(measured)
    x = np.log(predicted)
    yc, xc = y - y.mean(), x - x.mean(axis=-1, keepdims=True)
    sxx, sxy = (xc * xc).sum(axis=-1), (xc * yc[None]).sum(axis=-1)
    b = np.where(sxx > 0, np.maximum(sxy, 0.0) / np.where(sxx > 0, sxx, 1.0), 0.0)
    var = ((yc[None] - b[:, None] * xc) ** 2).mean(axis=-1)
    return -0.5 * len(y) * np.log(np.maximum(var, 1e-12))


def _matches(material, ub, q, calibration, energy_band_kev, tolerance_deg):
    idx, hkl, res, n_th, inten = match_one(material, ub, q, calibration, energy_band_kev, tolerance_deg,
                                           intensity=True)
    return dict(ub=ub, idx=idx, hkl=hkl, res=res, n_th=n_th, pred=dict(zip(idx.tolist(), inten)))


def _same_spots(a: np.ndarray, b: np.ndarray) -> bool:
    """The two matched sets differ by at most one spot or 2 %."""
    diff = len(np.setxor1d(a, b))
    return diff <= max(1, int(0.02 * max(len(a), len(b))))


#: beam fractions tried for a grain and its variant seen together (step 0.02)
MIX_FRACTIONS = np.linspace(0.0, 1.0, 51)


def mixture_log_likelihood(measured, pred_a, pred_b, fractions=MIX_FRACTIONS) -> np.ndarray:
    """Log-likelihood (F,) of ``I_pred = f · I_a + (1 − f) · I_b`` (:func:`intensity_log_likelihood`)
    for each beam fraction ``f`` of ``fractions`` (F,): the same spots (n,) lit by two variants,
    in absolute simulated units (one material, one simulator: ``f`` is the fraction of the beam
    on variant a)."""
    f = np.asarray(fractions, float)[:, None]
    return intensity_log_likelihood(measured, f * pred_a[None] + (1 - f) * pred_b[None])


def _decide(cands, intensity, p, others=None):
    """Which candidates the intensities of the spots they all match support: ``(best, partner,
    decided)`` — ``partner`` (index or None) when a mixture of ``best`` (the larger fraction) and
    ``partner`` fits better than either alone by ≥ ``p.variant_mixture_log_odds`` with the
    partner's beam fraction ≥ ``p.variant_min_fraction``; ``decided``: the result leads every
    alternative by ≥ ``p.variant_log_odds`` (a mixture that fits better by less than
    ``variant_mixture_log_odds`` leaves it undecided). Spots that ``others`` (m,) bool marks (matched by another grain:
    their counts are partly that grain's) are left out."""
    if intensity is None:
        return 0, None, False
    common = cands[0]["idx"]
    for c in cands[1:]:
        common = np.intersect1d(common, c["idx"])
    if others is not None:
        common = common[~others[common]]
    common = common[np.isfinite(intensity[common]) & (intensity[common] > 0)]
    if len(common) < p.min_matched:
        return 0, None, False
    measured = intensity[common]
    pred = np.array([[c["pred"][j] for j in common.tolist()] for c in cands])  # > 0: allowed reflections
    ll = intensity_log_likelihood(measured, pred)
    best = int(np.argmax(ll))
    mix = [(mixture_log_likelihood(measured, pred[best], pred[j]), j) for j in range(len(cands)) if j != best]
    gains = [(m.max() - ll[best], MIX_FRACTIONS[int(np.argmax(m))], j) for m, j in mix]
    gain, fraction, partner = max(gains, key=lambda t: t[0])
    if min(fraction, 1 - fraction) >= p.variant_min_fraction:
        if gain >= p.variant_mixture_log_odds:
            return (best, partner, True) if fraction >= 0.5 else (partner, best, True)
        if gain >= p.variant_log_odds:  # a mixture fits better, not decisively: say so
            return best, None, False
    return best, None, bool(ll[best] - np.max(np.delete(ll, best)) >= p.variant_log_odds)


def _as_grain(g, c, ambiguous: bool):
    """Grain ``g`` with the orientation and matches of candidate ``c``."""
    return replace(g, ub=c["ub"], matching_rate=100.0 * len(c["idx"]) / max(c["n_th"], 1), n_matched=len(c["idx"]),
                   mean_residual_deg=float(c["res"].mean()) if len(c["res"]) else np.inf, spot_index=c["idx"],
                   hkl=c["hkl"], residual_deg=c["res"], ambiguous=ambiguous)


def settle_by_intensity(grains, q, intensity, geom, calibration, energy_band_kev, params):
    """The grains (list of :class:`~.orientation.GrainResult`), each replaced by its
    position-equivalent variant whose predicted intensities fit ``intensity`` (m,) (measured, in
    the order of ``q`` (m, 3); None: not measured) best; a variant seen *with* the grain (beam on
    both) is added as a grain of its own (same spots) while the caps allow; ``ambiguous`` set where
    such a variant exists and the intensities did not decide (module docstring)."""
    out, extra = [], []
    for gi, g in enumerate(grains):
        material = geom.materials[g.material]
        variants = position_equivalent_variants(material, params.variant_min_coincidence)
        if not params.pseudo_symmetry or not len(variants):
            out.append(g)
            continue
        own = _matches(material, g.ub, q, calibration, energy_band_kev, params.match_tolerance_deg)
        cands = [own]
        for v in variants:
            c = _matches(material, g.ub @ v, q, calibration, energy_band_kev, params.match_tolerance_deg)
            if _same_spots(own["idx"], c["idx"]):
                cands.append(c)
        if len(cands) == 1:
            out.append(g)
            continue
        others = np.zeros(len(q), bool)
        for o in grains[:gi] + grains[gi + 1:]:
            others[o.spot_index] = True
        best, partner, decided = _decide(cands, intensity, params, others)
        out.append(replace(g, ambiguous=not decided) if best == 0 else _as_grain(g, cands[best], not decided))
        if partner is not None:
            extra.append(_as_grain(g, cands[partner], False))
    caps = params.max_grains_per_material
    for g in extra:  # the caps hold: max_grains, and per material
        n_mat = sum(o.material == g.material for o in out)
        if len(out) < params.max_grains and (caps is None or n_mat < caps[g.material]):
            out.append(g)
    return out
