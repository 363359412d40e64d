"""Stand-in stages and a small scan-store maker for the pipeline tests (no tests here).

Imported as a workflow plug-in (``plugins: [test_pipeline_standin]``) by the pipeline tests, also
in worker processes and in ``laueflow run`` subprocesses: keep it importable from ``tests/``.
The stand-in peak finder only has to be deterministic and honour the peak stage's outputs.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from laueflow.stages.base import get_stage, register_stage


def standin_find_peaks(images, *, threshold_counts=200.0, max_peaks=16, delay_s=0.0, hold_while_exists="", mask=None):
    from scipy import ndimage

    n = images.shape[0]
    out = {k: np.full((n, max_peaks), np.nan, np.float32) for k in
           ("peak_col", "peak_row", "peak_intensity", "peak_integrated_intensity",
            "peak_background", "peak_noise")}
    out["peak_col_int"] = np.full((n, max_peaks), -1, np.int32)
    out["peak_row_int"] = np.full((n, max_peaks), -1, np.int32)
    out["peak_count"] = np.zeros(n, np.int32)
    out["peak_count_found"] = np.zeros(n, np.int32)
    for i, image in enumerate(images.astype(np.float32)):
        background = float(np.median(image))
        if mask is not None:
            image[mask] = background
        peaks = (image == ndimage.maximum_filter(image, size=5)) & (image > background + threshold_counts)
        rows, cols = np.nonzero(peaks)
        order = np.argsort(-image[rows, cols], kind="stable")[:max_peaks]
        for j, (r, c) in enumerate(zip(rows[order], cols[order])):
            r0, r1, c0, c1 = max(r - 2, 0), r + 3, max(c - 2, 0), c + 3
            box = image[r0:r1, c0:c1] - background
            box = np.clip(box, 0, None)
            rr, cc = np.mgrid[r0:r0 + box.shape[0], c0:c0 + box.shape[1]]
            total = box.sum()
            out["peak_row"][i, j] = (rr * box).sum() / total
            out["peak_col"][i, j] = (cc * box).sum() / total
            out["peak_row_int"][i, j], out["peak_col_int"][i, j] = r, c
            out["peak_intensity"][i, j] = image[r, c] - background
            out["peak_integrated_intensity"][i, j] = total
            out["peak_background"][i, j] = background
            out["peak_noise"][i, j] = 1.0
        out["peak_count"][i] = len(order)
        out["peak_count_found"][i] = len(rows)
    if delay_s:
        time.sleep(delay_s)
    deadline = time.monotonic() + 300
    while hold_while_exists and os.path.exists(hold_while_exists) and time.monotonic() < deadline:
        time.sleep(0.05)  # a test holds the run mid-way, whatever the machine's load
    return out


def standin_angles(peak_col, peak_row, calibration):
    from laueflow.physics.geometry import pixel_to_angles

    two_theta, chi = pixel_to_angles(peak_col, peak_row, calibration)
    return {"peak_two_theta": two_theta, "peak_chi": chi}


def failing_angles(peak_col, peak_row, calibration, *, fail_while_exists=""):
    """``standin_angles``, but raising for a batch holding an image without peaks while the file
    ``fail_while_exists`` exists (a fault the user can fix between runs)."""
    import os

    if fail_while_exists and os.path.exists(fail_while_exists) and np.isnan(peak_col).all(axis=1).any():
        raise ValueError("stand-in failure: an image without peaks")
    return standin_angles(peak_col, peak_row, calibration)


PEAKS, ANGLES = get_stage("peaks"), get_stage("angles")
TEST_PEAKS = register_stage(replace(PEAKS, name="test_peaks", check=None, func=standin_find_peaks,
                                    params={"threshold_counts": 200.0, "max_peaks": 16, "delay_s": 0.0,
                                            "hold_while_exists": ""}),
                            replace=True)
TEST_ANGLES = register_stage(replace(ANGLES, name="test_angles", func=standin_angles), replace=True)
FAILING_ANGLES = register_stage(replace(ANGLES, name="test_failing_angles", func=failing_angles,
                                        params={"fail_while_exists": ""}), replace=True)


def make_scan_store(path, ny=4, nx=5, rows=64, cols=80, invalid=(), seed=0, n_spots=4,
                    empty=()):
    """A small scan store as `laueflow ingest` writes it; returns the true spot table."""
    import xarray as xr

    from laueflow.physics.geometry import Calibration

    rng = np.random.default_rng(seed)
    images = rng.poisson(100, size=(ny, nx, rows, cols)).astype(np.uint16)
    rr, cc = np.mgrid[0:rows, 0:cols]
    spots = []
    for y in range(ny):
        for x in range(nx):
            if (y, x) in empty:
                continue
            for _ in range(n_spots):
                r, c = rng.uniform(6, rows - 7), rng.uniform(6, cols - 7)
                amp = rng.uniform(800, 3000)
                images[y, x] += (amp * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.2 ** 2))).astype(np.uint16)
                spots.append((y, x, c, r, amp))
    valid = np.ones((ny, nx), bool)
    status = np.zeros((ny, nx), np.int8)
    for y, x in invalid:
        valid[y, x] = False
        status[y, x] = 1
        images[y, x] = 0
    calibration = Calibration(70.0, cols / 2, rows / 2, 0.0, 0.0, 0.2, (rows, cols))
    ds = xr.Dataset(
        {"images": (("y", "x", "row", "col"), images), "valid": (("y", "x"), valid),
         "status": (("y", "x"), status)},
        coords={"y_um": ("y", np.arange(ny) * 1.0), "x_um": ("x", np.arange(nx) * 1.0)},
        attrs={"calibration": calibration.to_dict(), "materials": ["Cu"], "step_um": [1.0, 1.0],
               "laueflow_scan": True, "ingest_complete": True, "scan_id": f"standin-{seed}"},
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        ds.to_zarr(str(path), mode="w", zarr_format=3, consolidated=True,
                   encoding={"images": {"chunks": (1, 1, rows, cols)}})
    return np.array(spots)
