"""The whole job on a real LocalCluster: simulate → ingest → run (all stages) → evaluate."""
import json

import numpy as np
import pytest
import xarray as xr
import yaml

from laueflow.io.detfile import read_det
from laueflow.pipeline.evaluate import evaluate
from laueflow.pipeline.ingest import ingest
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.workflow import load_workflow
from laueflow.synth.scan import simulate_scan
from store_asserts import documented_variables
from tiny_models import TINY


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", processes=True) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("full")
    simulate_scan(root / "sim", material="Cu", shape=(2, 3), grains=2, seed=3, progress=False)
    ingest([root / "sim" / "images"], root / "scan.zarr", shape=(2, 3), calibration=read_det(root / "sim" / "calib.det"),
           materials=["Cu"], client=client, progress=False, log=lambda *a: None)
    workflow = {
        "input": str(root / "scan.zarr"), "output": str(root / "results.zarr"), "images_per_task": 3,
        "stages": ["peaks", "angles", {"descriptors": {"method": "fit"}},
                   {"index": {"max_grains": 3, "cache_dir": str(root / "models"), "indexer_config": TINY.to_dict()}},
                   "strain"],
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(workflow))
    logs = []
    run_workflow(load_workflow(root / "wf.yaml"), client, progress=False, log=logs.append)
    return root, logs


def test_every_stage_lands_in_the_results(full_run):
    root, _ = full_run
    results = xr.open_zarr(root / "results.zarr")
    for name in ("peak_two_theta", "spot_good", "hkl", "orientation_matrix", "strain_sample", "strain_status"):
        assert name in results.variables
    assert (results.status.values == 0).all()
    assert (results.grain_count.values >= 1).all()
    ok = results.strain_status.values == 0
    assert ok.sum() >= results.grain_count.values.sum() - 1
    assert list(results.attrs["materials"]) == ["Cu"]


def test_model_trained_once_on_the_driver(full_run):
    root, logs = full_run
    models = list((root / "models").glob("*.pt"))
    assert len(models) == 1
    assert sum("indexer: saved" in line for line in logs) == 1


def test_evaluation_against_truth(full_run):
    root, _ = full_run
    report = evaluate(xr.open_zarr(root / "results.zarr"), xr.open_zarr(root / "sim" / "truth.zarr"))
    metrics = report["metrics"]
    assert set(metrics) >= {"peaks", "descriptors", "indexing", "strain"}, report["skipped"]
    assert metrics["peaks"]["summary"]["recall"] >= 0.95
    indexing = metrics["indexing"]["summary"]
    assert indexing["found_fraction"] >= 0.9 and indexing["spurious"] == 0
    assert indexing["hkl_accuracy"] >= 0.98
    strain = metrics["strain"]["summary"]
    assert strain["grains_compared"] >= 5
    assert strain["strain_error_median"] < 1e-4
    assert strain["orientation_error_median_deg"] < 0.01
    descriptors = metrics["descriptors"]["summary"]
    assert descriptors["position_error_refined_median_px"] < descriptors["position_error_centroid_median_px"]
    json.dumps(report, default=float)  # serialisable for --json


def test_every_variable_is_documented(full_run):
    root, _ = full_run
    doc = documented_variables()
    results = xr.open_zarr(root / "results.zarr")
    for name, var in results.data_vars.items():
        assert name in doc, f"{name} missing from docs/results-schema.md"
        assert doc[name][1] == ", ".join(var.dims), name
        assert doc[name][2] == str(var.dtype), name


def test_export_lauetools_files(full_run, tmp_path):
    from laueflow.cli.main import main
    from laueflow.io.lauetools_files import read_cor, read_fit

    root, _ = full_run
    assert main(["export", str(root / "results.zarr"), "--point", "1,2", "--out", str(tmp_path)]) == 0
    results = xr.open_zarr(root / "results.zarr").isel(y=1, x=2)
    cor, calib = read_cor(tmp_path / "laueflow_y1_x2.cor")
    assert len(cor["col"]) == int(results.peak_count)
    fits = sorted(tmp_path.glob("laueflow_y1_x2_g*.fit"))
    assert len(fits) == int((results.strain_status.values == 0).sum()) >= 1
    fit = read_fit(fits[0])
    g = int(fits[0].stem.split("_g")[1])
    assert np.allclose(fit["UB matrix in q= (UB) B0 G*"], results.refined_orientation.values[g], atol=1e-8)
    assert np.median(fit["spots"]["pixDev"]) < 0.5
    assert main(["export", str(root / "results.zarr"), "--point", "9,9"]) == 2
