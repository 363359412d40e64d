"""`laueflow evaluate` on real stores: wrong kinds, another scan shape, nothing evaluable and a
partial results store (real `laueflow simulate` / `laueflow run` outputs, no mocks)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

import test_pipeline_standin as standin
from laueflow.cli.main import main
from laueflow.synth.scan import simulate_scan

OTHER_SHAPES = [(3, 2), (1, 3)]


def _run(root, scan, out, stages):
    (root / "cluster.yaml").write_text(yaml.safe_dump(
        {"type": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False,
         "dashboard_address": ":0"}))
    wf = root / f"{out.stem}.yaml"
    wf.write_text(yaml.safe_dump({"input": str(scan), "output": str(out), "images_per_task": 3,
                                  "plugins": ["test_pipeline_standin"], "stages": stages}))
    return main(["run", str(wf), "--cluster", str(root / "cluster.yaml"), "--no-progress"])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    simulate_scan(root / "sim", shape=(2, 3), grains=2, seed=1, progress=False)
    for ny, nx in OTHER_SHAPES:
        simulate_scan(root / f"other{ny}x{nx}", shape=(ny, nx), grains=2, seed=1, progress=False)
    simulate_scan(root / "seed2", shape=(2, 3), grains=2, seed=2, progress=False)  # another scan, same shape
    scan = root / "scan.zarr"
    standin.make_scan_store(scan, ny=2, nx=3, rows=64, cols=80, empty=[(1, 2)])
    # the fixture's truth is the truth of this stand-in scan: its image sums are the scan's
    sums = np.asarray(zarr.open_group(str(scan), mode="r")["images"][...]).sum(axis=(2, 3), dtype=np.int64)
    zarr.open_group(str(root / "sim" / "truth.zarr"), mode="r+")["image_count_sum"][...] = sums
    assert _run(root, scan, root / "results.zarr", ["test_peaks", "test_angles"]) == 0
    # a run that fails on the tile holding an image without peaks: a partial results store
    marker = root / "fail"
    marker.write_text("x")
    stages = ["test_peaks", {"test_failing_angles": {"fail_while_exists": str(marker)}}]
    assert _run(root, scan, root / "partial.zarr", stages) == 1
    return {"truth": root / "sim" / "truth.zarr", "scan": scan, "results": root / "results.zarr",
            "partial": root / "partial.zarr", "root": root}


def _evaluate(results, truth, *extra):
    return main(["evaluate", str(results), "--truth", str(truth), *extra])


def test_results_and_truth_evaluate(stores, capsys):
    assert _evaluate(stores["results"], stores["truth"], "--json", str(stores["root"] / "e.json")) == 0
    captured = capsys.readouterr()
    assert "recall" in captured.out and "warning" not in captured.err
    assert json.loads((stores["root"] / "e.json").read_text())["complete"] is True


def test_scan_store_is_not_a_results_store(stores, capsys):
    assert _evaluate(stores["scan"], stores["truth"]) == 2
    err = capsys.readouterr().err
    assert f"{stores['scan']} is a scan store (written by `laueflow ingest`), not a results store" in err


def test_scan_store_is_not_a_truth_store(stores, capsys):
    assert _evaluate(stores["results"], stores["scan"]) == 2
    err = capsys.readouterr().err
    assert f"{stores['scan']} is a scan store (written by `laueflow ingest`), not a truth store" in err


def test_truth_and_results_swapped(stores, capsys):
    assert _evaluate(stores["truth"], stores["results"]) == 2
    err = capsys.readouterr().err
    assert "is a truth store (written by `laueflow simulate`), not a results store" in err


@pytest.mark.parametrize("ny, nx", OTHER_SHAPES)
def test_truth_of_another_scan_shape(stores, capsys, ny, nx):
    # 3×2: spots outside the results' grid; 1×3: every spot inside it (was evaluated silently)
    assert _evaluate(stores["results"], stores["root"] / f"other{ny}x{nx}" / "truth.zarr") == 2
    err = capsys.readouterr().err
    assert f"scan shapes differ: {stores['results']} is 2×3 (y × x)" in err and f"is {ny}×{nx}" in err


def test_the_truth_of_another_scan_of_the_same_shape_is_refused(stores, capsys):
    assert _evaluate(stores["results"], stores["root"] / "seed2" / "truth.zarr") == 2
    err = capsys.readouterr().err
    assert "is not the truth of this scan: the image at point (y=0, x=0) of the scan store" in err


def test_a_truth_without_image_sums_is_evaluated_with_a_warning(stores, capsys):
    old = stores["root"] / "old-truth.zarr"  # as written before the truth recorded its image sums
    with xr.open_zarr(stores["truth"]) as truth:
        truth.drop_vars("image_count_sum").to_zarr(old, mode="w", zarr_format=3, consolidated=True)
    try:
        assert _evaluate(stores["results"], old) == 0
        assert "records no image sums (written before 2026-12-02): whether it is the truth of this scan was not " \
            "checked" in capsys.readouterr().err
    finally:
        shutil.rmtree(old)


def test_nothing_to_evaluate_is_an_error(stores, capsys):
    import xarray as xr

    # a real results store without the peak variables the metrics need
    with xr.open_zarr(stores["results"]) as ds:
        slim = ds[["status", "peak_count"]].load()
    path = stores["root"] / "slim.zarr"
    slim.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    assert _evaluate(path, stores["truth"]) == 2
    err = capsys.readouterr().err
    assert "no metric could be run" in err and "peaks: missing peak_col" in err


def test_partial_results_store_warns(stores, capsys):
    out = stores["root"] / "partial.json"
    assert _evaluate(stores["partial"], stores["truth"], "--json", str(out)) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "only the finished tiles" in captured.err
    assert "laueflow run" in captured.err and "recall" in captured.out
    assert json.loads(out.read_text())["complete"] is False
