"""One small helper to run array kernels on numpy or cupy.

Kernels call :func:`get_array_module` on their input and use the returned module
(`numpy` or `cupy`) for every array operation, so one code path serves CPU and GPU.
"""
from __future__ import annotations

import numpy as np

__all__ = ["get_array_module", "gpu_available", "to_numpy", "native_bfloat16"]


def get_array_module(*arrays):
    """Return `cupy` if any argument is a cupy array, else `numpy`."""
    for array in arrays:
        if type(array).__module__.split(".")[0] == "cupy":
            import cupy  # deferred: optional (GPU extra) and heavy

            return cupy
    return np


def gpu_available() -> bool:
    """True when cupy imports and sees a CUDA device (never raises)."""
    try:
        import cupy  # deferred: optional (GPU extra) and heavy

        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - any import/driver failure means "no GPU"
        return False


def to_numpy(array) -> np.ndarray:
    """Copy a cupy array to host memory; numpy arrays pass through."""
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return np.asarray(array)


def native_bfloat16(device="cpu") -> bool:
    """True when ``device`` (a torch device or its name) does bfloat16 matrix products natively.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the x86 ``avx512_bf16`` or ``amx_bf16`` flag
    in ``/proc/cpuinfo`` (elsewhere False: bf16 would be emulated, slower than float32).
    """
    import torch  # deferred: torch is heavy

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
