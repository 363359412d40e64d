"""What a folder is, from its own marker — checked before laueflow deletes anything.

A store is laueflow's only if its root attributes carry laueflow's marker: ``laueflow_scan``
(``laueflow ingest``), ``laueflow_results`` (``laueflow run``) or ``truth_format_version``
(``laueflow simulate``). :func:`remove_store` deletes a folder only when it is a store of the
expected kind; anything else (a folder of raw images, a Zarr store of another program, a
file) is refused with a :class:`NotOurStoreError`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["SCAN_MARKER", "RESULTS_MARKER", "TRUTH_MARKER", "read_store_attrs", "store_kind",
           "remove_store", "NotOurStoreError", "KIND_NAMES"]

SCAN_MARKER = "laueflow_scan"
RESULTS_MARKER = "laueflow_results"
TRUTH_MARKER = "truth_format_version"

#: kind → what writes it (for messages)
KIND_NAMES = {"scan": "a scan store (written by `laueflow ingest`)",
              "results": "a results store (written by `laueflow run`)",
              "truth": "a truth store (written by `laueflow simulate`)",
              "zarr": "a Zarr store not written by laueflow",
              "file": "a file", "folder": "a folder that is not a Zarr store", None: "absent"}


class NotOurStoreError(FileExistsError):
    """The path is not a laueflow store of the kind expected: laueflow will not delete it."""


def read_store_attrs(path) -> dict | None:
    """Root attributes of the Zarr group at ``path`` (v3 ``zarr.json`` or v2 ``.zattrs``);
    None when ``path`` is not a Zarr group. Reads one small file, no zarr import."""
    path = Path(path)
    v3, v2 = path / "zarr.json", path / ".zgroup"
    try:
        if v3.is_file():
            meta = json.loads(v3.read_text())
            return dict(meta.get("attributes") or {}) if meta.get("node_type") == "group" else None
        if v2.is_file():
            attrs = path / ".zattrs"
            return json.loads(attrs.read_text()) if attrs.is_file() else {}
    except (OSError, ValueError):
        return None
    return None


def store_kind(path) -> str | None:
    """``"scan"``, ``"results"``, ``"truth"``, ``"zarr"`` (someone else's), ``"file"``,
    ``"folder"`` or None (nothing there)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_dir():
        return "file"
    attrs = read_store_attrs(path)
    if attrs is None:
        return "folder"
    if attrs.get(RESULTS_MARKER) is True:
        return "results"
    if attrs.get(SCAN_MARKER) is True or ("ingest_summary" in attrs and "frame_shape" in attrs):
        return "scan"  # (the second test: scan stores of laueflow 0.x before the marker)
    if TRUTH_MARKER in attrs:
        return "truth"
    return "zarr"


def remove_store(path, kind: str) -> None:
    """Delete the store at ``path`` only if it is laueflow's store of ``kind``; else refuse."""
    path = Path(path)
    found = store_kind(path)
    if found is None:
        return
    if found != kind or path.is_symlink():
        raise NotOurStoreError(
            f"{path} is {KIND_NAMES.get(found, found)}, not {KIND_NAMES[kind]}: laueflow deletes only "
            "stores it wrote, so it was left untouched. Choose another output path (or move it away "
            "yourself if you really mean to replace it).")
    shutil.rmtree(path)
