"""Indexing results versus truth (simulated scans): hkl accuracy, grains found/missed/spurious.

For ``laueflow evaluate`` and the benchmark. Definitions:

* a truth grain is **found** when an indexed grain of the same material lies within
  ``match_deg`` (symmetry-reduced misorientation, :func:`reduce_misorientation`); each indexed
  grain is paired with at most one truth grain (closest first). ``found_precise`` additionally
  needs misorientation < ``precise_deg`` (0.1°). Indexed grains paired with no truth grain are
  **spurious** (duplicates included); a truth grain found with the wrong material counts as
  missed (and is reported as ``wrong_material``).
* **hkl accuracy** (per spot): over the spots that belong to a truth grain, the fraction whose
  assigned grain is the indexed grain paired with that truth grain *and* whose hkl equals the truth
  hkl after mapping through the crystal symmetry operator that relates the two orientations.
  Spurious spots are excluded from the denominator; unindexed truth spots count as wrong.
"""
from __future__ import annotations

import numpy as np

from ...physics.materials import Material
from ...physics.strain import polar_rotation
from ...physics.symmetry import hkl_operators, reduce_misorientation

__all__ = ["evaluate_indexing"]


def _proper_ops(material: Material):
    ops = hkl_operators(material)
    b0 = material.b_matrix
    cart = b0 @ ops.astype(float) @ np.linalg.inv(b0)
    proper = np.linalg.det(cart) > 0
    return ops[proper], cart[proper]


def evaluate_indexing(result: dict, truth_ub, truth_material, materials: list, *, truth_hkl=None,
                      truth_grain=None, match_deg: float = 1.0, precise_deg: float = 0.1) -> dict:
    """Compare :func:`index_peaks` output with the truth.

    Parameters
    ----------
    result : outputs of :func:`~laueflow.stages.indexing.stage.index_peaks` (numpy arrays).
    truth_ub : ``(n, G, 3, 3)`` truth orientation matrices (NaN fill); truth_material ``(n, G)`` (−1).
    materials : :class:`Material` list in the model's order.
    truth_hkl, truth_grain : ``(n, max_peaks, 3)`` / ``(n, max_peaks)`` per-peak truth in the same
        peak order as the indexing input (grain −1 = spurious); optional (hkl accuracy).

    Returns
    -------
    dict with counts and fractions: ``n_truth_grains``, ``found``, ``found_precise``,
    ``wrong_material``, ``missed``, ``spurious``, ``n_indexed_grains``, ``found_fraction``,
    ``found_precise_fraction``, ``spurious_fraction`` (of indexed grains),
    ``misorientation_deg`` (array, found grains), ``hkl_accuracy``, ``n_truth_spots``.
    """
    ub_found = np.asarray(result["orientation_matrix"])
    mat_found = np.asarray(result["grain_material"])
    truth_ub = np.asarray(truth_ub)
    truth_material = np.asarray(truth_material)
    ops = [_proper_ops(m) for m in materials]
    stats = dict(n_truth_grains=0, found=0, found_precise=0, wrong_material=0, n_indexed_grains=0,
                 n_truth_spots=0, hkl_correct=0)
    mis_all = []
    for i in range(len(ub_found)):
        t_idx = np.flatnonzero(truth_material[i] >= 0)
        f_idx = np.flatnonzero(mat_found[i] >= 0)
        stats["n_truth_grains"] += len(t_idx)
        stats["n_indexed_grains"] += len(f_idx)
        mis, mis_any = _misorientations(truth_ub[i, t_idx], truth_material[i, t_idx], ub_found[i, f_idx],
                                        mat_found[i, f_idx], materials)
        pair = _closest_pairs(mis, match_deg)
        for a in range(len(t_idx)):
            if a in pair:
                d = mis[a, pair[a]]
                stats["found"] += 1
                stats["found_precise"] += int(d < precise_deg)
                mis_all.append(d)
            elif len(f_idx) and np.min(mis_any[a]) <= match_deg:
                stats["wrong_material"] += 1
        if truth_hkl is not None and truth_grain is not None:
            tg = np.asarray(truth_grain[i])
            stats["n_truth_spots"] += int((tg >= 0).sum())
            stats["hkl_correct"] += sum(
                _correct_hkl(t_idx[a], f_idx[b], tg, np.asarray(truth_hkl[i]), np.asarray(result["peak_grain"][i]),
                             np.asarray(result["hkl"][i]), truth_ub[i], ub_found[i], ops[truth_material[i, t_idx[a]]])
                for a, b in pair.items())
    n_t, n_f = stats["n_truth_grains"], stats["n_indexed_grains"]
    out = dict(stats)
    out["missed"] = n_t - stats["found"]
    out["spurious"] = n_f - stats["found"]
    out["found_fraction"] = stats["found"] / n_t if n_t else float("nan")
    out["found_precise_fraction"] = stats["found_precise"] / n_t if n_t else float("nan")
    out["spurious_fraction"] = out["spurious"] / n_f if n_f else 0.0
    out["misorientation_deg"] = np.asarray(mis_all)
    out["hkl_accuracy"] = (stats["hkl_correct"] / stats["n_truth_spots"]) if stats["n_truth_spots"] else float("nan")
    return out


def _misorientations(truth_ub, truth_material, found_ub, found_material, materials):
    """``(same_material, any)`` tables ``(truth, found)`` of misorientations (degrees, reduced by
    the truth material's symmetry); the first is inf where the materials differ."""
    mis = np.full((len(truth_ub), len(found_ub)), np.inf)
    mis_any = np.full((len(truth_ub), len(found_ub)), np.inf)
    for a, (ub_t, mat_t) in enumerate(zip(truth_ub, truth_material)):
        for b, (ub_f, mat_f) in enumerate(zip(found_ub, found_material)):
            d = float(reduce_misorientation(ub_t, ub_f, materials[mat_t]))
            mis_any[a, b] = d
            if mat_f == mat_t:
                mis[a, b] = d
    return mis, mis_any


def _closest_pairs(mis, match_deg: float) -> dict:
    """``{truth: found}``: greedy one-to-one pairing by increasing misorientation, up to ``match_deg``."""
    pair, used_f = {}, set()
    for flat in np.argsort(mis, axis=None):
        a, b = np.unravel_index(flat, mis.shape)
        if mis[a, b] > match_deg:
            break
        if a in pair or b in used_f:
            continue
        pair[a] = b
        used_f.add(b)
    return pair


def _correct_hkl(t, f, truth_grain, truth_hkl, peak_grain, peak_hkl, truth_ub, found_ub, ops) -> int:
    """Spots of truth grain ``t`` assigned to found grain ``f`` whose hkl, mapped by the symmetry
    operation that best relates the two orientations, equals the true hkl."""
    sel = (truth_grain >= 0) & (truth_grain == t) & (peak_grain == f)
    if not sel.any():
        return 0
    hkl_ops, cart = ops
    r = polar_rotation(truth_ub[t]).T @ polar_rotation(found_ub[f])  # crystal frame
    k = np.argmax(np.einsum("ij,nij->n", r, cart))
    mapped = peak_hkl[sel] @ hkl_ops[k].T  # h_truth = M h_found
    return int(np.all(mapped == truth_hkl[sel], axis=1).sum())
