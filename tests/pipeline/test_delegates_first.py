"""Delegates first on a simulated scan (issue #13 bar: ≥ 95 % of points within 1° of their true
grain's orientation): stand-in features on every point → segmentation → select_delegates →
peaks/angles/index on the selected points only → delegate_map → `laueflow evaluate`.

The features are the grid stand-in of tests/test_phases_standin.py (fast, and independent of the
feature stage, tested on its own); the detector is the central 1024 × 1024 pixels of the default
one (a quarter of the pixels: the test stays short). A second run of the same scan with 2 clusters
for its 3 grains checks `delegate_map`'s `inhomogeneous: nearest_indexed`."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from laueflow.io.detfile import read_det
from laueflow.physics.geometry import DEFAULT_CALIBRATION, Calibration
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.evaluate import evaluate
from laueflow.pipeline.ingest import ingest
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.workflow import parse_workflow
from laueflow.synth.scan import simulate_scan
from tiny_models import TINY

SIDE = 1024
SHAPE = (8, 8)


def _cropped_detector() -> Calibration:
    d = DEFAULT_CALIBRATION
    rows, cols = d.frame_shape
    return Calibration(d.distance_mm, d.xcen_px - (cols - SIDE) / 2, d.ycen_px - (rows - SIDE) / 2, d.xbet_deg,
                       d.xgam_deg, d.pixel_size_mm, (SIDE, SIDE))


@pytest.fixture(scope="module")
def delegates_first(tmp_path_factory):
    root = tmp_path_factory.mktemp("delegates")
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as client:
        simulate_scan(root / "sim", calibration=_cropped_detector(), material="Cu", shape=SHAPE, grains=3, seed=2,
                      progress=False)
        ingest([root / "sim" / "images"], root / "scan.zarr", shape=SHAPE, calibration=read_det(root / "sim" / "calib.det"),
               materials=["Cu"], client=client, progress=False, log=lambda *a: None)
        index = {"points": "selected_points", "max_grains": 2, "cache_dir": str(root / "models"),
                 "indexer_config": TINY.to_dict()}
        workflow = {"input": str(root / "scan.zarr"), "output": str(root / "results.zarr"), "images_per_task": 8,
                    "plugins": ["test_phases_standin"],
                    "stages": ["test_grid_features", {"segmentation": {"k_max": 6, "pcs": 8}}, "select_delegates",
                               {"peaks": {"points": "selected_points"}}, {"angles": {"points": "selected_points"}},
                               {"index": index}, "delegate_map"]}
        logs = []
        summary = run_workflow(parse_workflow(workflow), client, progress=False, log=logs.append)
        # the same scan in 2 clusters for its 3 grains: a cluster holds two, its check points disagree
        merged = {**workflow, "output": str(root / "merged.zarr"),
                  "stages": ["test_grid_features", {"segmentation": {"k": 2, "pcs": 8}},
                             {"select_delegates": {"check_points_per_cluster": 6}},
                             {"peaks": {"points": "selected_points"}}, {"angles": {"points": "selected_points"}},
                             {"index": index}, {"delegate_map": {"inhomogeneous": "nearest_indexed"}}]}
        merged_logs = []
        run_workflow(parse_workflow(merged), client, progress=False, log=merged_logs.append)
    return root, summary, logs, merged_logs


@pytest.mark.slow
def test_delegates_first_maps_the_scan_within_1_degree(delegates_first):
    root, summary, logs, _ = delegates_first
    assert summary.complete
    with xr.open_zarr(str(root / "results.zarr")) as results, xr.open_zarr(str(root / "sim" / "truth.zarr")) as truth:
        selected = results.selected_points.values
        k = int(results.n_clusters)
        assert selected.sum() == 3 * k  # a delegate and 2 check points per cluster
        indexed = np.isfinite(results.orientation_matrix.values).all(axis=(-2, -1)).any(axis=-1)
        assert not (indexed & ~selected).any()  # only the selected points were indexed
        assert (results.status_phase2.values[~selected] == -1).all()
        metrics = evaluate(results, truth)["metrics"]
    report = metrics["delegate_map"]["summary"]
    print(report)  # the number the issue asks for (-s shows it)
    # the stages' own accuracy is over the points they processed, not diluted by the unselected ones
    indexing, peaks = metrics["indexing"]["summary"], metrics["peaks"]["summary"]
    assert indexing["points_evaluated"] == report["indexing_points_evaluated"] == 3 * k
    assert indexing["found_fraction"] >= 0.9
    # the map's best grain vs the dominant truth: the same figure from both metrics
    assert report["indexing_fraction_within_1deg_of_truth"] == indexing["map_fraction_within_1deg_of_truth"] > 0.5
    assert peaks["recall"] >= 0.9 and peaks["excluded_unprocessed_points"] > 0
    assert report["points_with_truth"] == 64
    assert report["fraction_within_1deg_of_truth"] >= 0.95
    assert report["misorientation_vs_truth_median_deg"] < 0.2
    assert any("map phase 2 (peaks, angles, index) on the" in line for line in logs)


@pytest.mark.slow
def test_a_merged_cluster_takes_the_orientations_of_its_nearest_indexed_points(delegates_first):
    root, _, _, logs = delegates_first
    with xr.open_zarr(str(root / "merged.zarr")) as results, xr.open_zarr(str(root / "sim" / "truth.zarr")) as truth:
        status = results.delegate_map_status.values
        labels = results.cluster_label.values
        ub = results.delegate_orientation.values
        selected = results.selected_points.values
        homogeneous = results.cluster_homogeneous.values
        report = evaluate(results, truth)["metrics"]["delegate_map"]["summary"]
    print(report)
    bad = [k for k in range(2) if not homogeneous[k]]
    assert bad, "with 2 clusters for 3 grains a check point must disagree"
    for k in bad:  # every point of the reported cluster is mapped from one of its indexed points
        mine = labels == k
        assert (status[mine] == 4).all()
        refs = ub[mine & selected & np.isfinite(ub).all(axis=(-2, -1))]
        for point_ub in ub[mine]:
            assert np.isclose(refs, point_ub).all(axis=(-2, -1)).any()
        assert len(np.unique(ub[mine].round(9), axis=0)) >= 2  # the cluster is split, not given one grain
    assert report["points_nearest_indexed"] == int((status == 4).sum())
    assert report["nearest_indexed_fraction_within_1deg_of_truth"] >= 0.9
    assert any("delegate_map_status 4" in line for line in logs)
