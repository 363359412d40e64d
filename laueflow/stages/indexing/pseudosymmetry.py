"""Pseudo-symmetric variants of an orientation (Σ3 twins and the like), found from the lattice.

A *pseudo-symmetry* of a material is a crystal-frame rotation ``R`` that is not in its Laue group
but maps a large fraction of the low-index reciprocal-lattice directions onto other such
directions (Laue spots are directions). An orientation ``U`` and its variant ``U · R`` then
predict many spots at the same place: the variant can explain a good part of a measured pattern
(the Σ3-twin trap), and a real twin shares many spots with its parent. Cubic crystals: 60° about
<111> (Σ3, about 40 % of the spots shared); other lattices: whatever the search finds.

:func:`pseudo_symmetry_variants` searches rotations that map two low-index directions onto two
others (same angle), keeps those mapping ≥ ``min_coincidence`` of the observable directions
(``|h|, |k|, |l| ≤ max_index``) onto observable directions within ``tolerance_deg``, and returns
one rotation per distinct variant (``U · V`` are different orientations, none equal to ``U``).
Cached per material (a fraction of a second per material).
"""
from __future__ import annotations

import numpy as np

from ...physics.materials import Material
from ...physics.symmetry import rotation_operators
from .classes import observable_directions
from .matching import orientation_from_pairs

__all__ = ["pseudo_symmetry_variants", "coincidence_fraction", "unit_directions"]

_CACHE: dict = {}


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def unit_directions(material: Material, max_index: int) -> np.ndarray:
    """Unit crystal-frame (B0 Cartesian) vectors of the observable primitive directions, (n, 3)."""
    return _unit(observable_directions(material, max_index) @ material.b_matrix.T)


def coincidence_fraction(rotations, directions, targets, tolerance_deg: float) -> np.ndarray:
    """Fraction (K,) of ``directions`` (n, 3) that each rotation (K, 3, 3) maps within
    ``tolerance_deg`` of one of ``targets`` (t, 3) (all unit vectors)."""
    rotated = np.einsum("kij,nj->kni", rotations, directions)
    k, n = rotated.shape[:2]
    best = (rotated.reshape(k * n, 3) @ targets.T).max(axis=-1).reshape(k, n)  # one BLAS product
    return (best > np.cos(np.deg2rad(tolerance_deg))).mean(axis=-1)


def _distinct(rotations, symmetry, tol_deg: float = 0.5):
    """Rotations that give distinct orientations ``U · R``: R ≡ R' when R⁻¹ R' is a symmetry."""
    keep = np.zeros((0, 3, 3))
    cos_tol = 1 + 2 * np.cos(np.deg2rad(tol_deg))  # trace of a rotation by tol_deg
    for r in rotations:  # trace(Rᵀ K S) over the kept K and the symmetries S, at once
        if len(keep) and np.einsum("ji,kjl,nli->kn", r, keep, symmetry).max() > cos_tol:
            continue
        keep = np.concatenate([keep, r[None]])
    return keep


def _family_heads(seeds, symmetry, n: int) -> list:
    """Indices of one seed direction of each of the first ``n`` symmetry families (seed order)."""
    heads, covered = [], np.zeros(len(seeds), bool)
    for i in range(len(seeds)):
        if covered[i]:
            continue
        heads.append(i)
        images = np.einsum("sij,j->si", symmetry, seeds[i])
        covered |= (seeds @ images.T).max(axis=1) > 1 - 1e-9
        if len(heads) == n:
            break
    return heads


def pseudo_symmetry_variants(material: Material, *, min_coincidence: float = 0.2, max_index: int = 3,
                             n_seed_directions: int = 40, tolerance_deg: float = 0.2) -> np.ndarray:
    """Crystal-frame rotations ``V`` (K, 3, 3): the orientations ``U · V`` are the pseudo-symmetric
    variants of ``U`` (distinct, none symmetry-equivalent to ``U``); K = 0 when the lattice has
    none. Cubic: the four Σ3 twins (60° about each <111>), plus any others above ``min_coincidence``."""
    key = (material.name, tuple(material.lattice_parameters), material.extinction_rule,
           min_coincidence, max_index, n_seed_directions, tolerance_deg)
    if key in _CACHE:
        return _CACHE[key]
    symmetry = rotation_operators(material)
    dirs = unit_directions(material, max_index)
    targets = unit_directions(material, max_index + 2)  # room for the images of the outer directions
    qlen = np.linalg.norm(observable_directions(material, max_index) @ material.b_matrix.T, axis=1)
    seeds = dirs[np.argsort(qlen, kind="stable")[:n_seed_directions]]
    # rotations R with R d1 = d1', R d2 = d2' (equal angles), d1 one direction of each of the
    # three shortest families (the others are symmetry images), d2, d1', d2' among the seeds
    cos = seeds @ seeds.T
    first = _family_heads(seeds, symmetry, 3)
    g1, g2, q1, q2 = [], [], [], []
    for d1 in first:
        i2, j1, j2 = np.nonzero(np.abs(cos[d1][:, None, None] - cos[None, :, :]) < 1e-3)
        ok = (np.abs(cos[d1, i2]) < 0.999) & (np.abs(cos[j1, j2]) < 0.999)
        i2, j1, j2 = i2[ok], j1[ok], j2[ok]
        g1.append(np.repeat(seeds[d1][None], len(i2), 0))
        g2.append(seeds[i2]), q1.append(seeds[j1]), q2.append(seeds[j2])
    rot = orientation_from_pairs(*(np.concatenate(v) for v in (g1, g2, q1, q2)))
    rot = np.unique(np.round(rot, 4), axis=0)  # the same R from several direction pairs
    # not a symmetry of the lattice (those map every direction)
    trace_max = np.einsum("kij,nji->kn", rot, symmetry).max(axis=1)
    rot = rot[trace_max < 1 + 2 * np.cos(np.deg2rad(0.5))]
    # coarse screen (index ≤ 2), distinct variants, then the fraction at max_index
    coarse_dirs, coarse_targets = unit_directions(material, 2), unit_directions(material, 4)
    frac = np.concatenate([coincidence_fraction(rot[k:k + 256], coarse_dirs, coarse_targets, tolerance_deg)
                           for k in range(0, len(rot), 256)] or [np.zeros(0)])
    rot = rot[frac >= 0.75 * min_coincidence]
    rot = _distinct(rot[np.argsort(-frac[frac >= 0.75 * min_coincidence], kind="stable")], symmetry)
    rot = rot[coincidence_fraction(rot, dirs, targets, tolerance_deg) >= min_coincidence] if len(rot) else rot
    # every distinct variant: S · R for the symmetries S (U S R ≠ U R in general)
    out = _distinct(np.einsum("sij,kjl->skil", symmetry, rot).reshape(-1, 3, 3), symmetry)
    ident = np.einsum("kij,nji->kn", out, symmetry).max(axis=1) > 1 + 2 * np.cos(np.deg2rad(0.5))
    _CACHE[key] = out[~ident]
    return _CACHE[key]


def cross_material_variants(target: Material, source: Material, *, min_coincidence: float = 0.2,
                            max_index: int = 3, n_seed_directions: int = 40,
                            tolerance_deg: float = 0.5) -> np.ndarray:
    """Crystal-frame rotations ``V`` (K, 3, 3) from ``target``'s frame to ``source``'s: for an
    orientation ``U`` of ``source``, ``U · V`` is an orientation of ``target`` whose spots fall on
    many of ``U``'s (≥ ``min_coincidence`` of ``target``'s observable directions within
    ``tolerance_deg`` of one of ``source``'s). Two materials of one list can be such impostors of
    each other: wurtzite GaN and diamond Si share the close-packed directions (GaN [0001] ∥ Si
    <111>, the epitaxial relation), so a Si orientation explains ~50 % of a GaN grain's spots
    (residual ~0.2°: c/a is not ideal). K = 0 when none (or ``target`` is ``source``: see
    :func:`pseudo_symmetry_variants`). The tolerance is wider than for one lattice (a real
    lattice mismatch leaves the shared directions a fraction of a degree apart). Cached."""
    key = ("cross", target.name, tuple(target.lattice_parameters), target.extinction_rule, source.name,
           tuple(source.lattice_parameters), source.extinction_rule, min_coincidence, max_index,
           n_seed_directions, tolerance_deg)
    if key in _CACHE:
        return _CACHE[key]
    if target.name == source.name and tuple(target.lattice_parameters) == tuple(source.lattice_parameters):
        _CACHE[key] = np.zeros((0, 3, 3))
        return _CACHE[key]
    sym_t = rotation_operators(target)
    sym_s = rotation_operators(source)

    def seeds_of(mat):
        dirs = unit_directions(mat, max_index)
        qlen = np.linalg.norm(observable_directions(mat, max_index) @ mat.b_matrix.T, axis=1)
        return dirs[np.argsort(qlen, kind="stable")[:n_seed_directions]]

    st, ss = seeds_of(target), seeds_of(source)
    cos_t, cos_s = st @ st.T, ss @ ss.T
    ang_t = np.rad2deg(np.arccos(np.clip(cos_t, -1, 1)))
    ang_s = np.rad2deg(np.arccos(np.clip(cos_s, -1, 1)))
    g1, g2, q1, q2 = [], [], [], []
    for d1 in _family_heads(st, sym_t, 3):  # the others are symmetry images
        i2, j1, j2 = np.nonzero(np.abs(ang_t[d1][:, None, None] - ang_s[None, :, :]) < tolerance_deg)
        ok = (np.abs(cos_t[d1, i2]) < 0.999) & (np.abs(cos_s[j1, j2]) < 0.999)
        i2, j1, j2 = i2[ok], j1[ok], j2[ok]
        g1.append(np.repeat(st[d1][None], len(i2), 0))
        g2.append(st[i2]), q1.append(ss[j1]), q2.append(ss[j2])
    if not sum(len(v) for v in g1):
        _CACHE[key] = np.zeros((0, 3, 3))
        return _CACHE[key]
    rot = orientation_from_pairs(*(np.concatenate(v) for v in (g1, g2, q1, q2)))
    _, first = np.unique(np.round(rot, 3), axis=0, return_index=True)  # the same R from several pairs
    rot = rot[np.sort(first)]  # exact rotations (rounded ones are not orthogonal)
    coarse_dirs, coarse_targets = unit_directions(target, 2), unit_directions(source, 4)
    frac = np.concatenate([coincidence_fraction(rot[k:k + 256], coarse_dirs, coarse_targets, tolerance_deg)
                           for k in range(0, len(rot), 256)] or [np.zeros(0)])
    keep = frac >= 0.75 * min_coincidence
    rot = _distinct(rot[keep][np.argsort(-frac[keep], kind="stable")], sym_t)
    if len(rot):
        rot = rot[coincidence_fraction(rot, unit_directions(target, max_index), unit_directions(source, max_index + 2),
                                       tolerance_deg) >= min_coincidence]
    # every distinct variant: S_source · R (U · S_source is U itself, U · S_source · R is not U · R)
    out = _distinct(np.einsum("sij,kjl->skil", sym_s, rot).reshape(-1, 3, 3), sym_t) if len(rot) else rot
    _CACHE[key] = out
    return out
