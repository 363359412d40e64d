"""LaueNN indexing: features, classes, tiny-model indexing, evaluation, cache, errors."""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.kernels.histograms import angular_histograms, angular_histograms_torch, n_bins_for
from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.physics.materials import get_material
from laueflow.stages.indexing.classes import ClassTable, build_class_table, primitive_hkl
from laueflow.stages.indexing.evaluate import evaluate_indexing
from laueflow.stages.indexing.stage import index_peaks, index_stage
from laueflow.io.indexer_files import load_indexer
from laueflow.pipeline.indexers import (IndexerNotTrainedError, check_index_model, get_indexer, model_path,
                                        resolve_index_model)
from laueflow.pipeline.models import clear_model_cache, load_models
from laueflow.stages.base import get_stage
from laueflow.stages.indexing.training import IndexerConfig, train_indexer
from laueflow.stages.indexing.training_data import grain_count_table, simulate_patterns
from tiny_models import TINY, forbid_indexer_training


# --------------------------------------------------------------------------- features
def test_histograms_hand_computed():
    # all spots at chi = 0: the angle between q̂'s is |θ1 − θ2| (θ = 2θ/2)
    tth = np.array([[90.0, 97.0, 110.6, np.nan], [100.0, 100.0, np.nan, np.nan]])
    chi = np.array([[0.0, 0.0, 0.0, np.nan], [5.0, 5.0, np.nan, np.nan]])
    h = angular_histograms(tth, chi, max_angle_deg=12.0, step_deg=1.0, normalise=False, dtype=np.float64)
    assert h.shape == (2, 4, 12) and n_bins_for(12.0, 1.0) == 12
    want = np.zeros((2, 4, 12))
    want[0, 0, [3, 10]] = 1   # 3.5°, 10.3°
    want[0, 1, [3, 6]] = 1    # 3.5°, 6.8°
    want[0, 2, [10, 6]] = 1   # 10.3°, 6.8°
    want[1, 0, 0] = want[1, 1, 0] = 1  # a coincident spot counts (0°), the spot itself does not
    np.testing.assert_array_equal(h, want)
    # angles beyond the range are dropped; normalisation: tallest bin = 1
    tth2 = np.array([[90.0, 93.0, 95.0, 97.0, 130.0]])  # Δ = 1.5, 2.5, 3.5, 20°
    chi2 = np.zeros_like(tth2)
    hn = angular_histograms(tth2, chi2, max_angle_deg=12.0, step_deg=1.0, n_centres=1)
    np.testing.assert_allclose(hn[0, 0, [1, 2, 3]], [1.0, 1.0, 1.0])
    assert hn[0, 0].sum() == 3.0
    # torch implementation: same numbers
    ht = angular_histograms_torch(tth, chi, max_angle_deg=12.0, step_deg=1.0, normalise=False).numpy()
    np.testing.assert_array_equal(ht, want)


def test_histograms_numpy_torch_agree_on_patterns():
    ps = simulate_patterns([get_material("Cu")], DEFAULT_CALIBRATION, np.full((6, 1), 3), seed=4, mode="all")
    a = angular_histograms(ps.two_theta, ps.chi, n_centres=30)
    b = angular_histograms_torch(ps.two_theta, ps.chi, n_centres=30).numpy()
    assert a.shape == (6, 30, 200)
    np.testing.assert_array_equal(a, b)
    assert np.allclose(a.max(axis=-1)[np.isfinite(ps.two_theta[:, :30])], 1.0)



def test_histogram_smoothing_is_a_gaussian_with_zero_ends():
    from scipy.ndimage import gaussian_filter1d

    # one neighbour at 5.5° (bin 5) and one at 0.2° (bin 0, next to the lower end)
    tth = np.array([[90.0, 101.0, 90.4]])
    chi = np.zeros_like(tth)
    raw = angular_histograms(tth, chi, max_angle_deg=12.0, step_deg=1.0, n_centres=1, normalise=False,
                             dtype=np.float64)
    sm = angular_histograms(tth, chi, max_angle_deg=12.0, step_deg=1.0, n_centres=1, normalise=False,
                            dtype=np.float64, smooth_bins=1.0)
    w = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    w /= w.sum()
    want = np.zeros(12)
    want[1:10] += w          # bin 5 spread over bins 1…9
    want[0:5] += w[4:]       # bin 0: the half below 0° is lost (zero padding)
    np.testing.assert_allclose(sm[0, 0], want, atol=1e-15)
    np.testing.assert_allclose(sm, gaussian_filter1d(raw, 1.0, axis=-1, mode="constant"), atol=1e-15)
    ps = simulate_patterns([get_material("Cu")], DEFAULT_CALIBRATION, np.full((4, 1), 2), seed=3, mode="all")
    a = angular_histograms(ps.two_theta, ps.chi, n_centres=20, smooth_bins=1.5)
    b = angular_histograms_torch(ps.two_theta, ps.chi, n_centres=20, smooth_bins=1.5).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.allclose(a.max(axis=-1)[np.isfinite(ps.two_theta[:, :20])], 1.0)

# --------------------------------------------------------------------------- classes
def test_cubic_classes():
    ct = build_class_table([get_material("Cu")], 2)
    assert ct.class_hkl.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 1, 0], [2, 1, 1], [2, 2, 1]]
    assert [len(m) for m in ct.members] == [6, 12, 8, 24, 24, 24]
    # harmonics are merged: 200, 00-4 → {100}; 2-2-2 → {111}; symmetry: -3 3 3 → {111}
    assert ct.label(0, [[2, 0, 0], [0, 0, -4], [2, -2, -2], [-3, 3, 3], [0, 2, 2], [1, 2, 0], [3, 1, 0]]).tolist() \
        == [0, 0, 2, 2, 1, 3, -1]
    np.testing.assert_array_equal(primitive_hkl([[4, 2, 2], [0, 0, 0]]), [[2, 1, 1], [0, 0, 0]])
    round_trip = ClassTable.from_dict(ct.to_dict())
    assert round_trip.label(0, [[6, 6, 0]]).tolist() == [1]


def test_hexagonal_classes():
    ct = build_class_table([get_material("GaN")], 2)
    lab = ct.label(0, [[0, 0, 1], [0, 0, -3], [1, 0, 0], [0, 1, 0], [-1, 1, 0], [1, 1, 0], [-1, 2, 0],
                       [1, 0, 1], [1, 0, -1], [0, -1, 1]])
    assert lab[0] == lab[1]                      # 00l
    assert len(set(lab[2:5])) == 1               # {10-10}
    assert lab[5] == lab[6] and lab[5] != lab[2]  # {11-20} (whole family, incl. -1 2 0)
    assert len(set(lab[7:10])) == 1              # {10-11}: 6/mmm has the mirror ⊥ c
    sizes = {tuple(ct.class_hkl[c]): len(ct.members[c]) for c in range(ct.n_classes)}
    assert sizes[(0, 0, 1)] == 2 and sizes[(1, 0, 0)] == 6 and sizes[tuple(ct.class_hkl[lab[7]])] == 12
    # two materials: classes concatenated, the class gives the material
    two = build_class_table([get_material("GaN"), get_material("Si")], 2)
    assert two.n_classes == ct.n_classes + 6
    assert set(two.class_material.tolist()) == {0, 1}
    assert two.class_material[two.label(1, [[2, 2, 0]])[0]] == 1


def test_training_patterns_shapes_and_grain_counts():
    counts = grain_count_table([3, 1], 2)
    assert len(counts) == 7 * 2 and not (counts.sum(axis=1) == 0).any()
    ps = simulate_patterns([get_material("GaN"), get_material("Si")], DEFAULT_CALIBRATION, counts, seed=1)
    assert ps.ub.shape[:2] == (14, 4)
    n_grains = (ps.grain_material >= 0).sum(axis=1)
    np.testing.assert_array_equal(n_grains, counts.sum(axis=1))
    inten = ps.intensity
    ok = np.isfinite(inten)
    assert np.all(np.diff(np.where(ok, inten, -1.0), axis=1)[ok[:, 1:]] <= 0)  # decreasing intensity
    # disjoint seeds → different orientations
    ps2 = simulate_patterns([get_material("GaN"), get_material("Si")], DEFAULT_CALIBRATION, counts, seed=2)
    assert not np.allclose(np.nan_to_num(ps.ub), np.nan_to_num(ps2.ub))


# --------------------------------------------------------------------------- tiny trained model
@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("indexers")
    indexer = get_indexer(["Cu"], DEFAULT_CALIBRATION, TINY, cache_dir=cache, verbose=False, threads=1)
    return cache, indexer


def test_tiny_model_indexes_single_grains_exactly(tiny_cache):
    _, indexer = tiny_cache
    cu = indexer.materials[0]
    ps = simulate_patterns([cu], DEFAULT_CALIBRATION, np.ones((6, 1), int), seed=123, mode="none")
    out = index_peaks(ps.two_theta, ps.chi, ps.intensity, indexer=indexer, max_grains=2)
    assert out["orientation_matrix"].shape == (6, 2, 3, 3) and out["hkl"].shape == ps.two_theta.shape + (3,)
    ev = evaluate_indexing(out, ps.ub, ps.grain_material, indexer.materials, truth_hkl=ps.hkl,
                           truth_grain=ps.spot_grain)
    assert ev["found"] == 6 and ev["spurious"] == 0
    assert ev["misorientation_deg"].max() < 0.1
    assert ev["hkl_accuracy"] == 1.0
    assert np.all(out["matching_rate"][:, 0] > 90) and np.all(out["matched_spots"][:, 0] >= 8)
    assert np.all(out["grain_material"][:, 1] == -1) and np.isnan(out["orientation_matrix"][:, 1]).all()
    # indexed spots: hkl of the found orientation reproduces the measured q̂ direction
    i = 0
    sel = out["peak_grain"][i] == 0
    q = out["orientation_matrix"][i, 0] @ cu.b_matrix @ out["hkl"][i, sel].T
    q /= np.linalg.norm(q, axis=0)
    from laueflow.physics.geometry import angles_to_qhat

    meas = angles_to_qhat(ps.two_theta[i, sel], ps.chi[i, sel])
    assert np.rad2deg(np.arccos(np.clip(np.sum(q.T * meas, axis=1), -1, 1))).max() < 0.05


def test_tiny_model_multigrain_with_truth(tiny_cache):
    _, indexer = tiny_cache
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.full((4, 1), 3), seed=321, mode="all")
    out = index_peaks(ps.two_theta, ps.chi, ps.intensity, indexer=indexer, max_grains=4)
    ev = evaluate_indexing(out, ps.ub, ps.grain_material, indexer.materials, truth_hkl=ps.hkl,
                           truth_grain=ps.spot_grain)
    assert ev["n_truth_grains"] == 12
    assert ev["found_precise"] >= 11 and ev["spurious"] <= 1
    assert ev["hkl_accuracy"] > 0.95
    # spots given in a shuffled order with their intensities: same grains found
    rng = np.random.default_rng(0)
    perm = rng.permutation(ps.two_theta.shape[1])
    out2 = index_peaks(ps.two_theta[:, perm], ps.chi[:, perm], ps.intensity[:, perm], indexer=indexer, max_grains=4)
    assert (out2["grain_count"] == out["grain_count"]).all()
    np.testing.assert_array_equal(out2["peak_grain"], out["peak_grain"][:, perm])


def test_use_previous_orientations(tiny_cache):
    _, indexer = tiny_cache
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.ones((2, 1), int), seed=77, mode="none")
    out = index_peaks(ps.two_theta, ps.chi, ps.intensity, indexer=indexer, max_grains=1,
                      previous_ub=ps.ub, previous_material=ps.grain_material, confidence_threshold=1.1)
    ev = evaluate_indexing(out, ps.ub, ps.grain_material, indexer.materials)
    assert ev["found_precise"] == 2  # no spot is confident enough: only the seeds can index
    # use_previous inside a batch: the same grain in consecutive images (a scan line)
    line_ub = np.repeat(ps.ub[:1], 3, axis=0)
    line = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.ones((3, 1), int), seed=78, mode="none",
                             orientations=[line_ub[:, 0]])
    seeds = np.full((3, 1, 3, 3), np.nan)
    seeds[0, 0] = line_ub[0, 0]  # only the first image gets a seed; the others inherit
    out = index_peaks(line.two_theta, line.chi, line.intensity, indexer=indexer, max_grains=1,
                      use_previous=True, previous_ub=seeds, confidence_threshold=1.1)
    assert (out["grain_count"] == 1).all()


def test_model_cache_reuse(tiny_cache, monkeypatch):
    cache, indexer = tiny_cache
    path = model_path(["Cu"], DEFAULT_CALIBRATION, TINY, cache)
    assert path.exists() and indexer.path == path
    assert 0.0 < indexer.validation_accuracy <= 1.0
    mtime = path.stat().st_mtime_ns

    forbid_indexer_training(monkeypatch)
    again = get_indexer(["Cu"], DEFAULT_CALIBRATION, TINY, cache_dir=cache, verbose=False)
    assert again.path == path and again.classes.n_classes == indexer.classes.n_classes
    assert path.stat().st_mtime_ns == mtime  # read, not rewritten
    # …and a model that is not cached is trained (the patched trainer raises), not made up
    with pytest.raises(AssertionError, match="must not train again"):
        get_indexer(["Cu"], DEFAULT_CALIBRATION, IndexerConfig(**{**TINY.__dict__, "seed": 1}), cache_dir=cache,
                    verbose=False)
    # env var cache location
    monkeypatch.setenv("LAUEFLOW_CACHE", str(cache.parent / "envcache"))
    assert str(model_path(["Cu"], DEFAULT_CALIBRATION, TINY)).startswith(str(cache.parent / "envcache" / "indexers"))
    # a different calibration or parameter → a different model file
    other = model_path(["Cu"], DEFAULT_CALIBRATION.replace(distance_mm=70.0), TINY, cache)
    assert other != path
    assert model_path(["Cu"], DEFAULT_CALIBRATION, IndexerConfig(**{**TINY.__dict__, "step_deg": 0.2}), cache) != path
    # the loaded model predicts exactly like the trained one
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.ones((2, 1), int), seed=5)
    loaded = load_indexer(path)
    np.testing.assert_array_equal(loaded.log_prior_rank, indexer.log_prior_rank)
    np.testing.assert_array_equal(loaded.log_prior_any, indexer.log_prior_any)
    for ranked in (False, True):
        c1, p1 = indexer.predict(ps.two_theta, ps.chi, intensity_order=ranked)
        c2, p2 = loaded.predict(ps.two_theta, ps.chi, intensity_order=ranked)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_allclose(p1, p2, rtol=1e-6)
    # the pipeline finds the cached model by materials + calibration (no training): validate phase,
    # prepare phase (driver), then the worker loads it once and hands the stage the loaded indexer
    params = {"cache_dir": str(cache), "train_if_missing": False, "indexer_config": TINY.to_dict()}
    context = {"materials": ["Cu"], "calibration": DEFAULT_CALIBRATION}
    check_index_model(params, context)
    assert resolve_index_model(params, context) == path
    spec = get_stage("index")
    clear_model_cache()
    loaded = load_models(spec, {**params, "model": str(path)}, "cpu")["model"]
    assert loaded.path == path and loaded.classes.n_classes == indexer.classes.n_classes
    assert load_models(spec, {**params, "model": str(path)}, "cpu")["model"] is loaded  # once per process
    out = index_stage(ps.two_theta, ps.chi, ps.intensity, calibration=DEFAULT_CALIBRATION, max_grains=2,
                      model=loaded, **params)
    assert out["grain_count"].tolist() == [1, 1]
    assert path.stat().st_mtime_ns == mtime


def test_training_is_deterministic():
    cfg = IndexerConfig(**{**TINY.__dict__, "n_train": 40, "n_validation": 10, "epochs": 2, "hidden": (32, 32, 32)})
    a = train_indexer(["Cu"], DEFAULT_CALIBRATION, cfg, verbose=False, threads=1)
    b = train_indexer(["Cu"], DEFAULT_CALIBRATION, cfg, verbose=False, threads=1)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert np.array_equal(va.numpy(), vb.numpy()), k
    assert a.validation_accuracy == b.validation_accuracy


def test_errors_unknown_and_untrained_material(tmp_path):
    with pytest.raises(ValueError, match="unknown material 'Unobtainium'"):
        get_indexer(["Unobtainium"], DEFAULT_CALIBRATION, TINY, cache_dir=tmp_path)
    context = {"materials": ["Si"], "calibration": DEFAULT_CALIBRATION}
    no_training = {"cache_dir": str(tmp_path), "train_if_missing": False}
    with pytest.raises(IndexerNotTrainedError, match="laueflow train indexer --material Si"):
        check_index_model(no_training, context)
    with pytest.raises(IndexerNotTrainedError, match="laueflow train indexer --material Si"):
        resolve_index_model(no_training, context)
    with pytest.raises(ValueError, match="materials"):
        check_index_model({"cache_dir": str(tmp_path)}, {"materials": None, "calibration": DEFAULT_CALIBRATION})
    with pytest.raises(ValueError, match="calibration"):
        check_index_model({"cache_dir": str(tmp_path)}, {"materials": ["Si"], "calibration": None})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_index_model({"model": str(tmp_path / "missing.pt")}, context)
    assert list(tmp_path.iterdir()) == []  # nothing was trained or written
    for model in (None, str(tmp_path / "missing.pt")):  # a path is not a loaded indexer
        with pytest.raises(ValueError, match="needs a loaded indexer"):
            index_stage(np.full((1, 5), np.nan), np.full((1, 5), np.nan), None, calibration=DEFAULT_CALIBRATION,
                        materials=["Si"], model=model)


def test_stage_registered():
    from laueflow.stages.indexing import STAGE

    spec = get_stage("index")  # the registry reads the built-in declaration on first use
    assert spec is STAGE
    assert "orientation_matrix" in spec.output_names and spec.inputs["peak_chi"] == "peak_chi"
    assert spec.resolved_dim_sizes(spec.params) == {"grain": 5, "i3": 3, "j3": 3}
    spec.validate_params(spec.params)
    for changes, message in [({"max_grains": 0}, "max_grains must be an integer ≥ 1"),
                             ({"mr_min": 60.0}, r"mr_min \(60.0\) must not exceed mr_accept"),
                             ({"confidence_threshold": 1.5}, r"confidence_threshold must be in \[0, 1\]"),
                             ({"device": "gpu"}, "device must be one of auto, cpu, cuda")]:
        with pytest.raises(ValueError, match=f"stage 'index': {message}"):
            spec.validate_params({**spec.params, **changes})


def test_stage_spec_call_with_loaded_model(tiny_cache):
    """The ``index`` StageSpec as a worker runs it: the model path loaded through the model cache."""
    import laueflow.stages.indexing  # noqa: F401

    _, indexer = tiny_cache
    spec = get_stage("index")
    assert spec.models == {"model": "lauenn-indexer"} and "device" in spec.params
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.full((2, 1), 2), seed=8, mode="all")
    batch = {"peak_two_theta": ps.two_theta.astype("float32"), "peak_chi": ps.chi.astype("float32"),
             "peak_intensity": ps.intensity.astype("float32"), "calibration": DEFAULT_CALIBRATION,
             "materials": ["Cu"]}
    params = {**spec.params, "model": str(indexer.path), "max_grains": 3, "device": "cpu"}
    with pytest.raises(ValueError, match="needs a loaded indexer"):
        spec(batch, params)  # a path is not enough: the pipeline loads it
    out = spec(batch, load_models(spec, params, "cpu"))
    assert out["orientation_matrix"].shape == (2, 3, 3, 3) and out["hkl"].dtype == np.int32
    assert out["grain_count"].tolist() == [2, 2] and spec.status(out).tolist() == [0, 0]
    # the same answer from a file loaded by hand
    direct = spec(batch, {**params, "model": load_indexer(indexer.path)})
    for name in spec.output_names:
        np.testing.assert_array_equal(direct[name], out[name], err_msg=name)


def test_precision_option_and_old_model_files(tiny_cache, tmp_path):
    import torch

    from laueflow.stages.indexing.training import _autocast_dtype

    assert _autocast_dtype("float32", "cpu") is None
    assert _autocast_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be"):
        _autocast_dtype("half-ish", "cpu")
    # a format-1 file (before histogram smoothing existed) is read with smoothing off
    _, indexer = tiny_cache
    payload = torch.load(indexer.path, weights_only=False)
    payload["format"] = 1
    for key in ("smooth_bins", "fresh_data", "precision"):
        payload["config"].pop(key)
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    cfg = load_indexer(old).config
    assert cfg.smooth_bins == 0.0 and cfg.fresh_data is False and cfg.precision == "float32"
    assert load_indexer(indexer.path).config.smooth_bins == TINY.smooth_bins
    # a smoothed model predicts from smoothed histograms (its config travels with the file)
    smoothed = get_indexer(["Cu"], DEFAULT_CALIBRATION, IndexerConfig(**{**TINY.__dict__, "smooth_bins": 1.0,
                                                                        "epochs": 2}),
                           cache_dir=tmp_path, verbose=False, threads=1)
    ps = simulate_patterns(smoothed.materials, DEFAULT_CALIBRATION, np.ones((2, 1), int), seed=5)
    feats = load_indexer(smoothed.path).features(ps.two_theta, ps.chi)
    want = angular_histograms(ps.two_theta, ps.chi, max_angle_deg=TINY.max_angle_deg, step_deg=TINY.step_deg,
                              n_centres=TINY.n_centres, smooth_bins=1.0)
    np.testing.assert_array_equal(feats, want)


# --------------------------------------------------------------------------- workflow: caps and energy band
def test_workflow_max_grains_per_material_reaches_the_stage(tiny_cache):
    from laueflow.pipeline.indexers import _inputs
    from laueflow.pipeline.workflow import WorkflowError, parse_workflow

    cache, indexer = tiny_cache

    def read(index_params, **top):
        return parse_workflow({"input": "scan.zarr", "output": "out.zarr", **top,
                               "stages": ["peaks", "angles", {"index": index_params}]}, check_input=False)

    wf = read({"max_grains": 3, "max_grains_per_material": [1], "cache_dir": str(cache),
               "train_if_missing": False, "indexer_config": TINY.to_dict()})
    params = wf.stages[-1].params
    assert params["max_grains_per_material"] == [1]
    context = {"materials": ["Cu"], "calibration": DEFAULT_CALIBRATION}
    check_index_model(params, context)  # validate phase: one cap per scan material
    assert resolve_index_model(params, context) == indexer.path  # the cached tiny model (no training)
    spec = get_stage("index")
    ps = simulate_patterns(indexer.materials, DEFAULT_CALIBRATION, np.full((2, 1), 2), seed=8, mode="all")
    batch = {"peak_two_theta": ps.two_theta, "peak_chi": ps.chi, "peak_intensity": ps.intensity,
             "calibration": DEFAULT_CALIBRATION, "materials": ["Cu"]}
    loaded = load_models(spec, {**params, "model": str(indexer.path), "device": "cpu"}, "cpu")  # as a worker
    assert spec(batch, {**loaded, "max_grains_per_material": None})["grain_count"].tolist() == [2, 2]
    assert spec(batch, loaded)["grain_count"].tolist() == [1, 1]  # the cap reached the stage
    # one integer ≥ 0 per scan material
    with pytest.raises(ValueError, match=r"max_grains_per_material has 2 value\(s\) \[1, 1\] for the scan's 1 "
                                         r"material\(s\) \['Cu'\]"):
        check_index_model({**params, "max_grains_per_material": [1, 1]}, context)
    for caps, message in [([1, -1], "one integer ≥ 0 per scan material"), (2, "one integer ≥ 0 per scan material"),
                          ([1.5], "one integer ≥ 0"), ([0, 0], "allows no grain at all")]:
        with pytest.raises(WorkflowError, match=message):
            read({"max_grains_per_material": caps})
    # without indexer_config.max_grains the model is trained for the capped mix
    two = {"materials": ["GaN", "Si"], "calibration": DEFAULT_CALIBRATION}
    assert _inputs({"max_grains_per_material": [3, 1]}, two)[2].max_grains == (3, 1)
    assert _inputs({"max_grains_per_material": [3, 0]}, two)[2].max_grains == (3, 1)  # Si still known
    assert _inputs({"max_grains_per_material": [3, 1], "indexer_config": {"max_grains": [2]}},
                   two)[2].max_grains == (2,)


def test_workflow_energy_band_is_one_setting(tiny_cache, tmp_path):
    from laueflow.pipeline.workflow import WorkflowError, parse_workflow

    _, indexer = tiny_cache

    def read(index=None, strain=None, **top):
        stages = ["peaks", "angles", {"index": index or {}}, {"strain": strain or {}}]
        return parse_workflow({"input": "scan.zarr", "output": "out.zarr", "stages": stages, **top},
                              check_input=False)

    def bands(wf):
        p = {s.name: s.params for s in wf.stages}
        return wf.energy_band_kev, p["index"]["indexer_config"]["energy_band_kev"], p["strain"]["energy_band_kev"]

    assert bands(read()) == ((5.0, 23.0), [5.0, 23.0], [5.0, 23.0])  # the default, in both stages
    assert bands(read(energy_band_kev=[6, 20])) == ((6.0, 20.0), [6.0, 20.0], [6.0, 20.0])
    assert bands(read(strain={"energy_band_kev": [6, 20]})) == ((6.0, 20.0), [6.0, 20.0], [6.0, 20.0])
    assert bands(read(index={"indexer_config": {"energy_band_kev": [6, 20], "epochs": 4}}))[2] == [6.0, 20.0]
    assert read(index={"indexer_config": {"epochs": 4}}).stages[2].params["indexer_config"]["epochs"] == 4
    assert bands(read(index={"indexer_config": {"energy_band_kev": [6, 20]}}, strain={"energy_band_kev": [6.0, 20.0]},
                      energy_band_kev=[6, 20]))[0] == (6.0, 20.0)  # given three times, equal: fine
    # given twice, different: refused when the workflow is read, naming both keys
    with pytest.raises(WorkflowError, match=r"energy band is given more than once, with different values: "
                                            r"'index: indexer_config: energy_band_kev' = \[5.0, 23.0\] and "
                                            r"'strain: energy_band_kev' = \[6.0, 20.0\]"):
        read(index={"indexer_config": {"energy_band_kev": [5, 23]}}, strain={"energy_band_kev": [6, 20]})
    with pytest.raises(WorkflowError, match=r"'energy_band_kev' = \[6.0, 20.0\] and 'strain: energy_band_kev' = "
                                            r"\[5.0, 23.0\]"):
        read(strain={"energy_band_kev": [5, 23]}, energy_band_kev=[6, 20])
    with pytest.raises(WorkflowError, match=r"'energy_band_kev' must be \[low, high\] in keV"):
        read(energy_band_kev=[23, 5])
    with pytest.raises(WorkflowError, match=r"energy_band_kev must be \[low, high\] keV"):
        read(strain={"energy_band_kev": [0, 5]})
    with pytest.raises(WorkflowError, match=r"energy_band_kev must be \[low, high\] keV"):
        read(strain={"energy_band_kev": 5})
    # a pinned model must have been trained for the workflow's band
    params = read(index={"model": str(indexer.path)}, energy_band_kev=[6, 20]).stages[2].params
    with pytest.raises(ValueError, match=r"trained for the energy band \[5.0, 23.0\] keV, the workflow's "
                                         r"energy_band_kev is \[6.0, 20.0\]"):
        check_index_model(params, {"materials": ["Cu"], "calibration": DEFAULT_CALIBRATION})
    check_index_model(read(index={"model": str(indexer.path)}).stages[2].params,
                      {"materials": ["Cu"], "calibration": DEFAULT_CALIBRATION})
