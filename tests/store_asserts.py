"""Assertions on results stores shared by the pipeline tests (a helper module, no tests here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "results-schema.md"


def store_data(path) -> dict:
    """``{variable: numpy array}`` of every data variable of a Zarr store."""
    with xr.open_zarr(str(path)) as ds:
        return {name: ds[name].values for name in ds.data_vars}


def assert_stores_identical(a, b) -> None:
    """Same variables, dtypes and values (NaN equal to NaN) in two stores."""
    da, db = store_data(a), store_data(b)
    assert sorted(da) == sorted(db)
    for name in da:
        assert da[name].dtype == db[name].dtype, name
        np.testing.assert_array_equal(da[name], db[name], err_msg=name)


def documented_variables() -> dict[str, list[str]]:
    """Rows of the variables table of docs/results-schema.md: ``{name: [name, dims, dtype, fill,
    units, description]}``."""
    section = SCHEMA_DOC.read_text().split("## Variables", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows
