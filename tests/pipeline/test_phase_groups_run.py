"""The index-free phase labeler in a real run: a simulated Cu + Si scan → pixel features →
segmentation → select_delegates → peaks/angles on the selected points (no indexing) →
phase_groups → `laueflow evaluate` (issue #13, two-phase bar; the full-size figures are in
benchmarks/bench_segmentation_bars.py).

The detector is the central quarter (short test): ≈ 15 spots per Cu image and ≈ 50 per Si one,
and the spot count varies more with the orientation than on full frames. Seed 6 of this scan
has a thin Cu grain whose every selected point also sees a neighbour's pattern (27 spots): it
is grouped with Si (docs/segmentation.md § Phase groups, limits)."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from laueflow.io.detfile import read_det
from laueflow.kernels.partitions import adjusted_rand_index
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.evaluate import evaluate
from laueflow.pipeline.ingest import ingest
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.workflow import parse_workflow
from laueflow.synth.scan import simulate_scan
from test_delegates_first import _cropped_detector

SHAPE = (10, 10)


@pytest.fixture(scope="module")
def two_phase(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as client:
        simulate_scan(root / "sim", calibration=_cropped_detector(), material="Cu", second_phase="Si",
                      second_phase_fraction=0.5, shape=SHAPE, grains=4, seed=5, progress=False)
        ingest([root / "sim" / "images"], root / "scan.zarr", shape=SHAPE,
               calibration=read_det(root / "sim" / "calib.det"), materials=["Cu", "Si"], client=client,
               progress=False, log=lambda *a: None)
        workflow = {"input": str(root / "scan.zarr"), "output": str(root / "results.zarr"), "images_per_task": 10,
                    "stages": [{"features": {"method": "pixels"}}, {"segmentation": {"k_max": 8}},
                               "select_delegates", {"peaks": {"points": "selected_points"}},
                               {"angles": {"points": "selected_points"}}, "phase_groups"]}
        logs = []
        summary = run_workflow(parse_workflow(workflow), client, progress=False, log=logs.append)
    return root, summary, logs


@pytest.mark.slow
def test_clusters_are_grouped_into_the_two_phases_without_indexing(two_phase):
    root, summary, logs = two_phase
    assert summary.complete
    with xr.open_zarr(str(root / "results.zarr")) as results, xr.open_zarr(str(root / "sim" / "truth.zarr")) as truth:
        assert "orientation_matrix" not in results  # nothing was indexed
        labels, groups = results.cluster_label.values, results.phase_group.values
        cluster_groups = results.cluster_phase_group.values
        grain_map, grain_phase = truth.grain_map.values, truth.grain_phase.values
        evaluation = evaluate(results, truth)
    phase = grain_phase[grain_map]
    assert set(np.unique(groups)) == {0, 1}
    # every cluster's group is its majority phase's (Cu: fewer spots → group 0): the phase map is
    # as good as these clusters allow (an oracle told each cluster's majority phase does no better)
    oracle = np.full(labels.max() + 1, -1)
    for k in np.unique(labels[labels >= 0]):
        oracle[k] = np.bincount(phase[labels == k]).argmax()
        assert cluster_groups[k] == oracle[k], (k, np.bincount(phase[labels == k]))
    np.testing.assert_array_equal(groups, oracle[labels])
    ari = adjusted_rand_index(groups, phase)
    assert evaluation["metrics"]["segmentation"]["summary"]["ari_phase_group_map"] == pytest.approx(ari, abs=1e-4)
    assert evaluation["metrics"]["segmentation"]["summary"]["ari_phase_map"] <= ari + 1e-4  # the clusters alone
    assert any(line.strip().startswith("phase_groups:") for line in logs)
