"""Autoencoder training images from a user's ``scan.zarr`` (fine-tuning; the file reading of
``laueflow train autoencoder --scan``)."""
from __future__ import annotations

import numpy as np

from ..kernels.downsample import preprocess_frames
from .monitor import scan_monitor
from .scan_store import detector_mask

__all__ = ["images_from_scan_zarr"]


def images_from_scan_zarr(path, *, max_images: int | None = None, preprocess=None, chunk: int = 16) -> np.ndarray:
    """Preprocessed images ``(m, 128, 128)`` float32 in [0, 1] of (up to ``max_images`` evenly spread)
    valid images of a scan store, with the scan's bad-pixel mask applied and, when the store has
    a monitor, divided by it as the ``features`` stage does (``normalize: auto``)."""
    import zarr  # deferred: zarr is heavy and `laueflow --help` imports this module

    group = zarr.open_group(str(path), mode="r")
    images = group["images"]
    ny, nx = images.shape[:2]
    valid = np.asarray(group["valid"][...], bool).reshape(-1) if "valid" in group else np.ones(ny * nx, bool)
    flat = np.flatnonzero(valid)
    if len(flat) == 0:
        raise ValueError(f"{path}: no valid image to train on")
    if max_images is not None and len(flat) > max_images:
        flat = flat[np.linspace(0, len(flat) - 1, max_images).astype(int)]
    mask = detector_mask(group)
    monitor = scan_monitor(group)
    gain = None if monitor is None else monitor["median"] / monitor["values"].reshape(-1)[flat]
    out = []
    for lo in range(0, len(flat), chunk):
        frames = np.stack([np.asarray(images[divmod(int(i), nx)]) for i in flat[lo:lo + chunk]])
        out.append(preprocess_frames(frames, mask, None if gain is None else gain[lo:lo + chunk], **(preprocess or {})))
    return np.concatenate(out)
