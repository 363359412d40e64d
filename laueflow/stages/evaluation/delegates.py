"""``laueflow evaluate`` metric of the delegate map (``delegate_map`` stage): its orientations vs the
truth, and vs the full indexing when the store has it.

- **vs truth**: at every point with a true grain, the symmetry-reduced misorientation between
  ``delegate_orientation`` and the orientation of the point's true dominant grain (``grain_map``;
  its ``orientation_matrix`` at that point, so gradients count); a point without a delegate
  orientation (NaN, ``delegate_map_status`` 1–3) or of another material counts as a miss. Points of
  inhomogeneous clusters mapped from their nearest indexed point (status 4) are also scored apart
  (``nearest_indexed_fraction_within_*``).
- **vs full indexing**: at every point where both the delegate orientation and an indexed grain
  (the best: the brightest, then the highest matching rate — :mod:`laueflow.stages.grain_choice`)
  exist, their misorientation (same material). In a delegates-first run only the selected points
  are indexed, so this compares only those, and the indexing's own accuracy is over the points
  the peak search processed.
- **phase map** (scans of more than one material): the ARI of ``delegate_material`` against the
  material of each point's dominant true grain — the phases as the K indexed delegates give them
  (not index-free: the delegates are indexed).
"""
from __future__ import annotations

import numpy as np

from ...kernels.partitions import adjusted_rand_index
from ...physics.materials import get_materials
from .grains import best_indexed_grains, misorientations, share_within, true_dominant
from .metrics import PROCESSED_VARIABLES, Metric, StoreArrays, percentile, processed_points, register_metric

__all__ = ["delegate_map_metrics"]

TOLERANCE_DEG = 1.0


def delegate_map_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    materials = get_materials(results.attrs.get("material_definitions") or results.attrs.get("materials") or [])
    names = [m.name for m in materials]
    tolerance = float(opts.get("delegate_tolerance_deg", TOLERANCE_DEG))
    ub = np.asarray(results["delegate_orientation"], float).reshape(-1, 3, 3)
    material = np.asarray(results["delegate_material"], np.int64).reshape(-1)
    true_ub, true_material, has_truth = true_dominant(truth, names)
    vs_truth = misorientations(ub, material, true_ub, true_material, materials)[has_truth]
    mapped = np.isfinite(ub).all(axis=(1, 2))[has_truth]
    n = int(has_truth.sum())
    summary = {
        "points_with_truth": n,
        "points_mapped": int(mapped.sum()),
        f"fraction_within_{tolerance:g}deg_of_truth": share_within(np.nan_to_num(vs_truth, nan=np.inf), tolerance, n),
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
        nearest = status == 4
        summary["points_nearest_indexed"] = int(nearest.sum())
        summary[f"nearest_indexed_fraction_within_{tolerance:g}deg_of_truth"] = share_within(
            np.nan_to_num(vs_truth[nearest], nan=np.inf), tolerance, int(nearest.sum()))
    if "orientation_matrix" in results and "grain_material" in results:
        full_ub, full_material, best = best_indexed_grains(results)
        vs_full = misorientations(ub, material, full_ub, full_material, materials)
        compared = vs_full[np.isfinite(vs_full)]
        summary.update({
            "points_indexed": int((best >= 0).sum()),
            "points_compared_with_indexing": len(compared),
            f"fraction_within_{tolerance:g}deg_of_indexing": share_within(compared, tolerance, len(compared)),
            "misorientation_vs_indexing_median_deg": percentile(compared, 50),
            "misorientation_vs_indexing_p95_deg": percentile(compared, 95),
        })
        indexed_here = has_truth & processed_points(results, np.shape(results["delegate_material"])).reshape(-1)
        full_vs_truth = misorientations(full_ub, full_material, true_ub, true_material, materials)[indexed_here]
        summary["indexing_points_evaluated"] = int(indexed_here.sum())
        summary[f"indexing_fraction_within_{tolerance:g}deg_of_truth"] = share_within(
            np.nan_to_num(full_vs_truth, nan=np.inf), tolerance, int(indexed_here.sum()))
        notes.append("vs indexing: the best indexed grain (the brightest, then the highest matching rate, as "
                     "delegate_map chooses) of each point where both exist; "
                     "in a delegates-first run only the selected points are indexed; "
                     "indexing_fraction_within_*: the indexed grain vs truth over the points the peak search "
                     "processed (indexing_points_evaluated)")
    return {"summary": summary, "notes": notes}


register_metric(Metric("delegate_map", ("delegate_orientation", "delegate_material"),
                       ("grain_map", "grain_id", "orientation_matrix", "grain_material"), delegate_map_metrics,
                       "delegate map orientations vs the true dominant grain and vs full indexing",
                       optional_results=("delegate_map_status", "orientation_matrix", "grain_material",
                                         "matching_rate", "peak_grain", "peak_intensity", *PROCESSED_VARIABLES)))
