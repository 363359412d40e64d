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

import copy
import weakref

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


#: CPU inference runs in chunks of at most this many cutouts: a chunk's activations (128 × 16 ×
#: 32 × 32 float32 = 8 MB at the first block) stay in cache; the whole batch at once is ~2× slower
CPU_CHUNK = 128
#: False: run the module exactly as trained, whole batches (the results of laueflow ≤ this change,
#: bit for bit); True: the inference form below, same descriptors to ≲ 5e-6, ~2.5× faster
CPU_INFERENCE_FORM = True

_CPU_INFERENCE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every Conv2d → BatchNorm2d pair folded into one Conv2d
    (``w·γ/√(var+ε)``, ``(b − mean)·γ/√(var+ε) + β``): the same function up to float32 rounding
    (outputs differ by ≲ 5e-6), one pass less over the activations."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        out, i = [], 0
        while i < len(mods):
            conv = mods[i]
            bn = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                with torch.no_grad():
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                      conv.padding, conv.dilation, conv.groups, bias=True,
                                      padding_mode=conv.padding_mode)
                    fused.weight.copy_(conv.weight * scale[:, None, None, None])
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
                out.append(fused)
                i += 2
            else:
                out.append(conv)
                i += 1
        for _ in range(len(seq)):
            del seq[0]
        for k, mod in enumerate(out):
            seq.add_module(str(k), mod)
    return model.eval()


def _parameters_version(model: nn.Module) -> tuple:
    """Changes when a weight of ``model`` is replaced or updated in place."""
    tensors = (*model.parameters(), *model.buffers())
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:  # inference tensors keep no version counter (and cannot be updated)
        return tuple(t.data_ptr() for t in tensors)


def _cpu_inference_model(model: nn.Module) -> nn.Module:
    """The CPU inference form of an eval-mode ``model`` (batch norm folded, channels-last
    layout), built once per model and rebuilt if its weights change."""
    version = _parameters_version(model)
    cached = _CPU_INFERENCE.get(model)
    if cached is None or cached[0] != version:
        cached = (version, _fold_batchnorm(model).to(memory_format=torch.channels_last))
        _CPU_INFERENCE[model] = cached
    return cached[1]


def predict_descriptors(model: nn.Module, x, *, batch_size: int = 4096) -> np.ndarray:
    """``Desc`` (m, 5) float32 for normalised cutouts ``x`` (m, 32, 32), in batches on the
    model's device.

    On the CPU an eval-mode model runs in its inference form (:func:`_fold_batchnorm`,
    channels-last) in chunks of ≤ :data:`CPU_CHUNK` cutouts: ~2.5× faster than the module as
    trained on the whole batch, outputs equal to ≲ 5e-6 (float32 rounding).
    """
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out = np.empty((len(x), 5), np.float32)
    cpu = device.type == "cpu" and not model.training and CPU_INFERENCE_FORM
    if cpu:
        model = _cpu_inference_model(model)
        batch_size = max(1, min(int(batch_size), CPU_CHUNK))
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].to(device, non_blocking=True)[:, None]
            if cpu:
                xb = xb.contiguous(memory_format=torch.channels_last)
            out[lo:lo + len(xb)] = model(xb).float().cpu().numpy()
    return out
