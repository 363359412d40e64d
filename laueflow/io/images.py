"""Detector image readers as small plugins: each declares the file extensions it reads.

``read_frame(path, frame=None, h5_dataset=None) -> np.ndarray`` picks the reader by extension.
Errors are raised as :class:`ImageReadError` carrying a scan status code (see
:data:`STATUS_CODES`), so the ingest can record *why* a point failed and go on.

Readers: TIFF (tifffile), HDF5 stacks (h5py; one frame per scan point; ESRF BLISS layouts
``entry_0000/measurement/data`` or ``<scan>/measurement/<detector>`` are found automatically),
and every other format fabio reads (MarCCD ``.mccd``, ESRF ``.edf``, ``.cbf`` …).
Inputs are opened read-only and never modified.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np
import tifffile

__all__ = ["STATUS_CODES", "ImageReadError", "ImageReader", "READERS", "reader_for",
           "read_frame", "h5_find_dataset", "h5_n_frames", "file_index", "IMAGE_EXTENSIONS"]

#: per-point status codes of a scan store (``status`` array)
STATUS_CODES = {0: "ok", 1: "missing", 2: "unreadable", 3: "truncated", 4: "wrong shape",
                5: "wrong dtype", 6: "all-zero", 7: "not read yet"}
OK, MISSING, UNREADABLE, TRUNCATED, WRONG_SHAPE, WRONG_DTYPE, ALL_ZERO, NOT_READ = range(8)


class ImageReadError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ImageReader:
    """Base plugin: ``extensions`` it reads, ``read(path, frame)`` → 2-D array."""

    name = "base"
    extensions: tuple[str, ...] = ()
    is_stack = False

    def read(self, path: Path, frame: int | None = None, **options) -> np.ndarray:
        raise NotImplementedError


class TiffReader(ImageReader):
    name = "tiff"
    extensions = (".tif", ".tiff")

    def read(self, path, frame=None, **options):
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[frame or 0]
            size = os.path.getsize(path)
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
            if ends and max(ends) > size:
                raise ImageReadError(TRUNCATED, f"truncated TIFF: data ends at byte {max(ends)}, "
                                                f"file has {size}")
            return page.asarray()


class FabioReader(ImageReader):
    name = "fabio"
    extensions = (".edf", ".mccd", ".cbf", ".img", ".sfrm", ".mar3450", ".marccd", ".edf.gz",
                  ".tif.gz")

    def read(self, path, frame=None, **options):
        import fabio  # deferred: fabio takes ~0.7 s to import; most scans are TIFF or HDF5

        with fabio.open(str(path)) as img:
            if frame:
                img = img.getframe(frame)
            data = np.asarray(img.data)
            expected = [int(img.header[k]) for k in ("Dim_2", "Dim_1") if k in img.header]
            if len(expected) == 2 and data.shape != tuple(expected):
                raise ImageReadError(TRUNCATED, f"header says {tuple(expected)}, read {data.shape}")
            return data


class HDF5Reader(ImageReader):
    name = "hdf5"
    extensions = (".h5", ".hdf5", ".nxs", ".hdf")
    is_stack = True

    def read(self, path, frame=None, h5_dataset=None, **options):
        with h5py.File(path, "r") as f:
            name = h5_dataset or h5_find_dataset(f)
            if name not in f:
                raise ImageReadError(UNREADABLE, f"no dataset {name!r} in {path}")
            ds = f[name]
            if ds.ndim == 2:
                return ds[()]
            return ds[frame or 0]


READERS: list[ImageReader] = [TiffReader(), HDF5Reader(), FabioReader()]
IMAGE_EXTENSIONS = tuple(ext for r in READERS for ext in r.extensions)


def reader_for(path) -> ImageReader:
    name = str(path).lower()
    for reader in READERS:
        if name.endswith(reader.extensions):
            return reader
    return READERS[-1]  # fabio guesses many formats from content


def h5_find_dataset(f) -> str:
    """Name of the image stack in an open HDF5 file: BLISS/LIMA layouts, else the largest 3-D."""
    if "entry_0000/measurement/data" in f:
        return "entry_0000/measurement/data"
    candidates = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            candidates.append((("/measurement/" in f"/{name}"), obj.size, name))

    f.visititems(visit)
    if not candidates:
        raise ImageReadError(UNREADABLE, "no 3-D image stack found; give --h5-dataset")
    return max(candidates)[2]


def h5_n_frames(path, h5_dataset=None) -> tuple[str, int]:
    with h5py.File(path, "r") as f:
        name = h5_dataset or h5_find_dataset(f)
        if name not in f:
            raise ValueError(f"{path}: no dataset {name!r}")
        ds = f[name]
        return name, (1 if ds.ndim == 2 else int(ds.shape[0]))


def read_frame(path, frame: int | None = None, *, h5_dataset: str | None = None) -> np.ndarray:
    """Read one 2-D frame; raise :class:`ImageReadError` (with a status code) on failure."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(MISSING, f"file not found: {path}") from None
    if size == 0:
        raise ImageReadError(TRUNCATED, "zero-byte file")
    try:
        data = reader_for(path).read(path, frame, h5_dataset=h5_dataset)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a per-point status
        text = f"{type(err).__name__}: {err}"
        truncated = re.search(r"truncat|short|end of file|EOF|unexpected end", text, re.I)
        raise ImageReadError(TRUNCATED if truncated else UNREADABLE, text[:300]) from None
    data = np.asarray(data)
    if data.ndim != 2:
        raise ImageReadError(WRONG_SHAPE, f"expected a 2-D frame, got shape {data.shape}")
    return data


_NUMBER = re.compile(r"(\d+)")


def file_index(path) -> int | None:
    """The scan index in a file name: the last group of digits of the name without extension."""
    name = Path(path).name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    numbers = _NUMBER.findall(name)
    return int(numbers[-1]) if numbers else None
