"""Ingest detector images into a scan store (``scan.zarr``, Zarr v3), in parallel on Dask.

Store layout (``laueflow run`` depends on these names):

* ``images (y, x, row, col)`` detector dtype (uint16 for sCMOS), one image per chunk (default) or
  one image per chunk inside shards of a row of ``shard_x`` images (``layout="sharded"``);
  lossless ``blosc`` (zstd + bitshuffle, default) or plain ``zstd``; fill value 0 for points without an image;
* ``valid (y, x)`` bool; ``status (y, x)`` int8 (:data:`laueflow.io.images.STATUS_CODES`, also in
  the ``status_codes`` attribute); ``status_reason (y, x)`` str; ``source_file (y, x)`` str
  (``path`` or ``path::frame`` for HDF5 stacks);
* ``mask (row, col)`` bool, True = bad pixel (dead, hot, gaps, beamstop shadow), only when a mask
  was given; the ``peaks`` stage ignores those pixels;
* ``monitor (y, x)`` float64, the incident-intensity monitor, only when one was given
  (:mod:`laueflow.pipeline.monitor`);
* coordinates ``y (y)``, ``x (x)`` in µm (index × step); every array has ``dimension_names``
  and the metadata are consolidated, so ``xarray.open_zarr`` works;
* attributes: ``calibration`` (``Calibration.to_dict()``), ``materials``, ``step_um`` (y, x),
  ``frame_shape``, ``dtype``, ``scan_order``, ``laueflow_version``, ``ingest_time``,
  ``ingest_summary``.

Each Dask task reads its images and writes whole chunks (whole shards when sharded); the small
per-point arrays are written once by the driver. Re-running on an existing store resumes: points
already ``ok`` with the same source are skipped; a store is only replaced with ``overwrite``.
"""
from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..io.images import (ALL_ZERO, IMAGE_EXTENSIONS, MISSING, NOT_READ, OK, STATUS_CODES, WRONG_DTYPE,
                         WRONG_SHAPE, ImageReadError, file_index, h5_n_frames, read_frame, reader_for)
from ..io.store_kind import KIND_NAMES, SCAN_MARKER, NotOurStoreError, remove_store, store_kind
from ..io.store_lock import StoreLock
from ..io.monitor_file import MonitorFileError
from ..physics.materials import get_materials
from .monitor import MonitorError, load_monitor, monitor_map, write_monitor
from .scan_store import (content_id, mask_sha256, read_point_tables, settings_differences,
                         write_point_tables)

__all__ = ["Source", "IngestPlan", "IngestError", "discover_sources", "plan_scan", "ingest",
           "read_point", "scan_positions", "load_mask"]


class IngestError(ValueError):
    """Bad user input for the ingest (printed without traceback by the CLI)."""


@dataclass(frozen=True)
class Source:
    path: str
    frame: int | None = None  # frame of an HDF5 stack

    @property
    def label(self) -> str:
        return self.path if self.frame is None else f"{self.path}::{self.frame}"


@dataclass
class IngestPlan:
    shape: tuple[int, int]
    points: dict = field(default_factory=dict)  # (iy, ix) -> Source
    order: str = "raster"
    h5_dataset: str | None = None


def scan_positions(k, shape, order="raster"):
    """Scan index ``k`` (0-based, acquisition order) → ``(iy, ix)``; snake reverses odd rows."""
    ny, nx = shape
    iy, ix = divmod(int(k), nx)
    if order == "snake" and iy % 2 == 1:
        ix = nx - 1 - ix
    return iy, ix


def discover_sources(inputs, *, h5_dataset=None) -> list[tuple[int | None, Source]]:
    """``(index, Source)`` for every image file / HDF5 frame under ``inputs`` (files or dirs).

    Index: the last number in the file name (``<prefix>_<index:04d>.tif``), or the frame number
    in an HDF5 stack.
    """
    found = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file()
                           and p.name.lower().endswith(IMAGE_EXTENSIONS))
        elif item.exists():
            files = [item]
        else:
            raise FileNotFoundError(f"input not found: {item}")
        for path in files:
            if reader_for(path).is_stack and path.stat().st_size > 0:
                try:
                    _, n = h5_n_frames(path, h5_dataset)
                except Exception as err:  # noqa: BLE001
                    raise IngestError(f"{path}: cannot read the HDF5 stack: {err}") from None
                found += [(k, Source(str(path.resolve()), k)) for k in range(n)]
            else:
                found.append((file_index(path), Source(str(path.resolve()))))
    if not found:
        raise IngestError(f"no image files found in {', '.join(map(str, inputs))} "
                          f"(extensions: {' '.join(IMAGE_EXTENSIONS)})")
    return found


def read_index_list(path) -> list[tuple[int, int, str]]:
    """An explicit index file: one ``iy ix path`` per line (``#`` comments); path may be
    relative to the list file and end in ``::frame`` for an HDF5 stack."""
    rows = []
    base = Path(path).parent
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) != 3:
            raise IngestError(f"{path}:{n}: expected 'iy ix path', got {line!r}")
        rows.append((int(parts[0]), int(parts[1]), parts[2]))
    return rows


def plan_scan(inputs, *, shape=None, order="raster", index_list=None, first_index=None,
              h5_dataset=None) -> IngestPlan:
    """Map sources to scan points ``(iy, ix)``."""
    if order not in ("raster", "snake"):
        raise IngestError(f"--order must be raster or snake, got {order!r}")
    points = {}
    if index_list:
        for iy, ix, p in read_index_list(index_list):
            frame = None
            if "::" in p:
                p, f = p.rsplit("::", 1)
                frame = int(f)
            full = Path(p) if Path(p).is_absolute() else Path(index_list).parent / p
            points[(iy, ix)] = Source(str(full.resolve()), frame)
        if shape is None:
            shape = (max(k[0] for k in points) + 1, max(k[1] for k in points) + 1)
        return IngestPlan(tuple(shape), points, "index-list", h5_dataset)
    found = discover_sources(inputs, h5_dataset=h5_dataset)
    if any(k is None for k, _ in found):
        bad = [s.path for k, s in found if k is None][:3]
        raise IngestError(f"no index number in file names such as {bad}; use --index-list")
    indices = [k for k, _ in found]
    if len(set(indices)) != len(indices):
        raise IngestError("several files share a scan index; give one folder/prefix per scan")
    first = min(indices) if first_index is None else int(first_index)
    if shape is None:
        shape = (1, max(indices) - first + 1)
    ny, nx = shape
    for k, source in found:
        kk = k - first
        if not 0 <= kk < ny * nx:
            raise IngestError(f"{source.label}: index {k} outside the {ny}x{nx} scan "
                              f"(first index {first})")
        points[scan_positions(kk, shape, order)] = source
    return IngestPlan((int(ny), int(nx)), points, order, h5_dataset)


def read_point(source: Source, frame_shape, dtype, h5_dataset=None):
    """Read and validate one point: ``(image or None, status, reason)``."""
    try:
        image = read_frame(source.path, source.frame, h5_dataset=h5_dataset)
    except ImageReadError as err:
        return None, err.status, err.reason
    if tuple(image.shape) != tuple(frame_shape):
        return None, WRONG_SHAPE, f"shape {image.shape}, expected {tuple(frame_shape)}"
    if image.dtype != np.dtype(dtype):
        return None, WRONG_DTYPE, f"dtype {image.dtype}, expected {np.dtype(dtype)}"
    if not image.any():
        return None, ALL_ZERO, "all pixels are zero"
    return image, OK, ""


def _ingest_task(store, points, frame_shape, dtype, h5_dataset):
    """Dask task: read the images of ``points`` [(iy, ix, Source)] and write whole chunks;
    returns ``([(iy, ix, status, reason, bytes read, (file size, mtime ns))], read s, total s)``.

    ``points`` are either single points (chunked layout) or all points of one shard
    (``iy`` equal, consecutive ``ix``), written in one assignment.
    """
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    images = zarr.open_array(f"{store}/images", mode="r+")
    results, stack = [], []
    t0 = time.perf_counter()
    for iy, ix, source in points:
        try:
            st = os.stat(source.path)
            signature = (int(st.st_size), int(st.st_mtime_ns))
        except OSError:
            signature = (-1, -1)
        image, status, reason = read_point(source, frame_shape, dtype, h5_dataset)
        results.append((iy, ix, status, reason, 0 if image is None else image.nbytes, signature))
        stack.append(image)
    t_read = time.perf_counter() - t0
    iy0, ix0 = points[0][0], points[0][1]
    if len(points) == 1:
        if stack[0] is not None:
            images[iy0, ix0] = stack[0]
    else:
        ix1 = points[-1][1] + 1
        block = np.zeros((ix1 - ix0, *frame_shape), dtype=dtype)
        if any(s is not None for s in stack):
            old = None
            for j, (_, ix, _) in enumerate(points):
                img = stack[j]
                if img is None:  # keep what a previous run wrote there (or fill 0)
                    old = images[iy0, ix0:ix1] if old is None else old
                    img = old[ix - ix0]
                block[ix - ix0] = img
            images[iy0, ix0:ix1] = block
    return results, t_read, time.perf_counter() - t0


def _probe_reference(plan: IngestPlan, calibration=None, frame_shape=None, dtype=None):
    """Frame shape and dtype the images must have: ``frame_shape`` given, else the calibration's
    (the detector's size), else that of a sample of readable frames (which must agree: a
    wrong-size first file must not decide for the others); dtype given, else the sample's."""
    if frame_shape is None and calibration is not None:
        frame_shape = tuple(int(n) for n in calibration.frame_shape)
    if frame_shape is not None and dtype is not None:
        return tuple(int(n) for n in frame_shape), np.dtype(dtype)
    found = {}
    keys = sorted(plan.points)
    for key in [keys[int(i)] for i in np.unique(np.linspace(0, len(keys) - 1, min(len(keys), 9)).round())]:
        try:
            image = read_frame(plan.points[key].path, plan.points[key].frame, h5_dataset=plan.h5_dataset)
        except ImageReadError:
            continue
        if image.any():
            found.setdefault((tuple(image.shape), image.dtype.name), []).append(plan.points[key].label)
    if not found:
        raise IngestError("no readable image among the inputs (sampled up to 9 files)")
    if frame_shape is None and len({shape for shape, _ in found}) > 1:
        listing = "; ".join(f"{shape[0]} x {shape[1]} {dt} ({len(v)}, e.g. {v[0]})" for (shape, dt), v in found.items())
        raise IngestError(f"the sampled images do not all have the same size: {listing}. Give the detector "
                          "size with --calibration FILE.det or --frame-shape ROWSxCOLS")
    if dtype is None and len({dt for _, dt in found}) > 1:
        raise IngestError(f"the sampled images have different dtypes ({', '.join(sorted({d for _, d in found}))}); "
                          "give --dtype")
    (shape, dt), _ = next(iter(found.items()))
    return (tuple(int(n) for n in frame_shape) if frame_shape is not None else shape,
            np.dtype(dtype) if dtype is not None else np.dtype(dt))


def _compressors(compression: str, level: int):
    from zarr.codecs import BloscCodec, ZstdCodec  # deferred: zarr is heavy; the CLI imports this module

    if compression == "zstd":
        return [ZstdCodec(level=level)]
    if compression == "blosc":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle")]
    if compression in ("none", None):
        return None
    raise IngestError(f"unknown compression {compression!r} (zstd, blosc, none)")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _create_store(out: Path, plan, frame_shape, dtype, *, layout, shard_x, compression, level,
                  attrs):
    """A new scan store (``attrs``: the ingest settings), marked laueflow's, ingest not complete."""
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    ny, nx = plan.shape
    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    shards = (1, min(shard_x, nx), *frame_shape) if layout == "sharded" else None
    group.create_array("images", shape=(ny, nx, *frame_shape), dtype=dtype,
                       chunks=(1, 1, *frame_shape), shards=shards,
                       compressors=_compressors(compression, level), fill_value=0,
                       dimension_names=("y", "x", "row", "col"),
                       attributes={"long_name": "detector images", "units": "counts"})
    step_y, step_x = attrs["step_um"]
    for name, n, step in (("y", ny, step_y), ("x", nx, step_x)):
        arr = group.create_array(name, shape=(n,), dtype="float64", dimension_names=(name,),
                                 attributes={"units": "um", "long_name": f"scan position {name}"})
        arr[:] = np.arange(n) * float(step)
    group.attrs.update({
        SCAN_MARKER: True, "scan_id": uuid.uuid4().hex, "ingest_complete": False, "ingest_settings": attrs,
        **{k: attrs[k] for k in ("calibration", "materials", "material_definitions", "step_um", "frame_shape",
                                 "dtype", "scan_shape", "scan_order", "layout", "compression")},
        "laueflow_version": __version__, "status_codes": {str(k): v for k, v in STATUS_CODES.items()},
    })
    return group


def load_mask(mask, frame_shape) -> np.ndarray:
    """A detector mask as a bool ``(row, col)`` array, True = bad pixel.

    ``mask``: an array, a ``.npy`` file, or an image file in any format laueflow reads (TIFF, EDF,
    …; non-zero = bad). Raises :class:`IngestError` when it cannot be read or its shape differs
    from ``frame_shape``.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        try:
            mask = np.load(path) if path.suffix.lower() == ".npy" else read_frame(path)
        except (OSError, ValueError, ImageReadError) as err:
            raise IngestError(f"cannot read the mask {path}: {err}") from err
    mask = np.asarray(mask)
    if mask.shape != tuple(frame_shape):
        raise IngestError(f"the mask has shape {mask.shape} but the images are {tuple(frame_shape)} "
                          "(rows, cols): give a mask of the detector frame size")
    return mask != 0


def _write_mask(group, mask: np.ndarray) -> None:
    if "mask" in group:
        del group["mask"]
    arr = group.create_array("mask", shape=mask.shape, dtype="bool", dimension_names=("row", "col"),
                             attributes={"long_name": "bad detector pixels (True: ignored by the peak search)"})
    arr[...] = mask


def ingest(inputs, out, *, shape=None, order="raster", index_list=None, first_index=None,
           h5_dataset=None, calibration=None, materials=(), step_um=(1.0, 1.0),
           frame_shape=None, dtype=None, layout="chunked", shard_x=16, compression="blosc",
           level=3, overwrite=False, mask=None, monitor=None, client=None, progress=True, log=print,
           checkpoint_s: float = 5.0) -> dict:
    """Ingest images into ``out``; returns the summary dict (also stored as an attribute).

    Everything is checked before the store is touched; the store is locked for the whole
    ingest (one writer at a time, :class:`~laueflow.io.store_lock.StoreLock`). An existing scan
    store is resumed: only points not yet read, failed, or whose file changed (size or
    modification time) are read again, and the ingest settings must be the same (else an
    :class:`IngestError` lists the differences). The per-point tables are saved every
    ``checkpoint_s`` seconds, so a killed ingest loses at most that much work.
    ``overwrite`` replaces a scan store (never anything else: see
    :func:`~laueflow.io.store_kind.remove_store`).

    ``frame_shape``: ``(rows, cols)`` the images must have (default: the calibration's, else a
    sample of the images, which must agree). ``mask``: bad detector pixels (array, ``.npy`` or
    image file; :func:`load_mask`). ``monitor``: the incident-intensity monitor (a file,
    :mod:`laueflow.io.monitor_file`, or an array; :func:`~laueflow.pipeline.monitor.monitor_map`):
    stored as ``monitor (y, x)``, replacing a different one on a resume; without it a stored
    monitor stays. ``client``: a ``distributed.Client`` or None (serial).
    """
    out = Path(out)
    plan = plan_scan(inputs, shape=shape, order=order, index_list=index_list,
                     first_index=first_index, h5_dataset=h5_dataset)
    _check_output_path(out, plan, inputs)
    monitor_values = _monitor(monitor, plan)
    if layout not in ("chunked", "sharded"):
        raise IngestError(f"layout must be chunked or sharded, got {layout!r}")
    _compressors(compression, level)
    with StoreLock(out, "ingest", log=log):
        kind = store_kind(out)
        _refuse_foreign_output(out, kind)
        prev = _previous(out, plan) if kind == "scan" and not overwrite else None
        if prev:
            frame_shape = frame_shape or prev["settings"].get("frame_shape")
            dtype = dtype or prev["settings"].get("dtype")
        frame_shape, dtype = _probe_reference(plan, calibration, frame_shape, dtype)
        bad_pixels = load_mask(mask, frame_shape) if mask is not None else None
        settings = _settings(plan, calibration, materials, step_um, frame_shape, dtype, layout,
                             shard_x, compression, level, bad_pixels)
        if prev:
            _check_same_settings(out, prev, settings)
        signatures = _signatures(plan)
        tables, todo, changed = _plan_points(out, plan, prev, signatures)
        if kind == "scan" and overwrite:
            remove_store(out, "scan")
        group = (_open_for_resume(out, settings) if prev else
                 _create_store(out, plan, frame_shape, dtype, layout=layout, shard_x=shard_x,
                               compression=compression, level=level, attrs=settings))
        if bad_pixels is not None and not prev:
            _write_mask(group, bad_pixels)
        if monitor_values is not None:
            write_monitor(group, monitor_values, monitor if isinstance(monitor, (str, os.PathLike)) else "array", log)
        tasks = _tasks(group, plan, todo, tables)
        if tasks or not prev:  # nothing to read: a complete store stays as it is
            group.attrs["ingest_complete"] = False
            write_point_tables(group, tables)
        t0 = time.perf_counter()
        checkpoint = _Checkpoint(group, tables, checkpoint_s)
        try:
            results = _run_tasks(tasks, str(out), frame_shape, dtype, plan.h5_dataset, client, progress,
                                 on_result=checkpoint)
        except BaseException:  # Ctrl-C, a failed task: keep what was read (a re-run resumes)
            write_point_tables(group, tables)
            raise
        wall = time.perf_counter() - t0
        summary = _summary(out, plan, tables, results, todo, changed, frame_shape, dtype, wall)
        _finish(out, group, tables, summary, find_hot_pixels=bool(tasks) or "hot_pixels" not in group)
        summary["hot_pixels"] = int(group.attrs.get("hot_pixels", {}).get("count", 0))
    if log:
        log(format_summary(summary, tables["status"], tables["status_reason"], tables["source_file"]))
    return summary


def _monitor(monitor, plan: IngestPlan) -> np.ndarray | None:
    """The monitor on the scan grid, checked before anything is written (None: not given)."""
    if monitor is None:
        return None
    try:
        if isinstance(monitor, (str, os.PathLike)):
            return load_monitor(monitor, plan.shape, plan.points, plan.order)
        return monitor_map(np.asarray(monitor), plan.shape, plan.points, plan.order)
    except (MonitorError, MonitorFileError) as err:
        raise IngestError(str(err)) from None


def _check_output_path(out: Path, plan: IngestPlan, inputs) -> None:
    """The output must not be, nor contain, an input."""
    target = out.resolve()
    sources = {Path(s.path).resolve() for s in plan.points.values()} | {Path(i).resolve() for i in inputs}
    for source in sources:
        if source == target or target in source.parents:
            raise IngestError(f"--out {out} is or contains the input {source}: the store must be a new "
                              "path of its own, e.g. scan.zarr next to the images folder")


def _refuse_foreign_output(out: Path, kind) -> None:
    if kind in (None, "scan") or (kind == "folder" and not any(out.iterdir())):
        return
    raise NotOurStoreError(
        f"--out {out} exists and is {KIND_NAMES.get(kind, kind)}: laueflow writes a scan store only to a new "
        "path, an empty folder or a scan store of its own, and never deletes anything else (not even "
        "with --overwrite). Choose another --out, e.g. scan.zarr")


def _settings(plan, calibration, materials, step_um, frame_shape, dtype, layout, shard_x, compression,
              level, bad_pixels) -> dict:
    """What an ingest into an existing store must repeat (stored as ``ingest_settings``)."""
    return {
        "calibration": calibration.to_dict() if calibration is not None else None,
        "materials": [m if isinstance(m, str) else m.name for m in materials],
        "material_definitions": [m.to_dict() for m in get_materials(list(materials))],
        "step_um": [float(step_um[0]), float(step_um[1])],
        "scan_shape": [int(n) for n in plan.shape],
        "scan_order": plan.order,
        "h5_dataset": plan.h5_dataset,
        "frame_shape": [int(n) for n in frame_shape],
        "dtype": np.dtype(dtype).name,
        "layout": layout,
        "shard_x": int(shard_x) if layout == "sharded" else None,
        "compression": compression,
        "compression_level": int(level),
        "mask_sha256": mask_sha256(bad_pixels),
    }


def _check_same_settings(out: Path, prev: dict, settings: dict) -> None:
    diffs = settings_differences(prev["settings"], settings)
    if diffs:
        raise IngestError(
            f"{out} was ingested with other settings than this command's:\n  " + "\n  ".join(diffs)
            + "\nRe-run with the same options to resume it, or pass --overwrite to ingest the scan again "
              "from scratch (every image is read again); the store was not changed")


def _signatures(plan: IngestPlan) -> dict:
    """``(size bytes, mtime ns)`` of each point's file; (-1, -1) when it cannot be stat'ed."""
    cache: dict = {}
    out = {}
    for key, source in plan.points.items():
        if source.path not in cache:
            try:
                st = os.stat(source.path)
                cache[source.path] = (int(st.st_size), int(st.st_mtime_ns))
            except OSError:
                cache[source.path] = (-1, -1)
        out[key] = cache[source.path]
    return out


def _plan_points(out: Path, plan: IngestPlan, prev, signatures) -> tuple[dict, list, list]:
    """The per-point tables to start from, the points to read, and those whose file changed."""
    ny, nx = plan.shape
    tables = {"status": np.full((ny, nx), MISSING, np.int8),
              "status_reason": np.full((ny, nx), "no image file for this scan index", dtype=object),
              "source_file": np.full((ny, nx), "", dtype=object),
              "source_size": np.full((ny, nx), -1, np.int64),
              "source_mtime_ns": np.full((ny, nx), -1, np.int64)}
    old = prev["tables"] if prev else {}
    todo, changed, moved = [], [], []
    for (iy, ix), source in sorted(plan.points.items()):
        tables["source_file"][iy, ix] = source.label
        was_ok = bool(old) and old["status"][iy, ix] == OK
        if was_ok and old["source_file"][iy, ix] != source.label:
            moved.append((iy, ix))
        same_file = was_ok and "source_size" in old and (
            (int(old["source_size"][iy, ix]), int(old["source_mtime_ns"][iy, ix])) == signatures[(iy, ix)])
        if was_ok and (same_file or ("source_size" not in old and old["source_file"][iy, ix] == source.label)):
            tables["status"][iy, ix], tables["status_reason"][iy, ix] = OK, ""
            tables["source_size"][iy, ix], tables["source_mtime_ns"][iy, ix] = signatures[(iy, ix)]
            continue
        if was_ok:
            changed.append((iy, ix))
        todo.append((iy, ix, source))
    if moved:
        iy, ix = moved[0]
        raise IngestError(f"{out} exists and {len(moved)} point(s) already ingested would get a different "
                          f"source file (e.g. ({iy}, {ix}): {old['source_file'][iy, ix]} → "
                          f"{plan.points[(iy, ix)].label}); use --overwrite to ingest the new files from scratch")
    return tables, todo, changed


def _open_for_resume(out: Path, settings: dict):
    """The store to resume; one of laueflow 0.x gets its marker, id and settings now."""
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    group = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    if "scan_id" not in group.attrs:
        group.attrs.update({SCAN_MARKER: True, "scan_id": uuid.uuid4().hex, "ingest_settings": settings})
    return group


def _tasks(group, plan: IngestPlan, todo, tables) -> list:
    """One task per point (chunked) or per shard (sharded: the shard is rewritten whole, so all
    its points are read again and marked not read until their task is back)."""
    if group.attrs.get("layout", "chunked") != "sharded":
        tasks = [[p] for p in todo]
    else:
        nx = plan.shape[1]
        sx = group["images"].shards[1]
        shards = sorted({(iy, ix // sx) for iy, ix, _ in todo})
        tasks = [[(iy, ix, plan.points[(iy, ix)]) for ix in range(k * sx, min(nx, (k + 1) * sx))
                  if (iy, ix) in plan.points] for iy, k in shards]
    for task in tasks:
        for iy, ix, _ in task:
            tables["status"][iy, ix], tables["status_reason"][iy, ix] = NOT_READ, "not read yet"
    return tasks


class _Checkpoint:
    """Record each finished task in the tables; save them every ``every_s`` seconds."""

    def __init__(self, group, tables, every_s: float):
        self.group, self.tables, self.every_s = group, tables, every_s
        self.last = time.monotonic()

    def __call__(self, result) -> None:
        for iy, ix, status, reason, _, signature in result[0]:
            self.tables["status"][iy, ix], self.tables["status_reason"][iy, ix] = status, reason
            self.tables["source_size"][iy, ix], self.tables["source_mtime_ns"][iy, ix] = signature
        if time.monotonic() - self.last >= self.every_s:
            write_point_tables(self.group, self.tables)
            self.last = time.monotonic()


def _summary(out, plan, tables, results, todo, changed, frame_shape, dtype, wall) -> dict:
    status = tables["status"]
    ny, nx = plan.shape
    stored = _dir_bytes(out / "images")
    n_ok = int((status == OK).sum())
    total_raw = n_ok * int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
    raw_bytes = sum(r[4] for res, _, _ in results for r in res)
    return {
        "counts": {STATUS_CODES[k]: int((status == k).sum()) for k in STATUS_CODES if k != NOT_READ},
        "n_points": ny * nx,
        "n_written_now": sum(1 for res, _, _ in results for r in res if r[2] == OK),
        "n_skipped": len(plan.points) - len(todo),
        "n_changed_files": len(changed),
        "raw_mb": total_raw / 1e6,
        "stored_mb": stored / 1e6,
        "compression_ratio": (total_raw / stored) if stored else float("nan"),
        "wall_s": wall,
        "mb_per_s": (raw_bytes / 1e6 / wall) if wall > 0 and raw_bytes else 0.0,
        "ingest_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _record_hot_pixels(group, tables, max_images: int = 16) -> None:
    """``hot_pixels (row, col)``: pixels that are a one-pixel peak in most of up to ``max_images``
    valid images spread over the scan (:mod:`laueflow.kernels.hot_pixels`); the peak search
    ignores them like the user's mask. Attribute ``hot_pixels``: count and images sampled."""
    from ..kernels.hot_pixels import hot_pixel_mask, single_pixel_peaks  # deferred: imports scipy

    points = np.argwhere(tables["status"] == OK)
    if len(points) == 0:
        return
    pick = points[np.unique(np.linspace(0, len(points) - 1, min(len(points), max_images)).round().astype(int))]
    images = group["images"]
    flags = np.stack([single_pixel_peaks(images[int(iy), int(ix)]) for iy, ix in pick])
    hot = hot_pixel_mask(flags)
    if "hot_pixels" in group:
        del group["hot_pixels"]
    arr = group.create_array("hot_pixels", shape=hot.shape, dtype="bool", dimension_names=("row", "col"),
                             attributes={"long_name": "hot pixels found in the scan (one-pixel peaks in most "
                                                      "images); ignored by the peak search like `mask`"})
    arr[...] = hot
    group.attrs["hot_pixels"] = {"count": int(hot.sum()), "images_sampled": int(len(pick)),
                                 "rule": "one-pixel peak (> 8 σ above every neighbour) in > 50 % of the sample"}


def _finish(out: Path, group, tables, summary, find_hot_pixels: bool = True) -> None:
    """Final tables, hot pixels, content id, ``ingest_complete`` (last), consolidated metadata."""
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    tables["status_reason"] = np.where(tables["status"] == OK, "", tables["status_reason"])
    if find_hot_pixels:
        _record_hot_pixels(group, tables)
    write_point_tables(group, tables)
    group.attrs.update({"ingest_time": summary["ingest_time"],
                        "ingest_summary": json.loads(json.dumps(summary)),
                        "content_id": content_id(group.attrs["scan_id"], tables),
                        "ingest_complete": True})
    with warnings.catch_warnings():  # "consolidated metadata not in the v3 spec": wanted here
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(out))


def _previous(out: Path, plan: IngestPlan) -> dict:
    """Settings and per-point tables of the scan store being resumed."""
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    try:
        group = zarr.open_group(str(out), mode="r", use_consolidated=False)
        attrs = group.attrs.asdict()
        images = group["images"]
    except Exception as err:  # noqa: BLE001
        raise IngestError(f"{out} is a laueflow scan store that cannot be opened ({err}); move it away "
                          "or pass --overwrite to ingest again from scratch") from None
    settings = dict(attrs.get("ingest_settings") or {
        "calibration": attrs.get("calibration"), "materials": attrs.get("materials"),
        "step_um": attrs.get("step_um"), "scan_order": attrs.get("scan_order"), "layout": attrs.get("layout"),
        "compression": attrs.get("compression"), "dtype": attrs.get("dtype")})
    settings.setdefault("scan_shape", [int(n) for n in images.shape[:2]])
    settings.setdefault("frame_shape", [int(n) for n in images.shape[2:]])
    if "ingest_settings" not in attrs:  # laueflow 0.x: mask is compared with the stored one
        settings["mask_sha256"] = mask_sha256(group["mask"][...]) if "mask" in group else None
    tables = read_point_tables(group)
    if "status" not in tables:
        tables["status"] = np.full(images.shape[:2], NOT_READ, np.int8)
        tables["source_file"] = np.full(images.shape[:2], "", dtype=object)
    return {"settings": settings, "tables": tables}


def _run_tasks(tasks, store, frame_shape, dtype, h5_dataset, client, progress, on_result=None):
    bar = tqdm(total=sum(len(t) for t in tasks), unit="img", disable=not progress or not tasks,
               desc="ingest")
    results = []
    try:
        if client is None:
            for t in tasks:
                results.append(_ingest_task(store, t, frame_shape, dtype, h5_dataset))
                if on_result:
                    on_result(results[-1])
                bar.update(len(t))
        else:
            from distributed import as_completed  # deferred: distributed is heavy; the CLI imports this module

            futures = [client.submit(_ingest_task, store, t, frame_shape, dtype, h5_dataset,
                                     pure=False) for t in tasks]
            for fut in as_completed(futures):
                res = fut.result()
                fut.release()
                results.append(res)
                if on_result:
                    on_result(res)
                bar.update(len(res[0]))
    finally:
        bar.close()
    return results


def format_summary(summary: dict, status=None, reason=None, source_file=None, limit: int = 10) -> str:
    """The table printed at the end of an ingest: counts, throughput, the first failing points
    (missing ones included) with their reasons."""
    lines = ["", f"{'status':<14}{'points':>8}"]
    for name, n in summary["counts"].items():
        lines.append(f"{name:<14}{n:>8}")
    lines.append(f"{'total':<14}{summary['n_points']:>8}")
    lines.append(f"written now {summary['n_written_now']}, skipped (already ingested) {summary['n_skipped']}"
                 + (f", read again because the file changed {summary['n_changed_files']}"
                    if summary.get("n_changed_files") else ""))
    lines.append(f"images {summary['raw_mb']:.1f} MB raw -> {summary['stored_mb']:.1f} MB stored "
                 f"(compression ratio {summary['compression_ratio']:.2f}), "
                 f"{summary['mb_per_s']:.1f} MB/s over {summary['wall_s']:.1f} s")
    if summary.get("hot_pixels"):
        lines.append(f"hot pixels found in the scan: {summary['hot_pixels']} (one-pixel peaks in most images; "
                     "stored as `hot_pixels`, ignored by the peak search like a mask)")
    if status is not None:
        bad = np.argwhere(status != OK)
        if len(bad):
            lines.append(f"{len(bad)} point(s) not ok:")
        for iy, ix in bad[:limit]:
            where = f" [{source_file[iy, ix]}]" if source_file is not None and source_file[iy, ix] else ""
            lines.append(f"  ({iy}, {ix}) {STATUS_CODES[int(status[iy, ix])]}: {reason[iy, ix]}{where}")
        if len(bad) > limit:
            lines.append(f"  … and {len(bad) - limit} more (the store's status_reason array lists them all)")
    return "\n".join(lines)
