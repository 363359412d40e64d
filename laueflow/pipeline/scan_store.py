"""The scan store's identity and state: its settings, per-point tables, completeness, content id.

``laueflow ingest`` records in the root attributes: ``laueflow_scan: true`` (the marker checked
before any delete), ``scan_id`` (a UUID made when the store is created), ``ingest_settings``
(what a resume must repeat: calibration, materials, step, shape, order, layout, mask …),
``ingest_complete`` (false from the moment an ingest starts writing until it has read every
point) and ``content_id`` (a hash of what the images were read from: scan id, per-point status,
source file, size and modification time — it changes whenever any image may have changed).
``laueflow run`` reads the store only when ``ingest_complete`` is true (or with
``allow_incomplete_scan``, valid points only) and records the content id as provenance.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ..io.images import NOT_READ, OK, STATUS_CODES
from ..io.store_kind import KIND_NAMES, SCAN_MARKER, read_store_attrs, store_kind

__all__ = ["detector_mask", "ScanStoreError", "settings_differences", "content_id", "scan_state", "write_point_tables",
           "read_point_tables", "POINT_TABLES", "mask_sha256"]

#: per-point arrays the ingest driver writes (name → dtype), in this order: ``status`` last, so
#: a point saved as ok always has its source signature (each chunk file is written atomically)
POINT_TABLES = {"source_file": str, "source_size": "int64", "source_mtime_ns": "int64",
                "status_reason": str, "valid": "bool", "status": "int8"}


#: fill values: an array created but not yet written (a killed ingest) reads as "not read yet"
_FILL = {"source_file": "", "source_size": -1, "source_mtime_ns": -1, "status_reason": "", "valid": False,
         "status": NOT_READ}


class ScanStoreError(ValueError):
    """A scan store that cannot be used (the message says what to do)."""


def mask_sha256(mask) -> str | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    return hashlib.sha256(f"{mask.shape}".encode() + np.packbits(mask).tobytes()).hexdigest()


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(value, prefix: str, out: dict) -> dict:
    """Nested dicts (and lists of one-key dicts, like a workflow's stages) → dotted keys."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and len(v) == 1 for v in value):
        value = {next(iter(v)): next(iter(v.values())) for v in value}
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def settings_differences(stored: dict, given: dict) -> list[str]:
    """``"key: stored X, given Y"`` for every setting that differs (nested keys dotted, e.g.
    ``calibration.distance_mm`` or ``stages.peaks.max_peaks``); top-level keys absent from
    ``stored`` (stores of older versions) are not compared."""
    out = []
    for key in sorted(given):
        if key not in stored or stored[key] == given[key]:
            continue
        old, new = _flatten(stored[key], key, {}), _flatten(given[key], key, {})
        for sub in sorted(set(old) | set(new)):
            if old.get(sub, "<absent>") != new.get(sub, "<absent>"):
                out.append(f"{sub}: stored {_short(old.get(sub, '<absent>'))}, given {_short(new.get(sub, '<absent>'))}")
    return out


def content_id(scan_id: str, tables: dict) -> str:
    """Hash of what the images were read from (16 hex digits)."""
    digest = hashlib.sha256(str(scan_id).encode())
    for name in ("status", "source_file", "source_size", "source_mtime_ns"):
        if name in tables:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(np.asarray(tables[name]).astype(str if name == "source_file"
                                                                                  else None)).tobytes())
    return digest.hexdigest()[:16]


def write_point_tables(group, tables: dict) -> None:
    """Write (creating when needed) the per-point arrays; small, written by the driver only."""
    attributes = {
        "status": {"flag_values": list(STATUS_CODES), "status_codes": {str(k): v for k, v in STATUS_CODES.items()},
                   "flag_meanings": " ".join(v.replace(" ", "_") for v in STATUS_CODES.values())},
        "valid": {"long_name": "image ingested and usable"},
        "status_reason": {"long_name": "why a point is not ok"},
        "source_file": {"long_name": "source image (path or path::frame)"},
        "source_size": {"long_name": "size of the source file when read", "units": "bytes"},
        "source_mtime_ns": {"long_name": "modification time of the source file when read", "units": "ns"},
    }
    tables = {**tables, "valid": np.asarray(tables["status"]) == OK}
    for name, dtype in POINT_TABLES.items():
        data = np.asarray(tables[name]).astype(dtype)
        if name not in group:
            group.create_array(name, shape=data.shape, dtype=dtype, dimension_names=("y", "x"),
                               attributes=attributes[name], fill_value=_FILL[name])
        group[name][...] = data


def read_point_tables(group) -> dict:
    """The per-point arrays present in ``group`` (numpy; strings as object arrays)."""
    out = {}
    for name, dtype in POINT_TABLES.items():
        if name in group:
            arr = np.asarray(group[name][...])
            out[name] = arr.astype(object) if dtype is str else arr
    return out


def scan_state(path, *, allow_incomplete: bool = False) -> dict:
    """Check that ``path`` is a scan store ``laueflow run`` may read; return its identity
    ``{"scan_id", "content_id", "complete", "n_valid", "n_points"}``. Raises :class:`ScanStoreError`."""
    kind = store_kind(path)
    if kind != "scan":
        raise ScanStoreError(f"input {path} is {KIND_NAMES.get(kind, kind)}, not a scan store: "
                             "make one with `laueflow ingest IMAGES --out scan.zarr`"
                             if kind != "zarr" else
                             f"input {path} is a Zarr store without laueflow's '{SCAN_MARKER}' marker; "
                             "make a scan store with `laueflow ingest`")
    import zarr  # deferred: heavy

    attrs = read_store_attrs(path)
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    legacy = SCAN_MARKER not in attrs  # laueflow 0.x stores: complete once ingest_summary was written
    complete = bool(attrs.get("ingest_complete", legacy))
    tables = read_point_tables(group)
    status = tables.get("status")
    n_points = int(np.prod(group["images"].shape[:2]))
    if status is None:
        if not legacy:
            raise ScanStoreError(f"{path}: the ingest was stopped before it recorded any point; "
                                 "re-run the same `laueflow ingest` command to resume it")
        n_valid = n_points
    else:
        n_valid = int((status == OK).sum())
    if not complete and not allow_incomplete:
        n_todo = int((status == NOT_READ).sum()) if status is not None else n_points
        raise ScanStoreError(
            f"{path}: its ingest did not finish ({n_valid} of {n_points} points read, {n_todo} not read yet): "
            "re-run the same `laueflow ingest` command to resume it, or pass --allow-incomplete-scan "
            "to process only the points read so far")
    scan_id = attrs.get("scan_id") or f"legacy:{attrs.get('ingest_time')}:{attrs.get('laueflow_version')}"
    ident = attrs.get("content_id") if complete and attrs.get("content_id") else content_id(scan_id, tables)
    return {"scan_id": scan_id, "content_id": ident, "complete": complete, "n_valid": n_valid,
            "n_points": n_points}


def detector_mask(group) -> np.ndarray | None:
    """The pixels the peak search ignores: the user's ``mask`` or'ed with the ``hot_pixels``
    the ingest found in the scan itself; None when the store has neither."""
    masks = [np.asarray(group[name][...], dtype=bool) for name in ("mask", "hot_pixels") if name in group]
    if not masks:
        return None
    if len({m.shape for m in masks}) > 1:
        raise ScanStoreError(f"the scan's mask {masks[0].shape} and hot_pixels {masks[1].shape} differ in shape; "
                             "re-ingest with a mask of the detector's size")
    return np.logical_or.reduce(masks)
