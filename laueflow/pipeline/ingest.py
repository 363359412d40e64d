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
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..io.images import (IMAGE_EXTENSIONS, MISSING, OK, STATUS_CODES, ALL_ZERO, WRONG_DTYPE,
                         WRONG_SHAPE, ImageReadError, file_index, h5_n_frames, read_frame,
                         reader_for)

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
    """Dask task: read the images of ``points`` [(iy, ix, Source)] and write whole chunks.

    ``points`` are either single points (chunked layout) or all points of one shard
    (``iy`` equal, consecutive ``ix``), written in one assignment.
    """
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    images = zarr.open_array(f"{store}/images", mode="r+")
    results, stack = [], []
    t0 = time.perf_counter()
    for iy, ix, source in points:
        image, status, reason = read_point(source, frame_shape, dtype, h5_dataset)
        results.append((iy, ix, status, reason, 0 if image is None else image.nbytes))
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


def _probe_reference(plan: IngestPlan, frame_shape=None, dtype=None):
    """Frame shape and dtype: given, else those of the first readable point."""
    if frame_shape is not None and dtype is not None:
        return tuple(frame_shape), np.dtype(dtype)
    for key in sorted(plan.points):
        try:
            image = read_frame(plan.points[key].path, plan.points[key].frame,
                               h5_dataset=plan.h5_dataset)
        except ImageReadError:
            continue
        if image.any():
            return (tuple(frame_shape) if frame_shape else image.shape,
                    np.dtype(dtype) if dtype else image.dtype)
    raise IngestError("no readable image among the inputs")


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
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    ny, nx = plan.shape
    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    shards = None
    if layout == "sharded":
        shards = (1, min(shard_x, nx), *frame_shape)
    elif layout != "chunked":
        raise IngestError(f"layout must be chunked or sharded, got {layout!r}")
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
    group.attrs.update(attrs)
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


def _write_point_tables(group, status, reason, source_file):
    def put(name, data, dtype, attributes):
        if name in group:
            arr = group[name]
        else:
            arr = group.create_array(name, shape=data.shape, dtype=dtype,
                                     dimension_names=("y", "x"), attributes=attributes,
                                     fill_value=("" if dtype is str else None))
        arr[...] = data

    codes = {str(k): v for k, v in STATUS_CODES.items()}
    put("status", status.astype(np.int8), "int8",
        {"flag_values": list(STATUS_CODES), "flag_meanings": " ".join(
            v.replace(" ", "_") for v in STATUS_CODES.values()), "status_codes": codes})
    put("valid", status == OK, "bool", {"long_name": "image ingested and usable"})
    put("status_reason", reason, str, {"long_name": "why a point is not ok"})
    put("source_file", source_file, str, {"long_name": "source image (path or path::frame)"})


def ingest(inputs, out, *, shape=None, order="raster", index_list=None, first_index=None,
           h5_dataset=None, calibration=None, materials=(), step_um=(1.0, 1.0),
           frame_shape=None, dtype=None, layout="chunked", shard_x=16, compression="blosc",
           level=3, overwrite=False, mask=None, client=None, progress=True, log=print) -> dict:
    """Ingest images into ``out``; returns the summary dict (also stored as an attribute).

    ``mask``: bad detector pixels (array, ``.npy`` or image file; see :func:`load_mask`), stored
    as ``mask``; on a re-run it replaces the stored mask.

    ``client``: a ``distributed.Client`` (tasks run on its cluster) or None (run in this
    process, serially — for tests and small scans).
    """
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    out = Path(out)
    plan = plan_scan(inputs, shape=shape, order=order, index_list=index_list,
                     first_index=first_index, h5_dataset=h5_dataset)
    for source in plan.points.values():
        for p in map(Path, [source.path] + [str(i) for i in inputs]):
            if p.exists() and out.resolve() == p.resolve():
                raise IngestError("the output store must not be one of the inputs")
    ny, nx = plan.shape
    prev = None
    if out.exists():
        if overwrite:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        else:
            prev = _previous(out, plan)
    frame_shape, dtype = (prev["frame_shape"], prev["dtype"]) if prev else _probe_reference(
        plan, frame_shape, dtype)
    bad_pixels = load_mask(mask, frame_shape) if mask is not None else None
    if calibration is not None and tuple(calibration.frame_shape) != tuple(frame_shape) and log:
        log(f"warning: calibration frame_shape {calibration.frame_shape} differs from the "
            f"images' {tuple(frame_shape)}")
    status = np.full((ny, nx), MISSING, np.int8)
    reason = np.full((ny, nx), "no image file for this scan index", dtype=object)
    source_file = np.full((ny, nx), "", dtype=object)
    todo = []
    for (iy, ix), source in sorted(plan.points.items()):
        source_file[iy, ix] = source.label
        if prev and prev["status"][iy, ix] == OK and prev["source_file"][iy, ix] == source.label:
            status[iy, ix], reason[iy, ix] = OK, ""
            continue
        todo.append((iy, ix, source))
    if prev:
        changed = [(iy, ix) for iy, ix, s in todo if prev["source_file"][iy, ix] not in ("", s.label)
                   and prev["status"][iy, ix] == OK]
        if changed:
            raise IngestError(f"{out} exists and {len(changed)} point(s) would get a different "
                              f"source file (e.g. {changed[0]}): use --overwrite")
        group = zarr.open_group(str(out), mode="r+")
    else:
        attrs = {
            "calibration": calibration.to_dict() if calibration is not None else None,
            "materials": list(materials),
            "step_um": [float(step_um[0]), float(step_um[1])],
            "frame_shape": list(frame_shape),
            "dtype": np.dtype(dtype).name,
            "scan_shape": [ny, nx],
            "scan_order": plan.order,
            "layout": layout,
            "compression": compression,
            "laueflow_version": __version__,
            "status_codes": {str(k): v for k, v in STATUS_CODES.items()},
        }
        group = _create_store(out, plan, frame_shape, dtype, layout=layout, shard_x=shard_x,
                              compression=compression, level=level, attrs=attrs)
    if bad_pixels is not None:
        _write_mask(group, bad_pixels)
    layout = group.attrs.get("layout", layout)
    # tasks: one per point (chunked) or one per shard (sharded, full shard rewritten)
    if layout == "sharded":
        sx = group["images"].shards[1]
        by_shard = {}
        for iy, ix, s in todo:
            by_shard.setdefault((iy, ix // sx), []).append((iy, ix, s))
        tasks = []
        for (iy, k), _ in sorted(by_shard.items()):
            pts = [(iy, ix, plan.points[(iy, ix)]) for ix in range(k * sx, min(nx, (k + 1) * sx))
                   if (iy, ix) in plan.points]
            # points of the shard not to redo are re-read too: a shard is written whole
            tasks.append(pts)
    else:
        tasks = [[p] for p in todo]
    t0 = time.perf_counter()
    raw_bytes = 0
    results = _run_tasks(tasks, str(out), frame_shape, dtype, plan.h5_dataset, client, progress)
    for res, _, _ in results:
        for iy, ix, st, why, nbytes in res:
            status[iy, ix], reason[iy, ix] = st, why
            raw_bytes += nbytes
    wall = time.perf_counter() - t0
    reason = np.where(status == OK, "", reason)
    _write_point_tables(group, status, reason.astype(str), source_file.astype(str))
    stored = _dir_bytes(out / "images")
    n_ok = int((status == OK).sum())
    total_raw = n_ok * int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
    summary = {
        "counts": {STATUS_CODES[k]: int((status == k).sum()) for k in STATUS_CODES},
        "n_points": ny * nx,
        "n_written_now": sum(1 for res, _, _ in results for r in res if r[2] == OK),
        "n_skipped": len(plan.points) - len(todo),
        "raw_mb": total_raw / 1e6,
        "stored_mb": stored / 1e6,
        "compression_ratio": (total_raw / stored) if stored else float("nan"),
        "wall_s": wall,
        "mb_per_s": (raw_bytes / 1e6 / wall) if wall > 0 and raw_bytes else 0.0,
        "ingest_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    group.attrs.update({"ingest_time": summary["ingest_time"],
                        "ingest_summary": json.loads(json.dumps(summary))})
    with warnings.catch_warnings():  # "consolidated metadata not in the v3 spec": wanted here
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(out))
    if log:
        log(format_summary(summary, status, reason))
    return summary


def _previous(out: Path, plan: IngestPlan) -> dict:
    import zarr  # deferred: zarr is heavy; the CLI imports this module

    try:
        group = zarr.open_group(str(out), mode="r")
        images = group["images"]
        prev = {"status": np.asarray(group["status"][...]),
                "source_file": np.asarray(group["source_file"][...]).astype(object),
                "frame_shape": tuple(images.shape[2:]), "dtype": images.dtype}
    except Exception:  # noqa: BLE001
        raise FileExistsError(f"{out} exists and is not a complete laueflow scan store; "
                              f"use --overwrite to replace it") from None
    if prev["status"].shape != plan.shape:
        raise FileExistsError(f"{out} exists with scan shape {prev['status'].shape}, not "
                              f"{plan.shape}; use --overwrite to replace it")
    return prev


def _run_tasks(tasks, store, frame_shape, dtype, h5_dataset, client, progress):
    bar = tqdm(total=sum(len(t) for t in tasks), unit="img", disable=not progress,
               desc="ingest")
    results = []
    if client is None:
        for t in tasks:
            results.append(_ingest_task(store, t, frame_shape, dtype, h5_dataset))
            bar.update(len(t))
    else:
        from distributed import as_completed  # deferred: distributed is heavy; the CLI imports this module

        futures = [client.submit(_ingest_task, store, t, frame_shape, dtype, h5_dataset,
                                 pure=False) for t in tasks]
        for fut in as_completed(futures):
            res = fut.result()
            results.append(res)
            bar.update(len(res[0]))
    bar.close()
    return results


def format_summary(summary: dict, status=None, reason=None) -> str:
    lines = ["", f"{'status':<14}{'points':>8}"]
    for name, n in summary["counts"].items():
        lines.append(f"{name:<14}{n:>8}")
    lines.append(f"{'total':<14}{summary['n_points']:>8}")
    lines.append(f"written now {summary['n_written_now']}, skipped (already ingested) "
                 f"{summary['n_skipped']}")
    lines.append(f"images {summary['raw_mb']:.1f} MB raw -> {summary['stored_mb']:.1f} MB stored "
                 f"(compression ratio {summary['compression_ratio']:.2f}), "
                 f"{summary['mb_per_s']:.1f} MB/s over {summary['wall_s']:.1f} s")
    if status is not None:
        bad = np.argwhere((status != OK) & (status != MISSING))[:10]
        for iy, ix in bad:
            lines.append(f"  ({iy}, {ix}) {STATUS_CODES[int(status[iy, ix])]}: {reason[iy, ix]}")
    return "\n".join(lines)
