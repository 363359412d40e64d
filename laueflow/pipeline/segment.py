"""`laueflow segment`: cluster a results store again from its stored ``features``, without
re-running the scan, into a new named segmentation next to the earlier ones.

Each segmentation is a Zarr group ``segmentations/<name>`` of the results store holding the
``segmentation`` stage's outputs (same names, dims and meaning as the root variables a run's
``segmentation`` stage writes; ``xarray.open_zarr(store, group="segmentations/<name>")``), its
parameters and what the stage reported in the group's attributes, and ``complete: true`` once
every output is written. The store's root attributes list them (``segmentations``, oldest
first) and name the latest (``segmentation_latest``). Nothing earlier is changed or deleted: a
name already taken gets a suffix (``-2``, ``-3``…); only an unfinished group of the same name
(a killed ``segment``) is replaced. Layout: ``docs/results-schema.md``.
"""
from __future__ import annotations

import re
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..io.store_kind import KIND_NAMES, read_store_attrs, store_kind
from ..io.store_lock import StoreLock
from ..stages.base import get_stage
from .reduce import ReduceWriter, lazy_outputs
from .store import Layout, read_chunk_done

__all__ = ["segment_store", "check_segment_inputs", "check_name", "require_results_store", "SegmentSummary",
           "SegmentError", "SEGMENTATIONS_GROUP", "segmentation_name"]

SEGMENTATIONS_GROUP = "segmentations"
SEGMENTATION_MARKER = "laueflow_segmentation"


class SegmentError(ValueError):
    """The store cannot be segmented (the message says why and what to do)."""


@dataclass
class SegmentSummary:
    results: Path
    name: str
    group: str
    info: dict
    wall_s: float


def segmentation_name(params: dict) -> str:
    """Default name from the parameters, e.g. ``k6-pcs32-kmeans`` (``kauto``: the scores' K)."""
    k = "auto" if params.get("k") is None else params["k"]
    return f"k{k}-pcs{params['pcs']}-{params['method']}"


def segment_store(results, client, *, name: str | None = None, log=print, **overrides) -> SegmentSummary:
    """Segment ``results`` (a laueflow results store with a complete ``features`` variable) with
    the ``segmentation`` stage's parameters (defaults + ``overrides``), on the cluster behind
    ``client``; writes ``segmentations/<name>`` under the store's write lock."""
    results = Path(results)
    spec = get_stage("segmentation")
    with StoreLock(results, "segment", log=log):
        params, layout, features_chunks = check_segment_inputs(results, **overrides)
        recorded = (read_store_attrs(results) or {}).get("workflow") or {}
        params = spec.prepared_params(params, {"workflow_stages": recorded.get("stages"), "log": log})
        name = _free_name(results, segmentation_name(params) if name is None else name)
        group = f"{SEGMENTATIONS_GROUP}/{name}"
        t0 = time.perf_counter()
        log(f"laueflow segment: {results} → group {group} ({layout.ny}×{layout.nx} points, "
            f"features chunked {features_chunks})")
        target = results / SEGMENTATIONS_GROUP / name
        _create_group(results, group, layout, {SEGMENTATION_MARKER: True, "complete": False, "name": name,
                                              "parameters": params, "laueflow_version": __version__})
        features = lazy_outputs(results, ["features"])["features"]
        writer = ReduceWriter(target, spec, layout, client)
        info = spec.function()(features=features, client=client, writer=writer, **params) or {}
        missing = [v for v in spec.output_names if v not in writer.written]
        if missing:
            raise RuntimeError(f"the segmentation did not write {missing}")
        for line in info.get("log", []):
            log(f"  {line}")
        wall = time.perf_counter() - t0
        _finish(results, name, group, params, info, wall)
    return SegmentSummary(results, name, group, info, wall)


def check_segment_inputs(results, **overrides) -> tuple[dict, Layout, tuple]:
    """The checks that need no cluster (``laueflow segment`` makes them, under the store's lock,
    before it starts any worker): parameters, a laueflow results store, complete ``features``
    with at least ``pcs`` values per point. Returns the parameters, the layout of the new
    segmentation group and the chunks of ``features``."""
    import zarr  # deferred: the CLI imports this module for --help

    results = Path(results)
    spec = get_stage("segmentation")
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        raise SegmentError(f"unknown segmentation parameter(s) {unknown}; parameters: {', '.join(spec.params)}")
    params = {**spec.params, **overrides}
    spec.validate_params(params)
    require_results_store(results)
    root = zarr.open_group(str(results), mode="r", use_consolidated=False)
    if "features" not in root:
        raise SegmentError(f"{results} has no 'features' variable: run a workflow with the 'features' "
                           "stage first (see docs/segmentation.md)")
    done = read_chunk_done(results)
    if not done.all():
        raise SegmentError(f"{results}: {int((~done).sum())} of {done.size} tiles are not written yet, so "
                           "'features' is incomplete: finish the run first (run the same `laueflow run` again "
                           "to resume)")
    features = root["features"]
    ny, nx, m = features.shape
    cy, cx = features.chunks[:2]
    if params["pcs"] > m:
        raise SegmentError(f"--pcs {params['pcs']} is more than the {m} features per point; use --pcs ≤ {m}")
    if params["pcs"] > ny * nx:
        raise SegmentError(f"--pcs {params['pcs']} is more than the {ny * nx} points of the scan; use --pcs ≤ {ny * nx}")
    if params["k"] is not None and params["k"] > ny * nx:
        raise SegmentError(f"--k {params['k']} is more than the {ny * nx} points of the scan; use --k ≤ {ny * nx}")
    dim_sizes = spec.resolved_dim_sizes(params)
    gy, gx = group_chunk(ny, nx, cy)
    return params, Layout(ny, nx, gy, gx, dim_sizes, spec.outputs), tuple(features.chunks)


def require_results_store(results) -> None:
    """Refuse (:class:`SegmentError`) a path that is not a laueflow results store."""
    kind = store_kind(Path(results))
    if kind != "results":
        raise SegmentError(f"{results} is {KIND_NAMES.get(kind, kind)}, not a laueflow results store "
                           "(written by `laueflow run`): nothing to segment, nothing written")


def group_chunk(ny: int, nx: int, cy: int, points: int = 65536) -> tuple[int, int]:
    """``(y, x)`` chunk of a segmentation group: whole rows, a multiple of the features' ``cy``,
    about ``points`` points (8 MB of 32 float32 PCs): a few large chunks instead of one per tile,
    so writing the maps costs little (a 10⁴-point map is one chunk)."""
    rows = -(-points // nx)
    rows = -(-rows // cy) * cy
    return min(ny, max(cy, rows)), nx


def _segmentations(results: Path) -> list:
    return list((read_store_attrs(results) or {}).get("segmentations", []))


#: longest segmentation name (a folder name; suffixes ``-2``… may add a few characters)
NAME_MAX = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")


def check_name(name: str) -> None:
    """Refuse (:class:`SegmentError`) a segmentation name that is not 1–:data:`NAME_MAX` ASCII
    letters, digits, ``.``, ``-``, ``_``, starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise SegmentError(f"segmentation name {name!r}: use 1 to {NAME_MAX} ASCII letters, digits, '.', '-' and '_', "
                           "starting with a letter or digit")


def _free_name(results: Path, wanted: str) -> str:
    """``wanted``, or with a suffix when a complete segmentation has it; an unfinished group of
    that name (a killed `segment`) is removed — only when it carries the segmentation marker."""
    check_name(wanted)
    taken = {s["name"] for s in _segmentations(results)}
    name, i = wanted, 1
    while True:
        path = results / SEGMENTATIONS_GROUP / name
        attrs = read_store_attrs(path) if path.exists() else None
        if name not in taken and path.exists() and attrs is not None and attrs.get(SEGMENTATION_MARKER) \
                and not attrs.get("complete"):
            shutil.rmtree(path)  # unfinished: a killed `segment` of ours
        if name not in taken and not path.exists():
            return name
        i += 1
        name = f"{wanted}-{i}"


def _create_group(results: Path, group: str, layout: Layout, attrs: dict) -> None:
    import dask.array as da  # deferred: heavy
    import xarray as xr  # deferred: heavy

    data_vars, encoding = {}, {}
    for var in layout.variables:
        dims = ("y", "x", *var.dims) if var.per_point else var.dims
        data = da.full(layout.shape(var), var.fill_value, dtype=var.dtype, chunks=layout.chunks(var))
        data_vars[var.name] = (dims, data, var.attrs())
        encoding[var.name] = {"chunks": layout.chunks(var)}
        if np.dtype(var.dtype).kind != "f":
            encoding[var.name]["fill_value"] = var.fill_value
    ds = xr.Dataset(data_vars, attrs=_jsonable(attrs))
    ds.to_zarr(str(results), group=group, mode="w-", compute=False, zarr_format=3, consolidated=False,
               encoding=encoding)


def _finish(results: Path, name: str, group: str, params: dict, info: dict, wall: float) -> None:
    import zarr  # deferred: heavy

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sub = zarr.open_group(str(results / SEGMENTATIONS_GROUP / name), mode="r+", use_consolidated=False)
    sub.attrs.update(_jsonable({"complete": True, "info": info, "created": created, "wall_s": round(wall, 3)}))
    root = zarr.open_group(str(results), mode="r+", use_consolidated=False)
    listed = list(root.attrs.get("segmentations", []))
    listed.append(_jsonable({"name": name, "group": group, "k": info.get("k"), "pcs": params["pcs"],
                             "method": params["method"], "suggested_k": info.get("suggested_k"),
                             "path": info.get("path"), "created": created}))
    root.attrs.update({"segmentations": listed, "segmentation_latest": name})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(results))


def _jsonable(value):
    import json

    from .store import _json_default

    return json.loads(json.dumps(value, default=_json_default))
