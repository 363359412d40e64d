"""Assertions on results stores shared by the pipeline tests (a helper module, no tests here)."""
from __future__ import annotations

import numpy as np
import xarray as xr


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
