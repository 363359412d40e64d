"""Training cutouts from a user's ``scan.zarr`` (the file reading of :mod:`laueflow.stages.spot_training`;
weight files: :mod:`laueflow.io.model_files`)."""
from __future__ import annotations

import numpy as np

from ..stages.spot_training import SpotPatches, patches_from_images

__all__ = ["patches_from_scan_zarr"]


def patches_from_scan_zarr(path, *, max_images: int | None = None, peak_kwargs=None, scan_id: int = -1,
                           max_peaks: int = 300) -> SpotPatches:
    """37×37 patches around the peaks of (up to ``max_images`` evenly spread) images of a scan store."""
    import zarr  # deferred: zarr is heavy and `laueflow --help` imports this module

    group = zarr.open_group(str(path), mode="r")
    images = group["images"]
    ny, nx = images.shape[:2]
    n_total = ny * nx
    take = (np.arange(n_total) if max_images is None
            else np.linspace(0, n_total - 1, min(max_images, n_total)).astype(int))
    frames = (np.asarray(images[divmod(int(flat), nx)]) for flat in take)
    try:
        return patches_from_images(frames, peak_kwargs=peak_kwargs, scan_id=scan_id, max_peaks=max_peaks)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
