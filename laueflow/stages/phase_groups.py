"""Index-free phase labeler (issue #13), a reduce stage: the segmentation's clusters grouped into
phases from rotation-invariant descriptors of their delegates' and check points' peak lists
(spot count, spot-pair angle histogram; :mod:`laueflow.kernels.phase_groups`). Peak search
only, no indexing: it separates phases whose patterns cannot be told apart by spot positions
(a Cu grain and a Si grain look alike to the pixel features: both cubic).

Workflow: ``segmentation`` → ``select_delegates`` → ``peaks``/``angles`` with
``points: selected_points`` → ``phase_groups`` (and ``index``/``delegate_map`` if wanted). The
number of phases is the number of the scan's materials (``phases: auto``) or given.
Outputs: ``phase_group (y, x)`` (−1: the point's cluster has none), ``cluster_phase_group`` and
``cluster_spot_count`` (spots of its selected point with the fewest: the least mixed) per cluster. Group numbers are in
increasing spot count; they name no material (``delegate_map`` gives the indexed material).
"""
from __future__ import annotations

import numpy as np

from ..kernels.phase_groups import cluster_descriptors, group_clusters, spot_descriptors
from .base import StageSpec, Variable
from .delegates import lookup_by_cluster

__all__ = ["STAGE", "phase_groups"]


def phase_groups(cluster_label, delegate_y, delegate_x, peak_two_theta, peak_chi, point_role=None, *, client,
                 writer, phases, bin_deg: float = 3.0) -> dict:
    """Group the clusters of ``cluster_label (y, x)`` into ``phases`` phases from the peak lists
    ``peak_two_theta/peak_chi (y, x, peak)`` (deg) of the points with ``point_role > 0`` (a
    ``select_delegates`` stage's delegates and check points), or without ``point_role`` (the
    whole scan was searched for peaks, no ``select_delegates``) of the delegates
    ``delegate_y/x (cluster)`` alone. Inputs lazy from the results store; writes the outputs of
    :data:`STAGE`."""
    slots = int(delegate_y.shape[0])  # cluster slots (k_max)
    if point_role is not None:
        ys, xs = (np.asarray(r, np.int64) for r in client.gather(client.compute(list(np.nonzero(point_role > 0)))))
    else:
        ys, xs = (np.asarray(client.compute(a).result(), np.int64) for a in (delegate_y, delegate_x))
        ys, xs = ys[(ys >= 0) & (xs >= 0)], xs[(ys >= 0) & (xs >= 0)]
    if len(ys):
        labels, tth, chi = (np.asarray(r) for r in client.gather(client.compute(
            [a.vindex[ys, xs] for a in (cluster_label, peak_two_theta, peak_chi)])))
    else:
        labels, tth, chi = np.zeros(0, np.int64), np.zeros((0, 1)), np.zeros((0, 1))
    count, hist = spot_descriptors(tth, chi, np.arange(0.0, 90.0 + 1e-9, float(bin_deg)))
    log_count, cluster_hist, used = cluster_descriptors(labels, count, hist, slots)
    groups = group_clusters(log_count, cluster_hist, int(phases))
    writer.write("phase_group", cluster_label.map_blocks(lookup_by_cluster, table=groups, fill=-1, dtype=np.int8,
                                                         meta=np.zeros((0, 0), np.int8)))
    writer.write("cluster_phase_group", groups)
    writer.write("cluster_spot_count", np.exp(log_count).astype(np.float32))
    no_peaks = [int(k) for k in np.flatnonzero((used == 0) & np.isin(np.arange(slots), np.unique(labels)))]
    lines = [f"phase_groups: {int((groups >= 0).sum())} clusters in {len(np.unique(groups[groups >= 0]))} of "
             f"{int(phases)} phase group(s) from {int((count >= 2).sum())} peak lists; median spots per group: "
             + ", ".join(f"{g}: {np.exp(np.median(log_count[groups == g])):.0f}" for g in np.unique(groups[groups >= 0]))]
    if no_peaks:
        lines.append(f"phase_groups: clusters {no_peaks} have no selected point with ≥ 2 peaks; their points get "
                     "phase_group −1 (raise check_points_per_cluster of select_delegates, or check the peak search)")
    return {"phases": int(phases), "clusters_grouped": int((groups >= 0).sum()), "points_described": int(len(ys)),
            "cluster_phase_group": [int(g) for g in groups], "log": lines}


def prepare_phase_groups(params: dict, context: dict) -> dict:
    """Driver-side: ``phases: auto`` → the number of the scan's materials."""
    if params["phases"] != "auto":
        return params
    materials = context.get("materials") or []
    if not materials:
        raise ValueError("phase_groups: phases: auto needs the scan's materials (ingest --material NAME …); "
                         "or give the number of phases, e.g. `phase_groups: {phases: 2}`")
    return {**params, "phases": len(materials)}


def check_params(params) -> None:
    v = params["phases"]
    if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"phases must be 'auto' (the scan's materials) or an integer ≥ 1, got {v!r}")
    b = params["bin_deg"]
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 45:
        raise ValueError(f"bin_deg must be a number in (0, 45] (degrees), got {b!r}")


_SCAN = dict(per_point=False)

STAGE = StageSpec(
    name="phase_groups",
    kind="reduce",
    func=phase_groups,
    inputs={"cluster_label": "cluster_label", "delegate_y": "delegate_y", "delegate_x": "delegate_x",
            "peak_two_theta": "peak_two_theta", "peak_chi": "peak_chi"},
    optional_inputs={"point_role": "point_role"},
    outputs=(
        Variable("phase_group", (), "int8", -1, "1",
                 "index-free phase group of the point's cluster (numbered by increasing spot count; -1: none)"),
        Variable("cluster_phase_group", ("cluster",), "int8", -1, "1", "phase group of each cluster (-1: none)",
                 **_SCAN),
        Variable("cluster_spot_count", ("cluster",), "float32", float("nan"), "1",
                 "peaks of the cluster's selected point with the fewest (the least mixed)", **_SCAN),
    ),
    params={"phases": "auto", "bin_deg": 3.0},
    prepare=prepare_phase_groups,
    check=check_params,
    description="index-free phase labeler: clusters grouped into phases by spot count and spot-pair angles",
)
