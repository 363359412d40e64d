"""One small helper to run array kernels on numpy or cupy.

Kernels call :func:`get_array_module` on their input and use the returned module
(`numpy` or `cupy`) for every array operation, so one code path serves CPU and GPU.
"""
from __future__ import annotations

import numpy as np

__all__ = ["get_array_module", "gpu_available", "to_numpy"]


def get_array_module(*arrays):
    """Return `cupy` if any argument is a cupy array, else `numpy`."""
    for array in arrays:
        if type(array).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def gpu_available() -> bool:
    """True when cupy imports and sees a CUDA device (never raises)."""
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - any import/driver failure means "no GPU"
        return False


def to_numpy(array) -> np.ndarray:
    """Copy a cupy array to host memory; numpy arrays pass through."""
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return np.asarray(array)
