"""What a Dask worker runs: typed tile tasks, per-worker caches, device resolution.

The driver cuts the chain of map stages into *stage groups* (consecutive stages with the same Dask
resources, :func:`laueflow.pipeline.run.stage_groups`) and submits, for each tile, one task per
group: :func:`run_tile_group` (group 1) → its :class:`TileState` (the tile's outputs so far,
small: peak tables, not images) → group 2 … → the last group writes the tile and returns a
:class:`TileReport`. A tile is one results chunk: no two tasks write the same chunk.

A tile is computed and written once: each task first reads the tile's ``chunk_done`` and, once it
is set (a tile recomputed by Dask after the worker holding its result died, or a second driver),
returns at once with a report that says ``skipped`` — no images read, nothing written.

A *late map phase* (stages with ``points:`` in the workflow, after a reduce stage) runs the same
tasks with ``phase`` ≥ 2: the tile's points are those valid in the scan **and** true in the
results variable ``points`` (the others are treated like invalid images: not read, not computed,
fill values); earlier outputs its stages need (``stored_inputs``) are read from the results store;
the last group writes only the phase's own variables (and its status variable ``status_phase<N>``)
and marks the tile done in ``late_phase_done``.

Everything a task needs is in a frozen :class:`TileTask` with absolute paths. The scan's
calibration, materials and bad-pixel mask are read once per worker process (keyed by the scan's
``token``, which the driver derives from their content), not once per tile.
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import zarr
from distributed import get_worker

from ..physics.geometry import Calibration
from ..stages.base import StageSpec, Variable, combine_status, warning_codes
from .models import load_models
from .scan_store import detector_mask
from .store import read_tile_done, write_tile

__all__ = ["ScanRef", "StageCall", "TileTask", "TileState", "TileReport", "RunInterrupted", "run_tile_group",
           "resolve_device", "worker_resources", "calibration_from_json", "executing_keys"]


@dataclass(frozen=True)
class ScanRef:
    """The scan store a run reads: absolute path, content token and its small attributes."""

    path: str
    token: str
    calibration_json: str | None
    materials_json: str | None
    has_mask: bool
    has_valid: bool
    has_status: bool
    monitor_median: float | None = None  # the scan's median monitor; None: the store has no monitor


@dataclass(frozen=True)
class StageCall:
    """One stage with its merged, prepared parameters (model parameters hold absolute paths)."""

    spec: StageSpec
    params: Mapping[str, Any]


@dataclass(frozen=True)
class TileTask:
    """One stage group on one tile (``ys``/``xs``: half-open index ranges of the scan grid)."""

    scan: ScanRef
    results: str
    tile: tuple[int, int]
    ys: tuple[int, int]
    xs: tuple[int, int]
    stages: tuple[StageCall, ...]
    group: int
    variables: tuple[Variable, ...] = ()  # written by the last group only
    dim_sizes: tuple[tuple[str, int], ...] = ()
    write: bool = False
    delay_s: float = 0.0
    store_id: str = ""  # the results store's id: never write into a store that replaced it
    phase: int = 1  # map phase: 1 = every point; ≥ 2 = a late phase on the points of ``points``
    points: str = ""  # late phases: the results variable (y, x) bool that selects the points
    stored_inputs: tuple[str, ...] = ()  # late phases: earlier outputs read from the results store
    status_variable: str = "status"  # where the tile's per-point status is written


@dataclass
class TileState:
    """A tile between stage groups: which images are valid, status so far, outputs so far."""

    shape: tuple[int, int]
    valid: np.ndarray
    status: np.ndarray
    scan_status: np.ndarray
    outputs: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    cold: bool = False
    skipped: bool = False  # the tile was already done: later groups pass it on


@dataclass(frozen=True)
class TileReport:
    tile: tuple[int, int]
    n_images: int
    n_valid: int
    timings: dict
    worker: int
    cold: bool
    skipped: bool = False  # already done (``chunk_done`` set) when its task ran: nothing computed
    phase: int = 1


class RunInterrupted(RuntimeError, KeyboardInterrupt):
    """Ctrl-C during the map phase, once the running tiles have finished: the tiles done are kept
    and running the same command resumes. A ``RuntimeError``, so that ``run_workflow`` records
    the attempt like a failed one (``complete: false``, the error in ``history``); a
    ``KeyboardInterrupt``, so that callers handle it as the Ctrl-C it is."""


# --------------------------------------------------------------------------- per-worker caches
@functools.lru_cache(maxsize=8)
def calibration_from_json(calibration_json: str | None) -> Calibration | None:
    """The scan's calibration, parsed once per process."""
    return Calibration.from_dict(json.loads(calibration_json)) if calibration_json else None


@functools.lru_cache(maxsize=8)
def _materials(materials_json: str | None):
    return json.loads(materials_json) if materials_json else None


@functools.lru_cache(maxsize=4)
def _mask(path: str, token: str) -> np.ndarray:
    return detector_mask(zarr.open_group(path, mode="r"))


@functools.lru_cache(maxsize=4)
def _relative_monitor(path: str, token: str, median: float) -> np.ndarray:
    """The scan's ``monitor (y, x)`` over its median (read once per process and scan)."""
    return np.asarray(zarr.open_group(path, mode="r")["monitor"][...], np.float64) / median


_WARM: set = set()  # (results, phase, group) already run in this process: later tasks are "warm"


def worker_resources() -> dict:
    """Resources this Dask worker offers ({} outside a worker)."""
    try:
        worker = get_worker()
    except ValueError:
        return {}
    state = getattr(worker, "state", None)
    return dict(getattr(state, "total_resources", None) or getattr(worker, "total_resources", {}) or {})


def resolve_device(requested: str, resources: Mapping[str, float]) -> str:
    """``auto`` → ``cuda`` when this worker offers the ``GPU`` resource, else ``cpu``."""
    device = "cuda" if requested == "cuda" or (requested == "auto" and resources.get("GPU", 0) > 0) else "cpu"
    if device == "cuda":
        import torch  # deferred: torch is heavy

        if not torch.cuda.is_available():
            raise RuntimeError("this worker offers the GPU resource (or the stage asks for device: cuda) "
                               "but torch sees no CUDA device; fix the worker's resources or set device: cpu")
    return device


def executing_keys(dask_worker) -> list:
    """Keys of the tasks this worker is executing now (``client.run(executing_keys)``)."""
    return [ts.key for ts in dask_worker.state.executing]


# --------------------------------------------------------------------------- the task
def _new_state(task: TileTask, scan) -> TileState:
    """The tile before its first stage group: which images are valid, the scan's status; in a
    late phase only the selected points are valid (status -1 for the others) and the earlier
    outputs the phase needs are read from the results store."""
    ys, xs = slice(*task.ys), slice(*task.xs)
    shape = (ys.stop - ys.start, xs.stop - xs.start)
    n = shape[0] * shape[1]
    valid = (np.asarray(scan["valid"][ys, xs], bool) if task.scan.has_valid
             else np.ones(shape, bool)).reshape(n)
    scan_status = (np.asarray(scan["status"][ys, xs], np.int8) if task.scan.has_status
                   else np.full(shape, -1, np.int8)).reshape(n)
    if not task.points:
        return TileState(shape, valid, np.where(valid, 0, 1).astype(np.int8), scan_status)
    results = zarr.open_group(task.results, mode="r", use_consolidated=False)
    selected = np.asarray(results[task.points][ys, xs], bool).reshape(n)
    status = np.where(selected, np.where(valid, 0, 1), -1).astype(np.int8)
    valid &= selected
    outputs = {}
    for name in task.stored_inputs:
        array = np.asarray(results[name][ys, xs])
        outputs[name] = array.reshape(n, *array.shape[2:])[valid]
    return TileState(shape, valid, status, scan_status, outputs)


def _read_images(task: TileTask, scan, valid: np.ndarray):
    """The tile's valid frames ``(n_valid, rows, cols)`` (a copy only when some are invalid)."""
    images = np.asarray(scan["images"][slice(*task.ys), slice(*task.xs)])
    images = images.reshape(len(valid), *images.shape[2:])
    return images if valid.all() else images[valid]


def _batch(task: TileTask, state: TileState, images) -> dict:
    yy, xx = np.meshgrid(np.arange(*task.ys), np.arange(*task.xs), indexing="ij")
    index = np.stack([yy.reshape(-1), xx.reshape(-1)], axis=1)[state.valid]
    return {"images": images, "scan_index": index, "calibration": calibration_from_json(task.scan.calibration_json),
            "materials": _materials(task.scan.materials_json),
            "mask": _mask(task.scan.path, task.scan.token) if task.scan.has_mask else None,
            "monitor": _tile_monitor(task, state), **state.outputs}


def _tile_monitor(task: TileTask, state: TileState) -> np.ndarray | None:
    """``(n_valid,)`` each valid image's monitor relative to the scan's median, or None."""
    if task.scan.monitor_median is None:
        return None
    monitor = _relative_monitor(task.scan.path, task.scan.token, task.scan.monitor_median)
    return monitor[slice(*task.ys), slice(*task.xs)].reshape(-1)[state.valid]


def _needs_images(stages) -> bool:
    return any("images" in {**c.spec.inputs, **c.spec.optional_inputs}.values() for c in stages)


def _tile_done(task: TileTask) -> bool:
    """The tile's ``chunk_done`` element (one small chunk read), in the store this task is for."""
    return read_tile_done(task.results, *task.tile, task.store_id, task.phase)


def _skipped(task: TileTask):
    """A tile found done: a state that says so for the next group or, last group, the report."""
    shape = (task.ys[1] - task.ys[0], task.xs[1] - task.xs[0])
    if task.write:
        return TileReport(task.tile, shape[0] * shape[1], 0, {}, os.getpid(), False, skipped=True, phase=task.phase)
    empty = np.zeros(0, np.int8)
    return TileState(shape, empty.astype(bool), empty, empty, skipped=True)


def run_tile_group(task: TileTask, state: TileState | None = None):
    """Run one stage group on one tile; returns the :class:`TileState` for the next group, or
    (last group) writes the tile and returns a :class:`TileReport` — unless the tile is already
    done (module docstring): then a skipped state or report, at once."""
    if (state is not None and state.skipped) or _tile_done(task):
        return _skipped(task)
    t0 = time.perf_counter()
    need_images = _needs_images(task.stages)
    scan = zarr.open_group(task.scan.path, mode="r") if state is None or need_images else None
    if state is None:  # the first group reads valid/status once; later groups get them passed
        state = _new_state(task, scan)
    images = _read_images(task, scan, state.valid) if need_images and state.valid.any() else None
    state.timings["read"] = state.timings.get("read", 0.0) + time.perf_counter() - t0
    warm_key = (task.results, task.phase, task.group)
    state.cold = state.cold or warm_key not in _WARM
    _WARM.add(warm_key)

    batch = _batch(task, state, images)
    resources = worker_resources()
    n_valid = int(state.valid.sum())
    for call in task.stages:
        t = time.perf_counter()
        if n_valid:
            params = dict(call.params)
            device = resolve_device(params["device"], resources) if call.spec.uses_device else "cpu"
            if call.spec.uses_device:
                params["device"] = device
            outputs = call.spec(batch, load_models(call.spec, params, device))
            if call.spec.status is not None:
                codes = np.asarray(call.spec.status(outputs), dtype=np.int8)
                state.status[state.valid] = combine_status(state.status[state.valid], codes, warning_codes())
            batch.update(outputs)
            state.outputs.update(outputs)
        state.timings[call.spec.name] = time.perf_counter() - t
    if task.delay_s:
        time.sleep(task.delay_s)
    if not task.write:
        return state
    return _write(task, state)


def _write(task: TileTask, state: TileState) -> TileReport:
    t = time.perf_counter()
    cy, cx = state.shape
    n = cy * cx
    sizes = dict(task.dim_sizes)
    arrays = {}
    for var in task.variables:
        if var.name == task.status_variable:
            full = state.status
        elif var.name == "scan_status":
            full = state.scan_status
        else:
            full = var.full((n,), sizes)
            if state.valid.any():
                full[state.valid] = state.outputs[var.name]
        arrays[var.name] = full.reshape(cy, cx, *full.shape[1:])
    write_tile(task.results, *task.tile, slice(*task.ys), slice(*task.xs), arrays, task.store_id, task.phase)
    state.timings["write"] = time.perf_counter() - t
    n_valid = int(state.valid.sum())  # late phases count the selected points as the tile's images
    return TileReport(task.tile, n if task.phase == 1 else n_valid, n_valid, dict(state.timings), os.getpid(),
                      state.cold, phase=task.phase)
