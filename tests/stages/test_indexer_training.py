"""Indexer training: the model hash (training-code version, calibration rounded to what moves
spots), the training samples (the prediction features, computed by spot-count groups)."""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.physics.geometry import DEFAULT_CALIBRATION, angles_to_pixel, pixel_to_angles
from laueflow.pipeline.indexers import model_path
from laueflow.stages.indexing import training
from laueflow.stages.indexing.training import (CALIBRATION_TOLERANCE_PX, IndexerConfig, calibration_decimals,
                                               calibration_key, calibration_sensitivity, model_hash,
                                               resolve_materials)

CU = resolve_materials(["Cu"])
CFG = IndexerConfig().for_materials(1)


def _corner_shift_px(calibration, **changes) -> float:
    """Largest displacement (px) of the rays through the detector corners when ``changes`` are
    applied to ``calibration`` (the rays fixed in the lab: their 2θ, χ stay)."""
    n_rows, n_cols = calibration.frame_shape
    col, row = np.meshgrid([-0.5, n_cols - 0.5], [-0.5, n_rows - 0.5])
    tth, chi = pixel_to_angles(col.ravel(), row.ravel(), calibration)
    c2, r2 = angles_to_pixel(tth, chi, calibration.replace(**changes))
    return float(np.max(np.hypot(c2 - col.ravel(), r2 - row.ravel())))


def test_calibration_rounding_steps_from_the_geometry():
    s = calibration_sensitivity(DEFAULT_CALIBRATION)
    # sCMOS 2018 × 2016 px of 0.0734 mm at 79.6 mm: the corners move most
    assert s["distance_mm"] == pytest.approx(18.88, abs=0.05)      # px per mm
    assert s["xcen_px"] == pytest.approx(1.0) and s["ycen_px"] == pytest.approx(1.0)
    assert s["xbet_deg"] == pytest.approx(41.8, abs=0.1)          # px per degree
    assert s["xgam_deg"] == pytest.approx(26.2, abs=0.1)
    assert s["pixel_size_mm"] == pytest.approx(20477, rel=1e-3)   # px per mm of pixel size
    decimals = calibration_decimals(DEFAULT_CALIBRATION)
    assert decimals == {"distance_mm": 3, "xcen_px": 2, "ycen_px": 2, "xbet_deg": 3, "xgam_deg": 3,
                        "pixel_size_mm": 6}
    for name, n in decimals.items():  # one step moves spots < 0.05 px; ten steps would not
        value = getattr(DEFAULT_CALIBRATION, name)
        assert _corner_shift_px(DEFAULT_CALIBRATION, **{name: value + 10.0 ** -n}) < CALIBRATION_TOLERANCE_PX
        assert _corner_shift_px(DEFAULT_CALIBRATION, **{name: value + 10.0 ** (1 - n)}) >= CALIBRATION_TOLERANCE_PX
    assert calibration_key(DEFAULT_CALIBRATION) == {"distance_mm": 79.612, "xcen_px": 977.81, "ycen_px": 932.17,
                                                    "xbet_deg": 0.477, "xgam_deg": 0.447,
                                                    "pixel_size_mm": 0.0734, "frame_shape": [2018, 2016]}


def test_refined_calibration_keeps_the_model_one_that_moves_spots_does_not(tmp_path):
    base = model_path(["Cu"], DEFAULT_CALIBRATION, None, tmp_path)
    # refined in the 6th decimal (as a calibration refinement printed to 6 decimals does):
    refined = DEFAULT_CALIBRATION.replace(distance_mm=79.612004, xcen_px=977.810003, ycen_px=932.169998,
                                          xbet_deg=0.477002, xgam_deg=0.446999, detector_name="sCMOS_refined")
    assert _corner_shift_px(DEFAULT_CALIBRATION, distance_mm=79.612004, xcen_px=977.810003, ycen_px=932.169998,
                            xbet_deg=0.477002, xgam_deg=0.446999) < 0.001
    assert model_path(["Cu"], refined, None, tmp_path) == base
    # changes that move spots by ≥ 0.05 px at the detector edge: a new model each
    for change, shift in [({"distance_mm": 79.622}, 0.19), ({"xcen_px": 977.91}, 0.1),
                          ({"ycen_px": 932.10}, 0.07), ({"xbet_deg": 0.479}, 0.084),
                          ({"xgam_deg": 0.452}, 0.13), ({"pixel_size_mm": 0.07341}, 0.2)]:
        assert _corner_shift_px(DEFAULT_CALIBRATION, **change) == pytest.approx(shift, abs=0.01), change
        assert model_path(["Cu"], DEFAULT_CALIBRATION.replace(**change), None, tmp_path) != base, change
    assert model_path(["Cu"], DEFAULT_CALIBRATION.replace(frame_shape=(2048, 2048)), None, tmp_path) != base


def test_model_hash_covers_the_training_code_version(monkeypatch):
    before = model_hash(CU, DEFAULT_CALIBRATION, CFG)
    assert model_hash(CU, DEFAULT_CALIBRATION, CFG) == before  # stable
    monkeypatch.setattr(training, "TRAINING_CODE_VERSION", training.TRAINING_CODE_VERSION + 1)
    assert model_hash(CU, DEFAULT_CALIBRATION, CFG) != before


def test_training_samples_are_the_prediction_features(monkeypatch):
    """make_samples (groups of patterns with similar spot counts, padding cut) = the prediction
    kernel on the whole padded set, row for row."""
    from laueflow.kernels.histograms import angular_histograms
    from laueflow.stages.indexing.classes import build_class_table
    from laueflow.stages.indexing.training import make_samples
    from laueflow.stages.indexing.training_data import grain_count_table, simulate_patterns

    mats = resolve_materials(["GaN", "Si"])
    cfg = IndexerConfig(max_grains=(3, 1), n_centres=40).for_materials(2)
    classes = build_class_table(mats, [3, 3], cfg.max_angle_deg, cfg.step_deg)
    ps = simulate_patterns(mats, DEFAULT_CALIBRATION, grain_count_table((3, 1), 25), seed=3)
    assert np.ptp(ps.n_spots) > 100  # very different spot counts: several groups, each cut differently
    monkeypatch.setattr(training, "_FEATURE_GROUP", 16)  # 175 patterns: 11 groups
    x, y, p, _ = make_samples(ps, classes, cfg, return_pattern=True)
    feats = angular_histograms(ps.two_theta, ps.chi, max_angle_deg=cfg.max_angle_deg, step_deg=cfg.step_deg,
                               n_centres=cfg.n_centres)
    lab = classes.label(np.maximum(ps.spot_material[:, :40], 0), ps.hkl[:, :40])
    lab[ps.spot_material[:, :40] < 0] = -1
    keep = lab >= 0
    np.testing.assert_array_equal(x, feats[keep])
    np.testing.assert_array_equal(y, lab[keep])
    np.testing.assert_array_equal(p, np.nonzero(keep)[0])


def test_centre_order_modes():
    """brightest = stored order; shuffled = a permutation of the valid spots; random = labelled spots
    first (in random order), then the others; padding always last."""
    from laueflow.stages.indexing.training import centre_order
    from laueflow.stages.indexing.training_data import PatternSet

    tth = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, np.nan], [1.0, 2.0, np.nan, np.nan, np.nan, np.nan]])
    ps = PatternSet(two_theta=tth, chi=tth, intensity=tth, spot_grain=None, spot_material=None, hkl=None, ub=None,
                    grain_material=None)
    labels = np.array([[-1, 3, -1, 5, 7, -1], [-1, 2, -1, -1, -1, -1]])
    np.testing.assert_array_equal(centre_order(ps, labels, "brightest"), np.tile(np.arange(6), (2, 1)))
    seen = set()
    for seed in range(20):
        shuffled = centre_order(ps, labels, "shuffled", seed)
        assert sorted(shuffled[0, :5]) == [0, 1, 2, 3, 4] and shuffled[0, 5] == 5
        assert sorted(shuffled[1, :2]) == [0, 1]
        rand = centre_order(ps, labels, "random", seed)
        assert sorted(rand[0, :3]) == [1, 3, 4] and sorted(rand[0, 3:5]) == [0, 2] and rand[0, 5] == 5
        assert rand[1, 0] == 1 and rand[1, 1] == 0
        seen.add(tuple(rand[0, :3]))
    assert len(seen) > 3  # really random
    with pytest.raises(ValueError, match="centres must be one of"):
        centre_order(ps, labels, "intensity")


def test_classifier_as_accurate_on_shuffled_spots_as_in_intensity_order():
    """A tiny Cu model trained with random centres: its accuracy on the first n_centres spots of
    shuffled lists (the spots a peak list without intensities puts first) is within 2 points of its
    accuracy on the brightest spots — in training's validation and through ``Indexer.predict``."""
    from dataclasses import replace

    from tiny_models import TINY

    from laueflow.stages.indexing.training import centre_order, train_indexer
    from laueflow.stages.indexing.training_data import grain_count_table, simulate_patterns

    ix = train_indexer(["Cu"], DEFAULT_CALIBRATION, replace(TINY, training_centres="random"), threads=1,
                       verbose=False)
    info = ix.history[-1]
    assert ix.validation_accuracy > 0.97
    assert abs(info["validation_accuracy_shuffled"] - ix.validation_accuracy) < 0.02
    # the prediction path: first n_centres spots of each list, intensity order vs shuffled
    ps = simulate_patterns(ix.materials, DEFAULT_CALIBRATION, grain_count_table(2, 40), seed=(7, 7),
                           energy_band_kev=ix.config.energy_band_kev, mode="lauenn")
    labels = ix.classes.label(np.maximum(ps.spot_material, 0), ps.hkl)
    labels[ps.spot_material < 0] = -1
    c = ix.config.n_centres
    accuracy = {}
    for mode in ("brightest", "shuffled"):
        order = centre_order(ps, labels, mode, 11)
        tth, chi, lab = (np.take_along_axis(a, order, axis=1) for a in (ps.two_theta, ps.chi, labels))
        known = lab[:, :c] >= 0
        for ranked in (False, True):
            cls, _ = ix.predict(tth, chi, n_centres=c, intensity_order=ranked)
            accuracy[mode, ranked] = float((cls[known] == lab[:, :c][known]).mean())
    assert accuracy["brightest", False] > 0.97, accuracy
    assert abs(accuracy["shuffled", False] - accuracy["brightest", False]) < 0.02, accuracy
    # the class prior of the intensity ranks helps on intensity-ordered lists (training's validation
    # and the prediction path agree on it)
    assert accuracy["brightest", True] >= accuracy["brightest", False], accuracy
    best = max((h for h in ix.history if "val_accuracy" in h), key=lambda h: h["val_accuracy"])
    assert best["val_accuracy"] >= best["val_accuracy_uncorrected"]


def test_class_log_priors_follow_the_relative_intensity_ranks():
    """Patterns of 20 and 40 spots; the brightest 25 % are class 0, the others class 1; training
    saw both classes equally (weights 1): the rank prior favours class 0 in the first quarter of
    the relative ranks and class 1 after it; over all spots class 1 is 3 times as frequent."""
    from laueflow.stages.indexing.training import PRIOR_RANK_BUCKETS, class_log_priors, relative_rank_bucket

    labels = np.full((10, 40), -1, np.int64)
    n_spots = np.array([20, 40] * 5)
    for p, n in enumerate(n_spots):
        labels[p, :n] = 1
        labels[p, : n // 4] = 0
    rank, any_order = class_log_priors(labels, n_spots, np.array([0, 1] * 50), np.ones(2), 2)
    assert rank.shape == (PRIOR_RANK_BUCKETS, 2) and any_order.shape == (2,)
    first, last = relative_rank_bucket([0, 39], [40, 40])
    assert first == 0 and last == PRIOR_RANK_BUCKETS - 1
    assert (rank[: PRIOR_RANK_BUCKETS // 4, 0] > 0).all() and (rank[: PRIOR_RANK_BUCKETS // 4, 1] < 0).all()
    assert (rank[PRIOR_RANK_BUCKETS // 4:, 0] < 0).all() and (rank[PRIOR_RANK_BUCKETS // 4:, 1] > 0).all()
    np.testing.assert_allclose(any_order, np.log(np.array([76, 226]) / 302) - np.log(0.5), rtol=1e-6)
    # a model that learned class 1 twice as much (loss weight 2) is corrected for it
    _, weighted = class_log_priors(labels, n_spots, np.array([0, 1] * 50), np.array([1.0, 2.0]), 2)
    np.testing.assert_allclose(weighted - any_order, np.log([1.5, 0.75]), rtol=1e-6)


def test_a_config_from_a_workflow_gets_the_defaults():
    """A workflow's ``indexer_config`` (or none) gets today's defaults — random training centres —
    not those of models stored before the option (their files say nothing: brightest)."""
    from laueflow.stages.indexing.training import IndexerConfig

    assert IndexerConfig.from_dict({}) == IndexerConfig()
    assert IndexerConfig.from_dict({"epochs": 2}).training_centres == "random"
