"""Array kernels: numpy or cupy arrays in, arrays out (no Dask, no files).

Each kernel dispatches on its input through :func:`laueflow.backend.get_array_module`.
"""
from .peaks import PEAK_FIELDS, estimate_background, find_peaks_2d

__all__ = ["PEAK_FIELDS", "estimate_background", "find_peaks_2d"]
