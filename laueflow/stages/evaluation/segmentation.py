"""``laueflow evaluate`` metric of the segmentation: cluster labels vs the simulator's grain maps.

Three true labellings of the processed points (``cluster_label ≥ 0``, ``grain_map ≥ 0``):

- **domain map** — ``grain_map``: every domain with its own orientation (grain, twin lamella,
  sub-grain, substrate) is its own label;
- **orientation map** — domains of the same phase whose base orientations are within
  ``orientation_merge_deg`` (0.5°, over the Laue-group symmetry) share a label: lamellae of one
  twin variant are one label (the *variant map* of a twinned region);
- **parent map** — twins and sub-grains take their parent grain's label;
- **phase map** — the material of the dominant domain (when the scan has more than one).

Reported: the adjusted Rand index (ARI) of ``cluster_label`` against each; when the results
hold delegates (``delegate_y``, ``delegate_x``), whether each delegate's true domain is the most
common one of its cluster.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components

from ...kernels.partitions import adjusted_rand_index, contingency_table
from ...physics.materials import get_materials
from ...physics.symmetry import reduce_misorientation
from .metrics import Metric, StoreArrays, register_metric

__all__ = ["segmentation_metrics", "orientation_groups", "parent_groups"]

ORIENTATION_MERGE_DEG = 0.5


def orientation_groups(base_orientation, phase, materials, merge_deg: float = ORIENTATION_MERGE_DEG) -> np.ndarray:
    """``(D,)`` group id per domain: same phase and base orientations within ``merge_deg``
    (symmetry-reduced, transitively)."""
    base_orientation, phase = np.asarray(base_orientation, float), np.asarray(phase, np.int64)
    close = np.zeros((len(phase), len(phase)), bool)
    for p in np.unique(phase):
        members = np.flatnonzero(phase == p)
        rot = base_orientation[members]
        angle = reduce_misorientation(rot[:, None], rot[None, :], materials[int(p)])
        close[np.ix_(members, members)] = angle < merge_deg
    return connected_components(close, directed=False)[1]


def parent_groups(parent) -> np.ndarray:
    """``(D,)`` the root grain of every domain (twins and sub-grains → their parent)."""
    root = np.arange(len(parent))
    parent = np.asarray(parent, np.int64)
    for _ in range(len(parent)):  # follow parent links (chains are 1–2 long)
        nxt = np.where(parent[root] >= 0, parent[root], root)
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root


def _delegate_rows(labels, domains, delegate_y, delegate_x) -> tuple[list, int]:
    rows, agree = [], 0
    for k, (dy, dx) in enumerate(zip(np.asarray(delegate_y), np.asarray(delegate_x))):
        members = labels == k
        if dy < 0 or not members.any():
            continue
        values, counts = np.unique(domains[members], return_counts=True)
        majority = int(values[counts.argmax()])
        own = int(domains[dy, dx])
        agree += own == majority
        rows.append({"cluster": k, "points": int(members.sum()), "delegate_y": int(dy), "delegate_x": int(dx),
                     "delegate_domain": own, "majority_domain": majority,
                     "majority_fraction": round(float(counts.max() / members.sum()), 4)})
    return rows, agree


def segmentation_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    labels = np.asarray(results["cluster_label"], np.int64)
    domains = np.asarray(truth["grain_map"], np.int64)
    used = (labels >= 0) & (domains >= 0)
    materials = get_materials(truth.attrs.get("material_definitions") or truth.attrs.get("materials") or [])
    phase = np.asarray(truth["grain_phase"], np.int64)
    maps = {"domain": np.arange(len(phase)),
            "orientation": orientation_groups(truth["grain_base_orientation"], phase, materials,
                                              float(opts.get("orientation_merge_deg", ORIENTATION_MERGE_DEG))),
            "parent": parent_groups(truth["grain_parent"])}
    if len(np.unique(phase)) > 1:
        maps["phase"] = phase
    summary = {"points_compared": int(used.sum()), "clusters": int(len(np.unique(labels[used]))),
               "true_domains": int(len(np.unique(domains[used])))}
    for name, group in maps.items():
        true = group[domains[used]]
        summary[f"{name}_labels"] = int(len(np.unique(true)))
        summary[f"ari_{name}_map"] = round(adjusted_rand_index(labels[used], true), 4)
    if "phase" in maps and "phase_group" in results:  # the index-free phase labeler (phase_groups stage)
        groups = np.asarray(results["phase_group"], np.int64)
        summary["ari_phase_group_map"] = round(adjusted_rand_index(groups[used], phase[domains[used]]), 4)
    table = contingency_table(labels[used], domains[used])
    summary["cluster_purity"] = round(float(table.max(axis=1).sum() / max(used.sum(), 1)), 4)
    out = {"summary": summary, "tables": {}, "notes": [
        "ARI: adjusted Rand index of cluster_label against the true domain / orientation (twin variants: "
        f"domains within {ORIENTATION_MERGE_DEG}° merged) / parent-grain / phase maps, over processed points; "
        "purity: fraction of points in their cluster's most common domain; ari_phase_group_map: phase_group "
        "(index-free phase labeler, −1 its own label) against the phase map"]}
    if "delegate_y" in results and "delegate_x" in results:
        rows, agree = _delegate_rows(np.where(used, labels, -1), domains, results["delegate_y"], results["delegate_x"])
        summary["delegates_in_majority_domain"] = f"{agree}/{len(rows)}"
        out["tables"]["delegates"] = rows
    return out


register_metric(Metric("segmentation", ("cluster_label",),
                       ("grain_map", "grain_phase", "grain_parent", "grain_base_orientation"), segmentation_metrics,
                       "cluster labels vs the true domain, twin-variant, parent-grain and phase maps (ARI)",
                       optional_results=("delegate_y", "delegate_x", "phase_group")))
