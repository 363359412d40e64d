"""`laueflow segment`: new named segmentations from the stored features, earlier ones kept,
refusals (not a results store, no features, store locked)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr
from sklearn.metrics import adjusted_rand_score

import test_segmentation_standin as standin
from laueflow.cli.main import build_parser, main
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.workflow import parse_workflow

QUIET = {"progress": False, "log": lambda *a: None}


@pytest.fixture(scope="module")
def client():
    with connect(ClusterConfig("local", {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})) as c:
        yield c


@pytest.fixture(scope="module")
def store(tmp_path_factory, client):
    """A results store with features and the run's own segmentation (K = 3, the scores' K)."""
    root = tmp_path_factory.mktemp("segment")
    regions = standin.make_region_scan(root / "scan.zarr")
    out = root / "results.zarr"
    run_workflow(parse_workflow({"input": str(root / "scan.zarr"), "output": str(out), "images_per_task": 9,
                                 "plugins": ["test_segmentation_standin"],
                                 "stages": ["test_features", {"segmentation": {"k_max": 6}}]}), client, **QUIET)
    return out, regions


def _labels(path, group=None):
    with xr.open_zarr(str(path), group=group) as ds:
        return ds.cluster_label.values


def test_segment_adds_named_segmentations_and_keeps_the_earlier_ones(store, client, capsys):
    out, regions = store
    run_labels = _labels(out)
    scheduler = ["--scheduler", client.scheduler.address]
    assert main(["segment", str(out), "--k", "4", "--k-range", "2", "6", *scheduler]) == 0
    assert "4 clusters (suggested K 3)" in capsys.readouterr().out
    assert main(["segment", str(out), "--k", "4", "--k-range", "2", "6", *scheduler]) == 0  # same name → -2
    assert main(["segment", str(out), "--method", "bgm", "--k", "3", "--pcs", "8", "--name", "three-bgm",
                 "--k-range", "2", "5", *scheduler]) == 0
    attrs = zarr.open_group(str(out), mode="r").attrs
    names = [s["name"] for s in attrs["segmentations"]]
    assert names == ["k4-pcs32-kmeans", "k4-pcs32-kmeans-2", "three-bgm"]
    assert attrs["segmentation_latest"] == "three-bgm" and attrs["segmentations"][2]["method"] == "bgm"
    np.testing.assert_array_equal(_labels(out), run_labels)  # the run's own segmentation untouched
    first = _labels(out, "segmentations/k4-pcs32-kmeans")
    np.testing.assert_array_equal(first, _labels(out, "segmentations/k4-pcs32-kmeans-2"))  # deterministic
    ok = first >= 0
    assert len(np.unique(first[ok])) == 4
    bgm = _labels(out, "segmentations/three-bgm")
    assert adjusted_rand_score(regions[ok], bgm[ok]) == 1.0
    with xr.open_zarr(str(out), group="segmentations/three-bgm") as ds:
        assert ds.attrs["complete"] is True and ds.attrs["parameters"]["pcs"] == 8
        assert ds.sizes["pc"] == 8 and int(ds.n_clusters) == 3 and ds.attrs["info"]["method"] == "bgm"
        assert ds.score_k.values.tolist() == [1, 2, 3, 4, 5]
    with xr.open_zarr(str(out)) as ds:  # the root still opens as before (groups are not variables)
        assert "cluster_label" in ds and "features" in ds


def test_segment_refuses_what_it_cannot_segment(store, client, tmp_path, capsys):
    out, _ = store
    scheduler = ["--scheduler", client.scheduler.address]
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["foo"] = 1
    assert main(["segment", str(other), "--k", "3", *scheduler]) == 2
    assert "not a laueflow results store" in capsys.readouterr().err
    assert main(["segment", str(out), "--k", "3", "--pcs", "100", *scheduler]) == 2
    assert "--pcs 100 is more than the 80 features per point" in capsys.readouterr().err
    assert main(["segment", str(out), "--k", "3", "--pcs", "55", *scheduler]) == 2  # 6 × 9 points
    assert "--pcs 55 is more than the 54 points of the scan" in capsys.readouterr().err
    assert main(["segment", str(out), "--k", "55", "--pcs", "8", *scheduler]) == 2  # refused before any task
    assert "--k 55 is more than the 54 points of the scan; use --k ≤ 54" in capsys.readouterr().err
    assert main(["segment", str(out), "--silhouette-tolerance", "-0.1", *scheduler]) == 2
    assert "silhouette_tolerance must be a number ≥ 0 and < 1" in capsys.readouterr().err
    assert main(["segment", str(out), "--k-range", "10", "5", *scheduler]) == 2
    assert "--k-range 10 5: KMAX is below KMIN; give the range in increasing order, e.g. --k-range 5 10" \
        in capsys.readouterr().err
    for name in ("", "a b", "é", "-x", ".x", "a/b", "x" * 101):
        assert main(["segment", str(out), "--k", "3", f"--name={name}", *scheduler]) == 2
        assert f"segmentation name {name!r}: use 1 to 100 ASCII letters, digits, '.', '-' and '_'" \
            in capsys.readouterr().err
    missing = tmp_path / "nodir" / "sub" / "results.zarr"
    assert main(["segment", str(missing), "--k", "3", *scheduler]) == 2
    assert "not a laueflow results store" in capsys.readouterr().err and not (tmp_path / "nodir").exists()
    assert main(["segment", str(tmp_path / ("x" * 300)), "--k", "3", *scheduler]) == 2  # a path the OS refuses
    assert "File name too long. Check the path" in capsys.readouterr().err
    holder = subprocess.Popen([sys.executable, "-c", (  # another process writes the store: refused
        "import sys, time; from laueflow.io.store_lock import StoreLock\n"
        f"lock = StoreLock({str(out)!r}, 'run').acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["segment", str(out), "--k", "3", *scheduler]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"being written by `run` pid {holder.pid}" in capsys.readouterr().err
    assert [s["name"] for s in zarr.open_group(str(out), mode="r").attrs["segmentations"]][:1] == ["k4-pcs32-kmeans"]


def test_segment_suggests_the_fewest_clusters_within_the_silhouette_tolerance(store, client, capsys):
    out, _ = store
    scheduler = ["--scheduler", client.scheduler.address, "--k-range", "2", "6"]
    suggested = {}
    for tolerance in ("0", "0.9"):  # 0.9: every scored K is within it → the smallest, 2
        assert main(["segment", str(out), "--silhouette-tolerance", tolerance, "--name", f"tol{tolerance}",
                     *scheduler]) == 0
        with xr.open_zarr(str(out), group=f"segmentations/tol{tolerance}") as ds:
            assert ds.attrs["parameters"]["silhouette_tolerance"] == float(tolerance)
            sil = ds.silhouette_score.values
            suggested[tolerance] = int(ds.suggested_k)
            assert int(ds.n_clusters) == suggested[tolerance]
    assert suggested["0"] == int(np.nanargmax(sil)) + 1 > 2 and suggested["0.9"] == 2


def test_segment_help_has_an_example():
    text = build_parser()._subparsers._group_actions[0].choices["segment"].format_help()
    assert "laueflow segment demo/results.zarr --k 6" in text and "--method {kmeans,bgm}" in text
