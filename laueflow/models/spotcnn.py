"""Spot-morphology CNN of Kirstein, Petrich et al. (Materials 2023): 32×32 cutout → 5 descriptors.

Architecture (as in the paper): input 32×32×1; three blocks of two 3×3 convolutions (padding 1),
each followed by batch norm and ReLU, 2×2 max-pooling after each block (32 → 16 → 8 → 4);
flatten 4×4×128 = 2048; dense 112, 56, 22 with ReLU; dense 5 with sigmoid. Filter widths
(16, 16 | 32, 32 | 64, 128), convolutions with bias: **346,481 trainable parameters**
(paper: 347,493, −0.3 %; the paper does not list its widths — this is the closest monotone
choice whose last block ends at 128 channels; see :func:`count_parameters`).

Outputs: ``Desc = (Sim, Pos*_col, Pos*_row, Asp, Area*)`` (see :mod:`laueflow.kernels.cutouts`);
inputs are cutouts normalised by :func:`laueflow.kernels.cutouts.normalise_cutouts`.

Shipped weights and their loader (sha256-checked): :mod:`laueflow.io.model_files`; the pipeline
loads them once per worker process (:mod:`laueflow.pipeline.models`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["WIDTHS", "SpotCNN", "count_parameters", "predict_descriptors"]

#: conv widths of the three blocks (two convolutions each)
WIDTHS = ((16, 16), (32, 32), (64, 128))
DENSE = (112, 56, 22)
PAPER_PARAMETERS = 347_493


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
