"""Spot descriptors: definitions, cutouts, augmentation, shipped CNN weights, stage contract."""
import json
import math
import shutil

import numpy as np
import pytest
import zarr

from laueflow.io.model_files import (WeightsHashError, check_spotcnn_file, default_spotcnn_path, file_sha256,
                                     load_spotcnn)
from laueflow.kernels.cutouts import (area_from_star, area_star, dihedral_transform, extract_cutouts, good_spot,
                                      normalise_cutouts, pos_from_star, pos_star, sim_from_sim0, transform_targets)
from laueflow.kernels.gaussfit import model_image
from laueflow.models.spotcnn import PAPER_PARAMETERS, SpotCNN, count_parameters
from laueflow.stages.descriptors import (angular_error_medians, describe_cutouts, describe_spots,
                                         evaluate_descriptors)
from laueflow.stages.spot_training import crop_cutouts, label_cutouts, resample_uniform_sim, simulate_spot_scan


def test_transforms():
    assert sim_from_sim0([0.5, 0.85, 0.925, 1.0]).tolist() == pytest.approx([0, 0, 0.5, 1.0])
    assert pos_star([-2.0, -1.1, 0.0, 0.55, 1.1, 3.0]).tolist() == pytest.approx([0, 0, 0.5, 0.75, 1, 1])
    assert pos_from_star(pos_star([-0.7, 0.3])).tolist() == pytest.approx([-0.7, 0.3])
    assert area_star([math.pi, 5 * math.pi, 9 * math.pi]).tolist() == pytest.approx([0.2, 1, 1])
    assert area_from_star(0.2) == pytest.approx(math.pi)
    assert good_spot([0.6, 0.6, 0.4], [0.5, 0.7, 0.0], [0.5, 0.7, 0.0]).tolist() == [True, False, False]


def test_cutout_geometry_and_border_flag():
    image = np.arange(50 * 60, dtype=np.float32).reshape(50, 60)
    cut, valid, border = extract_cutouts(image, [30, 0, 59], [25, 25, 49])
    assert cut.shape == (3, 32, 32) and border.tolist() == [False, True, True]
    assert cut[0, 16, 16] == image[25, 30] and cut[0, 0, 0] == image[9, 14] and cut[0, 31, 31] == image[40, 45]
    assert valid[1, :, 16:].all() and not valid[1, :, :16].any()
    assert valid[2, :17, :17].all() and not valid[2, 17:].any() and not valid[2, :, 17:].any()
    x = normalise_cutouts(cut, valid)
    assert (x[~valid] == 0).all()


def test_normalisation_unit_peak():
    img = model_image([[500.0, 0.0, 0.0, 0.0, 0.0, 1000.0]])
    x = normalise_cutouts(img)
    assert x[0, 16, 16] == pytest.approx(1.0) and abs(x[0, 0, 0]) < 1e-6


def test_augmentation_moves_pos_star_consistently():
    sp = simulate_spot_scan(7, 200)
    base = label_cutouts(crop_cutouts(sp.patches))
    good = base["good"]
    m = len(sp)
    for k, flip in [(1, False), (2, False), (3, False), (0, True), (1, True), (3, True)]:
        aug = label_cutouts(crop_cutouts(sp.patches, np.full(m, k), np.full(m, flip)))
        expect = transform_targets(base["targets"], k, flip)
        # Pos* of the refitted transformed cutout = transformed Pos* (the 32-px window swaps one
        # row/col, so not bit-exact); Asp and Sim invariant
        assert np.median(np.abs(aug["targets"][good, 1:3] - expect[good, 1:3])) < 1e-3
        assert np.median(np.abs(aug["targets"][good, 3] - base["targets"][good, 3])) < 2e-3
        assert np.median(np.abs(aug["targets"][good, 0] - base["targets"][good, 0])) < 5e-3


def test_dihedral_transform_of_offset():
    # a single hot pixel at offset (dc, dr) = (2, 1) from the centre of a 5x5 patch
    p = np.zeros((1, 5, 5))
    p[0, 2 + 1, 2 + 2] = 1
    r = dihedral_transform(p, 1, False)[0]
    rr, cc = np.argwhere(r)[0] - 2
    assert (cc, rr) == (1, -2)  # (dc, dr) -> (dr, -dc)
    t = transform_targets(np.array([[0.3, pos_star(0.5), pos_star(0.2), 0.7, 0.4]]), 1, False)
    assert t[0].tolist() == pytest.approx([0.3, pos_star(0.2), pos_star(-0.5), 0.7, 0.4], abs=1e-6)
    t = transform_targets(np.array([[0.3, pos_star(0.5), pos_star(0.2), 0.7, 0.4]]), 0, True)
    assert t[0].tolist() == pytest.approx([0.3, pos_star(-0.5), pos_star(0.2), 0.7, 0.4], abs=1e-6)


def test_resample_uniform():
    rng = np.random.default_rng(0)
    sim = np.concatenate([np.zeros(5000), rng.random(3000)])
    idx = resample_uniform_sim(sim, rng, bins=12, per_bin=100)
    counts = np.bincount(np.minimum((sim[idx] * 12).astype(int), 11), minlength=12)
    assert counts.max() == 100 and counts.min() >= 80


def test_parameter_count_near_paper():
    n = count_parameters(SpotCNN())
    assert n == 346_481 and abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.005


def test_evaluate_descriptors_perfect_and_angles():
    rng = np.random.default_rng(0)
    ref = {"sim": rng.random(100), "dcol": rng.uniform(-1, 1, 100), "drow": rng.uniform(-1, 1, 100),
           "area": rng.uniform(1, 10, 100), "aspect": rng.random(100)}
    r = evaluate_descriptors(ref, dict(ref))
    assert r["all"]["r2_sim"] == pytest.approx(1.0) and r["all"]["pos_err_mean"] == pytest.approx(0.0)
    assert r["confusion"]["rate_bad_predicted_good"] == 0 and r["confusion"]["rate_good_predicted_bad"] == 0
    from laueflow.physics.geometry import DEFAULT_CALIBRATION as cal

    tc, tr = rng.uniform(500, 1500, 50), rng.uniform(500, 1500, 50)
    a = angular_error_medians(cal, tc, tr, tc + 0.3, tr - 0.3, tc + 0.02, tr, good=np.ones(50, bool))
    assert a["n"] == 50 and a["refined_better"]


def test_describe_spots_fit_contract():
    rng = np.random.default_rng(5)
    images = (1000 + rng.normal(0, 4, (2, 64, 64))).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    images[0] += 4000 * np.exp(-0.5 * ((xx - 30.3) ** 2 + (yy - 20.8) ** 2) / 1.2 ** 2)
    images[1] += 4000 * np.exp(-0.5 * ((xx - 2.2) ** 2 + (yy - 50.1) ** 2) / 1.2 ** 2)
    ci = np.array([[30, -1, -1], [2, -1, -1]], np.int32)
    ri = np.array([[21, -1, -1], [50, -1, -1]], np.int32)
    out = describe_spots(images.astype(np.uint16), ci, ri, method="fit")
    assert out["spot_col"].shape == (2, 3) and np.isnan(out["spot_col"][:, 1:]).all()
    assert out["spot_col"][0, 0] == pytest.approx(30.3, abs=0.02) and out["spot_row"][0, 0] == pytest.approx(20.8, abs=0.02)
    assert out["spot_border"].tolist() == [[False, False, False], [True, False, False]]
    assert out["spot_good"][:, 0].all() and not out["spot_good"][:, 1:].any()
    with pytest.raises(ValueError, match="method must be 'cnn' or 'fit'"):
        describe_spots(images, ci, ri, method="magic")
    with pytest.raises(ValueError, match="needs the loaded spot CNN"):
        describe_spots(images, ci, ri, method="cnn")  # a model is required, never loaded behind the back


def test_shipped_weights_hash_check(tmp_path):
    path = default_spotcnn_path()
    assert path.is_file(), f"shipped weights missing: {path}"  # a broken install, never a skip
    meta = json.loads(path.with_suffix(".json").read_text())
    assert {"sha256", "command", "seed"} <= set(meta)
    assert file_sha256(path) == meta["sha256"] and check_spotcnn_file(path) == path
    model = load_spotcnn(path, device="cpu")
    assert isinstance(model, SpotCNN) and not model.training
    assert count_parameters(model) == 346_481
    bad = tmp_path / "spotcnn.pt"
    shutil.copy(path, bad)
    shutil.copy(path.with_suffix(".json"), tmp_path / "spotcnn.json")
    with open(bad, "r+b") as fh:
        fh.seek(-200, 2)
        b = fh.read(1)
        fh.seek(-200, 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(WeightsHashError, match="does not match"):
        load_spotcnn(bad, device="cpu")
    with pytest.raises(WeightsHashError, match="does not match"):
        check_spotcnn_file(bad)
    # an explicit expected hash overrides the metadata file (and is checked too)
    with pytest.raises(WeightsHashError, match="does not match"):
        load_spotcnn(path, device="cpu", expected_sha256="0" * 64)
    (tmp_path / "spotcnn.json").unlink()
    with pytest.raises(WeightsHashError, match="no sha256"):
        load_spotcnn(bad, device="cpu")
    with pytest.raises(FileNotFoundError, match="spot CNN weights not found"):
        load_spotcnn(tmp_path / "nowhere.pt", device="cpu")


def test_cnn_sanity_on_heldout_scan():
    """The issue's bars on one small held-out scan (seed 900000, 1500 spots); the rates get slack
    for the small sample (documented evaluation on 18,000 spots: 0.63 % / 0.43 %)."""
    sp = simulate_spot_scan(900_000, 1500)
    cut = crop_cutouts(sp.patches)
    ref = label_cutouts(cut)
    with pytest.raises(ValueError, match="needs the loaded spot CNN"):
        describe_cutouts(cut, method="cnn")
    pred = describe_cutouts(cut, method="cnn", model=load_spotcnn(device="cpu"))
    r = evaluate_descriptors({k: ref[k] for k in ("sim", "dcol", "drow", "area", "aspect")}, pred)
    assert r["all"]["r2_sim"] >= 0.93
    assert r["reference_good"]["pos_err_mean"] <= 0.035
    assert r["confusion"]["rate_bad_predicted_good"] <= 0.02
    assert r["confusion"]["rate_good_predicted_bad"] <= 0.021


def test_stage_through_the_pipeline_model_path():
    """The ``descriptors`` StageSpec as the pipeline runs it: model resolved to the shipped file on
    the driver, loaded once per worker (``load_models``), the loaded CNN handed to the stage."""
    from laueflow.pipeline.models import clear_model_cache, load_models, resolve_models
    from laueflow.stages.base import get_stage

    spec = get_stage("descriptors")
    assert spec.models == {"model": "spot-cnn"}
    assert set(spec.params) == {"method", "batch_size", "model", "device"}
    params = resolve_models(spec, spec.params, {})
    assert params["model"] == str(default_spotcnn_path().resolve())
    assert resolve_models(spec, {**spec.params, "method": "fit"}, {})["model"] is None
    clear_model_cache()
    loaded = load_models(spec, {**params, "device": "cpu"}, "cpu")
    assert isinstance(loaded["model"], SpotCNN)
    assert load_models(spec, params, "cpu")["model"] is loaded["model"]  # once per process
    rng = np.random.default_rng(5)
    images = (1000 + rng.normal(0, 4, (1, 64, 64))).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    images[0] += 4000 * np.exp(-0.5 * ((xx - 30.3) ** 2 + (yy - 20.8) ** 2) / 1.2 ** 2)
    batch = {"images": images.astype(np.uint16), "peak_col_int": np.array([[30, -1]], np.int32),
             "peak_row_int": np.array([[21, -1]], np.int32), "peak_background": None}
    out = spec(batch, {**loaded, "device": "cpu"})
    assert set(out) == set(spec.output_names) and out["spot_col"].dtype == np.float32
    assert out["spot_good"].tolist() == [[True, False]]
    assert out["spot_col"][0, 0] == pytest.approx(30.3, abs=0.1) and out["spot_row"][0, 0] == pytest.approx(20.8, abs=0.1)
    assert np.isnan(out["spot_similarity"][0, 1])
    with pytest.raises(ValueError, match="needs the loaded spot CNN"):
        spec(batch, {**params, "model": None, "device": "cpu"})


def test_patches_from_user_scan_zarr(tmp_path):
    from laueflow.kernels.testing import synthetic_frame
    from laueflow.pipeline.spot_data import patches_from_scan_zarr

    frames = np.stack([synthetic_frame((128, 128), 12, seed=s)[0] for s in (0, 1)])[None]  # (1, 2, 128, 128)
    g = zarr.open_group(str(tmp_path / "scan.zarr"), mode="w")
    g.create_array("images", data=frames, dimension_names=("y", "x", "row", "col"))
    sp = patches_from_scan_zarr(tmp_path / "scan.zarr")
    assert sp.patches.shape[1:] == (37, 37) and len(sp) >= 6
    cut = crop_cutouts(sp.patches)
    lab = label_cutouts(cut)
    assert lab["good"].any()
    # Every cutout whose peak pixel s is its brightest pixel converges. The fits that do not
    # converge (3 of 15 here, ≈7 % over 80 such frames) all hold a brighter spot elsewhere in the
    # cutout (2.7–1100× the peak; spots are ≥ 8 px apart in these frames): one Gaussian + constant
    # has no physical minimum there — scipy's MINPACK from the same start ends unphysical too
    # (σ → 0 or |μ| > 16 px) — and they are correctly labelled bad (Sim = 0).
    # See docs/spot-descriptors.md, "Fit convergence on crowded cutouts".
    b = np.median(cut.reshape(len(cut), -1), axis=1)
    brightest_at_s = cut.reshape(len(cut), -1).max(axis=1) <= cut[:, 16, 16]
    assert brightest_at_s.sum() >= 8
    assert lab["converged"][brightest_at_s].all()
    assert (lab["sim"][~lab["converged"]] == 0).all()
    assert ((cut[~lab["converged"]] - b[~lab["converged"], None, None]).reshape(-1, 32 * 32).max(axis=1)
            > cut[~lab["converged"], 16, 16] - b[~lab["converged"]]).all()


def test_bad_spots_report_their_centroid_not_a_refined_position():
    """A spot flagged bad keeps the peak search's centroid (issue #12: refined positions of bad
    spots could be > 1 px off while their centroids were within 0.2 px)."""
    from laueflow.kernels.testing import synthetic_frame
    from laueflow.stages.descriptors import describe_spots
    from laueflow.stages.peaks import find_peaks

    frame, _ = synthetic_frame(seed=3)
    peaks = find_peaks(frame[None], max_peaks=200)
    args = (frame[None], peaks["peak_col_int"], peaks["peak_row_int"], peaks["peak_background"])
    plain = describe_spots(*args, method="fit")
    with_centroids = describe_spots(*args, peak_col=peaks["peak_col"], peak_row=peaks["peak_row"], method="fit")
    good, bad = plain["spot_good"], ~plain["spot_good"] & np.isfinite(plain["spot_col"])
    assert good.any() and bad.any()
    np.testing.assert_array_equal(with_centroids["spot_col"][good], plain["spot_col"][good])
    np.testing.assert_array_equal(with_centroids["spot_col"][bad], peaks["peak_col"][bad].astype(np.float32))
    np.testing.assert_array_equal(with_centroids["spot_row"][bad], peaks["peak_row"][bad].astype(np.float32))
