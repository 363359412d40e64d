"""The incident-intensity monitor: placed on the scan grid (raster, snake, map), checked before
anything is written, stored and replaced by ``laueflow ingest``, and used by ``laueflow run``:
features divided by it, its hash in the provenance, a resume with another monitor refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from ingest_helpers import quiet_ingest, write_tiffs
from laueflow.pipeline.ingest import IngestError
from laueflow.pipeline.monitor import MonitorError, monitor_map

SHAPE = (192, 200)  # detector frames: the features crop them to 192 × 192


def _frame(k: int) -> np.ndarray:
    """A frame with 10 spots whose counts above the 1000-count offset scale with ``1 + k % 3``."""
    rng = np.random.default_rng(100)  # the same spots in every frame
    img = np.full(SHAPE, 1000.0)
    for r, c in rng.integers(8, 184, size=(10, 2)):
        img[r - 1:r + 2, c - 1:c + 2] += rng.uniform(200, 2000) * (1 + k % 3)
    return np.rint(img).astype(np.uint16)


def _points(ny, nx):
    return [(iy, ix) for iy in range(ny) for ix in range(nx)]


def test_values_are_placed_like_the_images():
    values = np.arange(1.0, 7.0)
    np.testing.assert_array_equal(monitor_map(values, (2, 3), _points(2, 3), "raster"), values.reshape(2, 3))
    np.testing.assert_array_equal(monitor_map(values, (2, 3), _points(2, 3), "snake"), [[1, 2, 3], [6, 5, 4]])
    grid = values.reshape(2, 3)  # a 2-D map is taken as it is, in any order
    np.testing.assert_array_equal(monitor_map(grid, (2, 3), _points(2, 3), "snake"), grid)
    np.testing.assert_array_equal(monitor_map(grid, (2, 3), _points(2, 3), "index-list"), grid)
    short = monitor_map(values[:4], (2, 3), _points(2, 3)[:4], "raster")  # a scan stopped after 4 points
    np.testing.assert_array_equal(short[0], [1, 2, 3]) and np.testing.assert_array_equal(short[1, 0], 4)
    assert np.isnan(short[1, 1:]).all()


def test_values_that_do_not_fit_the_scan_are_refused():
    points = _points(2, 3)
    cases = [(np.ones((3, 2)), "raster", "a map of 3x2 values for a 2x3 scan"),
             (np.ones(6), "index-list", "acquisition order is unknown"),
             (np.ones(7), "raster", "7 values for a 2x3 scan"),
             (np.ones(5), "snake", r"have none number 1 \(the first at iy, ix = \(1, 0\)\)"),
             (np.array([1, 2, 0, 4, 5, np.nan]), "raster", r"at 2 of the points with an image \(\(0, 2\): 0, \(1, 2\): nan\)"),
             (-np.ones((2, 3)), "raster", "not finite and > 0")]
    for values, order, message in cases:
        with pytest.raises(MonitorError, match=message):
            monitor_map(values, (2, 3), points, order)
    assert np.isnan(monitor_map(np.array([1, 2, 0, 4, 5, 6.0]), (2, 3), [(0, 0), (1, 2)], "raster")[0, 2])


def test_ingest_stores_the_monitor_keeps_it_and_replaces_it_when_told(tmp_path):
    src = write_tiffs(tmp_path / "images", 6, _frame)
    (tmp_path / "i0.txt").write_text("\n".join(str(v) for v in [10, 20, 30, 40, 50, 60]))
    out = tmp_path / "scan.zarr"
    with pytest.raises(IngestError, match="7 values"):  # checked before the store exists
        (tmp_path / "seven.txt").write_text("1\n" * 7)
        quiet_ingest([src], out, shape=(2, 3), monitor=str(tmp_path / "seven.txt"))
    assert not out.exists()
    quiet_ingest([src], out, shape=(2, 3), order="snake", monitor=str(tmp_path / "i0.txt"))
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["monitor"][...], [[10, 20, 30], [60, 50, 40]])
    assert g["monitor"].attrs["median"] == 35 and g["monitor"].attrs["source"].endswith("i0.txt")
    assert xr.open_zarr(str(out)).monitor.dims == ("y", "x")
    quiet_ingest([src], out, shape=(2, 3), order="snake")  # a resume without --monitor keeps it
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["monitor"][0], [10, 20, 30])
    said = []
    quiet_ingest([src], out, shape=(2, 3), order="snake", monitor=np.arange(1.0, 7.0), log=said.append)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["monitor"][1], [6, 5, 4])
    assert any("monitor is replaced" in str(s) for s in said)


def test_a_run_divides_the_features_by_the_monitor_and_a_resume_with_another_is_refused(tmp_path, capsys):
    """Six frames with the same spots lit 1×, 2×, 3×, 1×, 2×, 3×: with that monitor the features
    are the same at every point, without it they scale with the lighting."""
    from laueflow.cli.main import main
    from laueflow.cli.report import monitor_use

    src = write_tiffs(tmp_path / "images", 6, _frame)
    np.save(tmp_path / "i0.npy", 1e5 * (1 + np.arange(6) % 3))
    scan = tmp_path / "scan.zarr"
    args = ["ingest", str(src), "--out", str(scan), "--shape", "2x3", "--serial", "--no-progress",
            "--frame-shape", "192x200"]
    assert main(args + ["--monitor", str(tmp_path / "nope.npy")]) == 2 and not scan.exists()
    assert main(args + ["--monitor", str(tmp_path / "i0.npy")]) == 0
    workflow = tmp_path / "workflow.yaml"
    results = tmp_path / "results.zarr"
    workflow.write_text(f"input: {scan}\noutput: {results}\nstages:\n  - features: {{n_features: 64}}\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("type: local\nn_workers: 1\nthreads_per_worker: 1\ndashboard_address: ':0'\n")
    run = ["run", str(workflow), "--cluster", str(cluster), "--no-progress"]
    assert main(run) == 0
    assert "images normalized by the scan's monitor (relative to its median 200000" in capsys.readouterr().out
    with xr.open_zarr(str(results)) as ds:
        features = ds.features.values.reshape(6, 64)
        attrs = dict(ds.attrs)
        provenance = attrs["laueflow_provenance"]
    assert provenance["monitor_sha256"] == zarr.open_group(str(scan), mode="r")["monitor"].attrs["sha256"]
    assert monitor_use(attrs).endswith(": features divided by it")  # the report's summary line
    assert np.abs(features).max() > 10  # spots of 200–2000 counts over 3 × 3 of the 24 × 24 px blocks
    np.testing.assert_allclose(features, np.broadcast_to(features[0], features.shape), atol=0.01 * np.abs(features).max())
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"input: {scan}\noutput: {tmp_path / 'plain.zarr'}\nstages:\n"
                     "  - features: {n_features: 64, normalize: none}\n")
    assert main(["run", str(plain), "--cluster", str(cluster), "--no-progress"]) == 0
    with xr.open_zarr(str(tmp_path / "plain.zarr")) as ds:
        assert monitor_use(ds.attrs).endswith(": not used")
        relative = (1 + np.arange(6) % 3) / 2.0  # the monitor over its median
        np.testing.assert_allclose(ds.features.values.reshape(6, 64) / relative[:, None].astype(np.float32),
                                   features, rtol=1e-5, atol=1e-4)
    np.save(tmp_path / "other.npy", 1e5 * np.ones(6))
    assert main(args + ["--monitor", str(tmp_path / "other.npy")]) == 0
    assert main(run) == 2  # computed with the old monitor: not resumed into
    err = capsys.readouterr().err
    assert "monitor_sha256: stored" in err and "--overwrite" in err


def test_fine_tuning_images_are_divided_by_the_monitor_like_the_features(tmp_path):
    """``laueflow train autoencoder --scan`` reads the scan as the features stage does."""
    from laueflow.pipeline.feature_data import images_from_scan_zarr

    src = write_tiffs(tmp_path / "images", 6, _frame)
    quiet_ingest([src], tmp_path / "lit.zarr", shape=(2, 3), monitor=1 + np.arange(6.0) % 3)
    quiet_ingest([src], tmp_path / "plain.zarr", shape=(2, 3))
    lit = images_from_scan_zarr(tmp_path / "lit.zarr", preprocess={"scaling": "linear"})
    plain = images_from_scan_zarr(tmp_path / "plain.zarr", preprocess={"scaling": "linear"})
    assert lit.shape == (6, 128, 128) and plain[2].max() > 2.5 * plain[0].max()
    np.testing.assert_allclose(lit, plain * (2 / (1 + np.arange(6) % 3))[:, None, None].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(lit[1:], np.broadcast_to(lit[0], lit[1:].shape), atol=0.01 * lit.max())


def test_acquisition_order_is_the_ingests_own():
    from laueflow.pipeline.ingest import scan_positions

    shape = (5, 7)
    for order in ("raster", "snake"):
        grid = monitor_map(np.arange(1.0, 36.0), shape, _points(*shape), order)
        for k in range(35):
            assert grid[scan_positions(k, shape, order)] == k + 1


def test_a_run_is_refused_before_it_starts_when_a_valid_point_has_no_monitor(tmp_path):
    """A monitor stored for another set of points (here written by hand) is caught when the run
    is validated, not by a failing tile; a workflow that does not read the monitor is not held up."""
    from laueflow.pipeline.run import validate_inputs
    from laueflow.pipeline.workflow import WorkflowError, parse_workflow

    src = write_tiffs(tmp_path / "images", 6, _frame)
    scan = tmp_path / "scan.zarr"
    quiet_ingest([src], scan, shape=(2, 3), monitor=np.ones(6))
    group = zarr.open_group(str(scan), mode="r+")
    group["monitor"][1, 2] = np.nan
    config = {"input": str(scan), "output": str(tmp_path / "r.zarr")}
    with pytest.raises(WorkflowError, match=r"1 valid points have no usable monitor value \(the first at iy, ix = \(1, 2\)\)"):
        validate_inputs(parse_workflow({**config, "stages": ["features"]}), log=None)
    validate_inputs(parse_workflow({**config, "stages": ["peaks"]}), log=None)
