"""Hot pixels found by the ingest in the scan itself, stored, and ignored by the peak search
without any mask file (issue #12, peak search for real data)."""
import numpy as np
import tifffile
import zarr
from distributed import Client, LocalCluster

from hot_pixel_frames import HOT, SHAPE, frames
from ingest_helpers import quiet_ingest
from laueflow.physics.geometry import Calibration
from laueflow.pipeline.run import run_workflow
from laueflow.pipeline.workflow import parse_workflow
from laueflow.stages.peaks import find_peaks


def test_ingest_finds_hot_pixels_and_the_peak_search_ignores_them(tmp_path):
    images, _ = frames()
    src = tmp_path / "images"
    src.mkdir()
    for k, image in enumerate(images):
        tifffile.imwrite(src / f"img_{k:04d}.tif", image)
    calibration = Calibration(70.0, 40.0, 32.0, 0.0, 0.0, 0.2, SHAPE)
    summary = quiet_ingest([src], tmp_path / "scan.zarr", shape=(3, 4), calibration=calibration)
    assert summary["hot_pixels"] == len(HOT)
    group = zarr.open_group(str(tmp_path / "scan.zarr"), mode="r")
    assert sorted(map(tuple, np.argwhere(group["hot_pixels"][...]).tolist())) == sorted(HOT)
    assert group.attrs["hot_pixels"]["count"] == len(HOT) and "mask" not in group

    def hot_found(rows, cols):
        return sum(((rows == r) & (cols == c)).sum() for r, c in HOT)

    plain = find_peaks(images[:10], max_peaks=64)  # without the store's hot-pixel mask
    assert hot_found(plain["peak_row_int"], plain["peak_col_int"]) >= 35  # of 50 (some are faint)
    wf = parse_workflow({"input": str(tmp_path / "scan.zarr"), "output": str(tmp_path / "results.zarr"),
                         "stages": [{"peaks": {"max_peaks": 64}}]})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as client:
        run_workflow(wf, client, progress=False, log=lambda *a: None)
    res = zarr.open_group(str(tmp_path / "results.zarr"), mode="r")
    assert hot_found(np.asarray(res["peak_row_int"][...]), np.asarray(res["peak_col_int"][...])) == 0
    assert (np.asarray(res["peak_count"][...]) > 3).all()  # the real spots are still found
