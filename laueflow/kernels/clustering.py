"""Numerical pieces of the index-free segmentation (PCA → KMeans / Gaussian mixture → maps).

Arrays in, arrays out (numpy; scikit-learn for the in-memory fits and the scores). The
segmentation reduce stage (``laueflow/stages/segmentation.py``) runs these on blocks of the
feature matrix on the workers and combines their small results on the driver.

Conventions: a feature matrix is ``(n, M)`` float (one row per scan point; a row holding a NaN
is a point that was not processed and is left out of every fit); PCs are ``(n, pcs)`` float32;
cluster labels are int32 with −1 for points not processed.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "valid_rows", "moment_sums", "pca_from_moments", "fix_component_signs", "project",
    "FEATURE_SCALINGS", "STANDARDIZE_FLOOR_QUANTILE", "feature_scale", "scale_from_moments", "scaled_moments",
    "hash_uniform", "NearestCentroid", "UnmixingLabeler", "nonnegative_weights", "weights_from_normal_equations",
    "unmixing_frame", "unmixing_labeler", "empty_clusters", "EMPTY_NORM_FRACTION", "pure_sums", "PURE_FRACTION",
    "lloyd_sums", "centroids_from_sums", "cluster_stats",
    "merge_cluster_stats", "canonical_order", "nearest_reference", "KMEANS_STARTS", "kmeans_on_sample",
    "k_scan_scores", "pairwise_distances",
    "silhouette_from_distances", "suggest_k", "SILHOUETTE_TOLERANCE",
    "rgb_range", "to_rgb", "fit_in_memory",
]


def valid_rows(x: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: rows of ``x (n, M)`` with every value finite (processed points)."""
    return np.isfinite(x).all(axis=1)


# --------------------------------------------------------------------------- PCA
def moment_sums(x: np.ndarray) -> np.ndarray:
    """Sums of the valid rows of ``x (n, M)`` for a PCA: ``[count, Σx (M), Σxxᵀ (M·M)]``
    packed in one float64 vector of length ``1 + M + M²`` (sums of several blocks add up)."""
    m = x.shape[1]
    rows = np.asarray(x[valid_rows(x)], dtype=np.float64)
    out = np.empty(1 + m + m * m, np.float64)
    out[0] = rows.shape[0]
    out[1:1 + m] = rows.sum(axis=0)
    out[1 + m:] = (rows.T @ rows).ravel()
    return out


FEATURE_SCALINGS = ("standardize", "none")
#: ``standardize``'s floor: this quantile of the features' spreads (chosen by measurement on 41
#: simulated scans, ``benchmarks/choose_standardization_floor.py``; the median before 2026-12-01)
STANDARDIZE_FLOOR_QUANTILE = 0.7
#: a cluster whose mean image, in the features' own units, is shorter than this fraction of the
#: median cluster's holds images without diffraction (:class:`UnmixingLabeler`, "empty clusters")
EMPTY_NORM_FRACTION = 0.1


def feature_scale(sigma: np.ndarray, scaling: str = "standardize") -> np.ndarray:
    """``(M,)`` float64 factors applied to each feature before the PCA, from the features'
    standard deviations over the scan ``sigma (M,)``.

    ``standardize``: ``1 / (σ_j + floor)``, the floor the :data:`STANDARDIZE_FLOOR_QUANTILE`
    quantile of the spreads — every feature weighs by its own spread, so a few very bright (often
    saturated) spots do not decide the whole PCA; the floor keeps features that hold only noise,
    or only faint spots, from weighing like the bright ones (with the median as floor, a scan with
    few grains, where most cells never see a spot, lost the difference between twin variants).
    A per-feature factor keeps a mixture of images a mixture of their features (what unmixing
    needs). ``none``: ones. Spreads all 0 (a constant scan): ones.
    """
    sigma = np.asarray(sigma, np.float64)
    if scaling == "none":
        return np.ones_like(sigma)
    if scaling != "standardize":
        raise ValueError(f"feature_scaling must be one of {', '.join(FEATURE_SCALINGS)}, got {scaling!r}")
    floor = float(np.quantile(sigma, STANDARDIZE_FLOOR_QUANTILE)) if len(sigma) else 0.0
    denominator = sigma + floor
    if not np.any(denominator > 0):
        return np.ones_like(sigma)
    return 1.0 / np.where(denominator > 0, denominator, np.max(denominator))


def scale_from_moments(sums: np.ndarray, scaling: str = "standardize") -> np.ndarray:
    """:func:`feature_scale` from :func:`moment_sums` (σ with ``n − 1``, as the covariance)."""
    sums = np.asarray(sums, np.float64)
    m = _features_of_moments(sums)
    n = sums[0]
    if n < 2:
        return np.ones(m)
    mean = sums[1:1 + m] / n
    second = np.diagonal(sums[1 + m:].reshape(m, m))
    return feature_scale(np.sqrt(np.clip((second - n * mean * mean) / (n - 1), 0.0, None)), scaling)


def scaled_moments(sums: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The :func:`moment_sums` of ``x · scale`` from those of ``x``."""
    sums = np.asarray(sums, np.float64)
    m = _features_of_moments(sums)
    scale = np.asarray(scale, np.float64)
    out = sums.copy()
    out[1:1 + m] *= scale
    out[1 + m:] = (sums[1 + m:].reshape(m, m) * np.outer(scale, scale)).ravel()
    return out


def _features_of_moments(sums: np.ndarray) -> int:
    m = int(round((-1 + np.sqrt(1 + 4 * (len(sums) - 1))) / 2))
    if 1 + m + m * m != len(sums):
        raise ValueError(f"moment sums of length {len(sums)} are not 1 + M + M² for any M")
    return m


def fix_component_signs(components: np.ndarray) -> np.ndarray:
    """Each component ``(pcs, M)`` signed so that its largest-magnitude entry is positive
    (scikit-learn's ``svd_flip`` rule for ``PCA``): the same PCs from every path."""
    components = np.asarray(components, np.float64)
    biggest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), biggest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def pca_from_moments(sums: np.ndarray, n_components: int) -> dict:
    """PCA from :func:`moment_sums`: the sample covariance ``(Σxxᵀ − n μμᵀ)/(n − 1)``
    (float64) and its eigendecomposition. Returns ``mean (M,)``, ``components (pcs, M)``
    (signs by :func:`fix_component_signs`), ``explained_variance (pcs,)`` and
    ``explained_variance_ratio (pcs,)`` (of the total variance); ``n`` the rows used."""
    sums = np.asarray(sums, np.float64)
    m = _features_of_moments(sums)
    n = int(sums[0])
    if n < 2:
        raise ValueError(f"PCA needs at least 2 processed points, got {n}")
    if not 1 <= n_components <= m:
        raise ValueError(f"pcs = {n_components} components asked of {m} features; use 1 ≤ pcs ≤ {m}")
    if n_components > n:
        raise ValueError(f"pcs = {n_components} principal components need at least {n_components} processed points; "
                         f"the scan has {n}: use pcs ≤ {n} (segmentation parameter `pcs`, `laueflow segment --pcs`)")
    mean = sums[1:1 + m] / n
    scatter = sums[1 + m:].reshape(m, m)
    cov = (scatter - n * np.outer(mean, mean)) / (n - 1)
    cov = (cov + cov.T) / 2
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:n_components]
    values = np.clip(values[order], 0.0, None)
    total = float(np.clip(np.trace(cov), 0.0, None))
    ratio = values / total if total > 0 else np.zeros_like(values)
    return {"mean": mean, "components": fix_component_signs(vectors[:, order].T),
            "explained_variance": values, "explained_variance_ratio": ratio, "n": n}


def project(x: np.ndarray, mean: np.ndarray, components: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """PCs ``(n, pcs)`` float32 of ``x (n, M)``: ``(x · scale − mean) · componentsᵀ`` (float64
    arithmetic; ``scale`` from :func:`feature_scale`, None: 1; ``mean`` of the scaled
    features); NaN rows where ``x`` is not valid."""
    scaled = np.asarray(x, np.float64) if scale is None else np.asarray(x, np.float64) * np.asarray(scale, np.float64)
    out = (scaled - mean) @ np.asarray(components, np.float64).T
    out[~valid_rows(x)] = np.nan
    return out.astype(np.float32)


# --------------------------------------------------------------------------- sampling
def hash_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per integer ``index`` (splitmix64 of ``index`` and ``seed``):
    the same for a point whatever the chunking, path or number of workers."""
    with np.errstate(over="ignore"):
        z = np.asarray(index, np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# --------------------------------------------------------------------------- clustering
class NearestCentroid:
    """A KMeans labeler: each point → its nearest centroid (squared Euclidean distance,
    float64; ties → the lower index)."""

    def __init__(self, centroids: np.ndarray):
        self.centroids = np.asarray(centroids, np.float64)

    def predict(self, points: np.ndarray) -> np.ndarray:
        return squared_distances(points, self.centroids).argmin(axis=1).astype(np.int32)


def nonnegative_weights(endmembers: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Non-negative least squares per point, batched: ``w (n, e) ≥ 0`` minimising
    ``‖Σ_j w_j endmembers[i, j] − points[i]‖`` for ``endmembers (n, e, d)`` (each point its own
    ``e ≤ 6`` candidates) and ``points (n, d)``. Exact: the solution is the unconstrained least
    squares on its support, so every one of the ``2^e − 1`` supports is solved (batched ``e × e``
    normal equations) and the best one with non-negative weights is kept (none: all weights 0).
    Each row is solved on its own: the result does not depend on the blocks."""
    a = np.asarray(endmembers, np.float64)
    b = np.asarray(points, np.float64)
    return weights_from_normal_equations(np.einsum("ned,nfd->nef", a, a), np.einsum("ned,nd->ne", a, b))


def weights_from_normal_equations(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """:func:`nonnegative_weights` from ``gram (n, e, e)`` = AAᵀ and ``rhs (n, e)`` = Ab."""
    n, e = rhs.shape
    if e > 6:
        raise ValueError(f"{e} endmembers per point: at most 6 (2^e supports are solved)")
    best_w = np.zeros((n, e))
    best = np.zeros(n)  # objective ‖Aw − b‖² − ‖b‖² = wᵀGw − 2wᵀr; 0 for w = 0
    scale = np.maximum(np.einsum("nee->n", gram) / e, 1e-300)
    for mask in range(1, 2 ** e):
        support = [j for j in range(e) if mask >> j & 1]
        g = gram[:, support][:, :, support] + 1e-12 * scale[:, None, None] * np.eye(len(support))
        w_s = _solve_spd(g, rhs[:, support])
        objective = -np.einsum("ns,ns->n", w_s, rhs[:, support])  # at the LS solution wᵀGw = wᵀr
        better = (w_s >= 0).all(axis=1) & (objective < best)
        best = np.where(better, objective, best)
        w = np.zeros((n, e))
        w[:, support] = w_s
        best_w = np.where(better[:, None], w, best_w)
    return best_w


def _solve_spd(g: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``x (n, s)`` with ``g x = r`` for symmetric positive-definite ``g (n, s, s)``, small
    ``s``: Gaussian elimination without pivoting, vectorised over ``n`` (no per-matrix LAPACK call)."""
    g, r = g.copy(), r.copy()
    size = r.shape[1]
    for i in range(size):
        for j in range(i + 1, size):
            f = g[:, j, i] / g[:, i, i]
            g[:, j, i:] -= f[:, None] * g[:, i, i:]
            r[:, j] -= f * r[:, i]
    x = np.zeros_like(r)
    for i in range(size - 1, -1, -1):
        x[:, i] = (r[:, i] - np.einsum("nj,nj->n", g[:, i, i + 1:], x[:, i + 1:])) / g[:, i, i]
    return x


def unmixing_frame(mean: np.ndarray, components: np.ndarray) -> tuple[np.ndarray, float]:
    """``(offset (pcs,), residual)``: the PCA mean's coordinates on the components and the norm
    of its part outside their span. ``[pcs + offset, residual]`` are then the uncentred features'
    coordinates (in the PC span plus the mean's direction), where a non-negative mixture of
    images stays a non-negative mixture of their features."""
    mean, components = np.asarray(mean, np.float64), np.asarray(components, np.float64)
    offset = components @ mean
    return offset, float(np.linalg.norm(mean - components.T @ offset))


class UnmixingLabeler:
    """Each point → the cluster with the largest weight when its uncentred features are unmixed
    into a non-negative combination of the ``n_nearest`` nearest centroids' (a beam footprint
    that sees two or three domains gives the weighted sum of their images: the largest weight is
    the dominant domain, where the nearest centroid is biased by the mixture's nonlinearity and
    intensity). ``centroids (k, pcs)`` and points in centred PCs; ``offset``/``residual`` from
    :func:`unmixing_frame`.

    **Empty clusters** (``empty (k,)`` bool, :func:`empty_clusters`): a cluster of images without
    diffraction (points off the sample, in a hole, beam off) has the zero image, so its weight is
    not a beam share: it can take any value at little cost. Its share is instead the beam
    fraction the other candidates leave, ``max(0, 1 − Σ their weights)`` (:meth:`shares`).
    """

    def __init__(self, centroids: np.ndarray, offset: np.ndarray, residual: float, n_nearest: int = 4,
                 empty: np.ndarray | None = None):
        self.centroids = np.asarray(centroids, np.float64)
        self.offset, self.residual = np.asarray(offset, np.float64), float(residual)
        self.n_nearest = int(min(n_nearest, len(self.centroids)))
        self.empty = np.zeros(len(self.centroids), bool) if empty is None else np.asarray(empty, bool)

    def _uncentred(self, pcs: np.ndarray) -> np.ndarray:
        pcs = np.asarray(pcs, np.float64)
        return np.concatenate([pcs + self.offset, np.full((*pcs.shape[:-1], 1), self.residual)], axis=-1)

    def weights(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(candidates (n, e), weights (n, e))``: each point's ``e`` nearest centroids (by
        increasing distance) and their non-negative weights."""
        d2 = squared_distances(points, self.centroids)
        near = np.argsort(d2, axis=1, kind="stable")[:, :self.n_nearest]
        ends = self._uncentred(self.centroids)
        gram = (ends @ ends.T)[near[:, :, None], near[:, None, :]]
        rhs = np.take_along_axis(self._uncentred(points) @ ends.T, near, axis=1)
        return near, weights_from_normal_equations(gram, rhs)

    def shares(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(candidates (n, e), shares (n, e))``: the weights of :meth:`weights`, an empty
        cluster's replaced by ``max(0, 1 − Σ`` the other candidates' weights ``)``."""
        near, w = self.weights(points)
        empty = self.empty[near]
        if empty.any():
            left = np.maximum(0.0, 1.0 - np.where(empty, 0.0, w).sum(axis=1))
            w = np.where(empty, left[:, None], w)
        return near, w

    def predict(self, points: np.ndarray) -> np.ndarray:
        """``(n,)`` int32 cluster of the largest share (all 0: the nearest centroid)."""
        near, w = self.shares(points)
        return near[np.arange(len(near)), np.argmax(w, axis=1)].astype(np.int32)


def pure_sums(points: np.ndarray, labeler: UnmixingLabeler, min_fraction: float) -> np.ndarray:
    """Like :func:`lloyd_sums`, over the valid rows whose largest unmixing share is at least
    ``min_fraction`` of their shares' sum (points that see one domain): ``(k, d + 1)``."""
    ok = valid_rows(points)
    p = np.asarray(points[ok], np.float64)
    k, d = labeler.centroids.shape
    near, w = labeler.shares(p)
    top = np.argmax(w, axis=1)
    pure = w[np.arange(len(w)), top] >= min_fraction * np.maximum(w.sum(axis=1), 1e-300)
    labels = near[np.arange(len(near)), top][pure]
    out = np.zeros((k, d + 1), np.float64)
    np.add.at(out[:, :d], labels, p[pure])
    out[:, d] = np.bincount(labels, minlength=k)
    return out


def squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances (float64, exact form ``Σ (p − c)²``)."""
    p = np.asarray(points, np.float64)
    c = np.asarray(centroids, np.float64)
    d = (p * p).sum(1)[:, None] - 2 * p @ c.T + (c * c).sum(1)[None, :]
    return np.clip(d, 0.0, None)


def lloyd_sums(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """One Lloyd step's partial sums over the valid rows of ``points (n, d)``: ``(k, d + 1)``
    float64, per nearest centroid the sum of its points and (last column) their count."""
    ok = valid_rows(points)
    p = np.asarray(points[ok], np.float64)
    k, d = centroids.shape
    labels = NearestCentroid(centroids).predict(p)
    out = np.zeros((k, d + 1), np.float64)
    np.add.at(out[:, :d], labels, p)
    out[:, d] = np.bincount(labels, minlength=k)
    return out


def centroids_from_sums(sums: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, float]:
    """New centroids from :func:`lloyd_sums` (added over blocks) and the total squared shift
    (Σ over centroids, scikit-learn's convergence measure); an empty cluster keeps its
    previous centroid."""
    d = previous.shape[1]
    counts = sums[:, d]
    new = np.where(counts[:, None] > 0, sums[:, :d] / np.maximum(counts, 1)[:, None], previous)
    return new, float(((new - previous) ** 2).sum())


def cluster_stats(points: np.ndarray, labeler, centroids: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per cluster over one block: ``(k, 3)`` float64 = [point count, smallest squared
    distance to the centroid, global index of that point (−1: none)].
    ``index (n,)``: the global flat index (y · nx + x) of each row."""
    k = len(centroids)
    out = np.zeros((k, 3), np.float64)
    out[:, 1], out[:, 2] = np.inf, -1
    ok = valid_rows(points)
    p, idx = points[ok], np.asarray(index)[ok]
    if not len(p):
        return out
    labels = labeler.predict(p)
    d2 = ((np.asarray(p, np.float64) - centroids[labels]) ** 2).sum(axis=1)
    out[:, 0] = np.bincount(labels, minlength=k)
    order = np.lexsort((idx, d2, labels))  # by cluster, then distance, then index
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    best = order[first]
    out[labels[best], 1] = d2[best]
    out[labels[best], 2] = idx[best]
    return out


def merge_cluster_stats(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n_blocks, k, 3)`` of :func:`cluster_stats` → ``counts (k,)`` int64 and the global
    index of each cluster's delegate ``(k,)`` int64 (the point closest to the centroid; ties →
    the lower index; −1: empty cluster)."""
    blocks = np.asarray(blocks, np.float64).reshape(-1, *np.shape(blocks)[-2:])
    counts = blocks[:, :, 0].sum(axis=0).astype(np.int64)
    d2 = blocks[:, :, 1]
    idx = np.where(blocks[:, :, 2] >= 0, blocks[:, :, 2], np.inf)
    k = blocks.shape[1]
    delegate = np.full(k, -1, np.int64)
    for c in range(k):  # k ≤ a few tens: the blocks' winners only
        order = np.lexsort((idx[:, c], d2[:, c]))
        if np.isfinite(d2[order[0], c]):
            delegate[c] = int(idx[order[0], c])
    return counts, delegate


def nearest_reference(labels: np.ndarray, points: np.ndarray, ref_labels: np.ndarray,
                      ref_points: np.ndarray) -> np.ndarray:
    """For each point ``(n, d)`` of cluster ``labels (n,)``, the row of the nearest (Euclidean)
    reference point ``ref_points (r, d)`` of the same cluster (``ref_labels (r,)``): ``(n,)``
    int64, −1 where its cluster has no reference or its coordinates are not finite."""
    labels, ref_labels = np.asarray(labels), np.asarray(ref_labels)
    out = np.full(len(labels), -1, np.int64)
    if not len(ref_labels) or not len(labels):
        return out
    d2 = squared_distances(np.nan_to_num(points), ref_points)
    d2 = np.where(labels[:, None] == ref_labels[None, :], d2, np.inf)
    best = np.argmin(d2, axis=1)
    found = np.isfinite(d2[np.arange(len(labels)), best]) & valid_rows(points)
    out[found] = best[found]
    return out


def canonical_order(counts: np.ndarray, delegate: np.ndarray) -> np.ndarray:
    """``new_label[old]``: clusters renumbered by decreasing size (ties: lower delegate index),
    so every path and run numbers the same clusters the same way; empty clusters last."""
    key_delegate = np.where(delegate >= 0, delegate, np.iinfo(np.int64).max)
    order = np.lexsort((key_delegate, -np.asarray(counts)))
    new = np.empty(len(order), np.int32)
    new[order] = np.arange(len(order), dtype=np.int32)
    return new


#: k-means++ starts of every KMeans on the score sample (the scores' clusterings and the start of
#: the full one). 4 until 2026-12-01: under-optimised on grains scans, KMeans at the true K split a
#: large domain instead of isolating a small one; with 16 the scores' K equals the number of domains
#: on 34 of 41 simulated scans instead of 31 (grains: 9 of 15 instead of 6), lowest ARI 0.949 instead
#: of 0.922 (benchmarks/results.md, "KMeans starts").
KMEANS_STARTS = 16


def kmeans_on_sample(sample: np.ndarray, k: int, seed: int, n_init: int | None = None) -> np.ndarray:
    """KMeans (scikit-learn, k-means++, ``n_init`` starts, default :data:`KMEANS_STARTS`) on a
    sample ``(s, d)``: ``(k, d)`` float64 centroids — the start of the full clustering and the
    scores' clusterings."""
    from sklearn.cluster import KMeans  # deferred: scikit-learn is heavy

    if len(sample) < k:
        raise ValueError(f"K = {k} clusters asked of {len(sample)} sample points; use a smaller K "
                         "(or a larger score_sample)")
    model = KMeans(n_clusters=k, n_init=n_init or KMEANS_STARTS, random_state=seed).fit(np.asarray(sample, np.float64))
    return np.asarray(model.cluster_centers_, np.float64)


def k_scan_scores(sample: np.ndarray, ks, seed: int, n_init: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Silhouette and Calinski–Harabasz scores of KMeans (``n_init`` starts, default
    :data:`KMEANS_STARTS`) on ``sample (s, d)`` for each K in ``ks``; NaN where K ≥ s. Also
    returns ``{K: centroids}`` (starts for the full clustering).
    The ``s × s`` distance matrix is computed once for every K (:func:`silhouette_from_distances`)."""
    from sklearn.metrics import calinski_harabasz_score  # deferred: heavy

    sample = np.asarray(sample, np.float64)
    sil = np.full(len(ks), np.nan)
    ch = np.full(len(ks), np.nan)
    starts = {}
    distances = pairwise_distances(sample)
    for i, k in enumerate(ks):
        if not 2 <= k < len(sample):
            continue
        centroids = kmeans_on_sample(sample, int(k), seed, n_init)
        labels = NearestCentroid(centroids).predict(sample)
        starts[int(k)] = centroids
        if len(np.unique(labels)) < 2:
            continue
        sil[i] = silhouette_from_distances(distances, labels)
        ch[i] = calinski_harabasz_score(sample, labels)
    return sil, ch, starts


def pairwise_distances(points: np.ndarray) -> np.ndarray:
    """``(s, s)`` Euclidean distances (float64; 0 on the diagonal)."""
    d2 = squared_distances(points, points)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def silhouette_from_distances(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) from a distance matrix ``(s, s)``: per point
    ``(b − a) / max(a, b)`` with ``a`` its mean distance to the other points of its cluster and
    ``b`` the smallest mean distance to another cluster; 0 for a point alone in its cluster.
    One matrix product per K, so a K scan computes the distances once."""
    labels = np.asarray(labels)
    _, labels = np.unique(labels, return_inverse=True)
    k = labels.max() + 1
    onehot = np.zeros((len(labels), k))
    onehot[np.arange(len(labels)), labels] = 1.0
    sums = distances @ onehot  # (s, k): Σ distances to each cluster
    sizes = onehot.sum(axis=0)
    own = sizes[labels]
    a = sums[np.arange(len(labels)), labels] / np.maximum(own - 1, 1)
    means = sums / sizes
    means[np.arange(len(labels)), labels] = np.inf
    b = means.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(np.mean(s))


#: the scores' K is the smallest K whose silhouette is within this of the highest (silhouette
#: units). 0 until 2026-12-02 (the highest silhouette): K then often took one extra cluster of
#: 2–3 points at a silhouette 0.002 above the right K. With 0.005 no scan of 122 (49 simulated
#: scans with two seeds, 24 held out) is below the issue's ARI bars (was 2); K equals the number
#: of domains about as often (84 against 85) (benchmarks/results.md, "The scores' K within a
#: silhouette tolerance").
SILHOUETTE_TOLERANCE = 0.005


def suggest_k(ks, silhouette: np.ndarray, tolerance: float = SILHOUETTE_TOLERANCE) -> int:
    """The smallest K whose silhouette score is within ``tolerance`` of the highest: the fewest
    clusters the scores cannot tell from the best (``tolerance`` 0: the highest, ties the smaller
    K); −1 when none scored."""
    silhouette = np.asarray(silhouette, np.float64)
    if not np.isfinite(silhouette).any():
        return -1
    if not tolerance >= 0:
        raise ValueError(f"the silhouette tolerance must be ≥ 0, got {tolerance!r}")
    close = np.isfinite(silhouette) & (silhouette >= np.nanmax(silhouette) - tolerance)
    return int(np.asarray(ks)[close].min())


# --------------------------------------------------------------------------- colours
def rgb_range(sample_pcs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (the first 3 PCs) the 1st and 99th percentiles of a sample ``(s, ≥3)``:
    the range mapped to [0, 1] by :func:`to_rgb`."""
    first3 = np.asarray(sample_pcs, np.float64)[:, :3]
    lo, hi = np.percentile(first3, [1.0, 99.0], axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return lo, hi


def to_rgb(pcs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(…, 3)`` float32 RGB in [0, 1] from the first 3 PCs of ``pcs (…, ≥3)`` (linear in
    each PC over ``[lo, hi]``, clipped); NaN where the PCs are NaN."""
    rgb = (np.asarray(pcs, np.float64)[..., :3] - lo) / (hi - lo)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- in memory
#: a point is "pure" (sees one domain) when its largest unmixing weight is ≥ this fraction of the sum
PURE_FRACTION = 0.9


def empty_clusters(sample_features: np.ndarray, sample_points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(k,)`` bool: clusters whose mean image is shorter than :data:`EMPTY_NORM_FRACTION` of the
    median cluster's. The means are those of the sample's features in their own units
    (``sample_features (s, M)``, unscaled: the standardization's floor does not keep cells that
    hold only noise from weighing like spots when few cells ever see one), each sample point in
    the cluster of its nearest centroid (``sample_points (s, pcs)``); a cluster without sample
    points is not empty."""
    centroids = np.asarray(centroids, np.float64)
    k = len(centroids)
    if k < 2 or len(sample_points) == 0:
        return np.zeros(k, bool)
    labels = NearestCentroid(centroids).predict(sample_points)
    sums = np.zeros((k, np.shape(sample_features)[1]))
    np.add.at(sums, labels, np.asarray(sample_features, np.float64))
    counts = np.bincount(labels, minlength=k)
    seen = counts > 0
    norms = np.linalg.norm(sums[seen] / counts[seen, None], axis=1)
    empty = np.zeros(k, bool)
    empty[seen] = norms < EMPTY_NORM_FRACTION * np.median(norms)
    return empty


def unmixing_labeler(centroids: np.ndarray, mean: np.ndarray, components: np.ndarray,
                     empty: np.ndarray | None = None) -> UnmixingLabeler:
    """The :class:`UnmixingLabeler` of ``centroids`` in the PC frame of ``mean``/``components``;
    ``empty``: its :func:`empty_clusters` (None: none)."""
    return UnmixingLabeler(centroids, *unmixing_frame(mean, components), empty=empty)


def fit_in_memory(features: np.ndarray, *, pcs: int, ks, k: int | None, method: str, seed: int,
                  score_sample: int, max_iter: int, tol: float, assign: str = "nearest",
                  feature_scaling: str = "none", silhouette_tolerance: float = SILHOUETTE_TOLERANCE,
                  n_init: int | None = None) -> dict:
    """The whole fit with scikit-learn on one worker: ``features (ny, nx, M)`` or ``(n, M)``.

    ``PCA`` (full SVD), the score scan on the hash sample, then ``KMeans`` on every processed
    point (started from the sample's centroids, as the distributed path) or a
    ``BayesianGaussianMixture`` (``method="bgm"``). ``assign="unmix"`` (KMeans only): the
    centroids are then replaced by the means of the points the unmixing finds pure
    (:data:`PURE_FRACTION`) and points are labelled by :class:`UnmixingLabeler`. The features
    are first multiplied by :func:`feature_scale` (``feature_scaling``). The suggested K:
    :func:`suggest_k` with ``silhouette_tolerance``; ``n_init``: the KMeans starts on the sample
    (None: :data:`KMEANS_STARTS`). Returns the small
    results only: ``scale``, ``mean`` (of the scaled features), ``components``, ``explained_variance_ratio``, ``silhouette``, ``calinski_harabasz``,
    ``suggested_k``, ``k``, ``labeler``, ``centroids``, ``rgb_lo``, ``rgb_hi``, ``n``.
    """
    from sklearn.decomposition import PCA  # deferred: heavy

    x = np.asarray(features).reshape(-1, np.shape(features)[-1])
    ok = valid_rows(x)
    n = int(ok.sum())
    if n < 2:
        raise ValueError(f"PCA needs at least 2 processed points, got {n}")
    if not 1 <= pcs <= x.shape[1]:
        raise ValueError(f"pcs = {pcs} components asked of {x.shape[1]} features; use 1 ≤ pcs ≤ {x.shape[1]}")
    if pcs > n:
        raise ValueError(f"pcs = {pcs} principal components need at least {pcs} processed points; the scan has "
                         f"{n}: use pcs ≤ {n} (segmentation parameter `pcs`, `laueflow segment --pcs`)")
    rows = np.asarray(x[ok], np.float64)
    scale = feature_scale(rows.std(axis=0, ddof=1), feature_scaling)
    pca = PCA(n_components=pcs, svd_solver="full").fit(rows * scale)
    components = fix_component_signs(pca.components_)
    points = project(x, pca.mean_, components, scale)
    index = np.arange(len(x))
    in_sample = ok & (hash_uniform(index, seed) < min(1.0, score_sample / n))
    sample = points[in_sample]
    fitted = cluster_sample(sample, ks=ks, k=k, method=method, seed=seed, silhouette_tolerance=silhouette_tolerance,
                            n_init=n_init)
    if method == "kmeans":
        from sklearn.cluster import KMeans  # deferred: heavy

        model = KMeans(n_clusters=fitted["k"], init=fitted["centroids"], n_init=1, max_iter=max_iter,
                       tol=tol, random_state=seed).fit(np.asarray(points[ok], np.float64))
        fitted["centroids"] = np.asarray(model.cluster_centers_, np.float64)
        fitted["labeler"] = NearestCentroid(fitted["centroids"])
        if assign == "unmix":
            empty = empty_clusters(x[in_sample], sample, fitted["centroids"])
            first = unmixing_labeler(fitted["centroids"], pca.mean_, components, empty)
            fitted["centroids"], _ = centroids_from_sums(pure_sums(points[ok], first, PURE_FRACTION),
                                                         fitted["centroids"])
            fitted["labeler"] = unmixing_labeler(fitted["centroids"], pca.mean_, components, empty)
    return {**fitted, "scale": scale, "mean": pca.mean_, "components": components, "n": n,
            "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_, np.float64)}


def cluster_sample(sample: np.ndarray, *, ks, k: int | None, method: str, seed: int, scores=None,
                   silhouette_tolerance: float = SILHOUETTE_TOLERANCE, n_init: int | None = None) -> dict:
    """Everything decided on the sample of PCs: the scores over ``ks`` (or ``scores``, the
    output of :func:`k_scan_scores` computed elsewhere), the suggested K (:func:`suggest_k` with
    ``silhouette_tolerance``), the K used (``k``, or the suggested one), the start centroids
    (KMeans) or the fitted mixture (``bgm``: its component means are the centroids), the RGB range."""
    if len(sample) < 3:
        raise ValueError(f"only {len(sample)} processed points in the sample: too few to cluster")
    sil, ch, starts = scores if scores is not None else k_scan_scores(sample, ks, seed, n_init)
    suggested = suggest_k(ks, sil, silhouette_tolerance)
    use = int(k) if k is not None else suggested
    if use < 1:
        raise ValueError("no K could be scored on the sample (too few points?); give k explicitly")
    lo, hi = rgb_range(sample)
    out = {"silhouette": sil, "calinski_harabasz": ch, "suggested_k": suggested, "k": use,
           "rgb_lo": lo, "rgb_hi": hi}
    if method == "bgm":
        from sklearn.mixture import BayesianGaussianMixture  # deferred: heavy

        if len(sample) < use:
            raise ValueError(f"K = {use} components asked of {len(sample)} sample points; use a smaller K")
        model = BayesianGaussianMixture(n_components=use, covariance_type="full", max_iter=500,
                                        random_state=seed).fit(np.asarray(sample, np.float64))
        out.update(centroids=np.asarray(model.means_, np.float64), labeler=model)
    else:
        centroids = starts.get(use)
        out["centroids"] = centroids if centroids is not None else kmeans_on_sample(sample, use, seed, n_init)
        out["labeler"] = NearestCentroid(out["centroids"])
    return out
