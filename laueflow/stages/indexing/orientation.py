"""Orientation matrices from pairs of spots with confident hkl-family predictions (LaueNN §5.5).

Per image, repeatedly (one grain per round):

1. candidate spots: among the first ``n_centres`` (brightest) spots, those not yet claimed by a
   grain whose predicted class has confidence ≥ ``confidence_threshold``;
2. pairs (i, j) of candidate spots of the same predicted material, brightest first; for each pair
   every ``(h1, h2)`` with h1 a member of class(i) (one per proper-rotation orbit — the others give
   symmetry-equivalent orientations) and h2 any member of class(j) whose theoretical angle matches
   the measured one within ``angle_tolerance_deg`` gives a candidate U (:func:`orientation_from_pairs`);
3. candidates are scored in batches (one vectorised simulation of all of a batch's UBs, one
   matching pass) on the spots no accepted grain explains: free matching rate (spots shared with
   accepted grains left out), new measured spots matched (≥ ``min_matched``), mean residual
   (≤ ``max_residual_deg``), optional shared-fraction cap ``max_overlap`` (1: off);
4. the best candidate of a batch is taken at once when its free rate ≥ ``mr_accept``; else the
   best over ``max_pairs`` pairs when ≥ ``mr_min``; otherwise the material is done. It is
   replaced by the pseudo-symmetric variant (Σ3 twin …, :mod:`.pseudosymmetry`) that explains
   the spots best — or by an orientation of another material whose spots fall on many of its
   own (GaN [0001] ∥ Si <111>: :func:`_cross_material`) when that explains them better —, refined (least-squares rotation on matched q̂ pairs) and confirmed (free rate
   ≥ ``mr_min`` within ``confirm_tolerance_deg``; else excluded and the search goes on); its
   matched spots are claimed. At the grain cap with spots unexplained, :func:`replace_weakest`
   searches the weakest grain's slot again; :func:`prune_grains` then judges the grains jointly.

``previous`` (``use_previous``): orientations of neighbouring scan points, scored before any pair.

Continuation (issue #12): ``grains`` (already accepted, their spots claimed) and ``seed_from``
(only pairs with at least one spot at index ≥ ``seed_from`` are tried) let
:func:`~.stage.index_peaks` extend the search to spots beyond the first ``n_predict`` without
re-trying the pairs it already tried.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import pdtrc  # P(X > k), X ~ Poisson

from ...physics.materials import Material
from ...physics.symmetry import hkl_operators, rotation_operators
from .matching import match_one, orientation_from_pairs, refine_orientation, score_candidates
from .pseudosymmetry import cross_material_variants, pseudo_symmetry_variants

__all__ = ["IndexingParams", "GrainResult", "find_grains", "replace_weakest", "ClassGeometry", "best_variant", "settle_variant"]


@dataclass(frozen=True)
class IndexingParams:
    """Thresholds of the orientation search (LaueNN names in brackets)."""

    max_grains: int = 5                  # [UB_matrix_to_detect], total per image
    max_grains_per_material: tuple | None = None  # [material0_limit, …]
    confidence_threshold: float = 0.5    # [softmax_threshold_global]
    angle_tolerance_deg: float = 0.6     # [matrix_tolerance]
    match_tolerance_deg: float = 0.5     # matching of simulated to measured spots
    mr_accept: float = 50.0              # [mr_threshold_global] accept at once (%)
    mr_min: float = 25.0                 # [cap_matchrate] best-of-all acceptance (%)
    min_matched: int = 8                 # [nb_spots_global_threshold]
    max_residual_deg: float = 0.35       # [residues_threshold]
    max_overlap: float = 1.0             # [coeff_overlap] optional cap on the shared fraction (1: none;
                                         # acceptance uses the spots no accepted grain explains instead)
    pseudo_symmetry: bool = True         # compare a candidate with its pseudo-symmetric variants (Σ3 twins …)
    min_coincidence: float = 0.2         # rotations sharing ≥ this fraction of the directions are variants
    # after refinement, an accepted grain must still explain ≥ mr_min % (and ≥ min_matched) of the
    # unexplained spots within this tolerance: chance matches spread over the whole match cone
    # ((0.2 / 0.5)² = 16 % of them fall inside), real ones sit at the noise level
    confirm_tolerance_deg: float = 0.2
    max_rejections: int = 3              # rejected candidates per image and call before giving up
    pairs_per_batch: int = 32
    max_pairs: int = 400                 # pairs tried per grain before giving up
    refine: bool = True
    refine_tolerances_deg: tuple = (0.5, 0.3, 0.2, 0.15, 0.1)
    # spots beyond the first n_predict may start grains (next blocks, same model) while fewer than
    # max_grains grains are found and at least this fraction of the valid spots (and ≥ min_matched
    # spots) is matched by no accepted grain; > 1 disables (only the first n_predict spots seed)
    continue_unexplained: float = 0.1
    # a candidate is taken only when chance is unlikely to give its new matches: P(X ≥ n_new) ≤
    # chance_alpha for X ~ Poisson(the matches expected by chance from the density of the spots
    # no accepted grain explains, CandidateScores.chance_matches); 0 disables. Stricter than
    # mr_min / min_matched in crowded lists (many unindexed peaks), inactive in sparse ones
    chance_alpha: float = 1e-7          # ≈ 1e-3 false grains per list over the ~10⁴ candidates one grain search scores
    # variants that put every spot at the same place (quartz's Dauphiné twin …) are told apart by the
    # measured intensities when the log-likelihood ratio is ≥ this (6.9: odds 1000 : 1), else the
    # grain is flagged ambiguous (:mod:`.intensity_variants`)
    variant_log_odds: float = 6.9
    variant_min_coincidence: float = 0.9  # variants sharing ≥ this fraction of the directions are checked
    variant_min_fraction: float = 0.15    # a variant seen with its grain (same spots, beam on both) is added
    variant_mixture_log_odds: float = 13.8  # when its fitted beam fraction is ≥ that and the two together fit
                                          # better than the grain alone by ≥ this (odds 10⁶ : 1)


@dataclass
class GrainResult:
    material: int
    ub: np.ndarray
    matching_rate: float
    n_matched: int
    mean_residual_deg: float
    spot_index: np.ndarray = field(repr=False)  # measured spots matched (indices into the image)
    hkl: np.ndarray = field(repr=False)
    residual_deg: np.ndarray = field(repr=False)
    ambiguous: bool = False  # a variant with the same spot positions fits as well (intensity_variants)


class ClassGeometry:
    """Per-class crystal-frame vectors and cached pair-angle tables for one class table."""

    def __init__(self, classes, materials: list[Material]):
        self.classes = classes
        self.materials = materials
        self.members_cart = []
        self.first_cart = []
        self._proper = {}
        for c in range(classes.n_classes):
            mat = materials[classes.class_material[c]]
            b0 = mat.b_matrix
            mem = classes.members[c]
            first = self._first_members(mem, mat)
            self.members_cart.append(_unit(mem @ b0.T))
            self.first_cart.append(_unit(first @ b0.T))
        self._angles = {}
        self._rotations = {}

    def rotation_ops(self, material_index: int) -> np.ndarray:
        """Proper Laue-group rotations (n, 3, 3) of a material, B0 Cartesian frame (cached)."""
        if material_index not in self._rotations:
            self._rotations[material_index] = rotation_operators(self.materials[material_index])
        return self._rotations[material_index]

    def _first_members(self, members, mat):
        key = mat.name
        if key not in self._proper:
            ops = hkl_operators(mat)
            b0 = mat.b_matrix
            cart = b0 @ ops.astype(float) @ np.linalg.inv(b0)
            self._proper[key] = ops[np.linalg.det(cart) > 0]
        proper = self._proper[key]
        remaining = {tuple(m) for m in members.tolist()}
        reps = []
        for m in members.tolist():
            if tuple(m) in remaining:
                reps.append(m)
                for h in (proper @ np.asarray(m)).tolist():
                    remaining.discard(tuple(h))
        return np.asarray(reps, dtype=np.int64).reshape(-1, 3)

    def pair_table(self, ci: int, cj: int):
        """(angles (a·b,), index of h1, index of h2) between first members of ci and members of cj."""
        key = (ci, cj)
        if key not in self._angles:
            f, m = self.first_cart[ci], self.members_cart[cj]
            ang = np.rad2deg(np.arccos(np.clip(f @ m.T, -1, 1)))
            a, b = np.nonzero(np.ones_like(ang, dtype=bool))
            self._angles[key] = (ang.ravel(), a, b)
        return self._angles[key]

    def pair_vectors(self, ci: int, cj: int):
        """:meth:`pair_table` with the vectors gathered: (angles, h1 vectors (n, 3), h2 vectors (n, 3))."""
        key = ("vectors", ci, cj)
        if key not in self._angles:
            ang, a, b = self.pair_table(ci, cj)
            self._angles[key] = (ang, self.first_cart[ci][a], self.members_cart[cj][b])
        return self._angles[key]


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _candidates(geom: ClassGeometry, pairs, cls, q, delta, tol):
    """Candidate U (K, 3, 3) for a list of spot pairs (P, 2): every (h1, h2) of a pair's class
    table whose angle matches the pair's within ``tol``, pair by pair (one pass over all pairs)."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    if not len(pairs):
        return np.zeros((0, 3, 3))
    tables = [geom.pair_vectors(cls[i], cls[j]) for i, j in pairs.tolist()]
    pair_of = np.repeat(np.arange(len(pairs)), [len(t[0]) for t in tables])
    sel = np.abs(np.concatenate([t[0] for t in tables]) - np.asarray(delta)[pair_of]) < tol
    if not sel.any():
        return np.zeros((0, 3, 3))
    g1 = np.concatenate([t[1] for t in tables])[sel]
    g2 = np.concatenate([t[2] for t in tables])[sel]
    p = pair_of[sel]
    return orientation_from_pairs(g1, g2, q[pairs[p, 0]], q[pairs[p, 1]])


def _passes(sc, p: IndexingParams):
    """A candidate explains ≥ ``min_matched`` measured spots that no accepted grain explains, with a
    small residual, more than chance would (:func:`_significant`) (and, when ``max_overlap`` < 1,
    shares at most that fraction of its spots)."""
    return ((sc.n_new >= p.min_matched) & (sc.mean_residual_deg <= p.max_residual_deg)
            & (sc.overlap <= p.max_overlap) & _significant(sc, p))


def _significant(sc, p: IndexingParams):
    """(K,) bool: P(X ≥ n_new) ≤ ``chance_alpha`` for X ~ Poisson(``sc.chance_matches``): the
    candidate's new matches are not what random spots of that density would give."""
    if not p.chance_alpha or sc.chance_matches is None:
        return np.ones(len(sc.n_new), bool)
    n = np.asarray(sc.n_new)
    return (n >= 1) & (pdtrc(np.maximum(n - 1, 0), np.maximum(sc.chance_matches, 1e-300)) <= p.chance_alpha)


def _rank(sc):
    """Ranking key of candidates (K,): the matching rate on the unexplained spots, ties → more new spots."""
    return sc.free_rate + 1e-3 * sc.n_new


def best_variant(material: Material, ub, q, calibration, energy_band_kev, params: IndexingParams, claimed,
                 runners_up: list | None = None, accepted=(), symmetry=None):
    """``ub`` or the pseudo-symmetric variant of it (``ub · V``) that best explains the spots not
    yet ``claimed`` (highest :func:`_rank`): resolves the Σ3-twin trap, where a twin of the
    true grain matches 40–50 % of its spots. The other candidates that pass with a free matching
    rate ≥ ``mr_min`` (a real twin and its parent both do) are appended to ``runners_up``, best
    first, so that they are tried again once the chosen one has claimed its spots.

    Variants are scored within ``confirm_tolerance_deg`` (a variant next to an accepted grain or a
    1° sub-grain would otherwise "explain" its neighbour's spots at 0.5°), and those within 0.3°
    of an ``accepted`` UB (same material; ``symmetry``: its proper rotations) are left out."""
    variants = pseudo_symmetry_variants(material, min_coincidence=params.min_coincidence)
    if not params.pseudo_symmetry or not len(variants):
        return np.asarray(ub, float)
    cands = np.concatenate([np.asarray(ub, float)[None], np.einsum("ij,kjl->kil", ub, variants)])
    sc = score_candidates(material, cands, q, calibration, energy_band_kev, params.confirm_tolerance_deg, claimed)
    dup = _near(cands, list(accepted), symmetry, 0.3) if len(accepted) else np.zeros(len(cands), bool)
    dup[0] = False  # the candidate itself is judged by the caller
    key = np.where(_passes(sc, params) & ~dup, _rank(sc), -np.inf)
    order = np.argsort(-key, kind="stable")
    if runners_up is not None:
        runners_up.extend(cands[k] for k in order[1:] if np.isfinite(key[k]) and sc.free_rate[k] >= params.mr_min)
    return cands[order[0]] if np.isfinite(key[order[0]]) else cands[0]


def settle_variant(material: Material, ub, q, calibration, energy_band_kev, params: IndexingParams, claimed,
                   runners_up: list | None = None, accepted=(), symmetry=None, max_steps: int = 4):
    """:func:`best_variant` taken to a fixed point: the best variant, then the best variant of that
    one …, until no variant of the chosen orientation explains the spots better (at most
    ``max_steps`` steps). Variants are not transitive: a chance candidate Σ9 from the true grain has
    the grain's Σ3 twin among its variants, and only that twin's variants hold the grain. The
    runners-up of every step are appended to ``runners_up``."""
    ub = np.asarray(ub, float)
    for _ in range(max_steps):
        new = best_variant(material, ub, q, calibration, energy_band_kev, params, claimed, runners_up, accepted,
                           symmetry)
        if new is ub or np.array_equal(new, ub):
            break
        ub = new
    return ub


def prune_grains(grains, q, geom, calibration, energy_band_kev, params: IndexingParams):
    """Drop accepted grains that the *other* grains make redundant (their spots explained by the
    others, fewer than ``min_matched`` new spots or a free matching rate < ``mr_min``), weakest
    first: the set of grains is judged jointly, not in acceptance order."""
    grains = list(grains)
    while len(grains) > 1:
        worst, worst_key = None, np.inf
        for gi, g in enumerate(grains):
            claimed = np.zeros(len(q), bool)
            for o in grains[:gi] + grains[gi + 1:]:
                claimed[o.spot_index] = True
            sc = score_candidates(geom.materials[g.material], g.ub, q, calibration, energy_band_kev,
                                  params.match_tolerance_deg, claimed)
            bad = not (_passes(sc, params)[0] and sc.free_rate[0] >= params.mr_min)
            if bad and _rank(sc)[0] < worst_key:
                worst, worst_key = gi, _rank(sc)[0]
        if worst is None:
            break
        grains.pop(worst)
    return grains


def free_spots(grains, m: int) -> int:
    """How many of the ``m`` valid spots no grain of ``grains`` explains."""
    claimed = np.zeros(m, bool)
    for g in grains:
        claimed[g.spot_index] = True
    return m - int(claimed.sum())


def at_cap(grains, p: IndexingParams, n_mat: int) -> bool:
    """True when no further grain may be accepted: ``max_grains`` reached, or every material at
    its ``max_grains_per_material`` cap."""
    if len(grains) >= p.max_grains:
        return True
    if p.max_grains_per_material is None:
        return False
    counts = np.bincount([g.material for g in grains], minlength=n_mat)[:n_mat]
    return bool((counts >= np.asarray(p.max_grains_per_material)).all())


def swap_due(grains, m: int, p: IndexingParams, n_mat: int) -> bool:
    """The search stopped at its cap with ≥ ``min_matched`` of the ``m`` spots unexplained: the
    weakest grain's slot is worth searching again (:func:`replace_weakest`)."""
    return bool(grains) and at_cap(grains, p, n_mat) and free_spots(grains, m) >= p.min_matched


def _own_spots(grains, gi: int) -> int:
    """Spots of ``grains[gi]`` that no other grain of the list explains."""
    others = np.zeros(0, int) if len(grains) < 2 else np.concatenate(
        [g.spot_index for k, g in enumerate(grains) if k != gi])
    return int(np.setdiff1d(grains[gi].spot_index, others).size)


def replace_weakest(grains, q, cls, conf, geom: ClassGeometry, calibration, energy_band_kev,
                    params: IndexingParams) -> list[GrainResult]:
    """The set of grains judged once more when the search stopped at its cap with spots still
    unexplained (≥ ``min_matched``): an early grain may have taken a slot that a grain explaining
    more of the spots should have. The weakest grain (fewest
    spots no other grain explains) is set aside and the search run again for its slot on the
    spots the others leave (``cls``/``conf`` of every spot that may seed); the grain found
    replaces it only when it explains more spots that no other grain explains. Repeated while a
    swap helps (at most one per grain). Costs nothing when the grains explain the list."""
    grains = list(grains)
    m, n_mat = len(q), len(geom.materials)
    for _ in range(len(grains)):
        if not swap_due(grains, m, params, n_mat):
            break
        own = [_own_spots(grains, gi) for gi in range(len(grains))]
        weakest = int(np.argmin(own))
        rest = grains[:weakest] + grains[weakest + 1:]
        found = find_grains(q, cls, conf, geom, calibration, energy_band_kev, params, grains=rest)
        if len(found) <= len(rest) or _own_spots(found, len(rest)) <= own[weakest]:
            break
        grains = rest[:weakest] + [found[len(rest)]] + rest[weakest:]
    return grains


def find_grains(q: np.ndarray, cls: np.ndarray, conf: np.ndarray, geom: ClassGeometry, calibration,
                energy_band_kev, params: IndexingParams, previous=None, *, grains=None,
                seed_from: int = 0) -> list[GrainResult]:
    """Grains of one image.

    q : (m, 3) measured unit scattering vectors of the valid spots, brightest first.
    cls, conf : (c,) predicted class / confidence of the first c spots (−1 = none).
    previous : optional list of (material index, UB (3, 3)) to try first.
    grains : grains already accepted for this image (a continued search): their spots are claimed,
        they count towards the caps; the returned list starts with them.
    seed_from : only spot pairs with at least one spot index ≥ ``seed_from`` are tried (the pairs
        of the earlier spots were tried by the previous call).
    """
    search = _GrainSearch(q, cls, conf, geom, calibration, energy_band_kev, params, previous, grains)
    p, n_mat = params, len(geom.materials)
    caps = np.full(n_mat, p.max_grains) if p.max_grains_per_material is None else np.asarray(p.max_grains_per_material)
    while len(search.grains) < p.max_grains and not search.done.all():
        counts = np.bincount([g.material for g in search.grains], minlength=n_mat)
        search.done |= counts >= caps
        if search.done.all():
            break
        best = search.from_previous()  # (matching rate, material, ub)
        if best is not None and search.accept(best[1], best[2]):
            continue
        cand = search.seed_spots()
        if len(cand) < 2:
            break
        best, accepted = search.from_pairs(cand, seed_from)
        if best is None or (not accepted and best[0] < p.mr_min):
            break
        if not search.accept(best[1], best[2]) and len(search.rejected) >= p.max_rejections:
            break
    return search.grains


class _GrainSearch:
    """One image's grain search: the spots claimed, the grains accepted, the orientations to
    try first (``prev``) and the candidates that failed confirmation (``rejected``)."""

    def __init__(self, q, cls, conf, geom: ClassGeometry, calibration, energy_band_kev, p: IndexingParams,
                 previous, grains):
        self.q, self.cls, self.conf, self.geom, self.p = q, cls, conf, geom, p
        self.calibration, self.band = calibration, energy_band_kev
        self.materials = geom.materials
        self.claimed = np.zeros(len(q), bool)
        self.grains: list[GrainResult] = list(grains or [])
        for g in self.grains:
            self.claimed[g.spot_index] = True
        self.done = np.zeros(len(self.materials), bool)
        self.prev = list(previous or [])
        self.rejected: list = []  # (material, UB)
        self.cos_q = q @ q.T
        self.spot_mat = np.where(cls >= 0, geom.classes.class_material[np.maximum(cls, 0)], -1)

    def _settle(self, mat_i, ub, others: list):
        found: list = []
        ub = settle_variant(self.materials[mat_i], ub, self.q, self.calibration, self.band, self.p, self.claimed,
                            found, [g.ub for g in self.grains if g.material == mat_i], self.geom.rotation_ops(mat_i))
        others.extend((mat_i, u) for u in found)
        return ub

    def accept(self, mat_i, ub) -> bool:
        """Settle the variant (and the material), refine, confirm on the free spots; a confirmed
        grain claims its matched spots. False (and remembered as rejected) when not confirmed."""
        p, q, calibration, band = self.p, self.q, self.calibration, self.band
        others: list = []
        ub = self._settle(mat_i, np.asarray(ub, float), others)
        if p.pseudo_symmetry and len(self.materials) > 1:
            new_mat, ub = _cross_material(mat_i, ub, q, calibration, band, p, self.claimed, self.geom, self.grains,
                                          self.done, others)
            if new_mat != mat_i:
                mat_i = new_mat
                ub = self._settle(mat_i, ub, others)
        mat = self.materials[mat_i]
        self.prev[:0] = others  # scored first in the next round
        if p.refine:
            ub = refine_orientation(mat, ub, q, calibration, band, p.refine_tolerances_deg)
        ub = _consistent_setting(mat, ub, q, calibration, band, p, self.claimed, self.geom, mat_i)
        sc = score_candidates(mat, ub, q, calibration, band, p.confirm_tolerance_deg, self.claimed)
        if not (sc.n_new[0] >= p.min_matched and sc.free_rate[0] >= p.mr_min and _significant(sc, p)[0]):
            self.rejected.append((mat_i, ub))
            return False
        idx, hkl, res, n_th = match_one(mat, ub, q, calibration, band, p.match_tolerance_deg)
        self.grains.append(GrainResult(mat_i, ub, 100.0 * len(idx) / max(n_th, 1), len(idx),
                                       float(res.mean()) if len(res) else np.inf, idx, hkl, res))
        self.claimed[idx] = True
        return True

    def from_previous(self):
        """``(matching rate, material, ub)`` of the first orientation to try first that passes
        with at least ``mr_accept``; None when none does (the list is used up)."""
        p = self.p
        while self.prev:
            mat_i, ub = self.prev.pop(0)
            if self.done[mat_i]:
                continue
            sc = score_candidates(self.materials[mat_i], ub, self.q, self.calibration, self.band,
                                  p.match_tolerance_deg, self.claimed)
            if _passes(sc, p)[0] and sc.free_rate[0] >= p.mr_accept:
                return sc.free_rate[0], mat_i, np.asarray(ub, float)
        return None

    def seed_spots(self) -> np.ndarray:
        """Indices of the confident, unclaimed spots of materials not yet at their cap."""
        p, c = self.p, len(self.cls)
        return np.flatnonzero((self.cls >= 0) & (self.conf >= p.confidence_threshold) & ~self.claimed[:c]
                              & ~self.done[np.maximum(self.spot_mat, 0)])

    def from_pairs(self, cand: np.ndarray, seed_from: int):
        """``(best, accepted)``: the best candidate ``(matching rate, material, ub)`` (or None)
        from pairs of the spots ``cand`` of one material, batch by batch until one reaches
        ``mr_accept`` (``accepted``)."""
        p, spot_mat = self.p, self.spot_mat
        ii, jj = np.triu_indices(len(cand), 1)
        pi, pj = cand[ii], cand[jj]
        same = spot_mat[pi] == spot_mat[pj]
        pi, pj = pi[same], pj[same]
        if seed_from > 0:
            new = pj >= seed_from  # pj > pi
            pi, pj = pi[new], pj[new]
        order = np.argsort(pi + pj, kind="stable")[: p.max_pairs]
        pi, pj = pi[order], pj[order]
        delta = np.rad2deg(np.arccos(np.clip(self.cos_q[pi, pj], -1, 1)))
        best = None
        for start in range(0, len(pi), p.pairs_per_batch):
            sl = slice(start, start + p.pairs_per_batch)
            batch_mats = spot_mat[pi[sl]]
            for mat_i in np.unique(batch_mats):
                sel = batch_mats == mat_i
                pairs = np.stack([pi[sl][sel], pj[sl][sel]], axis=1)
                ubs = _candidates(self.geom, pairs, self.cls, self.q, delta[sl][sel], p.angle_tolerance_deg)
                if not len(ubs):
                    continue
                sc = score_candidates(self.materials[mat_i], ubs, self.q, self.calibration, self.band,
                                      p.match_tolerance_deg, self.claimed)
                ok = _passes(sc, p) & ~_near_rejected(ubs, mat_i, self.rejected, self.geom)
                if not ok.any():
                    continue
                k = np.flatnonzero(ok)[np.argmax(_rank(sc)[ok])]
                if best is None or sc.free_rate[k] > best[0]:
                    best = (sc.free_rate[k], mat_i, ubs[k])
            if best is not None and best[0] >= p.mr_accept:
                return best, True
        return best, False


def _cross_material(mat_i: int, ub, q, calibration, energy_band_kev, p: IndexingParams, claimed,
                    geom: ClassGeometry, grains, done, runners_up: list):
    """``(mat_i, ub)`` or the orientation of another material of the model whose spots fall on
    many of ``ub``'s (:func:`.pseudosymmetry.cross_material_variants`, e.g. GaN [0001] ∥ Si <111>)
    when it explains the spots not yet ``claimed`` better: a Si orientation can explain ~50 % of a
    GaN grain's spots, and pass the confirmation, while the GaN grain explains all of them. Every
    variant is refined first (the two lattices' shared directions are a fraction of a degree
    apart) and all are scored within ``confirm_tolerance_deg``, like :func:`best_variant`'s.
    Materials at their cap (``done``) are not offered. The candidates left out that pass with a
    free rate ≥ ``mr_min`` (a real epitaxial pair: both do) are appended to ``runners_up``."""
    materials = geom.materials
    tol = p.confirm_tolerance_deg
    ref = lambda mat, u: (refine_orientation(mat, u, q, calibration, energy_band_kev, p.refine_tolerances_deg)  # noqa: E731
                          if p.refine else u)
    cands = [(mat_i, np.asarray(ub, float), ref(materials[mat_i], ub))]
    for b in range(len(materials)):
        if b == mat_i or done[b]:
            continue
        v = cross_material_variants(materials[b], materials[mat_i], min_coincidence=p.min_coincidence)
        if not len(v):
            continue
        ubs = np.einsum("ij,kjl->kil", np.asarray(ub, float), v)
        accepted = [g.ub for g in grains if g.material == b]
        if accepted:
            ubs = ubs[~_near(ubs, accepted, geom.rotation_ops(b), 0.3)]
        cands += [(b, u, ref(materials[b], u)) for u in ubs]
    if len(cands) == 1:
        return mat_i, ub
    keys = []
    for b, _, u in cands:
        sc = score_candidates(materials[b], u, q, calibration, energy_band_kev, tol, claimed)
        keys.append((_rank(sc)[0] if _passes(sc, p)[0] else -np.inf, sc.free_rate[0]))
    own = keys[0][0]
    best = int(np.argmax([k for k, _ in keys]))
    if not keys[best][0] > own:
        best = 0
    order = sorted(range(len(cands)), key=lambda k: -keys[k][0])
    runners_up.extend((cands[k][0], cands[k][1]) for k in order
                      if k != best and k != 0 and np.isfinite(keys[k][0]) and keys[k][1] >= p.mr_min)
    if best != 0:
        if np.isfinite(own) and keys[0][1] >= p.mr_min:
            runners_up.append((mat_i, np.asarray(ub, float)))
        return cands[best][0], cands[best][2]
    return mat_i, ub


_SYMMETRIC_RULE: dict = {}


def rule_is_symmetric(material: Material, max_index: int = 6) -> bool:
    """Whether the material's allowed reflections are invariant under its Laue group (the
    space-group rule always is; some LaueTools codes, e.g. ``wurtzite``, are not: symmetry-
    equivalent UBs then predict slightly different spots and harmonic labels)."""
    key = (material.name, material.extinction_rule)
    if key not in _SYMMETRIC_RULE:
        r = np.arange(-max_index, max_index + 1)
        hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        ok = material.allowed(hkl)
        images = np.einsum("nij,mj->nmi", hkl_operators(material), hkl)
        _SYMMETRIC_RULE[key] = bool(all((material.allowed(im) == ok).all() for im in images))
    return _SYMMETRIC_RULE[key]


def _consistent_setting(material, ub, q, calibration, energy_band_kev, p: IndexingParams, claimed,
                        geom: ClassGeometry, mat_i: int):
    """For an extinction rule that is not Laue-symmetric, the symmetry-equivalent ``ub · S`` whose
    predicted spots match best (most matched, then highest rate): its spot list and harmonic
    labels are the ones measured. Symmetric rules: ``ub`` unchanged."""
    if rule_is_symmetric(material):
        return ub
    cands = np.einsum("ij,kjl->kil", ub, geom.rotation_ops(mat_i))
    sc = score_candidates(material, cands, q, calibration, energy_band_kev, p.match_tolerance_deg, claimed)
    return cands[int(np.argmax(sc.n_matched + 1e-3 * sc.matching_rate))]


def _near_rejected(ubs, mat_i: int, rejected, geom: ClassGeometry, max_deg: float = 2.0) -> np.ndarray:
    """(K,) True for candidates within ``max_deg`` (symmetry-reduced) of a rejected one."""
    mine = [u for m, u in rejected if m == mat_i]
    return _near(ubs, mine, geom.rotation_ops(mat_i), max_deg) if mine else np.zeros(len(ubs), bool)


def _near(ubs, others, symmetry, max_deg: float) -> np.ndarray:
    """(K,) True for the UBs (K, 3, 3) within ``max_deg`` (symmetry-reduced) of one of ``others``."""
    near = np.zeros(len(ubs), bool)
    for u in others:  # trace(Uᵀ_other · U · S) ≥ 1 + 2 cos(max)
        tr = np.einsum("ji,kjl,nli->kn", u, ubs, symmetry).max(axis=1)
        near |= tr >= 1 + 2 * np.cos(np.deg2rad(max_deg))
    return near
