"""Stand-ins for the segmentation tests (no tests here): a scan of three "grains" (regions with
their own spot pattern), a test-only feature map stage and a segmentation that can pause mid-way.

Imported as a workflow plug-in (``plugins: [test_segmentation_standin]``), also by Dask workers
and ``laueflow run`` subprocesses: keep it importable from ``tests/``. The real feature stage
(autoencoder, ``laueflow/stages/features.py``) writes the same ``features (y, x, feature)``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from laueflow.stages.base import StageSpec, Variable, register_stage
from laueflow.stages.segmentation import STAGE as SEGMENTATION
from laueflow.stages.segmentation import segmentation

ROWS, COLS, BLOCK = 32, 40, 4
N_FEATURES = (ROWS // BLOCK) * (COLS // BLOCK)


def block_features(images):
    """``(n, 80)`` float32: log of the 4 × 4 block means of each ``(32, 40)`` image."""
    n = len(images)
    blocks = images.astype(np.float32).reshape(n, ROWS // BLOCK, BLOCK, COLS // BLOCK, BLOCK).mean(axis=(2, 4))
    return {"features": np.log1p(blocks).reshape(n, -1)}


TEST_FEATURES = register_stage(StageSpec(
    name="test_features", func=block_features, inputs={"images": "images"},
    outputs=(Variable("features", ("feature",), "float32", float("nan"), "1", "stand-in features"),),
    dim_sizes={"feature": N_FEATURES}), replace=True)


def region_of(ny: int, nx: int) -> np.ndarray:
    """The true "grain" map ``(ny, nx)``: three vertical bands of x."""
    return np.repeat((np.arange(nx) * 3 // nx)[None, :], ny, axis=0)


def make_region_scan(path, ny=6, nx=9, invalid=((1, 2),), seed=0):
    """A scan store whose images show one of three spot patterns (by :func:`region_of`), with
    Poisson noise; ``invalid`` points are marked invalid. Returns the region map."""
    import warnings

    import xarray as xr

    from laueflow.physics.geometry import Calibration

    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:ROWS, 0:COLS]
    patterns = []
    for _ in range(3):
        pattern = np.zeros((ROWS, COLS))
        for r, c in rng.uniform([3, 3], [ROWS - 4, COLS - 4], (6, 2)):
            pattern += 3000 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.5 ** 2))
        patterns.append(pattern)
    regions = region_of(ny, nx)
    images = rng.poisson(100 + np.stack([patterns[g] for g in regions.ravel()])).astype(np.uint16)
    images = images.reshape(ny, nx, ROWS, COLS)
    valid = np.ones((ny, nx), bool)
    status = np.zeros((ny, nx), np.int8)
    for y, x in invalid:
        valid[y, x], status[y, x], images[y, x] = False, 1, 0
    calibration = Calibration(70.0, COLS / 2, ROWS / 2, 0.0, 0.0, 0.2, (ROWS, COLS))
    ds = xr.Dataset(
        {"images": (("y", "x", "row", "col"), images), "valid": (("y", "x"), valid),
         "status": (("y", "x"), status)},
        coords={"y_um": ("y", np.arange(ny) * 1.0), "x_um": ("x", np.arange(nx) * 1.0)},
        attrs={"calibration": calibration.to_dict(), "materials": ["Cu"], "step_um": [1.0, 1.0],
               "laueflow_scan": True, "ingest_complete": True, "scan_id": f"regions-{seed}"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        ds.to_zarr(str(path), mode="w", zarr_format=3, consolidated=True,
                   encoding={"images": {"chunks": (1, 1, ROWS, COLS)}})
    return regions


class _PausingWriter:
    """Writes through ``inner``; after ``after`` outputs it waits while ``marker`` exists
    (creating ``marker.paused`` to say so): a run to be killed half-way through its reduce."""

    def __init__(self, inner, marker: str, after: int):
        self.inner, self.layout, self.marker, self.after, self.count = inner, inner.layout, marker, after, 0

    def write(self, name, array):
        self.inner.write(name, array)
        self.count += 1
        if self.marker and self.count == self.after and os.path.exists(self.marker):
            Path(self.marker + ".paused").touch()
            while os.path.exists(self.marker):
                time.sleep(0.05)


def pausing_segmentation(features, *, client, writer, pause_while_exists="", **params):
    return segmentation(features, client=client, writer=_PausingWriter(writer, pause_while_exists, 3), **params)


PAUSING_SEGMENTATION = register_stage(StageSpec(
    name="pausing_segmentation", kind="reduce", func=pausing_segmentation, inputs=SEGMENTATION.inputs,
    outputs=SEGMENTATION.outputs, params={**SEGMENTATION.params, "pause_while_exists": ""},
    dim_sizes=SEGMENTATION.dim_sizes, check=SEGMENTATION.check), replace=True)
