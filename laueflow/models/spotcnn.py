"""Spot-morphology CNN of Kirstein, Petrich et al. (Materials 2023): 32×32 cutout → 5 descriptors.

Architecture (as in the paper): input 32×32×1; three blocks of two 3×3 convolutions (padding 1),
each followed by batch norm and ReLU, 2×2 max-pooling after each block (32 → 16 → 8 → 4);
flatten 4×4×128 = 2048; dense 112, 56, 22 with ReLU; dense 5 with sigmoid. Filter widths
(16, 16 | 32, 32 | 64, 128), convolutions with bias: **346,481 trainable parameters**
(paper: 347,493, −0.3 %; the paper does not list its widths — this is the closest monotone
choice whose last block ends at 128 channels; see :func:`count_parameters`).

Outputs: ``Desc = (Sim, Pos*_col, Pos*_row, Asp, Area*)`` (see :mod:`laueflow.kernels.cutouts`);
inputs are cutouts normalised by :func:`laueflow.kernels.cutouts.normalise_cutouts`.

Shipped weights: ``laueflow/data/spotcnn.pt`` (a ``state_dict``) with ``spotcnn.json`` next to it
(sha256 of the ``.pt``, the command and seed that produced it, training data summary).
:func:`load_spotcnn` refuses a weights file whose sha256 differs from the metadata's
(:class:`WeightsHashError`). :func:`get_spotcnn` caches the loaded model per process, keyed by
the weights' hash and the device.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["WIDTHS", "SpotCNN", "count_parameters", "default_weights_path", "file_sha256",
           "WeightsHashError", "load_spotcnn", "get_spotcnn", "predict_descriptors", "default_device"]

#: conv widths of the three blocks (two convolutions each)
WIDTHS = ((16, 16), (32, 32), (64, 128))
DENSE = (112, 56, 22)
PAPER_PARAMETERS = 347_493


class WeightsHashError(RuntimeError):
    """The weights file does not match the sha256 recorded in its metadata."""


class SpotCNN(nn.Module):
    def __init__(self, widths=WIDTHS, dense=DENSE):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for block in widths:
            for c_out in block:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        n_in = c_in * 4 * 4
        for n_out in dense:
            head += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
            n_in = n_out
        head += [nn.Linear(n_in, 5), nn.Sigmoid()]
        self.head = nn.Sequential(*head)

    def forward(self, x):
        if x.ndim == 3:
            x = x[:, None]
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, ``sum(p.numel())`` (batch-norm running statistics are buffers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "spotcnn.pt"


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _metadata_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def load_spotcnn(path=None, *, device=None, expected_sha256: str | None = None, check_hash: bool = True):
    """Load weights into a :class:`SpotCNN` in eval mode, after checking the file's sha256.

    The expected hash is ``expected_sha256`` or the ``sha256`` of the JSON metadata next to the
    weights (``spotcnn.pt`` → ``spotcnn.json``). Raises :class:`WeightsHashError` on mismatch or
    when neither is available (``check_hash=False`` skips the check, for freshly trained files).
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.exists():
        raise FileNotFoundError(f"spot CNN weights not found: {path}")
    actual = file_sha256(path)
    if check_hash:
        expected = expected_sha256
        meta_path = _metadata_path(path)
        if expected is None and meta_path.exists():
            expected = json.loads(meta_path.read_text()).get("sha256")
        if expected is None:
            raise WeightsHashError(f"{path}: no sha256 to check against (missing {meta_path.name})")
        if actual != expected:
            raise WeightsHashError(
                f"{path}: sha256 {actual[:16]}… does not match the recorded {expected[:16]}… — the weights "
                f"file was modified or replaced; re-install laueflow or retrain with 'laueflow train spots'")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = SpotCNN()
    model.load_state_dict(state)
    model.eval()
    device = default_device() if device is None else torch.device(device)
    return model.to(device)


@functools.lru_cache(maxsize=8)
def _cached(path: str, sha256: str, device: str):
    return load_spotcnn(path, device=device)


def get_spotcnn(path=None, device=None):
    """The model, loaded once per process per (weights sha256, device)."""
    path = Path(path) if path is not None else default_weights_path()
    device = str(default_device() if device is None else torch.device(device))
    st = os.stat(path)
    return _cached(os.fspath(path), _hash_cached(os.fspath(path), st.st_size, st.st_mtime_ns), device)


@functools.lru_cache(maxsize=64)
def _hash_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def predict_descriptors(model: nn.Module, x, *, batch_size: int = 4096) -> np.ndarray:
    """``Desc`` (m, 5) float32 for normalised cutouts ``x`` (m, 32, 32), in batches on the
    model's device."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out = np.empty((len(x), 5), np.float32)
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].to(device, non_blocking=True)
            out[lo:lo + len(xb)] = model(xb[:, None]).float().cpu().numpy()
    return out
