"""Stand-ins for the late-map-phase tests (no tests here): a reduce stage that selects given
points, late map stages that record which points they compute (and can hold one tile), a reduce
stage after them. Imported as a workflow plug-in (``plugins: [test_phases_standin]``), also by
Dask workers and ``laueflow run`` subprocesses; it imports ``test_pipeline_standin`` (test_peaks,
test_angles, make_scan_store).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import test_pipeline_standin  # noqa: F401  (registers test_peaks, test_angles)
from laueflow.stages.base import StageSpec, Variable, register_stage


def choose_points(peak_count, *, client, writer, chosen_points=()):
    """``chosen (y, x)`` true at ``chosen_points``; ``chosen_weight``: a float, for the
    validation tests; ``chosen_n``: how many."""
    chosen = np.zeros(peak_count.shape, bool)
    for y, x in chosen_points:
        chosen[y, x] = True
    writer.write("chosen", chosen)
    writer.write("chosen_weight", chosen.astype(np.float32))
    writer.write("chosen_n", np.int32(chosen.sum()))


CHOOSE = register_stage(StageSpec(
    name="test_choose", kind="reduce", func=choose_points, inputs={"peak_count": "peak_count"},
    outputs=(Variable("chosen", (), "bool", False), Variable("chosen_weight", (), "float32", float("nan")),
             Variable("chosen_n", (), "int32", -1, per_point=False)),
    params={"chosen_points": []}), replace=True)


def late_sums(images, peak_count, scan_index, *, calls_file="", hold_point=(), hold_while_exists=""):
    """Per point: the image sum and twice the (stored, phase-1) peak count; appends the points
    it computes to ``calls_file``; holds while ``hold_while_exists`` exists when the batch has
    ``hold_point`` (creating ``<file>.paused`` to say so)."""
    if calls_file:
        with open(calls_file, "a") as f:
            f.write("".join(f"{y} {x}\n" for y, x in scan_index))
    if hold_point and hold_while_exists and any(tuple(p) == tuple(hold_point) for p in scan_index.tolist()):
        if os.path.exists(hold_while_exists):
            Path(hold_while_exists + ".paused").touch()
        deadline = time.monotonic() + 300
        while os.path.exists(hold_while_exists) and time.monotonic() < deadline:
            time.sleep(0.05)
    return {"late_sum": images.reshape(len(images), -1).sum(axis=1).astype(np.float64),
            "late_peaks": 2 * np.asarray(peak_count, np.int32)}


def late_status(outputs):
    return np.where(outputs["late_peaks"] == 0, 21, 0).astype(np.int8)


def late_half(late_sum):
    return {"late_half": late_sum / 2}


def weight_copy(chosen_weight):
    return {"weight_copy": chosen_weight}


LATE = register_stage(StageSpec(
    name="test_late", func=late_sums,
    inputs={"images": "images", "peak_count": "peak_count", "scan_index": "scan_index"},
    outputs=(Variable("late_sum", (), "float64", float("nan")), Variable("late_peaks", (), "int32", -1)),
    params={"calls_file": "", "hold_point": [], "hold_while_exists": ""},
    status=late_status,
    status_codes={21: "late_no_peaks"}), replace=True)

LATE_HALF = register_stage(StageSpec(
    name="test_late_half", func=late_half, inputs={"late_sum": "late_sum"},
    outputs=(Variable("late_half", (), "float64", float("nan")),)), replace=True)

USES_WEIGHT = register_stage(StageSpec(
    name="test_uses_weight", func=weight_copy,
    inputs={"chosen_weight": "chosen_weight"}, outputs=(Variable("weight_copy", (), "float32", float("nan")),)),
    replace=True)


def late_total(late_sum, *, client, writer):
    values = np.asarray(client.compute(late_sum).result())
    writer.write("late_total", np.float64(np.nansum(values)))


TOTAL = register_stage(StageSpec(
    name="test_late_total", kind="reduce", func=late_total, inputs={"late_sum": "late_sum"},
    outputs=(Variable("late_total", (), "float64", float("nan"), per_point=False),)), replace=True)


GRID = 64


def grid_features(images):
    """``(n, 4096)`` float32, a stand-in for the autoencoder features (any image size): the means
    of a 64 × 64 grid of regions of each image (remainder rows/cols cropped), less their median
    (the background), clipped at 0, log1p, scaled to unit length (spot layout, not brightness)."""
    n, rows, cols = images.shape
    r, c = rows // GRID, cols // GRID
    cropped = images[:, :r * GRID, :c * GRID].astype(np.float32)
    means = cropped.reshape(n, GRID, r, GRID, c).mean(axis=(2, 4)).reshape(n, -1)
    f = np.log1p(np.clip(means - np.median(means, axis=1, keepdims=True), 0, None))
    return {"features": f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)}


GRID_FEATURES = register_stage(StageSpec(
    name="test_grid_features", func=grid_features, inputs={"images": "images"},
    outputs=(Variable("features", ("feature",), "float32", float("nan"), "1", "stand-in features"),),
    dim_sizes={"feature": GRID * GRID}), replace=True)
