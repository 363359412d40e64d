"""`laueflow run`: a workflow over a whole scan, in five phases.

:func:`run_workflow` = :func:`validate_run` (everything checkable without computing: scan store,
stage parameters, materials, models, cluster resources, the results store — nothing is created)
→ :func:`prepare_run` (driver-side hooks: find or train models) → :func:`map_phase` (the first
map phase: per-tile stage groups on the workers, whole-chunk writes, resumable) →
:func:`reduce_phase` (the later steps in workflow order: scan-wide reduce stages and late map
phases — map stages with ``points:`` run on the selected points only — each resumable) →
:func:`finalize_run` (provenance, ``complete``). A failure in validate or prepare leaves no results
store behind. Science lives in the stages.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from distributed import as_completed, wait
from tqdm.auto import tqdm

from .. import __version__
from ..io.model_files import file_sha256
from ..io.store_kind import read_store_attrs
from ..io.store_lock import StoreLock
from ..io.materials_file import load_materials_file
from ..physics.materials import get_materials, material_differences
from ..stages.base import BATCH_KEYS, Variable, status_table
from .cluster import describe
from .models import check_models, resolve_models
from .monitor import scan_monitor
from .reduce import lazy_outputs, run_reduce_stage
from .scan_store import ScanStoreError, detector_mask, mask_sha256, scan_state
from .store import (Layout, check_results_store, choose_chunk, finalize_results_store,
                    layout_fingerprint, mark_phase_done, pipeline_variables, prepare_results_store,
                    read_chunk_done, read_phase_done, read_reduce_done)
from .tasks import ScanRef, StageCall, TileTask, calibration_from_json, run_tile_group
from .workflow import StageConfig, Step, Workflow, WorkflowError, workflow_steps

__all__ = ["run_workflow", "validate_inputs", "validate_run", "prepare_run", "map_phase", "reduce_phase",
           "late_map_phase", "finalize_run", "RunPlan", "RunSummary", "MapPhase", "build_layout", "stage_groups",
           "format_stage_table", "late_status_variable"]

GROUPINGS = ("split", "whole")


@dataclass
class MapPhase:
    """One map phase: 1 = every point; ≥ 2 = a late phase on the points where ``points`` is true,
    reading the earlier outputs ``stored_inputs`` from the results store, writing its own
    outputs and its per-point status into ``status_variable``."""

    number: int
    stages: list
    groups: list  # [(list[StageConfig], resources dict)]
    points: str | None = None
    stored_inputs: tuple = ()
    status_variable: str = "status"


@dataclass
class RunPlan:
    """What validation established; the later phases only act on it."""

    workflow: Workflow
    scan: ScanRef
    layout: Layout
    attrs: dict
    coords: dict
    store_action: str  # create | resume | replace
    done: np.ndarray
    reduce_done: list
    cluster: dict
    groups: list  # [(list[StageConfig], resources dict)] of the first map phase
    reduce_stages: list
    context: dict
    steps: list = field(default_factory=list)  # [Step] in execution order (workflow_steps)
    phases: dict = field(default_factory=dict)  # map phase number → MapPhase
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def todo(self) -> int:
        return int((~self.done).sum())


@dataclass
class RunSummary:
    results: Path
    n_tiles: int
    n_tiles_done_before: int
    n_tiles_run: int
    n_images_run: int
    wall_s: float
    stage_timings_s: dict = field(default_factory=dict)
    dashboard_link: str | None = None
    warm_ms_per_image: dict = field(default_factory=dict)
    cold_tiles: int = 0
    reduce_timings_s: dict = field(default_factory=dict)
    complete: bool = False

    @property
    def images_per_s(self) -> float:
        return self.n_images_run / self.wall_s if self.wall_s > 0 else float("nan")


# --------------------------------------------------------------------------- validate
def _open_scan(path: Path):
    group = zarr.open_group(str(path), mode="r")
    images = group["images"]
    dims = tuple(getattr(images.metadata, "dimension_names", None) or ())
    if dims and dims[:2] != ("y", "x"):
        raise WorkflowError(f"{path}: 'images' dims must start with (y, x), got {dims}")
    coords = {}
    try:
        ds = xr.open_zarr(str(path), consolidated=None)
        for name, coord in ds.coords.items():
            if set(coord.dims) <= {"y", "x"}:
                coords[name] = (coord.dims, np.asarray(coord.values), dict(coord.attrs))
    except (ValueError, KeyError, OSError):  # coordinates are a nicety, the arrays are what matter
        pass
    return group, images, dict(group.attrs.asdict()), coords


def _check_monitor(path: Path, group, images, values: np.ndarray) -> None:
    """The monitor covers the scan: its shape, a finite value > 0 at every valid point."""
    if values.shape != tuple(images.shape[:2]):
        raise WorkflowError(f"{path}: the monitor is {values.shape} but the scan is {tuple(images.shape[:2])}; "
                            "ingest the scan again with --monitor")
    valid = np.asarray(group["valid"][...], bool) if "valid" in group else np.ones(values.shape, bool)
    bad = valid & ~(np.isfinite(values) & (values > 0))
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise WorkflowError(f"{path}: {int(bad.sum())} valid points have no usable monitor value (the first at "
                            f"iy, ix = {first}); run `laueflow ingest … --monitor` again with a value for every point")


def _reads_monitor(stages) -> bool:
    """Whether any of ``stages`` takes the ``monitor`` batch key."""
    return any("monitor" in {**s.spec.inputs, **s.spec.optional_inputs}.values() for s in stages)


def scan_materials(attrs: dict) -> list:
    """The scan's materials: their full definitions when the store has them (any material, also
    from a user's file), else their names (library materials; stores of laueflow 0.x)."""
    return list(attrs.get("material_definitions") or attrs.get("materials") or [])


def _definitions(attrs: dict) -> list | None:
    try:
        return [m.to_dict() for m in get_materials(scan_materials(attrs))]
    except ValueError:  # names no library knows, in a workflow whose stages need no materials
        return None


def _scan_ref(path: Path, group, images, attrs, monitor: dict | None = None) -> tuple[ScanRef, str | None]:
    """The scan as the workers will see it (with a token over what they cache per process:
    calibration, materials, mask and monitor), and the SHA-256 of its bad-pixel mask (None
    without one)."""
    calibration = json.dumps(attrs["calibration"], sort_keys=True) if attrs.get("calibration") else None
    materials = json.dumps(scan_materials(attrs), sort_keys=True) if attrs.get("materials") else None
    digest = hashlib.sha256(f"{calibration}|{materials}|{images.shape}".encode())
    mask_hash = None
    try:
        mask = detector_mask(group)  # the user's mask | the hot pixels found by the ingest
    except ScanStoreError as err:
        raise WorkflowError(f"{path}: {err}") from None
    if mask is not None:
        if mask.shape != tuple(images.shape[2:]):
            raise WorkflowError(f"{path}: the bad-pixel mask is {mask.shape} but images are "
                                f"{tuple(images.shape[2:])}; re-ingest with a mask of the detector's shape")
        mask_hash = mask_sha256(mask)
        digest.update(mask_hash.encode())
    if monitor is not None:
        digest.update(monitor["sha256"].encode())
    return ScanRef(str(path.resolve()), digest.hexdigest()[:16], calibration, materials, mask is not None,
                   "valid" in group, "status" in group, monitor and monitor["median"]), mask_hash


def late_status_variable(step: Step) -> Variable:
    """The per-point status of late map phase ``step`` (the first phase's is ``status``)."""
    return Variable(f"status_phase{step.phase}", (), "int8", -1, "1",
                    f"per-point status of map phase {step.phase} ({step.names}, on the points where "
                    f"{step.points} is true): codes as status; -1: not selected")


def build_layout(workflow: Workflow, ny: int, nx: int) -> Layout:
    cy, cx = choose_chunk(ny, nx, workflow.images_per_task, workflow.chunk)
    specs = [stage.spec for stage in workflow.stages]
    variables = list(pipeline_variables(status_table(specs)))
    for spec in specs:
        variables.extend(spec.outputs)
    late = [step for step in workflow_steps(workflow.stages) if step.kind == "map" and step.phase > 1]
    variables.extend(late_status_variable(step) for step in late)
    return Layout(ny, nx, cy, cx, workflow.stage_dim_sizes(), tuple(variables), len(late))


def _stage_resources(stage: StageConfig, cluster: dict) -> dict:
    """Dask resources one stage's tasks need on this cluster (``device`` → ``GPU``)."""
    spec, resources = stage.spec, dict(stage.spec.resources)
    if spec.uses_device:
        device = stage.params["device"]
        offered = cluster.get("largest_worker_resources", cluster.get("worker_resources", {}))
        if device == "cuda" or (device == "auto" and offered.get("GPU", 0) > 0):
            resources["GPU"] = max(resources.get("GPU", 0), 1)
    return resources


def stage_groups(stages: list[StageConfig], cluster: dict, grouping: str = "split") -> list:
    """Consecutive map stages with the same resources → one task per tile each (``split``), or
    the whole chain in one task with the largest resources (``whole``)."""
    groups: list = []
    for stage in stages:
        res = _stage_resources(stage, cluster)
        if groups and (grouping == "whole" or groups[-1][1] == res):
            merged = {k: max(groups[-1][1].get(k, 0), res.get(k, 0)) for k in {*groups[-1][1], *res}}
            groups[-1] = (groups[-1][0] + [stage], merged)
        else:
            groups.append(([stage], res))
    return groups


def _check_resources(groups, cluster: dict) -> None:
    offered = cluster.get("largest_worker_resources", cluster.get("worker_resources", {}))
    for stages, resources in groups:
        lacking = {k: v for k, v in resources.items() if offered.get(k, 0) < v}
        if lacking:
            names = ", ".join(s.name for s in stages)
            raise WorkflowError(f"stage(s) {names} need Dask resources {lacking} that no worker offers "
                                f"(workers offer {offered or 'none'}); set `device: cpu` or use a GPU "
                                "cluster config (cluster-configs/)")


def _check_workflow_materials(workflow: Workflow, attrs: dict) -> None:
    """With ``materials_file:`` in the workflow, every scan material must be defined there, the
    same (lattice, space group): the workflow, the scan (and the model) agree or nothing runs."""
    if workflow.materials_file is None:
        return
    try:
        defined = load_materials_file(workflow.materials_file)
        scan = get_materials(scan_materials(attrs))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WorkflowError(f"{_where(workflow)}materials_file {workflow.materials_file}: {err}") from None
    problems = [f"{m.name} not defined in the materials file" for m in scan if m.name not in defined]
    problems += material_differences([defined[m.name] for m in scan if m.name in defined],
                                     [m for m in scan if m.name in defined], ("materials file", "scan store"))
    if problems:
        raise WorkflowError(f"{_where(workflow)}the scan's materials differ from materials_file "
                            f"{workflow.materials_file}: " + "; ".join(problems)
                            + ". Re-ingest with this file (--materials-file) or fix the file")


def _check_scan_inputs(workflow: Workflow, attrs: dict) -> None:
    for stage in workflow.stages:
        keys = set(stage.spec.inputs.values())
        if "calibration" in keys and not attrs.get("calibration"):
            raise WorkflowError(f"{workflow.input}: the scan has no 'calibration' attribute, which stage "
                                f"{stage.name!r} needs; re-ingest with --calibration FILE.det")
        if "materials" in keys:
            if not attrs.get("materials"):
                raise WorkflowError(f"{workflow.input}: the scan has no materials, which stage "
                                    f"{stage.name!r} needs; re-ingest with --material NAME")
            try:
                get_materials(scan_materials(attrs))
            except (KeyError, ValueError) as err:
                raise WorkflowError(f"{workflow.input}: materials {attrs['materials']!r}: {err}") from None


@dataclass
class CheckedInputs:
    """What :func:`validate_inputs` established (no cluster needed)."""

    scan: ScanRef
    coords: dict
    context: dict
    layout: Layout
    attrs: dict
    store_action: str


def validate_inputs(workflow: Workflow, *, overwrite: bool = False, allow_incomplete_scan: bool = False,
                    log=print) -> CheckedInputs:
    """The checks that need no cluster (``laueflow run`` makes them before it starts workers):
    the scan store (a complete ingest, or ``allow_incomplete_scan``: the points read so far,
    said in the log and recorded), its calibration, materials and mask, every stage parameter
    and model file, and the results store (ours; to resume, computed from the same scan
    content, calibration, materials, mask, stage parameters — model hashes are compared at the
    start of the map phase, once resolved — and layout)."""
    try:
        state = scan_state(workflow.input, allow_incomplete=allow_incomplete_scan)
    except ScanStoreError as err:
        raise WorkflowError(f"{_where(workflow)}input: {err}") from None
    if not state["complete"]:
        log(f"warning: the ingest of {workflow.input} is not complete: only the {state['n_valid']} of "
            f"{state['n_points']} points read so far are processed (the others get status invalid_input); "
            "the results store records scan_complete: false")
    group, images, attrs, coords = _open_scan(Path(workflow.input))
    monitor = scan_monitor(group)
    if monitor is not None and _reads_monitor(workflow.stages):
        _check_monitor(Path(workflow.input), group, images, monitor["values"])
    scan, mask_hash = _scan_ref(Path(workflow.input), group, images, attrs, monitor)
    _check_scan_inputs(workflow, attrs)
    _check_workflow_materials(workflow, attrs)
    context = {"calibration": calibration_from_json(scan.calibration_json), "materials": scan_materials(attrs),
               "log": log, "workflow_stages": workflow.to_dict()["stages"],
               "monitor": monitor and {k: v for k, v in monitor.items() if k != "values"}}
    points = {"n_points": state["n_points"], "n_valid": state["n_valid"], "has_monitor": monitor is not None}
    for stage in workflow.stages:
        try:
            stage.spec.validate_params(stage.params)
            stage.spec.validate_for_scan(stage.params, points)
            check_models(stage.spec, stage.params, context)
        except ValueError as err:
            raise WorkflowError(f"{_where(workflow)}{err}") from None
    layout = build_layout(workflow, *images.shape[:2])
    store_attrs = _store_attrs(workflow, workflow.to_dict(), scan, attrs, state, mask_hash,
                               monitor and monitor["sha256"])
    action = check_results_store(workflow.output, layout_fingerprint(layout, store_attrs), overwrite=overwrite)
    return CheckedInputs(scan, coords, context, layout, store_attrs, action)


def validate_run(workflow: Workflow, client, *, overwrite: bool = False, cluster_description=None,
                 grouping: str = "split", allow_incomplete_scan: bool = False, log=print) -> RunPlan:
    """Phase 1: check everything that can be checked without computing; create nothing:
    :func:`validate_inputs`, then the stage groups against the cluster's resources."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    checked = validate_inputs(workflow, overwrite=overwrite, allow_incomplete_scan=allow_incomplete_scan, log=log)
    cluster = cluster_description or describe(client)
    steps = workflow_steps(workflow.stages)
    phases = _map_phases(steps, checked.layout, cluster, grouping)
    for phase in phases.values():
        _check_resources(phase.groups, cluster)
    resume = checked.store_action == "resume"
    attrs = checked.attrs
    attrs["store_id"] = (read_store_attrs(workflow.output) or {}).get("store_id", "") if resume else uuid.uuid4().hex
    done = read_chunk_done(workflow.output) if resume else np.zeros(checked.layout.grid, bool)
    reduce_done = read_reduce_done(workflow.output) if resume else []
    groups = phases[1].groups if 1 in phases else []
    return RunPlan(workflow, checked.scan, checked.layout, attrs, checked.coords, checked.store_action, done,
                   reduce_done, cluster, groups, [s for s in workflow.stages if s.spec.kind == "reduce"],
                   checked.context, steps=steps, phases=phases)


def _map_phases(steps: list[Step], layout: Layout, cluster: dict, grouping: str) -> dict:
    """``{number: MapPhase}``: stage groups, and for late phases what they read from the store."""
    stored = {v.name for v in layout.variables if v.per_point}
    phases = {}
    for step in steps:
        if step.kind != "map":
            continue
        groups = stage_groups(step.stages, cluster, grouping)
        if step.phase == 1:
            phases[1] = MapPhase(1, step.stages, groups)
            continue
        made, needed = set(), []
        for stage in step.stages:
            keys = [*stage.spec.inputs.values(), *stage.spec.optional_inputs.values()]
            needed += [k for k in keys if k not in made and k not in BATCH_KEYS and k in stored and k not in needed]
            made.update(stage.spec.output_names)
        phases[step.phase] = MapPhase(step.phase, step.stages, groups, step.points, tuple(needed),
                                      late_status_variable(step).name)
    return phases


def _where(workflow: Workflow) -> str:
    return f"{workflow.source}: " if workflow.source else "workflow: "


def _store_attrs(workflow, config, scan: ScanRef, scan_attrs, state: dict, mask_hash, monitor_hash) -> dict:
    return {
        "title": "laueflow results",
        "laueflow_version": __version__,
        "schema": "docs/results-schema.md",
        "status_codes": {str(k): v for k, v in status_table([s.spec for s in workflow.stages]).items()},
        "workflow": config,
        "scan_store": scan.path,
        "scan_complete": state["complete"],
        "calibration": scan_attrs.get("calibration"),
        "materials": scan_attrs.get("materials"),
        "material_definitions": _definitions(scan_attrs),
        "step_um": scan_attrs.get("step_um"),
        # what the results are computed from: a resume must match all of it (docs/reliability.md)
        "laueflow_provenance": {
            "scan_id": state["scan_id"], "scan_content_id": state["content_id"],
            "scan_complete": state["complete"], "calibration": scan_attrs.get("calibration"),
            "materials": scan_materials(scan_attrs), "mask_sha256": mask_hash, "monitor_sha256": monitor_hash,
            "stages": config["stages"], "models": {},
            "laueflow_version": __version__,  # stage code of another version may compute otherwise
        },
    }


def _model_hashes(plan: RunPlan, params: dict) -> dict:
    """``{"stage.parameter": sha256}`` of every model file the run's tasks will load."""
    out = {}
    for stage in plan.workflow.stages:
        for parameter in stage.spec.models:
            path = params.get(stage.name, {}).get(parameter)
            if path is not None and Path(path).is_file():
                out[f"{stage.name}.{parameter}"] = file_sha256(path)
    return out


# --------------------------------------------------------------------------- prepare
def _prepare_stage(stage: StageConfig, context: dict) -> dict:
    try:
        params = stage.spec.prepared_params(stage.params, context)
        return resolve_models(stage.spec, params, context)
    except (ValueError, LookupError, OSError) as err:
        raise WorkflowError(f"stage {stage.spec.name!r}: {err}") from err


def prepare_run(plan: RunPlan) -> dict[str, dict]:
    """Phase 2: driver-side hooks and models (trained once here, never on workers), only for
    the stages that still have work. Returns ``{stage name: task parameters}``."""
    todo = {number: _phase_todo(plan, number) for number in plan.phases}
    phase_of = {s.name: number for number, phase in plan.phases.items() for s in phase.stages}
    params = {}
    for stage in plan.workflow.stages:
        needed = todo[phase_of[stage.name]] if stage.spec.kind == "map" else stage.name not in plan.reduce_done
        params[stage.name] = _prepare_stage(stage, plan.context) if needed else dict(stage.params)
    plan.attrs["laueflow_provenance"]["models"] = _model_hashes(plan, params)
    return params


def _phase_todo(plan: RunPlan, number: int) -> bool:
    """Whether map phase ``number`` has tiles left (a new store: every phase)."""
    if plan.store_action != "resume":
        return True
    return not (plan.done if number == 1 else read_phase_done(plan.workflow.output, number)).all()


# --------------------------------------------------------------------------- map
def _tile_chain(plan: RunPlan, params: dict, ty, tx, ys, xs, delay_s: float, phase: int = 1):
    """One TileTask per stage group of map phase ``phase`` (the last writes); dim sizes and
    variables for the write."""
    layout = plan.layout
    current = plan.phases[phase] if plan.phases else MapPhase(1, [], plan.groups)
    map_variables = _map_variables(plan, current)
    tasks = []
    for g, (stages, resources) in enumerate(current.groups):
        last = g == len(current.groups) - 1
        tasks.append((TileTask(
            plan.scan, str(Path(plan.workflow.output).resolve()), (ty, tx), (ys.start, ys.stop),
            (xs.start, xs.stop), tuple(StageCall(s.spec, params[s.name]) for s in stages), g,
            map_variables if last else (), tuple(sorted(layout.dim_sizes.items())) if last else (),
            last, delay_s if last else 0.0, plan.attrs["store_id"], phase, current.points or "",
            current.stored_inputs if g == 0 else (), current.status_variable), resources))
    return tasks


def _map_variables(plan: RunPlan, phase: MapPhase) -> tuple:
    """The variables map phase ``phase`` writes: the first, the pipeline's and its stages'
    outputs; a late phase, its stages' outputs and its status variable."""
    if phase.number == 1:
        late = {name for number, p in plan.phases.items() if number > 1
                for name in [p.status_variable, *(o for s in p.stages for o in s.spec.output_names)]}
        reduce_outputs = {name for s in plan.reduce_stages for name in s.spec.output_names}
        return tuple(v for v in plan.layout.variables
                     if v.per_point and v.name not in reduce_outputs and v.name not in late)
    own = {phase.status_variable, *(o for s in phase.stages for o in s.spec.output_names)}
    return tuple(v for v in plan.layout.variables if v.name in own)


def map_phase(plan: RunPlan, params: dict, client, *, progress: bool = True, delay_s: float = 0.0,
              max_tiles: int | None = None, log=print, reports: list | None = None) -> list:
    """Phase 3: create (or reopen) the store, run every tile of the first map phase not yet
    done; returns the TileReports (appended to ``reports`` as they come, so a failed run still
    has them).

    Ctrl-C (KeyboardInterrupt): the tiles not started are cancelled, the running ones finish
    (Ctrl-C again: at once), then :class:`~laueflow.pipeline.tasks.RunInterrupted`."""
    prepare_results_store(plan.workflow.output, plan.layout, coords=plan.coords, attrs=plan.attrs,
                          overwrite=plan.store_action == "replace")
    return _run_tiles(plan, params, client, 1, ~plan.done, progress=progress, delay_s=delay_s,
                      max_tiles=max_tiles, log=log, reports=reports)


def _tile_counts(block, *, cy: int, cx: int):
    """Selected points per tile of a block of whole tiles (blocks start on tile boundaries)."""
    ny, nx = block.shape
    ty, tx = -(-ny // cy), -(-nx // cx)
    padded = np.zeros((ty * cy, tx * cx), np.int64)
    padded[:ny, :nx] = np.asarray(block, bool)
    return padded.reshape(ty, cy, tx, cx).sum(axis=(1, 3))


def late_map_phase(plan: RunPlan, phase: MapPhase, params: dict, client, *, progress: bool = True,
                   delay_s: float = 0.0, max_tiles: int | None = None, log=print,
                   reports: list | None = None) -> bool:
    """A late map phase: the tiles with a selected point (``phase.points`` true) not yet done;
    tiles without one are marked done at once (never submitted). True when the phase is done."""
    results = plan.workflow.output
    done = read_phase_done(results, phase.number)
    if done.all():
        return True
    selection = lazy_outputs(Path(results), [phase.points])[phase.points]
    cy, cx = plan.layout.cy, plan.layout.cx
    tile_chunks = tuple(tuple(-(-b // c) for b in blocks) for blocks, c in zip(selection.chunks, (cy, cx)))
    counts = np.asarray(client.compute(selection.map_blocks(
        _tile_counts, cy=cy, cx=cx, dtype=np.int64, chunks=tile_chunks)).result())
    mark_phase_done(results, phase.number, (counts == 0) & ~done)
    todo = (counts > 0) & ~done
    log(f"  map phase {phase.number} ({', '.join(s.name for s in phase.stages)}) on the {int(counts.sum())} points "
        f"where {phase.points}: {int(todo.sum())} tile(s) to run of {int((counts > 0).sum())} with selected points")
    _run_tiles(plan, params, client, phase.number, todo, progress=progress, delay_s=delay_s,
               max_tiles=max_tiles, log=log, reports=reports)
    return bool(read_phase_done(results, phase.number).all())


def _run_tiles(plan: RunPlan, params: dict, client, phase: int, todo: np.ndarray, *, progress, delay_s,
               max_tiles, log, reports) -> list:
    """Submit the tiles where ``todo`` (``(chunk_y, chunk_x)`` bool) of map phase ``phase``, one
    chain of stage-group tasks each; wait for them (Ctrl-C / failure: see :func:`map_phase`)."""
    from .tasks import RunInterrupted

    token = uuid.uuid4().hex[:8]
    reports = [] if reports is None else reports
    pending: dict = {}  # key → future of each tile's last task, until the tile's report is in
    bar = None
    try:
        for ty, tx, ys, xs in plan.layout.tiles():
            if not todo[ty, tx]:
                continue
            if max_tiles is not None and len(pending) >= max_tiles:
                break
            future = None
            for task, resources in _tile_chain(plan, params, ty, tx, ys, xs, delay_s, phase):
                future = client.submit(run_tile_group, task, future, key=_task_key(task, token),
                                       resources=resources or None, pure=False, retries=1)
            pending[future.key] = future
        bar = _progress_bar(len(pending), phase) if progress and pending else None
        for future in as_completed(list(pending.values())):
            if future.status == "error":
                err = future.exception()
                _stop(client, pending, reports)
                raise RuntimeError(f"task {future.key} failed: {type(err).__name__}: {err} "
                                   "(finished tiles are kept; fix the cause and re-run to resume)") from err
            reports.append(future.result())
            # the tile is written: the scheduler forgets its result, so a worker lost later
            # makes it recompute nothing (tasks also skip a tile marked done: tasks.py)
            del pending[future.key]
            future.release()
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:  # Ctrl-C (only the driver gets it: cluster.py)
        if bar is not None:
            bar.close()
            bar = None
        _stop(client, pending, reports, notice=lambda n: log(
            f"laueflow run: interrupted — letting the {n} running tile(s) finish (Ctrl-C again to stop now)"))
        raise RunInterrupted("interrupted (Ctrl-C); the tiles done are kept: run the same command "
                             "again to resume") from None
    finally:
        if bar is not None:
            bar.close()
    return reports


def _task_key(task, token: str) -> str:
    """A readable task key: the group's stages, map phase, group and tile, e.g.
    ``peaks+angles-p1-g0-tile-3-4-1a2b3c4d``; the dashboard names (and colours) tasks by the
    stages (``dask.utils.key_split`` → ``peaks+angles``)."""
    ty, tx = task.tile
    return f"{'+'.join(call.spec.name for call in task.stages)}-p{task.phase}-g{task.group}-tile-{ty}-{tx}-{token}"


def _stop(client, pending: dict, reports: list, timeout_s: float = 600, notice=None) -> None:
    """After a failure or Ctrl-C: cancel the tiles not started, let the running ones finish (a
    cancelled running task would still write, after the driver has reported) and add their
    reports, and those of tiles finished meanwhile, to ``reports``. ``pending``: key → future of
    each tile's last task whose report is not in; ``notice(n)`` is told how many are running."""
    from .tasks import executing_keys

    executing = {key for keys in client.run(executing_keys, on_error="ignore").values() for key in keys}
    running = []
    for key, future in pending.items():
        if future.status == "finished":
            reports.append(future.result())
        elif key in executing:
            running.append(future)
        else:
            future.cancel()
    if running:
        if notice is not None:
            notice(len(running))
        wait(running, timeout=timeout_s, return_when="ALL_COMPLETED")
        reports.extend(f.result() for f in running if f.status == "finished")


def _progress_bar(total: int, phase: int = 1):
    return tqdm(total=total, unit="tile", desc="laueflow run" if phase == 1 else f"laueflow run, phase {phase}",
                file=sys.stderr)


# --------------------------------------------------------------------------- reduce and late phases
def reduce_phase(plan: RunPlan, params: dict, client, log=print, *, progress: bool = False, delay_s: float = 0.0,
                 max_tiles: int | None = None, reports: list | None = None) -> dict[str, float]:
    """Phase 4, once every tile of the first map phase is done: the later steps in workflow
    order (:func:`~laueflow.pipeline.workflow.workflow_steps`) — each reduce stage not done yet,
    and each late map phase (:func:`late_map_phase`); a late phase left unfinished
    (``max_tiles``) stops the run there. Returns the reduce stages' timings (s)."""
    timings = {}
    results = Path(plan.workflow.output)
    if not read_chunk_done(results).all():
        return timings
    done = read_reduce_done(results)
    stages = plan.workflow.stages
    for step in plan.steps or [Step("reduce", [s]) for s in plan.reduce_stages]:
        if step.kind == "map":
            if step.phase > 1 and not late_map_phase(plan, plan.phases[step.phase], params, client, progress=progress,
                                                     delay_s=delay_s, max_tiles=max_tiles, log=log, reports=reports):
                break
            continue
        stage = step.stages[0]
        if stage.name in done:
            continue
        # the outputs of the stages listed before it (all computed by now: workflow_steps)
        earlier = {name for s in stages[:stages.index(stage)] for name in s.spec.output_names}
        t = time.perf_counter()
        log(f"  reduce: {stage.name}")
        try:
            run_reduce_stage(stage.spec, params[stage.name], results, plan.layout, client, available=earlier, log=log)
        except Exception as err:
            raise RuntimeError(f"reduce stage {stage.name!r} failed: {type(err).__name__}: {err} "
                               "(every tile is kept; fix the cause and re-run to resume)") from err
        timings[stage.name] = time.perf_counter() - t
    return timings


# --------------------------------------------------------------------------- finalize
def _warm_costs(reports) -> tuple[dict, int]:
    """Per-stage ms per valid image over warm tasks (all tasks if none is warm)."""
    warm = [r for r in reports if not r.cold] or list(reports)
    n = sum(r.n_valid for r in warm)
    totals: dict = {}
    for r in warm:
        for k, v in r.timings.items():
            totals[k] = totals.get(k, 0.0) + v
    return ({k: 1000 * v / n for k, v in totals.items()} if n else {}), sum(r.cold for r in reports)


def finalize_run(plan: RunPlan, reports, reduce_timings: dict, client, error: str | None = None) -> RunSummary:
    """Phase 5: provenance and ``complete`` (every tile and every reduce stage done); also after
    a failed map or reduce phase (``error``), so the failed attempt is on record."""
    wall = time.perf_counter() - plan.t_start
    results = plan.workflow.output
    totals: dict = {}
    for r in reports:
        for k, v in r.timings.items():
            totals[k] = totals.get(k, 0.0) + v
    n_images = sum(r.n_images for r in reports)
    reduce_done = read_reduce_done(results)
    complete = (bool(read_chunk_done(results).all()) and all(s.name in reduce_done for s in plan.reduce_stages)
                and all(read_phase_done(results, number).all() for number in plan.phases if number > 1))
    warm, cold = _warm_costs(reports)
    record = {
        "started": plan.started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
        "wall_s": round(wall, 3), "host": socket.gethostname(), "laueflow_version": __version__,
        "tiles_run": len(reports), "tiles_done_before": int(plan.done.sum()), "images_run": n_images,
        "images_per_s": round(n_images / wall, 3) if wall > 0 else None,
        "stage_timings_s": {k: round(v, 4) for k, v in totals.items()},
        "warm_ms_per_image": {k: round(v, 3) for k, v in warm.items()},
        "reduce_timings_s": {k: round(v, 4) for k, v in reduce_timings.items()},
        "stage_groups": [[s.name for s in stages] for stages, _ in plan.groups],
        **({"late_phases": [{"phase": n, "points": p.points, "stage_groups": [[s.name for s in st] for st, _ in p.groups]}
                            for n, p in plan.phases.items() if n > 1]} if len(plan.phases) > 1 else {}),
        "cluster": plan.cluster,
    }
    if error:
        record["error"] = error
    finalize_results_store(results, {"complete": complete, "run": record})
    return RunSummary(Path(results), plan.layout.grid[0] * plan.layout.grid[1], int(plan.done.sum()),
                      len(reports), n_images, wall, totals, client.dashboard_link, warm, cold,
                      reduce_timings, complete)


def format_stage_table(summary: RunSummary) -> str:
    """The per-stage cost table ``laueflow run`` prints at the end."""
    rows = summary.warm_ms_per_image
    if not rows:
        return ""
    total = sum(v for k, v in rows.items())
    lines = [f"  {'stage':<14} {'ms/image':>9} {'share':>6}   (warm tasks; {summary.cold_tiles} first "
             "tile(s) per worker and group, with start-up and model loading, left out)"]
    for name, ms in rows.items():
        lines.append(f"  {name:<14} {ms:>9.1f} {100 * ms / total:>5.1f}%")
    lines.append(f"  {'total':<14} {total:>9.1f}")
    for name, s in summary.reduce_timings_s.items():
        lines.append(f"  {name:<14} {s:>8.2f} s (reduce, whole scan)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- all phases
def run_workflow(workflow: Workflow, client, *, overwrite: bool = False, progress: bool = True,
                 cluster_description: dict | None = None, log=print, delay_s: float = 0.0,
                 max_tiles: int | None = None, grouping: str = "split",
                 allow_incomplete_scan: bool = False) -> RunSummary:
    """Run ``workflow`` on the cluster behind ``client``; resumes an unfinished results store.

    The results store is locked for the whole run (one writer at a time) and the scan store
    shared-locked (no ingest changes it meanwhile): a second run or ingest is refused at once,
    naming this one (:class:`~laueflow.io.store_lock.StoreLockedError`).
    ``delay_s`` (testing) sleeps in each task; ``max_tiles`` (testing/benchmarks) stops after
    submitting that many tiles; ``grouping`` (``split`` | ``whole``, see :func:`stage_groups`);
    ``allow_incomplete_scan``: run on the points of an unfinished ingest (see :func:`validate_run`).
    """
    from .live_map import watching

    with StoreLock(workflow.output, "run", log=log), \
            StoreLock(workflow.input, "run (reading the scan)", shared=True), watching(workflow.output):
        plan = validate_run(workflow, client, overwrite=overwrite, cluster_description=cluster_description,
                            grouping=grouping, allow_incomplete_scan=allow_incomplete_scan, log=log)
        return _run_phases(plan, client, progress=progress, delay_s=delay_s, max_tiles=max_tiles, log=log)


def _later_steps(plan: RunPlan) -> str:
    return " → ".join(f"reduce {step.names}" if step.kind == "reduce"
                      else f"map phase {step.phase} on {step.points} ({step.names})" for step in plan.steps[1:])


def _run_phases(plan: RunPlan, client, *, progress, delay_s, max_tiles, log) -> RunSummary:
    workflow, layout = plan.workflow, plan.layout
    log(f"laueflow run: {workflow.input} → {workflow.output}")
    log(f"  dashboard: {client.dashboard_link}" + (f" (live maps: {client.dashboard_link.rsplit('/', 1)[0]}/laueflow)"
                                                   if getattr(client, "cluster", None) is not None else ""))
    log(f"  {layout.ny}×{layout.nx} images, tiles of {layout.cy}×{layout.cx}: {layout.grid[0] * layout.grid[1]} "
        f"tasks, {int(plan.done.sum())} already done; stage groups: "
        + " | ".join(", ".join(s.name for s in stages) + (f" {res}" if res else "") for stages, res in plan.groups)
        + (f"; then: {_later_steps(plan)}" if len(plan.steps) > 1 else ""))
    params = prepare_run(plan)
    reports: list = []
    try:
        map_phase(plan, params, client, progress=progress, delay_s=delay_s, max_tiles=max_tiles, log=log,
                  reports=reports)
        reduce_timings = reduce_phase(plan, params, client, log=log, progress=progress, delay_s=delay_s,
                                      max_tiles=max_tiles, reports=reports)
    except RuntimeError as err:
        finalize_run(plan, reports, {}, client, error=str(err))
        raise
    return finalize_run(plan, reports, reduce_timings, client)
