"""The /laueflow dashboard page: live maps of the scan as tiles finish, checked in headless
Chromium (the page loads, its maps have the scan's shape, the colours change as tiles finish)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import test_pipeline_standin as standin
from headless_chromium import Chromium, chromium_path
from laueflow.pipeline.cluster import ClusterConfig, connect
from laueflow.pipeline.live_map import read_maps
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.store import read_chunk_done
from laueflow.pipeline.workflow import parse_workflow

DONE_RGB = (0x00, 0x44, 0x1B)  # a done point on the "tiles done" map (Greens, reversed)
TILE_DONE = "Bokeh.documents[0].get_model_by_name('laueflow-tile_done')"


def test_read_maps_of_a_partly_done_store(tmp_path):
    scan, out = tmp_path / "scan.zarr", tmp_path / "results.zarr"
    standin.make_scan_store(scan, invalid=[(1, 2)])
    workflow = parse_workflow({"input": str(scan), "output": str(out), "chunk": [2, 2],
                               "plugins": ["test_pipeline_standin"], "stages": ["test_peaks", "test_angles"]})
    with connect(ClusterConfig("local", {"n_workers": 1, "processes": False, "dashboard_address": ":0"})) as client:
        run_workflow(workflow, client, progress=False, log=lambda *a: None, max_tiles=2)
    maps = read_maps(out)
    done = read_chunk_done(out)  # (2, 3) tiles of 2×2 over 4×5 points
    assert done.sum() == 2 and set(maps) == {"tile_done", "peak_count", "status"}
    expected = np.kron(done, np.ones((2, 2)))[:4, :5]
    np.testing.assert_array_equal(maps["tile_done"], expected)
    assert np.isnan(maps["peak_count"][expected == 0]).all()
    valid_done = expected == 1
    valid_done[1, 2] = False  # the invalid image: not processed
    assert (maps["peak_count"][valid_done] == 4).all() and (maps["status"][valid_done] == 0).all()
    if expected[1, 2]:
        assert maps["peak_count"][1, 2] == -1 and maps["status"][1, 2] != 0


def _done_pixels(shot: np.ndarray) -> np.ndarray:
    return (np.abs(shot.astype(int) - DONE_RGB) <= 2).all(axis=2)


@pytest.mark.skipif(chromium_path() is None, reason="needs chromium (apt-get install chromium; .ci/run installs it)")
def test_the_live_map_page_fills_in_as_tiles_finish(tmp_path):
    scan, out = tmp_path / "scan.zarr", tmp_path / "results.zarr"
    standin.make_scan_store(scan)
    workflow = parse_workflow({"input": str(scan), "output": str(out), "chunk": [1, 1],
                               "plugins": ["test_pipeline_standin"],
                               "stages": [{"test_peaks": {"delay_s": 0.5}}, "test_angles"]})
    with connect(ClusterConfig("local", {"n_workers": 1, "dashboard_address": ":0"})) as client, Chromium() as browser:
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(summary=run_workflow(
            workflow, client, progress=False, log=lambda *a: None)), daemon=True)
        runner.start()
        page = browser.open(client.dashboard_link.rsplit("/", 1)[0] + "/laueflow")
        page.wait_for(f"window.Bokeh && Bokeh.documents.length > 0 && {TILE_DONE} != null")
        page.wait_for(f"{TILE_DONE}.data.image[0].shape[0] > 1")  # the run's store is on the page
        assert page.evaluate(f"Array.from({TILE_DONE}.data.image[0].shape)") == [4, 5]  # the scan's shape
        time.sleep(1.5)  # a redraw after the data arrived
        early = _done_pixels(page.screenshot()).sum()
        runner.join(timeout=120)
        assert result["summary"].complete
        page.wait_for(f"Array.from({TILE_DONE}.data.image[0]).every(v => v == 1)", timeout_s=10)
        time.sleep(1.5)
        done = _done_pixels(page.screenshot())
    assert done.sum() > early  # the colours changed as tiles finished
    rows, cols = np.nonzero(done)  # the whole map done: a 4 × 5 rectangle of the done colour
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(width / height - 5 / 4) < 0.05 and done.sum() >= 0.97 * width * height
