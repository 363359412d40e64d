"""The feature stage: direct calls, and a real run on a small scan store writing `features`."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import test_pipeline_standin as standin


@pytest.fixture(scope="module")
def model():
    from laueflow.io.model_files import load_autoencoder

    return load_autoencoder()


def test_direct_call_batches_and_checks(model, rng):
    from laueflow.stages.features import STAGE, compute_features

    images = rng.poisson(1000, size=(5, 300, 310)).astype(np.uint16)
    images[:, 100:103, 150:153] += 5000  # one spot
    mask = np.zeros((300, 310), bool)
    mask[7, 9] = True
    whole = compute_features(images, mask, method="autoencoder", model=model, batch_size=64)["features"]
    sliced = compute_features(images, mask, method="autoencoder", model=model, batch_size=2)["features"]
    assert whole.shape == (5, 256) and whole.dtype == np.float32 and np.isfinite(whole).all()
    np.testing.assert_allclose(sliced, whole, rtol=1e-4, atol=1e-5)
    assert STAGE.kind == "map" and STAGE.models == {"model": "autoencoder"}
    with pytest.raises(ValueError, match="set n_features: 256"):
        compute_features(images, method="autoencoder", model=model, n_features=32)
    with pytest.raises(TypeError, match="loaded LaueAutoencoder"):
        compute_features(images, method="autoencoder", model="autoencoder.pt")
    with pytest.raises(ValueError, match="n_features"):
        STAGE.validate_params({**STAGE.params, "n_features": 0})


def test_features_in_a_real_run(tmp_path, model):
    """peaks + features on a scan of 3 × 4 small frames (one invalid): features are finite where the
    image was processed, NaN where not, and equal to the stage called on the stored images."""
    from laueflow.pipeline.cluster import ClusterConfig, connect
    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import parse_workflow
    from laueflow.stages.features import compute_features

    scan = tmp_path / "scan.zarr"
    standin.make_scan_store(scan, ny=3, nx=4, rows=256, cols=272, n_spots=12, invalid=[(2, 1)])
    out = tmp_path / "results.zarr"
    workflow = parse_workflow({"input": str(scan), "output": str(out), "images_per_task": 4,
                               "stages": [{"peaks": {"max_peaks": 50}},
                                          {"features": {"method": "autoencoder", "device": "cpu"}}]})
    with connect(ClusterConfig("local", {"n_workers": 1, "threads_per_worker": 1, "processes": False,
                                         "dashboard_address": ":0"})) as client:
        run_workflow(workflow, client, progress=False, log=lambda *a: None)
    with xr.open_zarr(str(out)) as ds, xr.open_zarr(str(scan)) as s:
        features = ds.features
        assert features.dims == ("y", "x", "feature") and features.shape == (3, 4, 256)
        assert features.dtype == np.float32
        values = features.values
        images = s.images.values
    assert np.isnan(values[2, 1]).all()
    valid = np.ones((3, 4), bool)
    valid[2, 1] = False
    assert np.isfinite(values[valid]).all()
    direct = compute_features(images[valid], method="autoencoder", model=model)["features"]
    np.testing.assert_allclose(values[valid], direct, rtol=1e-4, atol=1e-5)
    assert np.ptp(values[valid], axis=0).max() > 0  # different images, different features
    from store_asserts import documented_variables

    _, dims, dtype, fill, units, _ = documented_variables()["features"]
    assert (dims, dtype, fill, units) == ("y, x, feature", "float32", "NaN", "1")


def test_pixels_method_is_the_preprocessed_image_blurred_and_area_averaged_and_needs_no_model(tmp_path, rng):
    from scipy.ndimage import gaussian_filter

    from laueflow.kernels.downsample import preprocess_frames
    from laueflow.pipeline.workflow import parse_workflow
    from laueflow.stages.features import PIXEL_BLUR_PX, STAGE, compute_features

    images = rng.poisson(1000, size=(3, 300, 310)).astype(np.uint16)
    images[:, 100:103, 150:153] += 5000
    for scaling, n_features, side, blur in (("linear", 256, 16, None), ("linear", 1024, 32, None),
                                            ("log", 256, 16, None), ("linear", 256, 16, 0.0), ("linear", 64, 8, 2.5)):
        small = preprocess_frames(images, scaling=scaling)
        sigma = PIXEL_BLUR_PX if blur is None else blur
        if sigma > 0:
            small = gaussian_filter(small, sigma=(0, sigma, sigma), mode="constant", truncate=4.0)
        got = compute_features(images, method="pixels", n_features=n_features, batch_size=2,
                               **({} if scaling == "linear" else {"pixel_scaling": scaling}),
                               **({} if blur is None else {"pixel_blur_px": blur}))["features"]
        f = 128 // side
        want = np.stack([[small[i, r * f:(r + 1) * f, c * f:(c + 1) * f].mean() for r in range(side) for c in range(side)]
                         for i in range(3)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for bad in (-1.0, float("nan"), "1", True, 17):
        with pytest.raises(ValueError, match="pixel_blur_px must be a number"):
            STAGE.validate_params({**STAGE.params, "method": "pixels", "pixel_blur_px": bad})
    with pytest.raises(ValueError, match="pixel_scaling must be one of"):
        STAGE.validate_params({**STAGE.params, "method": "pixels", "pixel_scaling": "sqrt"})
    with pytest.raises(ValueError, match="side²"):
        STAGE.validate_params({**STAGE.params, "method": "pixels", "n_features": 100})
    with pytest.raises(ValueError, match="'autoencoder' or 'pixels'"):
        STAGE.validate_params({**STAGE.params, "method": "pca"})
    scan = tmp_path / "scan.zarr"
    standin.make_scan_store(scan, ny=2, nx=2, rows=256, cols=272, n_spots=12)
    from laueflow.pipeline.models import check_models, resolve_models

    params = {**STAGE.params, "method": "pixels", "model": "/no/such/file.pt"}
    check_models(STAGE, params, {})  # no model file is looked for
    assert resolve_models(STAGE, params, {})["model"] is None
    parse_workflow({"input": str(scan), "output": str(tmp_path / "r.zarr"),
                    "stages": [{"features": {"method": "pixels"}}]})


def test_linear_pixel_features_add_up_like_the_images():
    """A point that sees two domains: with pixel_scaling linear (the default) its features are
    the weighted sum of the two domains' (what the segmentation's unmixing assumes); with the
    log scale they are not."""
    from laueflow.stages.features import compute_features

    rng = np.random.default_rng(2)
    base = np.full((512, 512), 1000.0)
    a, b = base.copy(), base.copy()
    for img in (a, b):
        for r, c in rng.integers(20, 490, size=(8, 2)):
            img[r - 2:r + 3, c - 2:c + 3] += rng.uniform(500, 5000)
    mixed = 0.7 * (a - base) + 0.3 * (b - base) + base
    frames = np.rint(np.stack([a, b, mixed])).astype(np.uint16)
    for scaling, linear in (("linear", True), ("log", False)):
        f = compute_features(frames, method="pixels", n_features=256, pixel_scaling=scaling)["features"].astype(float)
        error = np.abs(f[2] - (0.7 * f[0] + 0.3 * f[1])).max() / f[2].max()
        assert (error < 0.02) == linear, (scaling, error)


def test_the_default_is_pixels_and_a_model_with_pixels_is_refused(model):
    """Default ``method: pixels`` (the shipped generic autoencoder separates grains worse:
    docs/features.md); a model given with it is a mistake, said so."""
    from laueflow.stages.base import get_stage
    from laueflow.stages.features import compute_features

    assert get_stage("features").params["method"] == "pixels"
    images = np.zeros((1, 64, 64), np.uint16)
    with pytest.raises(ValueError, match="method: autoencoder"):
        compute_features(images, model=model)


def test_the_monitor_puts_every_image_on_the_same_incident_intensity(model):
    """An image lit k times more (the same spots, k times the counts above the background) has
    the same features once divided by its monitor k: exactly with the linear pixels, to float32
    rounding through the autoencoder; ``normalize: none`` ignores the monitor, ``monitor``
    demands one."""
    from laueflow.stages.base import get_stage
    from laueflow.stages.features import compute_features

    rng = np.random.default_rng(5)
    spots = np.zeros((256, 256))
    for r, c in rng.integers(10, 240, size=(12, 2)):
        spots[r - 1:r + 2, c - 1:c + 2] += rng.uniform(300, 3000)
    monitor = np.array([1.0, 0.5, 1.6])
    frames = np.rint(1000 + spots[None] * monitor[:, None, None]).astype(np.uint16)
    for kw in ({"method": "pixels", "n_features": 64}, {"method": "autoencoder", "model": model}):
        raw = compute_features(frames, **kw)["features"]
        assert np.abs(raw[1] - raw[0]).max() > 0.1 * np.abs(raw[0]).max()  # the lighting shows
        normalized = compute_features(frames, monitor=monitor, **kw)["features"]
        for i in (1, 2):
            np.testing.assert_allclose(normalized[i], normalized[0], rtol=0.01, atol=0.01 * np.abs(raw[0]).max())
        np.testing.assert_array_equal(compute_features(frames, monitor=monitor, normalize="none", **kw)["features"], raw)
    linear = compute_features(frames, monitor=monitor, method="pixels", n_features=64)["features"]
    np.testing.assert_allclose(linear, compute_features(frames, method="pixels", n_features=64)["features"]
                               / monitor[:, None].astype(np.float32), rtol=1e-6)
    with pytest.raises(ValueError, match="has no monitor"):
        compute_features(frames, normalize="monitor")
    with pytest.raises(ValueError, match="one finite value > 0 per image"):
        compute_features(frames, monitor=np.array([1.0, 0.0, 1.0]))
    spec = get_stage("features")
    assert spec.params["normalize"] == "auto"
    with pytest.raises(ValueError, match="normalize must be one of"):
        spec.validate_params({**spec.params, "normalize": "yes"})
    with pytest.raises(ValueError, match="ingest the scan with `laueflow ingest --monitor"):
        spec.validate_for_scan({**spec.params, "normalize": "monitor"}, {"n_points": 4, "n_valid": 4,
                                                                         "has_monitor": False})
    spec.validate_for_scan({**spec.params, "normalize": "monitor"}, {"n_points": 4, "n_valid": 4, "has_monitor": True})


def test_the_blur_keeps_a_spot_that_moves_across_a_cell_border_from_jumping():
    """An orientation gradient moves a spot by a few pixels across a grain. Area averages alone
    keep its features constant inside a cell and jump when it crosses a cell border (what split
    large grains into two clusters, docs/features.md); with the default blur they change steadily."""
    from laueflow.stages.features import PIXEL_BLUR_PX, pixel_features

    rows, cols = np.mgrid[:128, :128]
    centres = 56 + 0.5 * np.arange(33)  # columns 56 → 72 in half-pixel steps; the 16 × 16 grid's border is at 64
    spots = np.exp(-((rows[None] - 40) ** 2 + (cols[None] - centres[:, None, None]) ** 2) / (2 * 0.7 ** 2))
    ratios = {}
    for blur in (0.0, PIXEL_BLUR_PX):
        steps = np.linalg.norm(np.diff(pixel_features(spots.astype(np.float32), 256, blur), axis=0), axis=1)
        ratios[blur] = steps.max() / steps.mean()
    assert ratios[0.0] > 4.0 and ratios[PIXEL_BLUR_PX] < 3.0, ratios
