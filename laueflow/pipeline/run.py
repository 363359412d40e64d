"""`laueflow run`: one Dask task per (y, x) tile of images → stages → whole-chunk writes.

The driver (:func:`run_workflow`) creates the results store up front, submits one task per tile
not yet marked done (``client.submit`` with the stages' Dask resources attached at submit time),
shows progress, and records provenance. The task (:func:`process_tile`) reads its images from the
scan store, runs the stages in order on the valid images, fills invalid ones, writes its tile and
marks it done. Science lives in the stages; nothing here looks at pixel values.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..stages.base import STATUS_CODES, StageSpec
from .store import (PIPELINE_VARIABLES, Layout, choose_chunk, finalize_results_store,
                    prepare_results_store, write_tile)
from .workflow import Workflow, WorkflowError

__all__ = ["run_workflow", "process_tile", "RunSummary", "build_layout"]


# --------------------------------------------------------------------------- worker side
@functools.lru_cache(maxsize=8)
def _calibration(calibration_json: str):
    from ..physics.geometry import Calibration

    return Calibration.from_dict(json.loads(calibration_json))


def process_tile(task: dict) -> dict:
    """Run the stages on one tile of the scan and write it to the results store.

    ``task`` holds plain data (paths, tile indices, stage specs with merged parameters, the
    variable list); returns per-stage timings and image counts.
    """
    import zarr

    t0 = time.perf_counter()
    ty, tx = task["tile"]
    ys, xs = slice(*task["ys"]), slice(*task["xs"])
    scan = zarr.open_group(task["scan"], mode="r")
    images = np.asarray(scan["images"][ys, xs])
    cy, cx = images.shape[:2]
    n = cy * cx
    valid = (np.asarray(scan["valid"][ys, xs], dtype=bool) if "valid" in scan
             else np.ones((cy, cx), bool)).reshape(n)
    scan_status = (np.asarray(scan["status"][ys, xs], dtype=np.int8) if "status" in scan
                   else np.full((cy, cx), -1, np.int8))
    t_read = time.perf_counter() - t0

    yy, xx = np.meshgrid(np.arange(ys.start, ys.start + cy), np.arange(xs.start, xs.start + cx),
                         indexing="ij")
    batch = {
        "images": images.reshape(n, *images.shape[2:])[valid],
        "scan_index": np.stack([yy.reshape(n), xx.reshape(n)], axis=1)[valid],
        "calibration": _calibration(task["calibration"]) if task["calibration"] else None,
        "materials": task["materials"],
        "mask": np.asarray(scan["mask"][...], dtype=bool) if "mask" in scan else None,
    }
    delay = float(task.get("delay_s") or 0.0)
    timings: dict[str, float] = {"read": t_read}
    status = np.where(valid, 0, 1).astype(np.int8)
    n_valid = int(valid.sum())
    for spec, params in task["stages"]:
        t = time.perf_counter()
        if n_valid:
            outputs = spec(batch, params)
            if spec.status is not None:
                codes = np.asarray(spec.status(outputs), dtype=np.int8)
                sub = status[valid]
                status[valid] = np.where(sub == 0, codes, sub)
        else:
            outputs = {}
        batch.update(outputs)
        timings[spec.name] = time.perf_counter() - t
    if delay:
        time.sleep(delay)

    t = time.perf_counter()
    arrays = {}
    for var in task["variables"]:
        if var.name == "status":
            full = status
        elif var.name == "scan_status":
            arrays[var.name] = scan_status
            continue
        else:
            extra = tuple(task["dim_sizes"][d] for d in var.dims)
            full = np.full((n, *extra), var.fill_value, dtype=var.dtype)
            if n_valid:
                full[valid] = batch[var.name]
        arrays[var.name] = full.reshape(cy, cx, *full.shape[1:])
    write_tile(task["results"], ty, tx, ys, xs, arrays)
    timings["write"] = time.perf_counter() - t
    return {"tile": (ty, tx), "n_images": n, "n_valid": n_valid, "timings": timings,
            "worker": os.getpid()}


# --------------------------------------------------------------------------- driver side
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

    @property
    def images_per_s(self) -> float:
        return self.n_images_run / self.wall_s if self.wall_s > 0 else float("nan")


def _open_scan(path: Path):
    import xarray as xr
    import zarr

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
    except Exception:  # noqa: BLE001 - coordinates are a nicety, the arrays are what matter
        pass
    return group, images, dict(group.attrs.asdict()), coords


def build_layout(workflow: Workflow, ny: int, nx: int) -> Layout:
    cy, cx = choose_chunk(ny, nx, workflow.images_per_task, workflow.chunk)
    variables = list(PIPELINE_VARIABLES)
    for stage in workflow.stages:
        variables.extend(stage.spec.outputs)
    return Layout(ny, nx, cy, cx, workflow.stage_dim_sizes(), tuple(variables))


def _resources(specs: list[StageSpec]) -> dict:
    res: dict[str, float] = {}
    for spec in specs:
        for k, v in spec.resources.items():
            res[k] = max(res.get(k, 0), v)
    return res


def _prepare(stage, context) -> dict:
    """A stage's driver-side ``prepare`` hook; its failures become clear workflow errors."""
    try:
        return stage.spec.prepared_params(stage.params, context)
    except (ValueError, LookupError, OSError) as err:
        raise WorkflowError(f"stage {stage.spec.name!r}: {err}") from err


def run_workflow(workflow: Workflow, client, *, overwrite: bool = False, progress: bool = True,
                 cluster_description: dict | None = None, log=print, delay_s: float = 0.0,
                 max_tiles: int | None = None) -> RunSummary:
    """Run ``workflow`` on the cluster behind ``client``; resumes an unfinished results store.

    ``delay_s`` (testing) sleeps in each task; ``max_tiles`` (testing/benchmarks) stops after
    submitting that many tiles.
    """
    from distributed import as_completed

    from .. import __version__
    from .cluster import describe

    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    scan_group, images, scan_attrs, coords = _open_scan(workflow.input)
    ny, nx = images.shape[:2]
    layout = build_layout(workflow, ny, nx)
    specs = [stage.spec for stage in workflow.stages]
    if any("calibration" in spec.inputs.values() for spec in specs) and not scan_attrs.get("calibration"):
        raise WorkflowError(f"{workflow.input}: the scan has no 'calibration' attribute, which stage(s) "
                            f"{[s.name for s in specs if 'calibration' in s.inputs.values()]} need; "
                            "re-ingest with --calibration")
    config = workflow.to_dict()
    attrs = {
        "title": "laueflow results",
        "laueflow_version": __version__,
        "schema": "docs/results-schema.md",
        "status_codes": {str(k): v for k, v in STATUS_CODES.items()},
        "workflow": config,
        "scan_store": str(Path(workflow.input).resolve()),
        "calibration": scan_attrs.get("calibration"),
        "materials": scan_attrs.get("materials"),
        "step_um": scan_attrs.get("step_um"),
        "laueflow_layout": {"stages": config["stages"]},
    }
    done = prepare_results_store(workflow.output, layout, coords=coords, attrs=attrs,
                                 overwrite=overwrite)
    n_done_before = int(done.sum())
    resources = _resources(specs)
    cluster = cluster_description or describe(client)
    if resources:
        have = cluster.get("worker_resources", {})
        lacking = {k: v for k, v in resources.items() if have.get(k, 0) < v}
        if lacking:
            raise WorkflowError(f"stages need Dask resources {lacking} that no worker offers "
                                f"(workers offer {have or 'none'}); use a cluster config with "
                                f"`resources:` or a GPU cluster (cluster-configs/)")
    log(f"laueflow run: {workflow.input} → {workflow.output}")
    log(f"  dashboard: {client.dashboard_link}")
    log(f"  {ny}×{nx} images, tiles of {layout.cy}×{layout.cx}: {layout.grid[0] * layout.grid[1]} "
        f"tasks, {n_done_before} already done; stages: {', '.join(s.name for s in specs)}")

    calibration_json = json.dumps(scan_attrs["calibration"]) if scan_attrs.get("calibration") else None
    context = {"calibration": _calibration(calibration_json) if calibration_json else None,
               "materials": scan_attrs.get("materials"), "log": log}
    todo = int((~done).sum())
    stage_params = [(stage.spec, _prepare(stage, context) if todo else stage.params) for stage in workflow.stages]
    base_task = {
        "scan": str(workflow.input), "results": str(workflow.output),
        "stages": stage_params,
        "variables": layout.variables, "dim_sizes": layout.dim_sizes,
        "calibration": calibration_json, "materials": scan_attrs.get("materials"),
        "delay_s": delay_s,
    }
    token = uuid.uuid4().hex[:8]
    futures = []
    for ty, tx, ys, xs in layout.tiles():
        if done[ty, tx]:
            continue
        if max_tiles is not None and len(futures) >= max_tiles:
            break
        task = {**base_task, "tile": (ty, tx), "ys": (ys.start, ys.stop), "xs": (xs.start, xs.stop)}
        futures.append(client.submit(process_tile, task, key=f"laueflow-tile-{ty}-{tx}-{token}",
                                     resources=resources or None, pure=False, retries=1))

    stage_totals: dict[str, float] = {}
    n_images = 0
    bar = None
    if progress and futures:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), unit="tile", desc="laueflow run", file=sys.stderr)
    try:
        for future in as_completed(futures):
            if future.status == "error":
                err = future.exception()
                for other in futures:
                    other.cancel()
                raise RuntimeError(f"task {future.key} failed: {type(err).__name__}: {err} "
                                   "(finished tiles are kept; fix the cause and re-run to resume)"
                                   ) from err
            result = future.result()
            n_images += result["n_images"]
            for k, v in result["timings"].items():
                stage_totals[k] = stage_totals.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    finished = datetime.now(timezone.utc)
    from .store import read_chunk_done

    complete = bool(read_chunk_done(workflow.output).all())
    run_record = {
        "started": started.isoformat(), "finished": finished.isoformat(), "wall_s": round(wall, 3),
        "host": socket.gethostname(), "laueflow_version": __version__,
        "tiles_run": len(futures), "tiles_done_before": n_done_before, "images_run": n_images,
        "images_per_s": round(n_images / wall, 3) if wall > 0 else None,
        "stage_timings_s": {k: round(v, 4) for k, v in stage_totals.items()},
        "cluster": cluster,
    }
    finalize_results_store(workflow.output, {"complete": complete, "run": run_record})
    return RunSummary(Path(workflow.output), layout.grid[0] * layout.grid[1], n_done_before,
                      len(futures), n_images, wall, stage_totals, client.dashboard_link)
