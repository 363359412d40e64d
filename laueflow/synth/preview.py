"""Quick-look PNGs of detector images (log scale), with a dependency-free PNG writer."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["to_display", "write_png"]


def to_display(image, *, low=None, high=None, log: bool = True, bin_factor: int = 1) -> np.ndarray:
    """uint8 view of an image: optional max-pooling by ``bin_factor`` (spots stay visible), then
    log (or linear) scaling between ``low`` (default the 1st percentile) and ``high`` (the max)."""
    img = np.asarray(image, dtype=np.float64)
    if bin_factor > 1:
        r, c = (s // bin_factor * bin_factor for s in img.shape)
        img = img[:r, :c].reshape(r // bin_factor, bin_factor, c // bin_factor, bin_factor).max(axis=(1, 3))
    low = np.percentile(img, 1) if low is None else low
    high = img.max() if high is None else high
    x = np.clip(img - low, 0, None)
    span = max(high - low, 1.0)
    x = np.log1p(x) / np.log1p(span) if log else x / span
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def write_png(path, gray: np.ndarray) -> Path:
    """Write a 2-D uint8 array as an 8-bit greyscale PNG."""
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path
