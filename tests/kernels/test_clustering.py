"""Segmentation kernels against scikit-learn and brute force (laueflow/kernels/clustering.py)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from laueflow.kernels.clustering import (
    NearestCentroid, fit_in_memory, canonical_order, cluster_stats, fix_component_signs,
                                         hash_uniform, lloyd_sums, merge_cluster_stats, moment_sums,
                                         pca_from_moments, project, silhouette_from_distances,
                                         pairwise_distances, suggest_k, to_rgb,
                                         SILHOUETTE_TOLERANCE)


def _features(n=600, m=24, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, m)) @ rng.normal(size=(m, m)) + 5.0).astype(np.float32)
    x[[3, 77, 410]] = np.nan  # not processed
    return x


def test_pca_from_block_moments_equals_sklearn():
    x = _features()
    sums = sum(moment_sums(block) for block in np.array_split(x, 7))  # blocks add up
    pca = pca_from_moments(sums, 10)
    ok = np.isfinite(x).all(axis=1)
    ref = PCA(n_components=10, svd_solver="full").fit(x[ok].astype(np.float64))
    assert pca["n"] == ok.sum() == 597
    np.testing.assert_allclose(pca["mean"], ref.mean_, rtol=1e-10)
    np.testing.assert_allclose(pca["explained_variance"], ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(pca["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(pca["components"], fix_component_signs(ref.components_), atol=1e-8)
    pcs = project(x, pca["mean"], pca["components"])
    assert pcs.dtype == np.float32 and np.isnan(pcs[[3, 77, 410]]).all()
    signs = np.sign(ref.components_[np.arange(10), np.abs(ref.components_).argmax(axis=1)])
    np.testing.assert_allclose(pcs[ok], ref.transform(x[ok]) * signs, rtol=1e-4, atol=1e-4)


def test_pca_refuses_impossible_requests():
    sums = moment_sums(_features(m=8))
    with pytest.raises(ValueError, match="pcs = 9 components asked of 8 features"):
        pca_from_moments(sums, 9)
    with pytest.raises(ValueError, match="at least 2 processed points"):
        pca_from_moments(moment_sums(np.full((4, 8), np.nan)), 2)
    few = _features(m=8)[:5]  # 4 processed points (row 3 is NaN), 6 PCs asked: a clear error
    with pytest.raises(ValueError, match=r"pcs = 6 principal components need at least 6 processed points; the scan has 4"):  # row 3 is NaN
        fit_in_memory(few, pcs=6, ks=np.arange(2, 4), k=2, method="kmeans", seed=0, score_sample=100, max_iter=10,
                      tol=1e-4)
    with pytest.raises(ValueError, match=r"pcs = 6 principal components need at least 6 processed points; the scan has 4"):
        pca_from_moments(moment_sums(few), 6)  # the distributed path refuses as the in-memory one


def test_component_signs_largest_entry_positive():
    c = fix_component_signs(np.array([[0.1, -0.9, 0.2], [0.5, 0.1, -0.2]]))
    assert c[0, 1] == 0.9 and c[1, 0] == 0.5


def test_silhouette_from_distances_equals_sklearn():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 5))
    points[:100] += 4
    labels = np.r_[np.zeros(100, int), rng.integers(1, 4, 199), [7]]  # one cluster of a single point
    d = pairwise_distances(points)
    assert silhouette_from_distances(d, labels) == pytest.approx(silhouette_score(points, labels), abs=1e-12)


def test_suggest_k_is_the_best_silhouette_at_tolerance_zero():
    assert suggest_k([2, 3, 4, 5], np.array([0.3, 0.8, 0.8, 0.1]), 0.0) == 3  # tie → smaller K
    assert suggest_k([2, 3, 4, 5], np.array([0.3, 0.7, 0.8, 0.1]), 0.0) == 4
    assert suggest_k([2, 3], np.array([np.nan, np.nan])) == -1


def test_suggest_k_is_the_fewest_clusters_within_the_tolerance():
    """The grains 22 bar scan's silhouettes at K 11–14 (0.7104 at K 12 for its 12 domains, 0.7122
    at K 13, which adds a cluster of 3 points): the default tolerance takes 12."""
    ks = [10, 11, 12, 13, 14]
    sil = np.array([0.6865, 0.6999, 0.7104, 0.7122, 0.6664])
    assert suggest_k(ks, sil, 0.0) == 13
    assert SILHOUETTE_TOLERANCE == 0.005 and suggest_k(ks, sil) == 12
    assert suggest_k(ks, sil, 0.02) == 11  # 0.6999 ≥ 0.7122 − 0.02
    assert suggest_k(ks, np.array([np.nan, 0.5, np.nan, 0.49, 0.2]), 0.05) == 11  # NaN never counts
    with pytest.raises(ValueError, match="tolerance must be ≥ 0"):
        suggest_k(ks, sil, -0.01)


def test_hash_sample_is_per_point_and_uniform():
    u = hash_uniform(np.arange(200_000), seed=3)
    np.testing.assert_array_equal(u[1000:2000], hash_uniform(np.arange(1000, 2000), seed=3))  # any blocks
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 19_500
    assert not np.array_equal(u[:100], hash_uniform(np.arange(100), seed=4))


def test_lloyd_block_sums_add_up_to_one_step():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(500, 3))
    points[10] = np.nan
    centroids = rng.normal(size=(4, 3))
    total = sum(lloyd_sums(block, centroids) for block in np.array_split(points, 6))
    ok = np.isfinite(points).all(axis=1)
    labels = NearestCentroid(centroids).predict(points[ok])
    for c in range(4):
        np.testing.assert_allclose(total[c, :3], points[ok][labels == c].sum(axis=0), atol=1e-9)
        assert total[c, 3] == (labels == c).sum()


def test_delegates_are_the_points_closest_to_their_centroid_over_blocks():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(1000, 4))
    points[5] = np.nan
    centroids = rng.normal(size=(5, 4))
    index = np.arange(1000) + 70  # global indices of the rows
    blocks = np.stack([cluster_stats(points[s], NearestCentroid(centroids), centroids, index[s])
                       for s in np.array_split(np.arange(1000), 9)])
    counts, delegate = merge_cluster_stats(blocks)
    ok = np.isfinite(points).all(axis=1)
    labels = np.full(1000, -1)
    labels[ok] = NearestCentroid(centroids).predict(points[ok])
    d2 = ((points - centroids[np.clip(labels, 0, None)]) ** 2).sum(axis=1)
    for c in range(5):
        members = np.flatnonzero(labels == c)
        assert counts[c] == len(members)
        assert delegate[c] == index[members[np.argmin(d2[members])]]


def test_canonical_order_by_size_then_delegate():
    new = canonical_order(np.array([5, 9, 5, 0]), np.array([40, 3, 12, -1]))
    assert new.tolist() == [2, 0, 1, 3]


def test_rgb_is_nan_where_not_processed():
    pcs = np.array([[0.0, 1.0, 2.0, 9.0], [np.nan] * 4])
    rgb = to_rgb(pcs, np.array([0.0, 0.0, 0.0]), np.array([2.0, 2.0, 1.0]))
    np.testing.assert_array_equal(rgb[0], [0.0, 0.5, 1.0])
    assert np.isnan(rgb[1]).all() and rgb.dtype == np.float32


# --------------------------------------------------------------------------- unmixing
def test_nonnegative_weights_equal_scipy_nnls_row_by_row():
    from scipy.optimize import nnls

    from laueflow.kernels.clustering import nonnegative_weights

    rng = np.random.default_rng(3)
    ends = np.abs(rng.normal(size=(50, 4, 12)))
    true = np.where(rng.random((50, 4)) < 0.5, rng.random((50, 4)), 0.0)
    points = np.einsum("ne,ned->nd", true, ends) + rng.normal(scale=0.05, size=(50, 12))
    points[:5] = -ends[:5, 0]  # all weights 0
    w = nonnegative_weights(ends, points)
    ref = np.array([nnls(ends[i].T, points[i])[0] for i in range(50)])
    np.testing.assert_allclose(w, ref, atol=1e-6)
    assert (w >= 0).all() and (w[:5] == 0).all()
    # every row solved on its own: the blocks do not matter
    np.testing.assert_array_equal(np.concatenate([nonnegative_weights(ends[s], points[s]) for s in
                                                  np.array_split(np.arange(50), 7)]),
                                  nonnegative_weights(ends, points))


def _spot_patterns(k=3, m=64, seed=5):
    """``k`` non-negative sparse 'Laue images' (m pixels, a few bright spots each)."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((k, m))
    for j in range(k):
        patterns[j, rng.choice(m, 6, replace=False)] = rng.uniform(20, 100, 6)
    return patterns


def test_unmixing_labels_the_dominant_domain_where_the_nearest_centroid_does_not():
    from laueflow.kernels.clustering import UnmixingLabeler, unmixing_frame

    a, b, c = _spot_patterns()
    b = 3 * b  # a bright grain
    # a point that sees 60 % of the faint grain a, 40 % of b, twice as bright overall (beam, thickness)
    mixed = 2.0 * (0.6 * a + 0.4 * b)
    pure = np.stack([a, b, c, 0.9 * a, 1.1 * b, 1.05 * c])
    x = np.vstack([pure, mixed])
    mean = x.mean(axis=0)
    components = fix_component_signs(np.linalg.svd(x - mean, full_matrices=False)[2][:5])
    pcs = (x - mean) @ components.T
    centroids = (np.stack([a, b, c]) - mean) @ components.T
    assert NearestCentroid(centroids).predict(pcs[-1:])[0] == 1  # nearest: the bright grain
    labeler = UnmixingLabeler(centroids, *unmixing_frame(mean, components))
    assert labeler.predict(pcs).tolist() == [0, 1, 2, 0, 1, 2, 0]
    near, w = labeler.weights(pcs[-1:])
    weights = dict(zip(near[0].tolist(), w[0]))
    assert weights[0] == pytest.approx(1.2, abs=1e-3) and weights[1] == pytest.approx(0.8, abs=1e-3)


def test_pure_sums_leave_out_the_mixed_points():
    from laueflow.kernels.clustering import UnmixingLabeler, pure_sums, unmixing_frame

    a, b, _ = _spot_patterns()
    x = np.vstack([a, 1.1 * a, b, 0.5 * a + 0.5 * b, 0.95 * a + 0.05 * b, np.full_like(a, np.nan)])
    mean = np.nanmean(x, axis=0)
    components = fix_component_signs(np.linalg.svd(x[:5] - mean, full_matrices=False)[2][:4])
    pcs = (x - mean) @ components.T
    labeler = UnmixingLabeler(pcs[[0, 2]], *unmixing_frame(mean, components))
    sums = pure_sums(pcs, labeler, 0.9)
    assert sums[:, -1].tolist() == [3, 1]  # a, 1.1 a, 0.95 a + 0.05 b | b; the 50/50 point and the NaN row left out
    np.testing.assert_allclose(sums[0, :-1], pcs[[0, 1, 4]].sum(axis=0), atol=1e-9)


def test_feature_scale_standardizes_with_the_70th_percentile_of_the_spreads_as_floor():
    from laueflow.kernels.clustering import STANDARDIZE_FLOOR_QUANTILE, feature_scale

    sigma = np.array([0.0, 1.0, 2.0, 100.0])
    assert STANDARDIZE_FLOOR_QUANTILE == 0.7
    np.testing.assert_allclose(feature_scale(sigma), 1 / (sigma + 11.8))  # 2 + 0.1 · (100 − 2)
    np.testing.assert_array_equal(feature_scale(sigma, "none"), np.ones(4))
    np.testing.assert_array_equal(feature_scale(np.zeros(3)), np.ones(3))  # a constant scan
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        feature_scale(sigma, "zscore")


def test_scaled_moments_and_scale_from_moments_equal_the_direct_computation():
    from laueflow.kernels.clustering import feature_scale, scale_from_moments, scaled_moments

    rng = np.random.default_rng(4)
    x = rng.gamma(0.3, 5.0, size=(300, 12)) * rng.uniform(0.1, 50, size=12)
    x[7] = np.nan  # a point not processed
    ok = np.isfinite(x).all(axis=1)
    scale = scale_from_moments(moment_sums(x))
    np.testing.assert_allclose(scale, feature_scale(x[ok].std(axis=0, ddof=1)), rtol=1e-10)
    np.testing.assert_allclose(scaled_moments(moment_sums(x), scale), moment_sums(x * scale), rtol=1e-10)
    pca = pca_from_moments(scaled_moments(moment_sums(x), scale), 4)
    direct = pca_from_moments(moment_sums(x * scale), 4)
    np.testing.assert_allclose(project(x, pca["mean"], pca["components"], scale),
                               project(x * scale, direct["mean"], direct["components"]), rtol=1e-5, atol=1e-5)


def test_empty_clusters_are_the_clusters_of_images_without_diffraction():
    from laueflow.kernels.clustering import empty_clusters

    rng = np.random.default_rng(0)
    pattern = np.zeros(32)
    pattern[[3, 9, 20]] = [500.0, 80.0, 1200.0]
    images = np.vstack([np.tile(pattern, (5, 1)), np.tile(0.3 * pattern[::-1], (5, 1)), np.abs(rng.normal(0, 2, (5, 32)))])
    points = np.repeat([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], 5, axis=0)  # the sample's PCs: 3 clusters
    centroids = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [9.0, 9.0]])  # the 4th holds no sample point
    assert empty_clusters(images, points, centroids).tolist() == [False, False, True, False]  # dim (0.3) ≠ empty
    assert empty_clusters(images[:0], points[:0], centroids).tolist() == [False] * 4
    assert empty_clusters(images, points, centroids[:1]).tolist() == [False]


def test_points_off_the_sample_do_not_take_the_diffracting_points_labels():
    """An empty cluster's image is zero, so its unmixing weight is free: without the empty rule a
    diffracting point whose image leans a little towards the noise of the empty points gets their
    label (here, with the same centroids, 23 of the 220 diffracting points); its share is the beam
    fraction the other candidates leave."""
    from off_sample_features import off_sample_features

    from laueflow.kernels.clustering import fit_in_memory, project

    for seed in range(4):
        x, domain = off_sample_features(seed)
        fit = fit_in_memory(x, pcs=8, ks=np.arange(2, 8), k=4, method="kmeans", seed=0, score_sample=3000,
                            max_iter=300, tol=1e-4, assign="unmix", feature_scaling="standardize")
        labeler, points = fit["labeler"], project(x, fit["mean"], fit["components"], fit["scale"])
        labels = labeler.predict(points)
        assert labeler.empty.sum() == 1 and set(labels[domain < 0]) == {int(np.flatnonzero(labeler.empty)[0])}
        assert adjusted_rand_score(domain, labels) == 1.0
        if seed == 0:
            labeler.empty[:] = False  # the rule off
            assert np.sum(labeler.predict(points)[domain >= 0] == labels[domain < 0][0]) == 23


def test_nearest_reference_stays_in_the_cluster():
    from laueflow.kernels.clustering import nearest_reference

    points = np.array([[0.0, 0.0], [9.0, 0.0], [1.0, 0.0], [np.nan, 0.0], [5.0, 5.0]])
    labels = np.array([0, 0, 1, 0, 2])
    ref_points = np.array([[10.0, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    ref_labels = np.array([0, 0, 1])
    # point 0 is nearest ref 2 in space, but ref 2 is of cluster 1: it takes ref 1
    np.testing.assert_array_equal(nearest_reference(labels, points, ref_labels, ref_points), [1, 0, 2, -1, -1])
    assert len(nearest_reference(labels[:0], points[:0], ref_labels, ref_points)) == 0
    np.testing.assert_array_equal(nearest_reference(labels, points, ref_labels[:0], ref_points[:0]), [-1] * 5)
