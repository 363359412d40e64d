"""Incident-intensity monitor values of a scan, read from a file (``laueflow ingest --monitor``).

Beamlines count the incident beam (an ion chamber, a diode: ``mon``, ``I0``) at every scan point;
dividing by it removes the decay of the ring current between top-ups and beam losses from
anything that compares intensities between points (``docs/ingest.md``). Accepted sources:

- ``values.npy``: a 1-D array (acquisition order) or a 2-D ``(ny, nx)`` map;
- ``values.txt`` / ``.csv`` / ``.dat``: numbers separated by blanks or commas, ``#`` comments; one
  column or one row (acquisition order), or ``ny`` rows of ``nx`` numbers (a map);
- ``scan.h5::path/to/dataset`` (``.h5``, ``.hdf5``, ``.nxs``): a 1-D or 2-D HDF5 dataset, e.g. a
  BLISS counter ``1.1/measurement/mon``.

This module only reads; :func:`laueflow.pipeline.ingest.monitor_map` places the values on the scan
grid and checks them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MonitorFileError", "read_monitor_values", "HDF5_SUFFIXES"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")


class MonitorFileError(ValueError):
    """A monitor source that cannot be read (the message says what to give instead)."""


def read_monitor_values(source) -> np.ndarray:
    """The numbers of ``source`` (module docstring) as float64, 1-D or 2-D."""
    text = str(source)
    path, dataset = text.rsplit("::", 1) if "::" in text else (text, None)
    path = Path(path)
    if not path.is_file():
        raise MonitorFileError(f"--monitor: no such file {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in HDF5_SUFFIXES:
            values = _read_hdf5(path, dataset)
        elif dataset is not None:
            raise MonitorFileError(f"--monitor {text}: '::dataset' is for HDF5 files ({', '.join(HDF5_SUFFIXES)})")
        elif suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = _read_text(path)
    except MonitorFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MonitorFileError(f"--monitor: cannot read {text}: {err}") from None
    values = np.asarray(values)
    if values.dtype.kind not in "iuf" or values.ndim not in (1, 2) or values.size == 0:
        raise MonitorFileError(f"--monitor {text}: expected a 1-D or 2-D array of numbers, got "
                               f"{values.dtype} of shape {values.shape}")
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    return values.astype(np.float64)


def _read_text(path: Path) -> np.ndarray:
    rows = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].replace(",", " ").split()
        if line:
            rows.append([float(v) for v in line])
    if not rows:
        raise MonitorFileError(f"--monitor {path}: no numbers in the file")
    if len({len(r) for r in rows}) != 1:
        raise MonitorFileError(f"--monitor {path}: rows of different lengths ({sorted({len(r) for r in rows})}); "
                               "give one value per line, or ny rows of nx values")
    return np.array(rows)


def _read_hdf5(path: Path, dataset: str | None) -> np.ndarray:
    import h5py

    if not dataset:
        raise MonitorFileError(f"--monitor {path}: name the dataset, e.g. {path}::1.1/measurement/mon")
    with h5py.File(path, "r") as f:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise MonitorFileError(f"--monitor {path}::{dataset}: no such dataset in the file")
        return np.asarray(f[dataset][()])
