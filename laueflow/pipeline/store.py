"""The results store (``results.zarr``): layout, creation up front, whole-chunk writes, resume.

Every variable is chunked ``(cy, cx, <full extra dims>)``: one Dask task computes one (y, x)
chunk of images and writes exactly the Zarr chunks of that tile, then sets its own element of
``chunk_done (chunk_y, chunk_x)`` (one Zarr chunk per element) — no two tasks write one chunk,
and a chunk marked done was fully written. A workflow with late map phases (stages with
``points``) has ``late_phase_done (late_phase, chunk_y, chunk_x)`` too: element ``p`` is map phase
``p + 2``'s ``chunk_done``. Layout: ``docs/results-schema.md``.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.store_kind import KIND_NAMES, RESULTS_MARKER, read_store_attrs, remove_store, store_kind
from ..stages.base import STATUS_CODES, Variable
from .scan_store import settings_differences

__all__ = ["pipeline_variables", "Layout", "ResultsStoreError", "check_results_store",
           "prepare_results_store", "write_tile", "write_region", "read_chunk_done",
           "read_reduce_done", "mark_reduce_done", "record_reduce_info", "finalize_results_store", "SCHEMA_VERSION",
           "read_tile_done", "check_store_id", "StoreReplacedError", "read_phase_done", "mark_phase_done",
           "done_array"]

SCHEMA_VERSION = 3


def pipeline_variables(status_codes: dict[int, str] | None = None) -> tuple[Variable, ...]:
    """Variables every results store has, whatever the stages (``status`` lists the codes)."""
    codes = status_codes or STATUS_CODES
    return (
        Variable("status", (), "int8", 1, "1",
                 "per-image status code: " + ", ".join(f"{k} {v}" for k, v in codes.items())),
        Variable("scan_status", (), "int8", -1, "1",
                 "status of the input image in the scan store (ingest codes; -1: scan has none)"),
    )


class ResultsStoreError(ValueError):
    """A results store that cannot be used for this run (message says how to fix it)."""


@dataclass
class Layout:
    """Shape of a results store: scan grid, task/chunk shape and the variables."""

    ny: int
    nx: int
    cy: int
    cx: int
    dim_sizes: dict[str, int]
    variables: tuple[Variable, ...]
    late_phases: int = 0  # map phases after the first (stages with ``points``)

    @property
    def grid(self) -> tuple[int, int]:
        return (-(-self.ny // self.cy), -(-self.nx // self.cx))

    def tiles(self):
        """``(ty, tx, ys, xs)`` for each task, row-major."""
        nty, ntx = self.grid
        for ty in range(nty):
            for tx in range(ntx):
                ys = slice(ty * self.cy, min(self.ny, (ty + 1) * self.cy))
                xs = slice(tx * self.cx, min(self.nx, (tx + 1) * self.cx))
                yield ty, tx, ys, xs

    def shape(self, var: Variable) -> tuple[int, ...]:
        extra = tuple(self.dim_sizes[d] for d in var.dims)
        return (self.ny, self.nx, *extra) if var.per_point else extra

    def chunks(self, var: Variable) -> tuple[int, ...]:
        extra = tuple(self.dim_sizes[d] for d in var.dims)
        return (self.cy, self.cx, *extra) if var.per_point else extra

    def fingerprint(self) -> dict:
        """What must match for a run to resume into an existing store."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "shape": [self.ny, self.nx],
            "chunk": [self.cy, self.cx],
            "dim_sizes": dict(sorted(self.dim_sizes.items())),
            "variables": [[v.name, list(v.dims), v.dtype] for v in self.variables],
        }
        if self.late_phases:
            out["late_phases"] = self.late_phases
        return out


def choose_chunk(ny: int, nx: int, images_per_task: int, chunk=None) -> tuple[int, int]:
    """(cy, cx) of one task: an explicit chunk, else whole rows of x when they fit."""
    if chunk:
        return min(ny, int(chunk[0])), min(nx, int(chunk[1]))
    n = max(1, int(images_per_task))
    if n >= nx:
        return min(ny, max(1, n // nx)), nx
    return 1, n


def _template(layout: Layout, coords: dict, attrs: dict):
    import dask.array as da  # deferred (this module): the CLI imports it for --help
    import xarray as xr  # deferred: heavy

    data_vars = {}
    encoding = {}
    for var in layout.variables:
        dims = ("y", "x", *var.dims) if var.per_point else var.dims
        data = da.full(layout.shape(var), var.fill_value, dtype=var.dtype, chunks=layout.chunks(var))
        data_vars[var.name] = (dims, data, var.attrs())
        encoding[var.name] = {"chunks": layout.chunks(var)}
        if np.dtype(var.dtype).kind != "f":  # keep integers integers (no CF masking on read)
            encoding[var.name]["fill_value"] = var.fill_value
    nty, ntx = layout.grid
    data_vars["chunk_done"] = (("chunk_y", "chunk_x"), da.zeros((nty, ntx), dtype=bool, chunks=1),
                               {"description": "tile (chunk_y, chunk_x) fully written "
                                               "(tasks write it last; `run` skips done tiles)"})
    encoding["chunk_done"] = {"chunks": (1, 1), "fill_value": False}
    if layout.late_phases:
        data_vars["late_phase_done"] = (
            ("late_phase", "chunk_y", "chunk_x"), da.zeros((layout.late_phases, nty, ntx), dtype=bool, chunks=1),
            {"description": "tile (chunk_y, chunk_x) of map phase late_phase + 2 written, or without a selected "
                            "point (`run` skips done tiles)"})
        encoding["late_phase_done"] = {"chunks": (1, 1, 1), "fill_value": False}
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    return ds, encoding


def _consolidate(path) -> None:
    import zarr  # deferred: the CLI imports this module for --help

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(path))


def provenance_differences(stored: dict, given: dict) -> list[str]:
    """What differs between a store's recorded provenance and this run's, one line each.

    ``models`` (file hashes, known only once the prepare phase has resolved them) is compared
    only for the models this run names."""
    stored, given = dict(stored), dict(given)
    models_stored, models_given = stored.pop("models", {}) or {}, given.pop("models", {}) or {}
    diffs = [f"{k}: missing from the store (written by an older laueflow)" for k in given if k not in stored]
    diffs += settings_differences({k: v for k, v in stored.items() if k in given}, given)
    diffs += [f"models.{k}: stored {models_stored.get(k)}, now {v}" for k, v in sorted(models_given.items())
              if k in models_stored and models_stored[k] != v]
    return diffs


def check_results_store(path, fingerprint: dict, *, overwrite: bool = False) -> str:
    """What a run would do with ``path``, without touching it: ``"create"``, ``"resume"`` or
    ``"replace"`` (ours, and ``overwrite`` or killed while being created); raises
    :class:`ResultsStoreError` (with the fix) for anything else — a folder, file or store that
    is not a laueflow results store, or a results store computed from anything else (scan,
    calibration, materials, mask, stage parameters, models, layout: each difference listed)."""
    path = Path(path)
    kind = store_kind(path)
    if kind is None or (kind == "folder" and not any(path.iterdir())):
        return "create"
    if kind != "results":
        raise ResultsStoreError(f"output {path} exists and is {KIND_NAMES.get(kind, kind)}, not a laueflow "
                                "results store: laueflow never writes into or deletes it (not even with "
                                "--overwrite); choose another --output")
    old = read_store_attrs(path)
    if overwrite or not old.get("layout_complete"):
        return "replace"
    previous = old.get("laueflow_provenance")
    if previous is None:
        raise ResultsStoreError(f"output {path} was written by an older laueflow (results schema "
                                f"{old.get('laueflow_layout', {}).get('schema_version', '?')}, now {SCHEMA_VERSION}); "
                                "use `--overwrite` to compute it again or choose another --output")
    diffs = provenance_differences(previous, fingerprint)
    if diffs:
        raise ResultsStoreError(
            f"output {path} was computed from other inputs than this run's, so resuming would mix "
            "results:\n  " + "\n  ".join(diffs) + "\nUse `--overwrite` to compute it again from scratch, "
            "or choose another --output")
    return "resume"


def layout_fingerprint(layout: Layout, attrs: dict) -> dict:
    """Layout + provenance (``attrs["laueflow_provenance"]``): what must match for a resume."""
    return {**attrs.get("laueflow_provenance", {}), "layout": layout.fingerprint()}


def prepare_results_store(path, layout: Layout, *, coords: dict, attrs: dict,
                          overwrite: bool = False) -> np.ndarray:
    """Create the store (or reopen it to resume); return ``chunk_done`` as a numpy array.

    A store is resumed only when its provenance and layout (:func:`layout_fingerprint`) equal
    this run's; it is replaced only when it is a laueflow results store (checked first). The
    caller holds the store's lock (:class:`~laueflow.io.store_lock.StoreLock`).
    """
    import zarr  # deferred: the CLI imports this module for --help

    path = Path(path)
    fingerprint = layout_fingerprint(layout, attrs)
    action = check_results_store(path, fingerprint, overwrite=overwrite)
    if action == "resume":
        return read_chunk_done(path)
    if action == "replace":
        remove_store(path, "results")
    attrs = {**attrs, RESULTS_MARKER: True, "laueflow_provenance": fingerprint,
             "layout_complete": False, "reduce_done": []}
    ds, encoding = _template(layout, coords, attrs)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(str(path), mode="w", compute=False, zarr_format=3, consolidated=False,
               encoding=encoding)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["layout_complete"] = True
    _consolidate(path)
    return np.zeros(layout.grid, dtype=bool)


class StoreReplacedError(RuntimeError):
    """The results store a task was meant for was replaced (``--overwrite``) meanwhile."""


def check_store_id(path, store_id: str) -> None:
    """Raise :class:`StoreReplacedError` unless the store at ``path`` is the one created with
    ``store_id`` (a task left running by a killed driver must never write into its successor)."""
    found = (read_store_attrs(path) or {}).get("store_id")
    if store_id and found != store_id:
        raise StoreReplacedError(f"{path} is no longer the results store this task belongs to (store id "
                                 f"{found}, expected {store_id}): it was replaced; nothing written")


def done_array(phase: int) -> tuple[str, tuple]:
    """``(variable, leading index)`` of map phase ``phase``'s done marks (1: ``chunk_done``)."""
    return ("chunk_done", ()) if phase == 1 else ("late_phase_done", (phase - 2,))


def read_tile_done(path, ty: int, tx: int, store_id: str = "", phase: int = 1) -> bool:
    """Whether tile ``(ty, tx)`` of map phase ``phase`` is marked done (after checking the
    store's identity)."""
    import zarr  # deferred: the CLI imports this module for --help

    check_store_id(path, store_id)
    name, lead = done_array(phase)
    return bool(zarr.open_group(str(path), mode="r", use_consolidated=False)[name][(*lead, ty, tx)])


def write_tile(path, ty: int, tx: int, ys: slice, xs: slice, arrays: dict[str, np.ndarray],
               store_id: str = "", phase: int = 1) -> None:
    """Write one tile's variables (whole chunks, concurrently), then mark the tile done in map
    phase ``phase`` (last); the store's identity is checked before each of the two steps."""
    import zarr  # deferred: the CLI imports this module for --help
    from zarr.core.sync import sync  # zarr's own event loop (the sync API runs on it too)

    check_store_id(path, store_id)
    sync(_write_arrays(str(path), arrays, (ys, xs)))
    check_store_id(path, store_id)
    name, lead = done_array(phase)
    zarr.open_group(str(path), mode="r+", use_consolidated=False)[name][(*lead, ty, tx)] = True


def read_phase_done(path, phase: int) -> np.ndarray:
    """``(chunk_y, chunk_x)`` done marks of map phase ``phase`` (1: ``chunk_done``)."""
    import zarr  # deferred: the CLI imports this module for --help

    name, lead = done_array(phase)
    return np.asarray(zarr.open_group(str(path), mode="r", use_consolidated=False)[name][lead or ...], dtype=bool)


def mark_phase_done(path, phase: int, tiles: np.ndarray) -> None:
    """Mark the tiles where ``tiles`` (``(chunk_y, chunk_x)`` bool) is true done in late map phase
    ``phase`` (the driver, for tiles without a selected point)."""
    import zarr  # deferred: the CLI imports this module for --help

    ty, tx = np.nonzero(tiles)
    if len(ty):
        name, lead = done_array(phase)
        target = zarr.open_group(str(path), mode="r+", use_consolidated=False)[name]
        target.vindex[(np.full(len(ty), lead[0]), ty, tx)] = True


async def _write_arrays(path: str, arrays: dict, region: tuple) -> None:
    """All of a tile's chunk writes at once (compression and file writes overlap: ≈ 2× faster
    than one blocking write after the other)."""
    import asyncio

    import zarr  # deferred: the CLI imports this module for --help

    group = await zarr.api.asynchronous.open_group(store=path, mode="r+", use_consolidated=False)

    async def write(name, array):
        target = await group.getitem(name)
        await target.setitem(region, array)

    await asyncio.gather(*(write(name, array) for name, array in arrays.items()))


def write_region(path, name: str, array, region: tuple = ()) -> None:
    """Write ``array`` (numpy) into variable ``name`` at ``region`` (slices; () = whole)."""
    import zarr  # deferred: the CLI imports this module for --help

    target = zarr.open_group(str(path), mode="r+", use_consolidated=False)[name]
    target[region if region else ...] = array


def read_reduce_done(path) -> list[str]:
    """Reduce stages whose outputs are fully written (in the order they finished)."""
    import zarr  # deferred: the CLI imports this module for --help

    return list(zarr.open_group(str(path), mode="r", use_consolidated=False).attrs.get("reduce_done", []))


def mark_reduce_done(path, stage: str) -> None:
    import zarr  # deferred: the CLI imports this module for --help

    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    done = list(group.attrs.get("reduce_done", []))
    if stage not in done:
        group.attrs["reduce_done"] = [*done, stage]


def record_reduce_info(path, stage: str, info: dict) -> None:
    """Keep a reduce stage's record (JSON-able dict) in the ``reduce_info`` attribute."""
    import zarr  # deferred: the CLI imports this module for --help

    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    records = dict(group.attrs.get("reduce_info", {}))
    records[stage] = json.loads(json.dumps(info, default=_json_default))
    group.attrs["reduce_info"] = records


def read_chunk_done(path) -> np.ndarray:
    import zarr  # deferred: the CLI imports this module for --help

    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    return np.asarray(group["chunk_done"][...], dtype=bool)


def finalize_results_store(path, attrs_update: dict) -> None:
    """Record provenance (appended to ``history``) and re-consolidate the metadata."""
    import zarr  # deferred: the CLI imports this module for --help

    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    attrs = group.attrs.asdict()
    history = list(attrs.get("history", []))
    run = attrs_update.pop("run", None)
    if run is not None:
        history.append(run)
        totals: dict[str, float] = {}
        for record in history:
            for k, v in record.get("stage_timings_s", {}).items():
                totals[k] = round(totals.get(k, 0.0) + v, 4)
        attrs_update.update({
            "history": history,  # one record per `laueflow run` invocation (resumes append)
            "started": history[0]["started"], "finished": run["finished"],
            "stage_timings_s": totals, "cluster": run.get("cluster"),
        })
    group.attrs.update(json.loads(json.dumps(attrs_update, default=_json_default)))
    _consolidate(path)


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {obj!r}")
