"""Monitor (I0) values read from .npy, text/CSV and HDF5 files, and the sources refused."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from laueflow.io.monitor_file import MonitorFileError, read_monitor_values


def test_every_source_kind_gives_the_numbers(tmp_path):
    values = np.arange(1, 7, dtype=float) * 1000.5
    np.save(tmp_path / "flat.npy", values)
    np.save(tmp_path / "map.npy", values.reshape(2, 3))
    np.save(tmp_path / "column.npy", values.reshape(6, 1))
    (tmp_path / "column.txt").write_text("# I0 per point\n" + "\n".join(f"{v}" for v in values) + "\n")
    (tmp_path / "row.csv").write_text(",".join(f"{v}" for v in values))
    (tmp_path / "map.dat").write_text("1000.5 2001  3001.5  # first row\n4002, 5002.5, 6003\n\n")
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["1.1/measurement/mon"] = values.astype(np.int64)
    for name in ("flat.npy", "column.npy", "column.txt", "row.csv", "scan.h5::1.1/measurement/mon"):
        got = read_monitor_values(tmp_path / name if "::" not in name else f"{tmp_path}/{name}")
        assert got.dtype == np.float64 and got.shape == (6,), name
        np.testing.assert_allclose(got, values if name != "scan.h5::1.1/measurement/mon" else np.floor(values))
    for name in ("map.npy", "map.dat"):
        np.testing.assert_allclose(read_monitor_values(tmp_path / name), values.reshape(2, 3))


def test_sources_that_cannot_be_a_monitor_are_refused_with_the_fix(tmp_path):
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    (tmp_path / "ragged.txt").write_text("1 2 3\n4 5\n")
    (tmp_path / "words.txt").write_text("mon\n1\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["1.1/measurement/mon"] = np.ones(4)
    cases = [("missing.npy", "no such file"), ("cube.npy", "1-D or 2-D array of numbers"),
             ("text.npy", "1-D or 2-D array of numbers"), ("ragged.txt", "rows of different lengths"),
             ("words.txt", "cannot read"), ("empty.txt", "no numbers"),
             ("scan.h5", "name the dataset"), ("scan.h5::1.1/measurement/nope", "no such dataset"),
             ("scan.h5::1.1/measurement", "no such dataset"), ("ragged.txt::x", "for HDF5 files")]
    for name, message in cases:
        with pytest.raises(MonitorFileError, match=message):
            read_monitor_values(f"{tmp_path}/{name}")
