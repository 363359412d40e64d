"""Image files and quiet ingests shared by the ingest test files (a helper module, no tests here)."""
from __future__ import annotations

from pathlib import Path

import tifffile

from laueflow.pipeline.ingest import ingest


def write_tiffs(folder: Path, n: int, frame, prefix: str = "img") -> Path:
    """``<prefix>_0000.tif`` … with ``frame(k)`` as image k; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        tifffile.imwrite(folder / f"{prefix}_{k:04d}.tif", frame(k))
    return folder


def quiet_ingest(inputs, out, **kw) -> dict:
    """:func:`laueflow.pipeline.ingest.ingest` in this process, no progress bar, no log."""
    kw.setdefault("progress", False)
    kw.setdefault("log", None)
    return ingest([str(i) for i in inputs], str(out), **kw)
