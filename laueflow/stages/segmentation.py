"""``segmentation``: index-free segmentation of a scan (reduce stage) — PCA of every point's
autoencoder ``features``, KMeans (or a Bayesian Gaussian mixture) for K clusters, the
silhouette and Calinski–Harabasz scores over a K range, three labelers and a delegate point per
cluster. Method, parameters, paths and measured costs: ``docs/segmentation.md``.

It follows the reduce contract (``docs/design.md``): ``features`` arrives as a lazy
``(y, x, feature)`` array; the work runs on the workers block by block (blocks of
``block_mb``, whole scan rows when they fit) and only small results come back to the driver:
the ``M × M`` moment sums, a sample of ≤ ``score_sample`` points' PCs, the centroids' sums of
each KMeans step, ``K`` counts and delegates. The PCs (``pcs`` float32 per point, 1/8 of 256
features) are kept on the workers (``client.persist``) while the clusters are fitted.

Two paths (``path: auto`` chooses, the choice is logged and recorded in the store's
``reduce_info``):

- ``in_memory`` — the feature matrix fits one worker (≤ ``in_memory_max_mb`` and ≤ 1/8 of the
  smallest worker's memory limit): scikit-learn ``PCA`` (full SVD) and ``KMeans`` on every
  processed point, in one task on one worker;
- ``distributed`` — covariance ``Σxxᵀ`` summed over blocks in one pass, its eigendecomposition
  (exact; M = 256 → a 256 × 256 matrix), then Lloyd steps whose per-block sums run on the
  workers.

Both start KMeans from the centroids of KMeans on the sample (k-means++, ``KMEANS_STARTS`` starts, ``seed``),
number the clusters by decreasing size and sign the components alike, so both give the same
maps (tests/stages/test_segmentation.py). Deterministic: the sample is a hash of each point's
index and ``seed``, and every sum is reduced in the same order whatever the workers.
"""
from __future__ import annotations

import time

import numpy as np

from ..kernels.clustering import (FEATURE_SCALINGS, PURE_FRACTION, SILHOUETTE_TOLERANCE, STANDARDIZE_FLOOR_QUANTILE,
                                  NearestCentroid, canonical_order, centroids_from_sums, cluster_sample, cluster_stats,
                                  empty_clusters, fit_in_memory, hash_uniform, k_scan_scores, lloyd_sums, merge_cluster_stats,
                                  moment_sums, pca_from_moments, project, pure_sums, scale_from_moments, scaled_moments,
                                  to_rgb, unmixing_labeler)
from .base import StageSpec, Variable

__all__ = ["STAGE", "segmentation", "METHODS", "PATHS", "choose_path"]

METHODS = ("kmeans", "bgm")
ASSIGNS = ("auto", "unmix", "nearest")
PATHS = ("auto", "in_memory", "distributed")
#: a worker may hold the feature matrix when it is at most this fraction of its memory limit
WORKER_MEMORY_FRACTION = 0.125  # the fit holds ~5 copies: float32, float64, SVD workspace


def segmentation(features, *, client, writer, pcs: int = 32, k: int | None = None, k_min: int = 2,
                 k_max: int = 20, method: str = "kmeans", path: str = "auto", in_memory_max_mb: float = 256.0,
                 score_sample: int = 3000, seed: int = 0, max_iter: int = 300, tol: float = 1e-4,
                 block_mb: float = 64.0, assign: str = "auto", feature_scaling: str = "auto",
                 silhouette_tolerance: float = SILHOUETTE_TOLERANCE) -> dict:
    """Segment the scan from ``features`` (lazy ``(y, x, feature)`` float; NaN: not processed)
    and write every output (see ``STAGE``). Returns a small record of what was done (the
    pipeline logs it and keeps it in the store's ``reduce_info``)."""
    ny, nx, m = features.shape
    ks = np.arange(k_min, k_max + 1)
    assign = resolve_assign(assign, method)
    feature_scaling = resolve_feature_scaling(feature_scaling)
    chosen, reason = choose_path(path, ny * nx * m * features.dtype.itemsize, in_memory_max_mb,
                                 _worker_memory_limits(client))
    flat = _flat_blocks(features, block_mb)
    timings = {"start": time.perf_counter()}
    if chosen == "in_memory":
        fit = client.submit(fit_in_memory, client.compute(flat), pcs=pcs, ks=ks, k=k, method=method, seed=seed,
                            score_sample=score_sample, max_iter=max_iter, tol=tol, assign=assign,
                            feature_scaling=feature_scaling, silhouette_tolerance=silhouette_tolerance,
                            pure=False).result()
        iterations = None
        points = client.persist(_projected(flat, fit["mean"], fit["components"], fit["scale"]))
        timings["fit"] = time.perf_counter()
    else:
        fit, points, iterations = _fit_distributed(flat, client, pcs=pcs, ks=ks, k=k, method=method, seed=seed,
                                                   score_sample=score_sample, max_iter=max_iter, tol=tol,
                                                   assign=assign, feature_scaling=feature_scaling,
                                                   silhouette_tolerance=silhouette_tolerance, timings=timings)
    try:
        record = _write_outputs(points, fit, writer, client, ny=ny, nx=nx, ks=ks, timings=timings)
    finally:
        client.cancel(points)
    marks = list(timings.items())
    n_empty = int(np.sum(getattr(fit.get("labeler"), "empty", [])))
    record.update(path=chosen, path_reason=reason, method=method, assign=assign, feature_scaling=feature_scaling,
                  standardize_floor_quantile=STANDARDIZE_FLOOR_QUANTILE if feature_scaling == "standardize" else None,
                  n_empty_clusters=n_empty, pcs=pcs, n_points=ny * nx, silhouette_tolerance=silhouette_tolerance,
                  blocks=len(flat.chunks[0]), lloyd_iterations=iterations,
                  timings_s={name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])})
    record["log"] = [f"segmentation: {chosen} path ({reason}); {record['n_processed']} processed points, "
                     f"{method} K = {record['k']} (suggested {record['suggested_k']}: the fewest clusters within "
                     f"{silhouette_tolerance:g} of the best silhouette; labels: {assign}; features "
                     f"{'standardized' if feature_scaling == 'standardize' else 'unscaled'}), {pcs} PCs explain "
                     f"{100 * record['explained_variance']:.1f} % of the variance"]
    if n_empty:
        record["log"].append(f"segmentation: {n_empty} cluster(s) of images without diffraction (off the sample, "
                             "holes, beam off): their points are labelled by the beam share the others leave")
    return record


def resolve_assign(assign: str, method: str) -> str:
    """``auto`` → ``unmix`` for KMeans, ``nearest`` (the most probable component) for ``bgm``;
    ``unmix`` with ``bgm`` is refused."""
    if assign not in ASSIGNS:
        raise ValueError(f"assign must be one of {', '.join(ASSIGNS)}, got {assign!r}")
    if assign == "auto":
        return "unmix" if method == "kmeans" else "nearest"
    if assign == "unmix" and method != "kmeans":
        raise ValueError("assign: unmix needs method: kmeans (the mixture's components are not unmixed); "
                         "use assign: nearest or auto with method: bgm")
    return assign


def resolve_feature_scaling(feature_scaling: str) -> str:
    """``auto`` → ``standardize`` (in a workflow :func:`prepare_segmentation` first makes it
    ``none`` when the features come from another stage than laueflow's ``features``)."""
    if feature_scaling == "auto":
        return "standardize"
    if feature_scaling not in FEATURE_SCALINGS:
        raise ValueError(f"feature_scaling must be one of auto, {', '.join(FEATURE_SCALINGS)}, got {feature_scaling!r}")
    return feature_scaling


def prepare_segmentation(params: dict, context: dict) -> dict:
    """Driver-side, from the workflow's ``features`` stage: ``assign: auto`` with KMeans →
    ``nearest`` when its features are not linear in the image (the autoencoder's, or log /
    percentile pixels): unmixing assumes a mixture's features are the weighted sum of its
    domains'; ``feature_scaling: auto`` → ``standardize`` for the ``features`` stage's features
    (pixels of any scaling and autoencoder latents: measured better on average over the bar
    scans, docs/features.md), else ``none`` (a plug-in's features) (docs/segmentation.md). Called
    without a workflow, the stage resolves ``auto`` as
    :func:`resolve_feature_scaling`. Features of another stage (a plug-in): ``assign: auto`` as
    the kernel resolves it."""
    from .features import linear_features

    stages, log = context.get("workflow_stages"), context.get("log")
    if params.get("assign", "auto") == "auto" and params.get("method", "kmeans") == "kmeans" \
            and linear_features(stages) is False:
        if log is not None:
            log("segmentation: assign auto → nearest (the features are not linear in the image: unmixing "
                "needs features: {method: pixels, pixel_scaling: linear})")
        params = {**params, "assign": "nearest"}
    if params.get("feature_scaling", "auto") == "auto" and linear_features(stages) is None:
        params = {**params, "feature_scaling": "none"}
    return params


# --------------------------------------------------------------------------- path
def choose_path(path: str, matrix_bytes: int, in_memory_max_mb: float, worker_limits) -> tuple[str, str]:
    """``(path, reason)``: ``in_memory`` when the ``(n, M)`` float32 feature matrix is at most
    ``in_memory_max_mb`` and at most :data:`WORKER_MEMORY_FRACTION` of the smallest worker's
    memory limit (``worker_limits``, bytes; 0/None: no limit), else ``distributed``; an
    explicit ``path`` is taken as given."""
    mb = matrix_bytes / 1e6
    if path != "auto":
        return path, f"path: {path} asked; feature matrix {mb:.1f} MB"
    limits = [v for v in worker_limits if v]
    worker_cap = WORKER_MEMORY_FRACTION * min(limits) / 1e6 if limits else float("inf")
    cap = min(float(in_memory_max_mb), worker_cap)
    if mb <= cap:
        return "in_memory", f"feature matrix {mb:.1f} MB ≤ {cap:.0f} MB"
    return "distributed", f"feature matrix {mb:.1f} MB > {cap:.0f} MB"


def _worker_memory_limits(client) -> list:
    return [w.get("memory_limit") for w in client.scheduler_info().get("workers", {}).values()]


# --------------------------------------------------------------------------- blocks
def _flat_blocks(features, block_mb: float):
    """``(n, M)`` lazy view of ``features (y, x, M)`` in blocks of about ``block_mb``: whole
    rows of x when one fits (else runs within one row), so the flattening moves no data. Blocks
    that already qualify (the pipeline reads reduce inputs so) are kept as they are."""
    ny, nx, m = features.shape
    ychunks, xchunks = features.chunks[0], features.chunks[1]
    per_block = max(1, int(block_mb * 1e6 // (4 * m)))
    flat_ready = len(xchunks) == 1 or max(ychunks) == 1
    mean_block = ny * nx / (len(ychunks) * len(xchunks))
    if not (flat_ready and mean_block >= min(per_block / 4, ny * nx)):
        cy, cx = ychunks[0], xchunks[0]
        if nx <= per_block:
            by = max(cy, per_block // nx // cy * cy)
            features = features.rechunk((min(by, ny), nx, m))
        else:
            features = features.rechunk((1, min(max(cx, per_block // cx * cx), nx), m))
    return features.reshape(ny * nx, m)


def _global_index(rows: int, block_info) -> np.ndarray:
    start = block_info[0]["array-location"][0][0]
    return np.arange(start, start + rows, dtype=np.int64)


def _moments_block(x):
    return moment_sums(x)[None, :]


def _projected(flat, mean, components, scale):
    return flat.map_blocks(project, mean=mean, components=components, scale=scale, dtype=np.float32,
                           chunks=(flat.chunks[0], (len(components),)))


def _sample_mask_block(points, *, seed, fraction, block_info=None):
    u = hash_uniform(_global_index(len(points), block_info), seed)
    return (u < fraction) & np.isfinite(points[:, 0])


def _lloyd_block(points, *, centroids):
    return lloyd_sums(points, centroids).reshape(1, -1)


def _pure_block(points, *, labeler):
    return pure_sums(points, labeler, PURE_FRACTION).reshape(1, -1)


def _stats_block(points, *, labeler, centroids, block_info=None):
    return cluster_stats(points, labeler, centroids, _global_index(len(points), block_info)).reshape(1, -1)


def _label_block(points, *, labeler, relabel):
    out = np.full(len(points), -1, np.int32)
    ok = np.isfinite(points).all(axis=1)
    if ok.any():
        out[ok] = relabel[labeler.predict(points[ok])]
    return out


def _rgb_block(points, *, lo, hi):
    return to_rgb(points, lo, hi)


def _lookup_block(labels, *, table):
    padded = np.concatenate([table, np.full((1, table.shape[1]), np.nan, table.dtype)])
    return padded[np.where(labels >= 0, labels, len(table))]


def _per_block(points, func, width: int, **kwargs):
    """``func`` on each block → ``(n_blocks, width)`` float64 (lazy)."""
    return points.map_blocks(func, dtype=np.float64, chunks=((1,) * len(points.chunks[0]), (width,)), **kwargs)


# --------------------------------------------------------------------------- distributed fit
def _fit_distributed(flat, client, *, pcs, ks, k, method, seed, score_sample, max_iter, tol, assign,
                     feature_scaling, silhouette_tolerance, timings):
    m = flat.shape[1]
    sums = client.compute(_per_block(flat, _moments_block, 1 + m + m * m).sum(axis=0)).result()
    scale = scale_from_moments(sums, feature_scaling)
    pca = pca_from_moments(scaled_moments(sums, scale), pcs)
    timings["pca"] = time.perf_counter()
    points = client.persist(_projected(flat, pca["mean"], pca["components"], scale))
    mask = points.map_blocks(_sample_mask_block, seed=seed, fraction=min(1.0, score_sample / pca["n"]),
                             dtype=bool, drop_axis=1)
    sample = client.compute(points[mask])
    sample_features = client.compute(flat[mask]) if assign == "unmix" else None
    scores = _k_scan_on_workers(client, sample, ks, seed)
    fit = client.submit(cluster_sample, sample, ks=ks, k=k, method=method, seed=seed, scores=scores,
                        silhouette_tolerance=silhouette_tolerance, pure=False).result()
    timings["project_sample_scores"] = time.perf_counter()
    iterations = None
    if method == "kmeans":
        centroids = fit["centroids"]
        tol_abs = tol * float(np.mean(pca["explained_variance"]))
        for iterations in range(1, max_iter + 1):
            step = _per_block(points, _lloyd_block, centroids.size + len(centroids), centroids=centroids)
            step_sums = client.compute(step.sum(axis=0)).result().reshape(len(centroids), -1)
            centroids, shift = centroids_from_sums(step_sums, centroids)
            if shift <= tol_abs:
                break
        fit.update(centroids=centroids, labeler=NearestCentroid(centroids))
        timings["lloyd"] = time.perf_counter()
        if assign == "unmix":
            empty = empty_clusters(sample_features.result(), sample.result(), centroids)
            first = unmixing_labeler(centroids, pca["mean"], pca["components"], empty)
            step = _per_block(points, _pure_block, centroids.size + len(centroids), labeler=first)
            step_sums = client.compute(step.sum(axis=0)).result().reshape(len(centroids), -1)
            centroids, _ = centroids_from_sums(step_sums, centroids)
            fit.update(centroids=centroids, labeler=unmixing_labeler(centroids, pca["mean"], pca["components"], empty))
            timings["unmix"] = time.perf_counter()
    fit.update(scale=scale, mean=pca["mean"], components=pca["components"], n=pca["n"],
               explained_variance_ratio=pca["explained_variance_ratio"])
    return fit, points, iterations


def _k_scan_on_workers(client, sample, ks, seed):
    """:func:`k_scan_scores` with the K range dealt out to the workers (K, K + n, …: the costly
    large K spread evenly); the same numbers as one call."""
    n = max(1, min(len(ks), len(_worker_memory_limits(client))))
    parts = client.gather(client.map(k_scan_scores, [sample] * n, [ks[i::n] for i in range(n)], seed=seed,
                                     pure=False))
    sil, ch, starts = np.full(len(ks), np.nan), np.full(len(ks), np.nan), {}
    for i, (part_sil, part_ch, part_starts) in enumerate(parts):
        sil[i::n], ch[i::n] = part_sil, part_ch
        starts.update(part_starts)
    return sil, ch, starts


# --------------------------------------------------------------------------- outputs
def _write_outputs(points, fit, writer, client, *, ny, nx, ks, timings) -> dict:
    k_used = len(fit["centroids"])
    slots = writer_slots(writer, "cluster", int(ks[-1]))
    if k_used > slots:
        raise ValueError(f"K = {k_used} clusters but the store has {slots} cluster slots; raise k_max")
    stats = client.compute(_per_block(points, _stats_block, 3 * k_used, labeler=fit["labeler"],
                                      centroids=fit["centroids"])).result()
    counts, delegate = merge_cluster_stats(stats.reshape(-1, k_used, 3))
    timings["delegates"] = time.perf_counter()
    relabel = canonical_order(counts, delegate)
    order = np.argsort(relabel)
    centroids, counts, delegate = fit["centroids"][order], counts[order], delegate[order]
    cluster_rgb = to_rgb(centroids, fit["rgb_lo"], fit["rgb_hi"])

    pcs = points.shape[1]
    labels = points.map_blocks(_label_block, labeler=fit["labeler"], relabel=relabel, dtype=np.int32, drop_axis=1)
    writer.write("principal_components", points.reshape(ny, nx, pcs))
    writer.write("cluster_label", labels.reshape(ny, nx))
    rgb_chunks = (points.chunks[0], (3,))
    writer.write("direct_rgb", points.map_blocks(_rgb_block, lo=fit["rgb_lo"], hi=fit["rgb_hi"], dtype=np.float32,
                                                 chunks=rgb_chunks).reshape(ny, nx, 3))
    writer.write("pca_labeler_rgb", labels.map_blocks(_lookup_block, table=cluster_rgb, dtype=np.float32,
                                                      new_axis=1, chunks=rgb_chunks).reshape(ny, nx, 3))

    writer.write("explained_variance_ratio", fit["explained_variance_ratio"])
    n_scores = writer_slots(writer, "k", int(ks[-1]))
    score_k = np.arange(1, n_scores + 1, dtype=np.int32)
    sil, ch = np.full(n_scores, np.nan), np.full(n_scores, np.nan)
    sil[ks - 1], ch[ks - 1] = fit["silhouette"], fit["calinski_harabasz"]  # score_k[i] = i + 1
    writer.write("score_k", score_k)
    writer.write("silhouette_score", sil)
    writer.write("calinski_harabasz_score", ch)
    writer.write("suggested_k", np.int32(fit["suggested_k"]))
    writer.write("n_clusters", np.int32((counts > 0).sum()))
    writer.write("cluster_size", _padded(counts, slots, -1, np.int64))
    writer.write("cluster_centroid", _padded(centroids, slots, np.nan, np.float32))
    writer.write("cluster_rgb", _padded(cluster_rgb, slots, np.nan, np.float32))
    ys, xs = np.where(delegate >= 0, delegate // nx, -1), np.where(delegate >= 0, delegate % nx, -1)
    writer.write("delegate_y", _padded(ys, slots, -1, np.int32))
    writer.write("delegate_x", _padded(xs, slots, -1, np.int32))
    timings["write"] = time.perf_counter()
    return {"k": k_used, "suggested_k": int(fit["suggested_k"]), "n_processed": int(fit["n"]),
            "cluster_size": counts.tolist(), "explained_variance": float(np.sum(fit["explained_variance_ratio"]))}


def writer_slots(writer, dim: str, default: int) -> int:
    """Size of ``dim`` in the store the writer writes to (``default`` for a writer without a layout)."""
    layout = getattr(writer, "layout", None)
    return int(layout.dim_sizes.get(dim, default)) if layout is not None else int(default)


def _padded(values, size: int, fill, dtype) -> np.ndarray:
    values = np.asarray(values)
    out = np.full((size, *values.shape[1:]), fill, dtype=dtype)
    out[:len(values)] = values
    return out


# --------------------------------------------------------------------------- declaration
def check_params(params) -> None:
    def integer(name, low, high=None):
        v = params[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
            raise ValueError(f"{name} must be an integer ≥ {low}{f' and ≤ {high}' if high is not None else ''}, "
                             f"got {v!r}")

    integer("pcs", 3)
    integer("k_min", 2)
    integer("k_max", params["k_min"])
    if params["k"] is not None:
        integer("k", 1, params["k_max"])
    integer("score_sample", 100)
    integer("max_iter", 1)
    integer("seed", 0)
    if params["method"] not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {params['method']!r}")
    resolve_assign(params["assign"], params["method"])
    resolve_feature_scaling(params["feature_scaling"])
    if params["path"] not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {params['path']!r}")
    for name in ("in_memory_max_mb", "tol", "block_mb"):
        if not isinstance(params[name], (int, float)) or not params[name] > 0:
            raise ValueError(f"{name} must be a number > 0, got {params[name]!r}")
    tolerance = params["silhouette_tolerance"]
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"silhouette_tolerance must be a number ≥ 0 and < 1 (silhouette units; 0: the K of the "
                         f"highest silhouette), got {tolerance!r}")


#: fewest valid points a scan needs to be segmented (K ≥ 2 clusters scored by their silhouette)
MIN_POINTS = 3


def check_scan(params, scan) -> None:
    """Refuse, before anything is computed, a scan too small for the parameters: K ≥ 2 clusters
    scored by their silhouette need ≥ 3 points, ``pcs`` components ≥ ``pcs`` points, ``k`` ≥ ``k``
    points (``scan["n_valid"]``: the points the ingest read; failed images lower it further)."""
    n = int(scan["n_valid"])
    if n < MIN_POINTS:
        raise ValueError(f"the scan has {n} valid point(s); segmenting needs at least {MIN_POINTS} "
                         "(leave the segmentation stages out of this workflow)")
    if params["pcs"] > n:
        raise ValueError(f"pcs = {params['pcs']} principal components need at least {params['pcs']} points; "
                         f"the scan has {n} valid points: set pcs ≤ {n}")
    if params["k"] is not None and params["k"] > n:
        raise ValueError(f"k = {params['k']} clusters asked of a scan of {n} valid points: set k ≤ {n}")


_SCAN = dict(per_point=False)

OUTPUTS = (
    Variable("principal_components", ("pc",), "float32", float("nan"), "1",
             "the point's features projected on the principal components (NaN: not processed)"),
    Variable("cluster_label", (), "int32", -1, "1",
             "cluster of the point (natural labeler; 0 = largest cluster; -1: not processed)"),
    Variable("direct_rgb", ("rgb",), "float32", float("nan"), "1",
             "direct coloring: the point's first 3 PCs scaled to [0, 1] (1st-99th percentile of the sample)"),
    Variable("pca_labeler_rgb", ("rgb",), "float32", float("nan"), "1",
             "PCA labeler: the first 3 PCs of the point's cluster centroid, scaled as direct_rgb"),
    Variable("explained_variance_ratio", ("pc",), "float64", float("nan"), "1",
             "fraction of the features' total variance along each PC", **_SCAN),
    Variable("score_k", ("k",), "int32", -1, "1", "K of each score (1 … k_max)", **_SCAN),
    Variable("silhouette_score", ("k",), "float64", float("nan"), "1",
             "silhouette of KMeans with K clusters on the score sample (NaN: K < k_min or too few points)", **_SCAN),
    Variable("calinski_harabasz_score", ("k",), "float64", float("nan"), "1",
             "Calinski-Harabasz score of the same clusterings", **_SCAN),
    Variable("suggested_k", (), "int32", -1, "1",
             "the smallest K whose silhouette score is within silhouette_tolerance of the highest", **_SCAN),
    Variable("n_clusters", (), "int32", -1, "1", "clusters with at least one point in cluster_label", **_SCAN),
    Variable("cluster_size", ("cluster",), "int64", -1, "1", "points per cluster (-1: unused slot)", **_SCAN),
    Variable("cluster_centroid", ("cluster", "pc"), "float32", float("nan"), "1",
             "cluster centroid (KMeans) or component mean (bgm) in PC space", **_SCAN),
    Variable("cluster_rgb", ("cluster", "rgb"), "float32", float("nan"), "1",
             "PCA-labeler colour of each cluster", **_SCAN),
    Variable("delegate_y", ("cluster",), "int32", -1, "1",
             "y index of the cluster's delegate: its point closest to the centroid (-1: none)", **_SCAN),
    Variable("delegate_x", ("cluster",), "int32", -1, "1", "x index of the delegate (-1: none)", **_SCAN),
)

PARAMS = {"pcs": 32, "k": None, "k_min": 2, "k_max": 20, "method": "kmeans", "path": "auto",
          "in_memory_max_mb": 256.0, "score_sample": 3000, "seed": 0, "max_iter": 300, "tol": 1e-4,
          "block_mb": 64.0, "assign": "auto", "feature_scaling": "auto", "silhouette_tolerance": SILHOUETTE_TOLERANCE}

STAGE = StageSpec(
    name="segmentation",
    kind="reduce",
    func=segmentation,
    inputs={"features": "features"},
    outputs=OUTPUTS,
    params=PARAMS,
    dim_sizes={"pc": "pcs", "k": "k_max", "cluster": "k_max", "rgb": 3},
    check=check_params,
    check_scan=check_scan,
    prepare=prepare_segmentation,
    description="index-free segmentation: PCA of the features, KMeans/BGM clusters, scores, labelers, delegates",
)
