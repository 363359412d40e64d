"""The end of `laueflow run`: a warning line when the peak search kept only the brightest
`max_peaks` of some images (no silent truncation), read from the results store; none otherwise.
Real `peaks` stage on a small scan store with known spots, real LocalCluster, no mocks."""
from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
import yaml

import test_pipeline_standin as standin
from laueflow.cli.main import main

N_SPOTS = 6
EMPTY = [(1, 2)]  # a point without spots: processed, no peaks


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    path = root / "scan.zarr"
    # seed 1: the 6 spots of every other point are resolved (6 peaks above threshold each)
    spots = standin.make_scan_store(path, ny=2, nx=3, n_spots=N_SPOTS, empty=EMPTY, seed=1)
    (root / "cluster.yaml").write_text(yaml.safe_dump(
        {"type": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False,
         "dashboard_address": ":0"}))
    return path, spots


def _run(scan_path, out, max_peaks, capsys, *extra):
    root = scan_path.parent
    wf = root / f"{out.stem}.yaml"
    wf.write_text(yaml.safe_dump({"input": str(scan_path), "output": str(out), "images_per_task": 3,
                                  "stages": [{"peaks": {"max_peaks": max_peaks}}, "angles"]}))
    rc = main(["run", str(wf), "--cluster", str(root / "cluster.yaml"), "--no-progress", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _true_counts(spots, shape=(2, 3)):
    counts = np.zeros(shape, int)
    for y, x, *_ in spots:
        counts[int(y), int(x)] += 1
    return counts


def test_truncated_images_end_the_run_with_a_warning(scan, capsys):
    path, spots = scan
    out = path.parent / "capped.zarr"
    rc, stdout, err = _run(path, out, 2, capsys)
    assert rc == 0  # the results are valid, only capped
    truth = _true_counts(spots)
    with xr.open_zarr(str(out)) as ds:
        np.testing.assert_array_equal(ds.peak_count_found.values, truth)  # the true number of spots
        np.testing.assert_array_equal(ds.peak_count.values, np.minimum(truth, 2))
        codes = {int(k): v for k, v in ds.attrs["status_codes"].items()}
        assert codes[4] == "peaks_truncated" and codes[2] == "no_peaks"
        assert ds.status.values.tolist() == [[4, 4, 4], [4, 4, 2]]
        assert np.isfinite(ds.peak_two_theta.values[truth > 0]).all()  # later stages ran on them
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("laueflow run: warning: 5 of 6 images had more peaks than max_peaks = 2 "
                           f"(up to {N_SPOTS} found)"), line
    assert f"raise `max_peaks` in the workflow's `peaks` stage to at least {N_SPOTS}" in line
    assert "peaks_truncated" in line and "peak_count_found" in line and "--overwrite" in line

    # the warning is read from the store: a second run with nothing left to do says it again
    rc, stdout, err = _run(path, out, 2, capsys)
    assert rc == 0 and "no tiles left to run" in stdout
    assert re.search(r"warning: 5 of 6 images .* at least 6 ", err), err


def test_no_warning_without_truncation(scan, capsys):
    path, spots = scan
    out = path.parent / "uncapped.zarr"
    rc, stdout, err = _run(path, out, N_SPOTS, capsys)  # exactly enough slots: nothing cut
    assert rc == 0 and "warning" not in err and "warning" not in stdout
    with xr.open_zarr(str(out)) as ds:
        np.testing.assert_array_equal(ds.peak_count.values, ds.peak_count_found.values)
        np.testing.assert_array_equal(ds.peak_count_found.values, _true_counts(spots))
        assert ds.status.values.tolist() == [[0, 0, 0], [0, 0, 2]]
