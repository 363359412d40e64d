"""``laueflow evaluate`` metric of the delegate map (``delegate_map`` stage): its orientations vs the
truth, and vs the full indexing when the store has it.

- **vs truth**: at every point with a true grain, the symmetry-reduced misorientation between
  ``delegate_orientation`` and the orientation of the point's true dominant grain (``grain_map``;
  its ``orientation_matrix`` at that point, so gradients count); a point without a delegate
  orientation (NaN, ``delegate_map_status`` ≠ 0) or of another material counts as a miss.
- **vs full indexing**: at every point where both the delegate orientation and an indexed grain
  (the best: the brightest, then the highest matching rate — `laueflow.stages.grain_choice`) exist, their misorientation (same material). In a
  delegates-first run only the selected points are indexed, so this compares only those.
- **phase map** (scans of more than one material): the ARI of ``delegate_material`` against the
  material of each point's dominant true grain — the phases as the K indexed delegates give them
  (not index-free: the delegates are indexed).
"""
from __future__ import annotations

import numpy as np

from ...kernels.partitions import adjusted_rand_index
from ...physics.materials import get_materials
from ...physics.symmetry import reduce_misorientation
from ..grain_choice import best_grains, grain_peak_intensity
from .metrics import Metric, StoreArrays, percentile, register_metric

__all__ = ["delegate_map_metrics", "misorientations"]

TOLERANCE_DEG = 1.0


def misorientations(ub_a, material_a, ub_b, material_b, materials) -> np.ndarray:
    """``(n,)`` deg between ``ub_a (n, 3, 3)`` and ``ub_b`` where both are finite and of the same
    material (``material_a/b (n,)``, indices into ``materials``); NaN elsewhere."""
    ub_a, ub_b = np.asarray(ub_a, float), np.asarray(ub_b, float)
    out = np.full(len(ub_a), np.nan)
    both = np.isfinite(ub_a).all(axis=(1, 2)) & np.isfinite(ub_b).all(axis=(1, 2)) & (material_a == material_b)
    for m in np.unique(material_a[both & (material_a >= 0)]):
        rows = both & (material_a == m)
        out[rows] = reduce_misorientation(ub_a[rows], ub_b[rows], materials[int(m)])
    return out


def _true_dominant(truth: StoreArrays, names: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, 3, 3)`` UB of each point's dominant true grain, its material as an index into the
    results' materials (``names``; −1: none or unknown) and whether the point has one."""
    grain_map = np.asarray(truth["grain_map"], np.int64).reshape(-1)
    ids = np.asarray(truth["grain_id"], np.int64).reshape(len(grain_map), -1)
    ub = np.asarray(truth["orientation_matrix"], float).reshape(len(grain_map), -1, 3, 3)
    mats = np.asarray(truth["grain_material"], np.int64).reshape(len(grain_map), -1)
    hit = (ids == grain_map[:, None]) & (grain_map[:, None] >= 0)
    has = hit.any(axis=1)
    slot = hit.argmax(axis=1)
    rows = np.arange(len(grain_map))
    lookup = np.array([names.index(n) if n in names else -1 for n in truth.attrs.get("materials") or []] + [-1])
    material = np.where(has, lookup[np.where(mats[rows, slot] >= 0, mats[rows, slot], -1)], -1)
    return np.where(has[:, None, None], ub[rows, slot], np.nan), material, has


def _share(values: np.ndarray, tolerance: float, of: int) -> float:
    return round(float(np.sum(values <= tolerance) / of), 4) if of else float("nan")


def delegate_map_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    materials = get_materials(results.attrs.get("material_definitions") or results.attrs.get("materials") or [])
    names = [m.name for m in materials]
    tolerance = float(opts.get("delegate_tolerance_deg", TOLERANCE_DEG))
    ub = np.asarray(results["delegate_orientation"], float).reshape(-1, 3, 3)
    material = np.asarray(results["delegate_material"], np.int64).reshape(-1)
    true_ub, true_material, has_truth = _true_dominant(truth, names)
    vs_truth = misorientations(ub, material, true_ub, true_material, materials)[has_truth]
    mapped = np.isfinite(ub).all(axis=(1, 2))[has_truth]
    n = int(has_truth.sum())
    summary = {
        "points_with_truth": n,
        "points_mapped": int(mapped.sum()),
        f"fraction_within_{tolerance:g}deg_of_truth": _share(np.nan_to_num(vs_truth, nan=np.inf), tolerance, n),
        "misorientation_vs_truth_median_deg": percentile(vs_truth[np.isfinite(vs_truth)], 50),
        "misorientation_vs_truth_p95_deg": percentile(vs_truth[np.isfinite(vs_truth)], 95),
        "mapped_wrong_material": int((mapped & np.isnan(vs_truth)).sum()),
    }
    notes = [f"vs truth: each point with a true grain, against its dominant grain's orientation there (symmetry-"
             f"reduced); unmapped points count as misses in fraction_within_{tolerance:g}deg_of_truth"]
    if len(np.unique(true_material[has_truth])) > 1:  # a phase map: the delegates' indexed material
        summary["ari_phase_map"] = round(adjusted_rand_index(material[has_truth], true_material[has_truth]), 4)
        notes.append("ari_phase_map: adjusted Rand index of delegate_material (−1: unmapped, its own label) against "
                     "the material of each point's dominant true grain — phases from the K indexed delegates "
                     "(not index-free)")
    if "delegate_map_status" in results:
        status = np.asarray(results["delegate_map_status"]).reshape(-1)[has_truth]
        summary["points_inhomogeneous_cluster"] = int((status == 3).sum())
        summary["points_delegate_not_indexed"] = int((status == 2).sum())
    if "orientation_matrix" in results and "grain_material" in results:
        full = np.asarray(results["orientation_matrix"], float)
        full = full.reshape(-1, *full.shape[-3:])
        full_mat = np.asarray(results["grain_material"], np.int64).reshape(len(full), -1)
        rate = np.asarray(results["matching_rate"]).reshape(len(full), -1) if "matching_rate" in results else None
        height = None
        if "peak_grain" in results and "peak_intensity" in results:  # the same choice as delegate_map
            peak_grain = np.asarray(results["peak_grain"]).reshape(len(full), -1)
            height = grain_peak_intensity(peak_grain, np.asarray(results["peak_intensity"]).reshape(len(full), -1),
                                          full_mat.shape[1])
        best = best_grains(full, full_mat, rate, height)
        rows = np.arange(len(full))
        full_ub = np.where((best >= 0)[:, None, None], full[rows, np.maximum(best, 0)], np.nan)
        full_material = np.where(best >= 0, full_mat[rows, np.maximum(best, 0)], -1)
        vs_full = misorientations(ub, material, full_ub, full_material, materials)
        compared = vs_full[np.isfinite(vs_full)]
        summary.update({
            "points_indexed": int((best >= 0).sum()),
            "points_compared_with_indexing": len(compared),
            f"fraction_within_{tolerance:g}deg_of_indexing": _share(compared, tolerance, len(compared)),
            "misorientation_vs_indexing_median_deg": percentile(compared, 50),
            "misorientation_vs_indexing_p95_deg": percentile(compared, 95),
        })
        full_vs_truth = misorientations(full_ub, full_material, true_ub, true_material, materials)[has_truth]
        summary[f"indexing_fraction_within_{tolerance:g}deg_of_truth"] = _share(
            np.nan_to_num(full_vs_truth, nan=np.inf), tolerance, n)
        notes.append("vs indexing: the best indexed grain (the brightest, then the highest matching rate, as "
                     "delegate_map chooses) of each point where both exist; "
                     "in a delegates-first run only the selected points are indexed")
    return {"summary": summary, "notes": notes}


register_metric(Metric("delegate_map", ("delegate_orientation", "delegate_material"),
                       ("grain_map", "grain_id", "orientation_matrix", "grain_material"), delegate_map_metrics,
                       "delegate map orientations vs the true dominant grain and vs full indexing",
                       optional_results=("delegate_map_status", "orientation_matrix", "grain_material",
                                         "matching_rate", "peak_grain", "peak_intensity")))
