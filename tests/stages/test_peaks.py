"""Peak-search kernel and stage: detection bars on synthetic frames with known spots."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from laueflow.kernels.peaks import PEAK_FIELDS, find_peaks_2d
from laueflow.kernels.testing import synthetic_frame
from laueflow.physics.geometry import DEFAULT_CALIBRATION, pixel_to_angles
from laueflow.stages.angles import peak_angles
from laueflow.stages.base import get_stage
from laueflow.stages.peaks import STAGE, find_peaks
from laueflow.synth import scan as synth_scan

#: per-peak outputs of the stage (all but ``peak_count``), as declared in its StageSpec
PEAK_VARS = {v.name: v for v in STAGE.outputs if v.dims == ("peak",)}


def _own_frames():
    return [synthetic_frame((384, 400), 120, seed=s, min_snr=2.0) for s in range(6)]


def _simulator_frames():
    """Frames and spot tables from the scan simulator (``laueflow.synth.scan``)."""
    plan = synth_scan.plan_scan(shape=(1, 2), seed=0)
    truth = synth_scan.truth_dataset(plan)
    frames = []
    for index in range(2):
        iy, ix = divmod(index, plan.shape[1])
        image = plan.render(index)
        sel = (truth["spot_y"].values == iy) & (truth["spot_x"].values == ix)
        col, row = truth["spot_col"].values[sel], truth["spot_row"].values[sel]
        inside = (col > 2) & (col < image.shape[1] - 3) & (row > 2) & (row < image.shape[0] - 3)
        spots = {"col": col[inside], "row": row[inside],
                 "amplitude": truth["spot_amplitude"].values[sel][inside],
                 "noise_sigma": truth["spot_noise_sigma"].values[sel][inside],
                 "quality": truth["spot_quality"].values[sel][inside]}
        frames.append((image, spots))
    return frames


def _recall_precision(frames, false_radius=2.0, **kwargs):
    """Recall over good-quality spots >= 5 sigma (hottest pixel within 1.5 px); precision: a
    detection is false when no true spot of any amplitude/quality lies within false_radius."""
    n_true = n_found = n_det = n_false = 0
    int_err, cen_err = [], []
    for image, spots in frames:
        res = find_peaks(image[None], **kwargs)
        k = res["peak_count"][0]
        det_int = np.c_[res["peak_col_int"][0, :k], res["peak_row_int"][0, :k]]
        det_cen = np.c_[res["peak_col"][0, :k], res["peak_row"][0, :k]]
        truth = np.c_[spots["col"], spots["row"]]
        good = spots.get("quality", np.zeros(len(spots["col"]))) == 0
        strong = (spots["amplitude"] >= 5 * spots["noise_sigma"]) & good
        dist, j = cKDTree(det_int).query(truth, distance_upper_bound=1.5)
        found = np.isfinite(dist)
        n_true += strong.sum()
        n_found += (found & strong).sum()
        int_err += list(dist[found & strong])
        m = found & strong
        cen_err += list(np.hypot(*(det_cen[j[m]] - truth[m]).T))
        # a detection is false when no true spot (of any amplitude) lies within 2 px
        d2, _ = cKDTree(truth).query(det_int, distance_upper_bound=false_radius)
        n_det += k
        n_false += (~np.isfinite(d2)).sum()
    return n_found / n_true, 1 - n_false / n_det, np.array(int_err), np.array(cen_err)


def test_recall_precision_position_bars():
    recall, precision, int_err, cen_err = _recall_precision(_own_frames())
    assert recall >= 0.98, recall
    assert precision >= 0.98, precision
    assert np.mean(int_err <= 1.0) >= 0.98  # hottest pixel within 1 px of the true centre
    assert np.all(cen_err <= 1.0), cen_err.max()  # centroid within 1 px, every matched spot
    assert np.median(cen_err) < 0.15


def test_recall_precision_on_simulated_scan():
    """Bars on full-size frames of ``laueflow simulate`` (streaks, comets, broad spots)."""
    # streaked / split / irregular spots (quality != 0) are not in the recall; their maxima
    # may lie a few px from the nominal centre, hence the 3 px radius for false detections
    recall, precision, int_err, cen_err = _recall_precision(_simulator_frames(), false_radius=3.0)
    print(f"simulator: recall {recall:.4f} precision {precision:.4f}")
    assert recall >= 0.98, recall
    assert precision >= 0.98, precision
    assert np.mean(int_err <= 1.0) >= 0.95
    assert np.median(cen_err) < 0.3


def test_stage_contract_shapes_dtypes_fill_and_order():
    image, _ = synthetic_frame((128, 144), 20, seed=3)
    blank = np.full((128, 144), 1000, np.uint16)
    res = find_peaks(np.stack([image, blank]), max_peaks=8)
    assert set(res) == set(STAGE.output_names) == set(PEAK_VARS) | {"peak_count", "peak_count_found"}
    assert res["peak_count"].dtype == np.int32 and res["peak_count"].tolist() == [8, 0]
    assert res["peak_count_found"].dtype == np.int32 and res["peak_count_found"][1] == 0
    assert len(PEAK_VARS) == 8
    for key, var in PEAK_VARS.items():
        assert res[key].shape == (2, 8) and res[key].dtype == np.dtype(var.dtype)
        if res[key].dtype == np.int32:
            assert var.fill_value == -1 and (res[key][1] == -1).all()
        else:
            assert np.isnan(var.fill_value) and np.isnan(res[key][1]).all()
    inten = res["peak_intensity"][0]
    assert (np.diff(inten) <= 0).all()  # decreasing
    assert set(STAGE.params) >= {"threshold_sigma", "threshold_counts", "min_distance_px", "box_size_px",
                                 "max_peaks", "method"}
    assert STAGE.optional_inputs == {"mask": "mask"}
    # the registry serves the same declaration; empty_outputs allocates exactly the declared fills
    assert get_stage("peaks") is STAGE
    empty = STAGE.empty_outputs(3, {**STAGE.params, "max_peaks": 4})
    assert set(empty) == set(STAGE.output_names) and empty["peak_count"].shape == (3,)
    assert (empty["peak_count"] == -1).all() and empty["peak_col"].shape == (3, 4)
    assert (empty["peak_count_found"] == -1).all()


def _grid_frame(n_spots, seed=0, shape=(256, 256), spacing=16):
    """A frame with ``n_spots`` round spots (σ 1 px) centred on pixels of a 16-px grid, distinct
    amplitudes 300…6000 counts (steps ≫ noise σ 4) on a 1000-count offset: the hottest pixel of a
    spot is its amplitude, so the brightest spots are known exactly. Returns the image, the spots'
    ``(row, col)`` and amplitudes."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    image = 1000.0 + rng.normal(0.0, 4.0, shape)
    grid = [(r, c) for r in range(spacing // 2, shape[0] - 4, spacing)
            for c in range(spacing // 2, shape[1] - 4, spacing)]
    pos = np.array([grid[i] for i in rng.permutation(len(grid))[:n_spots]])
    amplitude = rng.permutation(np.linspace(300.0, 6000.0, n_spots))
    for (r, c), a in zip(pos, amplitude):
        image += a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 2.0)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16), pos, amplitude


def test_more_peaks_than_max_peaks_keeps_the_brightest_and_says_so():
    """64 true spots, max_peaks 20: the 20 brightest true spots are kept, peak_count_found is the
    true 64 and the status is peaks_truncated (4); the kept tables equal the uncut search's head."""
    image, pos, amplitude = _grid_frame(64)
    blank = np.full(image.shape, 1000, np.uint16)
    res = find_peaks(np.stack([image, blank]), max_peaks=20)
    assert res["peak_count"].tolist() == [20, 0]
    assert res["peak_count_found"].tolist() == [64, 0]  # every true spot, nothing else
    assert STAGE.status_codes == {2: "no_peaks", 4: "peaks_truncated"}
    assert STAGE.status(res).tolist() == [4, 2]
    brightest = {tuple(p) for p in pos[np.argsort(-amplitude)[:20]]}
    assert set(zip(res["peak_row_int"][0].tolist(), res["peak_col_int"][0].tolist())) == brightest
    assert (np.diff(res["peak_intensity"][0]) < 0).all()
    uncut = find_peaks(image, max_peaks=64)
    for key in PEAK_VARS:
        np.testing.assert_array_equal(res[key][0], uncut[key][0, :20])


@pytest.mark.parametrize("max_peaks", [64, 65, 500])
def test_no_truncation_status_within_max_peaks(max_peaks):
    image, pos, _ = _grid_frame(64)
    res = find_peaks(image, max_peaks=max_peaks)
    assert res["peak_count"].tolist() == res["peak_count_found"].tolist() == [64]
    assert STAGE.status(res).tolist() == [0]
    assert set(zip(res["peak_row_int"][0, :64].tolist(), res["peak_col_int"][0, :64].tolist())) == set(map(tuple, pos))


def test_default_max_peaks_keeps_a_dense_real_image():
    """real BM32 images reach 684 peaks at 6σ (issue #12): the default keeps them with margin."""
    assert STAGE.params["max_peaks"] >= 2 * 684


@pytest.mark.parametrize("changes, message", [
    ({"threshold_sigma": 0}, "threshold_sigma must be > 0"),
    ({"threshold_sigma": -2.0}, "threshold_sigma must be > 0"),
    ({"threshold_sigma": None, "threshold_counts": None}, "threshold_sigma and/or threshold_counts"),
    ({"threshold_counts": -1}, "threshold_counts must be ≥ 0"),
    ({"max_peaks": 0}, "max_peaks must be an integer ≥ 1"),
    ({"max_peaks": 2.5}, "max_peaks must be an integer ≥ 1"),
    ({"min_distance_px": 0}, "min_distance_px must be an integer ≥ 1"),
    ({"method": "magic"}, "method must be one of laueflow, lauetools"),
    ({"method": "lauetools"}, "method lauetools needs threshold_counts"),
])
def test_validate_params_rejects_impossible_values(changes, message):
    STAGE.validate_params(STAGE.params)  # the defaults are fine
    with pytest.raises(ValueError, match=rf"stage 'peaks': .*{message}"):
        STAGE.validate_params({**STAGE.params, **changes})


def test_single_spot_values_and_counts_threshold():
    rr, cc = np.mgrid[0:64, 0:80]
    image = 1000.0 + 500 * np.exp(-((cc - 30.3) ** 2 + (rr - 20.6) ** 2) / (2 * 1.2 ** 2))
    image += 50 * np.exp(-((cc - 60) ** 2 + (rr - 45) ** 2) / 2)
    image = np.rint(image + np.random.default_rng(0).normal(0, 2, image.shape)).astype(np.uint16)
    res = find_peaks_2d(image)
    assert set(res) == set(PEAK_FIELDS)
    assert len(res["col"]) == 2
    assert (res["col_int"][0], res["row_int"][0]) == (30, 21)
    assert abs(res["col"][0] - 30.3) < 0.1 and abs(res["row"][0] - 20.6) < 0.1
    assert abs(res["background"][0] - 1000) < 2 and 1 < res["noise"][0] < 3
    assert 430 < res["intensity"][0] < 490  # hottest pixel 0.5 px off the centre: 458
    assert abs(res["integrated_intensity"][0] - 500 * 2 * np.pi * 1.2 ** 2) < 150
    only_bright = find_peaks_2d(image, threshold_counts=100)
    assert len(only_bright["col"]) == 1
    counts_only = find_peaks_2d(image, threshold_sigma=None, threshold_counts=30)
    assert len(counts_only["col"]) == 2


def test_min_distance_mask_and_max_peaks():
    image = np.full((64, 80), 1000, np.uint16)
    image[20, 20] = image[20, 25] = 3000  # two hot pixels 5 px apart, equal: one peak at d=5
    image[40, 60] = 60000  # a hot pixel we mask
    res = find_peaks_2d(image, min_distance_px=5)
    assert len(res["col"]) == 2 and res["col_int"][0] == 60
    mask = np.zeros(image.shape, bool)
    mask[40, 60] = True
    res = find_peaks_2d(image, min_distance_px=5, mask=mask)
    assert res["col_int"].tolist() == [20] and res["row_int"].tolist() == [20]
    res = find_peaks_2d(image, min_distance_px=2, mask=mask)
    assert sorted(res["col_int"].tolist()) == [20, 25]
    assert len(find_peaks_2d(image, min_distance_px=2, max_peaks=1)["col"]) == 1


def test_no_labelling_across_frames():
    image, _ = synthetic_frame((96, 96), 10, seed=5)
    single = find_peaks(image)
    stacked = find_peaks(np.stack([image, image, image]))
    for key in STAGE.output_names:
        np.testing.assert_array_equal(stacked[key][2], single[key][0])


def test_peak_angles_nan_and_dtype():
    col = np.array([[100.0, np.nan]], np.float32)
    row = np.array([[900.0, np.nan]], np.float32)
    out = peak_angles(col, row, DEFAULT_CALIBRATION)
    assert out["peak_two_theta"].dtype == np.float32 and out["peak_two_theta"].shape == (1, 2)
    assert np.isnan(out["peak_chi"][0, 1]) and np.isnan(out["peak_two_theta"][0, 1])
    tth, chi = pixel_to_angles(100.0, 900.0, DEFAULT_CALIBRATION)
    assert abs(out["peak_two_theta"][0, 0] - tth) < 1e-4 and abs(out["peak_chi"][0, 0] - chi) < 1e-4
    assert peak_angles(col.astype(float), row.astype(float), DEFAULT_CALIBRATION)["peak_chi"].dtype == np.float64


def test_a_warning_code_gives_way_to_a_later_failure():
    """peaks_truncated (4) is a warning: a later not_indexed (3) replaces it; a failure stays."""
    from laueflow.stages.base import combine_status, warning_codes

    assert 4 in warning_codes() and 3 not in warning_codes()
    earlier = np.array([0, 4, 4, 2, 2], np.int8)
    later = np.array([3, 3, 0, 3, 0], np.int8)
    assert combine_status(earlier, later, warning_codes()).tolist() == [3, 3, 4, 2, 2]
