"""The segmentation reduce stage on synthetic feature arrays (Gaussian blobs in 256-D) on a real
local cluster: the distributed path equals the scikit-learn path, the scores find K, delegates
are real points of their clusters, unprocessed points stay unlabelled."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.stages.segmentation import PARAMS as STAGE_PARAMS, choose_path, segmentation

K_TRUE = 6
NOT_PROCESSED = [(0, 1), (7, 30), (19, 0)]


def gaussian_blobs(ny=20, nx=40, m=256, k=K_TRUE, sigma=1.0, seed=7):
    """``(ny, nx, m)`` float32 features: ``k`` Gaussian blobs (centres N(0, 1) in m-D) of
    unequal sizes; NaN at the points not processed. Returns features and the true labels (−1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, m))
    truth = rng.choice(k, size=(ny, nx), p=np.linspace(1, 2, k) / np.linspace(1, 2, k).sum())
    x = (centres[truth] + rng.normal(scale=sigma, size=(ny, nx, m))).astype(np.float32)
    for y, xx in NOT_PROCESSED:
        x[y, xx], truth[y, xx] = np.nan, -1
    return x, truth


class Writer:
    """Keeps what the stage writes, as numpy arrays (the pipeline's writer writes the store)."""

    layout = None

    def __init__(self):
        self.out = {}

    def write(self, name, array):
        assert name not in self.out, f"{name} written twice"
        self.out[name] = np.asarray(array.compute() if hasattr(array, "compute") else array)


@pytest.fixture(scope="module")
def client():
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as c:
        yield c


@pytest.fixture(scope="module")
def blobs():
    return gaussian_blobs()


@pytest.fixture(scope="module")
def runs(client, blobs):
    """The same features through both paths (chunked like a results store: (1, 8) tiles), and
    the distributed path again with other blocks."""
    x, _ = blobs
    features = da.from_array(x, chunks=(1, 8, x.shape[2]))
    out = {}
    for name, params in {"in_memory": {"path": "in_memory"}, "distributed": {"path": "distributed"},
                         "distributed_small_blocks": {"path": "distributed", "block_mb": 0.2}}.items():
        writer = Writer()
        info = segmentation(features, client=client, writer=writer, k_max=10, **params)
        out[name] = (writer.out, info)
    return out


def test_distributed_path_equals_the_sklearn_path(runs, blobs):
    _, truth = blobs
    memory, info_m = runs["in_memory"]
    assert info_m["path"] == "in_memory" and runs["distributed"][1]["path"] == "distributed"
    assert runs["distributed_small_blocks"][1]["blocks"] > runs["distributed"][1]["blocks"]
    ok = truth >= 0
    for name in ("distributed", "distributed_small_blocks"):
        dist, _ = runs[name]
        # PCs equal (the same sign rule), labels equal up to a permutation (here: the same numbers)
        np.testing.assert_allclose(dist["principal_components"], memory["principal_components"], atol=2e-4)
        np.testing.assert_allclose(dist["explained_variance_ratio"], memory["explained_variance_ratio"], rtol=1e-8)
        assert adjusted_rand_score(memory["cluster_label"][ok], dist["cluster_label"][ok]) == 1.0
        np.testing.assert_array_equal(dist["cluster_label"], memory["cluster_label"])
        np.testing.assert_allclose(dist["cluster_centroid"], memory["cluster_centroid"], atol=1e-4)
        for key in ("delegate_y", "delegate_x", "cluster_size", "suggested_k", "score_k"):
            np.testing.assert_array_equal(dist[key], memory[key], err_msg=key)
        np.testing.assert_allclose(dist["silhouette_score"], memory["silhouette_score"], rtol=1e-6)
        np.testing.assert_allclose(dist["calinski_harabasz_score"], memory["calinski_harabasz_score"], rtol=1e-6)
    assert adjusted_rand_score(truth[ok], memory["cluster_label"][ok]) == 1.0


def test_scores_pick_the_number_of_blobs(runs):
    out, info = runs["distributed"]
    assert out["score_k"].tolist() == list(range(1, 11))
    assert np.isnan(out["silhouette_score"][0]) and np.isfinite(out["silhouette_score"][1:]).all()
    assert out["suggested_k"] == K_TRUE == info["k"] == out["n_clusters"]
    assert out["score_k"][np.nanargmax(out["silhouette_score"])] == K_TRUE
    assert out["score_k"][np.nanargmax(out["calinski_harabasz_score"])] == K_TRUE
    assert out["silhouette_score"][K_TRUE - 1] > out["silhouette_score"][K_TRUE - 2] + 0.03


def test_delegates_are_real_points_of_their_cluster(runs):
    out, _ = runs["distributed"]
    labels, pcs = out["cluster_label"], out["principal_components"]
    sizes = out["cluster_size"]
    assert sizes[:K_TRUE].sum() == labels.size - len(NOT_PROCESSED) and (sizes[K_TRUE:] == -1).all()
    assert (np.diff(sizes[:K_TRUE]) <= 0).all()  # numbered by decreasing size
    for c in range(K_TRUE):
        y, x = out["delegate_y"][c], out["delegate_x"][c]
        assert labels[y, x] == c
        members = pcs[labels == c].astype(np.float64)
        d2 = ((members - out["cluster_centroid"][c]) ** 2).sum(axis=1)
        own = ((pcs[y, x].astype(np.float64) - out["cluster_centroid"][c]) ** 2).sum()
        assert own == pytest.approx(d2.min(), rel=1e-9)
    assert (out["delegate_y"][K_TRUE:] == -1).all()


def test_labelers_and_points_not_processed(runs):
    out, _ = runs["distributed"]
    for y, x in NOT_PROCESSED:
        assert out["cluster_label"][y, x] == -1
        assert np.isnan(out["principal_components"][y, x]).all()
        assert np.isnan(out["direct_rgb"][y, x]).all() and np.isnan(out["pca_labeler_rgb"][y, x]).all()
    ok = out["cluster_label"] >= 0
    assert out["cluster_label"].dtype == np.int32
    for name in ("direct_rgb", "pca_labeler_rgb"):
        assert out[name].dtype == np.float32 and (out[name][ok] >= 0).all() and (out[name][ok] <= 1).all()
    # PCA labeler: every point of a cluster has its centroid's colour; direct coloring varies within it
    np.testing.assert_array_equal(out["pca_labeler_rgb"][ok], out["cluster_rgb"][out["cluster_label"][ok]])
    assert out["direct_rgb"][out["cluster_label"] == 0].std(axis=0).max() > 0.01
    ratio = out["explained_variance_ratio"]
    assert ratio.shape == (32,) and (np.diff(ratio) <= 1e-12).all() and 0.05 < ratio.sum() < 1


def test_bayesian_gaussian_mixture_separates_the_blobs(client, blobs):
    x, truth = blobs
    writer = Writer()
    info = segmentation(da.from_array(x, chunks=(4, 40, x.shape[2])), client=client, writer=writer,
                        method="bgm", k=K_TRUE, k_max=8, pcs=8)
    ok = truth >= 0
    assert info["method"] == "bgm" and writer.out["n_clusters"] == K_TRUE
    assert adjusted_rand_score(truth[ok], writer.out["cluster_label"][ok]) == 1.0


def test_path_choice_follows_the_matrix_size():
    assert choose_path("auto", 100e6, 256, [4e9, 8e9])[0] == "in_memory"
    path, reason = choose_path("auto", 300e6, 256, [4e9])
    assert path == "distributed" and "300.0 MB > 256 MB" in reason
    assert choose_path("auto", 100e6, 256, [0.5e9])[0] == "distributed"  # > 1/8 of a worker
    assert choose_path("distributed", 1e3, 256, [])[0] == "distributed"


def spot_pattern_scan(ny=12, nx=24, m=256, k=4, seed=3):
    """``(ny, nx, m)`` float32 'linear pixel features' of a scan of ``k`` vertical stripes, each
    domain a sparse non-negative pattern (10 spots of very different brightness; every other
    domain 2 × brighter); the two points either side of a boundary see 60 % of their own domain
    and 40 % of the neighbour, every point has its own overall intensity (× 0.5–2) and noise. Returns features and the dominant
    domain per point."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((k, m))
    for j in range(k):
        patterns[j, rng.choice(m, 10, replace=False)] = 10 ** rng.uniform(1, 3, 10) * (2 if j % 2 else 1)
    width = nx // k
    own = np.broadcast_to(np.arange(nx) // width, (ny, nx))
    pos = np.arange(nx) % width
    other = np.where(pos == 0, own - 1, np.where(pos == width - 1, own + 1, own))
    other = np.clip(other, 0, k - 1)
    w_own = np.where(other != own, 0.6, 1.0)
    x = w_own[..., None] * patterns[own] + (1 - w_own)[..., None] * patterns[other]
    x *= rng.uniform(0.5, 2.0, size=(ny, nx, 1))
    x += rng.normal(scale=1.0, size=x.shape)
    return x.astype(np.float32), np.ascontiguousarray(own)


def test_standardized_features_label_boundary_points_by_their_dominant_domain_on_both_paths(client):
    """Points that see 60 % of their domain and 40 % of the neighbour's, each point at its own
    brightness (× 0.5–2): standardized, every point gets its dominant domain, by unmixing and by
    the nearest centroid. Unscaled, the brightness decides the clusters (KMeans well started finds
    a lower sum of squares that is not the domains) — why `standardize` is the default. The
    distributed path gives the in-memory labels and delegates on both scalings. (That unmixing
    labels mixed points by their dominant domain where the nearest centroid does not, at given
    centroids: tests/kernels/test_clustering.py.)"""
    x, truth = spot_pattern_scan()
    features = da.from_array(x, chunks=(1, 8, x.shape[2]))
    got = {}
    for name, params in {"unmix_in_memory": {"path": "in_memory"},
                         "unmix_distributed": {"path": "distributed", "block_mb": 0.05},
                         "nearest": {"path": "in_memory", "assign": "nearest"},
                         "unmix_standardized": {"path": "in_memory", "feature_scaling": "standardize"},
                         "nearest_standardized": {"path": "in_memory", "feature_scaling": "standardize",
                                                  "assign": "nearest"},
                         "unmix_standardized_distributed": {"path": "distributed", "block_mb": 0.05,
                                                            "feature_scaling": "standardize"}}.items():
        writer = Writer()
        params = {"feature_scaling": "none", **params}
        info = segmentation(features, client=client, writer=writer, k=4, k_max=6, pcs=8, **params)
        assert info["assign"] == params.get("assign", "unmix")
        assert info["feature_scaling"] == params["feature_scaling"]
        got[name] = (writer.out, adjusted_rand_score(truth.ravel(), writer.out["cluster_label"].ravel()))
    assert got["unmix_standardized"][1] == got["nearest_standardized"][1] == 1.0
    assert got["unmix_in_memory"][1] < 0.9 and got["nearest"][1] < 0.9
    for a, b in (("unmix_distributed", "unmix_in_memory"), ("unmix_standardized_distributed", "unmix_standardized")):
        for key in ("cluster_label", "delegate_y", "delegate_x"):
            np.testing.assert_array_equal(got[a][0][key], got[b][0][key])
    with pytest.raises(ValueError, match="assign: unmix needs method: kmeans"):
        segmentation(features, client=client, writer=Writer(), method="bgm", assign="unmix", k=4)


def test_standardized_features_find_every_domain_despite_one_saturated_spot(client):
    """One domain holds a spot 30 × brighter than any other (a saturated reflection): on the
    unscaled features it alone decides the PCA and the scores suggest K = 2; standardized
    (each feature by its spread over the scan + the 70th percentile of the spreads) every domain is found."""
    x, truth = spot_pattern_scan(nx=36, k=6, seed=5)
    x = x.copy()
    brightest = int(np.argmax(x[truth == 2].mean(axis=0)))
    x[..., brightest] *= np.where(truth == 2, 30.0, 1.0)
    features = da.from_array(x, chunks=(2, 36, x.shape[2]))
    out = {}
    for scaling in ("none", "standardize"):
        writer = Writer()
        info = segmentation(features, client=client, writer=writer, k_max=10, pcs=8, feature_scaling=scaling)
        out[scaling] = (info["suggested_k"], adjusted_rand_score(truth.ravel(), writer.out["cluster_label"].ravel()))
    assert out["none"][0] == 2 and out["none"][1] < 0.5
    assert out["standardize"] == (6, 1.0)
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        segmentation(features, client=client, writer=Writer(), feature_scaling="zscore")


def test_points_off_the_sample_form_their_own_cluster_on_both_paths(client):
    """Points without diffraction (off the sample) are one cluster, and no diffracting point takes
    its label, on the in-memory and the distributed path alike (the empty cluster is found from the
    same hash sample on both)."""
    from off_sample_features import off_sample_features

    x, domain = off_sample_features(1)
    features = da.from_array(x.reshape(14, 20, -1).astype(np.float32), chunks=(2, 20, x.shape[1]))
    labels = {}
    for path in ("in_memory", "distributed"):
        writer = Writer()
        info = segmentation(features, client=client, writer=writer, k=4, k_max=6, pcs=8, path=path, block_mb=0.01)
        assert info["assign"] == "unmix" and info["path"] == path
        assert info["n_empty_clusters"] == 1 and "1 cluster(s) of images without diffraction" in info["log"][-1]
        assert info["standardize_floor_quantile"] == 0.7
        labels[path] = writer.out["cluster_label"].ravel()
    np.testing.assert_array_equal(labels["distributed"], labels["in_memory"])
    assert adjusted_rand_score(domain, labels["in_memory"]) == 1.0


def test_feature_scaling_auto_standardizes_the_feature_stage_features_only():
    """``auto`` stays (→ standardize) for laueflow's own features of any method or scaling; a
    plug-in's features (or none recorded) are left as they are."""
    from laueflow.stages.segmentation import prepare_segmentation, resolve_feature_scaling

    params = dict(STAGE_PARAMS)
    for stages in (["plugin_features"], None):
        assert prepare_segmentation(params, {"workflow_stages": stages})["feature_scaling"] == "none"
    for stages in ([{"features": {"method": "pixels"}}], ["features"], [{"features": {"method": "autoencoder"}}],
                   [{"features": {"pixel_scaling": "log"}}]):
        resolved = prepare_segmentation(params, {"workflow_stages": stages})["feature_scaling"]
        assert resolved == "auto" and resolve_feature_scaling(resolved) == "standardize"
    explicit = {**params, "feature_scaling": "standardize"}
    assert prepare_segmentation(explicit, {"workflow_stages": ["plugin_features"]})["feature_scaling"] == "standardize"


def test_assign_auto_is_nearest_when_the_workflow_features_are_not_linear():
    """Unmixing assumes features linear in the image: ``auto`` becomes ``nearest`` for the
    autoencoder's features or log pixels, stays for linear pixels or a plug-in's features."""
    from laueflow.stages.base import get_stage
    from laueflow.stages.features import linear_features

    spec = get_stage("segmentation")
    base = dict(spec.params)
    said = []

    def prepared(stages, **params):
        return spec.prepared_params({**base, **params}, {"workflow_stages": stages, "log": said.append})["assign"]

    assert linear_features(["peaks", {"features": {"method": "pixels", "pixel_scaling": "linear"}}]) is True
    assert linear_features(["features"]) is True  # the defaults
    assert linear_features([{"features": {"method": "autoencoder"}}]) is False
    assert linear_features([{"features": {"method": "pixels", "pixel_scaling": "log"}}]) is False
    assert linear_features(["test_features"]) is None and linear_features(None) is None
    assert prepared([{"features": {"method": "autoencoder"}}]) == "nearest" and "not linear" in said[-1]
    assert prepared([{"features": {"method": "pixels", "pixel_scaling": "percentile"}}]) == "nearest"
    assert prepared([{"features": {"method": "pixels"}}]) == "auto"
    assert prepared(["test_features"]) == "auto"  # a plug-in's features: the kernel's rule
    assert prepared([{"features": {"method": "autoencoder"}}], assign="unmix") == "unmix"  # asked for: kept
    assert prepared([{"features": {"method": "autoencoder"}}], method="bgm") == "auto"


def test_check_scan_refuses_scans_too_small_for_the_parameters():
    from laueflow.stages.segmentation import check_scan

    params = dict(STAGE_PARAMS)
    check_scan(params, {"n_points": 40, "n_valid": 32})  # pcs 32 of 32 points: fits
    with pytest.raises(ValueError, match="pcs = 32 principal components need at least 32 points; the scan has 31"):
        check_scan(params, {"n_points": 40, "n_valid": 31})
    with pytest.raises(ValueError, match="the scan has 2 valid point"):
        check_scan({**params, "pcs": 3}, {"n_points": 2, "n_valid": 2})
    with pytest.raises(ValueError, match="k = 12 clusters asked of a scan of 10 valid points"):
        check_scan({**params, "pcs": 4, "k": 12}, {"n_points": 10, "n_valid": 10})
    check_scan({**params, "pcs": 4, "k": 10}, {"n_points": 10, "n_valid": 10})
