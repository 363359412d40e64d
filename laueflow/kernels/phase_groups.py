"""Index-free phase grouping of segmentation clusters from rotation-invariant spot descriptors.

A cluster of the index-free segmentation follows a grain (or a twin variant, a sub-grain): its
images differ from other clusters' by where the spots are, which depends on the orientation.
Which *phase* a cluster is cannot be read from spot positions, but two properties of a Laue
pattern do not depend on the orientation and do depend on the crystal:

- the number of spots: the reflections inside the energy band scale with the unit-cell volume
  and the extinction rules (Cu, fcc a = 3.61 Å: ≈ 38 spots on a BM32 frame; Si, diamond
  a = 5.43 Å: ≈ 105);
- the distribution of the angles between the spots' scattering vectors (the crystal system's
  interplanar angles). Measured on simulated patterns it is the weaker signal: alone it does
  not always separate Si from GaN, but with the count it separates Si from Ge (a 4 % larger
  cell, 15 % more spots) where the count alone fails on one set of orientations in four.

Each selected point (a cluster's delegate and check points, whose peak lists a late map phase
found) gets a descriptor ``[log(spot count), angle histogram]``; each cluster that of its
point with the fewest spots: the least mixed. A point whose beam also sees a neighbour shows the
neighbour's bright spots even at a few per cent of the beam (a Cu delegate with 6 % of a Si
grain: 52 spots instead of 12 on a quarter detector), and check points are often such boundary
points: on a fresh two-phase scan the median of a Cu cluster's delegate and two check points was
Si-like (80 and 71 spots against 43 and 38). Mixing only adds spots, so the minimum is the
pattern of one domain. The clusters are grouped into ``n_groups`` phases by Ward's agglomerative clustering
of the standardised descriptors (the log count divided by its spread over the clusters, the
histogram by the norm of its per-bin spread: both parts weigh the same). Peak search only: no
indexing.
"""
from __future__ import annotations

import numpy as np

from .vectors import angles_to_qhat

__all__ = ["DEFAULT_ANGLE_BINS_DEG", "spot_descriptors", "cluster_descriptors", "group_clusters"]

#: bins of the spot-pair angle histogram (deg): 3° bins up to 90°
DEFAULT_ANGLE_BINS_DEG = np.arange(0.0, 90.0 + 1e-9, 3.0)


def spot_descriptors(two_theta, chi, bins_deg=DEFAULT_ANGLE_BINS_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-invariant descriptors of padded peak lists ``two_theta, chi (n, max_spots)``
    (deg, NaN = no spot): ``(spot_count (n,) int64, histogram (n, len(bins_deg) − 1) float64)``,
    the histogram of the angles between every pair of spots' scattering vectors, summing to 1
    (all 0 with fewer than 2 spots)."""
    tth, ch = np.atleast_2d(np.asarray(two_theta, np.float64)), np.atleast_2d(np.asarray(chi, np.float64))
    bins = np.asarray(bins_deg, np.float64)
    ok = np.isfinite(tth) & np.isfinite(ch)
    count = ok.sum(axis=1)
    hist = np.zeros((len(tth), len(bins) - 1))
    q = angles_to_qhat(np.where(ok, tth, 0.0), np.where(ok, ch, 0.0))  # (n, s, 3)
    for i in np.flatnonzero(count >= 2):  # one image's pairs at a time: s² memory, s ≤ a few thousand
        qi = q[i][ok[i]]
        iu = np.triu_indices(len(qi), 1)
        angle = np.degrees(np.arccos(np.clip((qi @ qi.T)[iu], -1.0, 1.0)))
        h, _ = np.histogram(angle, bins=bins)
        hist[i] = h / max(h.sum(), 1)
    return count, hist


def cluster_descriptors(cluster: np.ndarray, count: np.ndarray, hist: np.ndarray, n_clusters: int):
    """Per cluster the descriptor of its point with the fewest spots among those with ≥ 2 (the
    least mixed; ties: the first): ``(log_count (k,), histogram (k, b), points (k,) int64)``
    (NaN where a cluster has none; ``points``: its points with ≥ 2 spots). ``cluster (n,)`` of
    each point (−1: none)."""
    cluster, count, hist = np.asarray(cluster, np.int64), np.asarray(count), np.asarray(hist, np.float64)
    log_count = np.full(n_clusters, np.nan)
    out = np.full((n_clusters, hist.shape[1]), np.nan)
    points = np.zeros(n_clusters, np.int64)
    use = (cluster >= 0) & (cluster < n_clusters) & (count >= 2)
    for k in np.unique(cluster[use]):
        rows = np.flatnonzero(use & (cluster == k))
        points[k] = len(rows)
        least = rows[np.argmin(count[rows])]
        log_count[k] = np.log(count[least])
        out[k] = hist[least]
    return log_count, out, points


def group_clusters(log_count: np.ndarray, hist: np.ndarray, n_groups: int) -> np.ndarray:
    """``(k,)`` int8 phase group of each cluster (−1: no descriptor): Ward's agglomerative
    clustering into ``n_groups`` of the standardised descriptors (module docstring). Groups are
    numbered by increasing median spot count, so the numbering does not depend on the clusters'."""
    from scipy.cluster.hierarchy import fcluster, linkage  # deferred: scipy.cluster is slow to import

    log_count, hist = np.asarray(log_count, np.float64), np.asarray(hist, np.float64)
    if n_groups < 1:
        raise ValueError(f"n_groups must be ≥ 1, got {n_groups}")
    groups = np.full(len(log_count), -1, np.int8)
    has = np.isfinite(log_count) & np.isfinite(hist).all(axis=1)
    n = int(has.sum())
    if n == 0:
        return groups
    if n_groups == 1 or n == 1:
        groups[has] = 0
        return groups
    count_spread = log_count[has].std()
    hist_spread = np.linalg.norm(hist[has].std(axis=0))
    parts = [log_count[has, None] / count_spread if count_spread > 0 else np.zeros((n, 1)),
             hist[has] / hist_spread if hist_spread > 0 else np.zeros_like(hist[has])]
    x = np.hstack(parts)
    if n <= n_groups:
        raw = np.arange(n)
    elif not np.any(x.std(axis=0) > 0):  # all alike: one group
        raw = np.zeros(n, np.int64)
    else:
        raw = fcluster(linkage(x, method="ward"), n_groups, criterion="maxclust") - 1
    labels = np.unique(raw)
    order = np.argsort([np.median(log_count[has][raw == g]) for g in labels], kind="stable")
    renumber = np.empty(labels.max() + 1, np.int64)
    renumber[labels[order]] = np.arange(len(labels))
    groups[has] = renumber[raw]
    return groups
