"""Convolutional autoencoder of Laue images (Song, Tamura et al., ALS 12.3.2): 128×128 → M features.

Architecture (encoder ``widths = (4, 8, 16, 32, 64)``, ``latent_size M = 256``):

- **encoder**: five blocks ``Conv2d 3×3 (padding 1) → BatchNorm → ReLU → MaxPool 2×2`` (128 → 4
  px), then a ``4×4`` convolution without padding to the ``1 × 1 × M`` bottleneck (linear: the
  features);
- **decoder**: ``ConvTranspose2d 4×4`` (1 → 4 px), then five ``ConvTranspose2d 4×4, stride 2,
  padding 1`` (each doubles the size; widths ``DECODER_WIDTHS = (128, 64, 32, 16, 8)``, wider
  than the encoder's mirror, which did not learn to reconstruct in the CPU budget) with batch
  norm and ReLU between, sigmoid output (last bias −3.5: the mean of a sparse image);
- 20 % dropout on the bottleneck during training (``dropout``); none at inference.

Trained with binary cross-entropy on images in ``[0, 1]`` (:mod:`laueflow.kernels.downsample`),
MSE monitored. The encoder is light on purpose (≈ 11 MFLOP per image: the feature stage's
≥ 200 images/s on 2 CPU cores, ``benchmarks/results.md``); 986,529 parameters in all (3.9 MB).
Weights and their preprocessing ship in ``laueflow/data/autoencoder.pt`` + ``.json``
(:mod:`laueflow.io.model_files`); measurements in ``docs/features.md``.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from .spotcnn import _fold_batchnorm, _parameters_version

__all__ = ["WIDTHS", "LATENT_SIZE", "INPUT_SIZE", "LaueAutoencoder", "encode_images", "count_parameters"]

WIDTHS = (4, 8, 16, 32, 64)
#: decoder widths, 4 → 128 px (wider than the encoder's mirror: training only, the feature stage
#: runs the encoder alone; measured in docs/features.md)
DECODER_WIDTHS = (128, 64, 32, 16, 8)
LATENT_SIZE = 256
INPUT_SIZE = 128
#: CPU inference chunk (images): activations of a chunk stay in cache
CPU_CHUNK = 64
#: initial bias of the last layer: sigmoid(−3.5) ≈ 0.03, the mean of a preprocessed image
OUTPUT_BIAS = -3.5
BATCH_NORM = True


class LaueAutoencoder(nn.Module):
    """``forward(x (n, 1, 128, 128)) → reconstruction``; ``encode(x) → (n, latent_size)``."""

    def __init__(self, latent_size: int = LATENT_SIZE, widths=WIDTHS, dropout: float = 0.2,
                 input_size: int = INPUT_SIZE, batch_norm: bool = BATCH_NORM, decoder_widths=DECODER_WIDTHS):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        final = input_size // 2 ** len(widths)
        if final * 2 ** len(widths) != input_size or final < 1:
            raise ValueError(f"input_size {input_size} must be a multiple of 2**{len(widths)}")
        self.latent_size, self.widths, self.input_size = int(latent_size), widths, int(input_size)
        self.batch_norm = bool(batch_norm)

        def norm(c):
            return [nn.BatchNorm2d(c)] if self.batch_norm else []

        layers: list[nn.Module] = []
        c_in = 1
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, padding=1), *norm(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = w
        layers.append(nn.Conv2d(c_in, self.latent_size, final))
        self.encoder = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        dec = tuple(int(w) for w in (decoder_widths or widths[::-1]))
        if len(dec) != len(widths):
            raise ValueError(f"decoder_widths needs {len(widths)} values (one per upsampling), got {dec}")
        self.decoder_widths = dec
        up: list[nn.Module] = [nn.ConvTranspose2d(self.latent_size, dec[0], final), *norm(dec[0]),
                               nn.ReLU(inplace=True)]
        chans = list(dec) + [1]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            up.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            up += [*norm(c_out), nn.ReLU(inplace=True)] if c_out != 1 else [nn.Sigmoid()]
        self.decoder = nn.Sequential(*up)
        with torch.no_grad():  # start near the mean of sparse images (≈ 0.03), not 0.5 everywhere
            up[-2].bias.fill_(OUTPUT_BIAS)

    def _as_batch(self, x):
        if x.ndim == 3:
            x = x[:, None]
        if tuple(x.shape[1:]) != (1, self.input_size, self.input_size):
            raise ValueError(f"expected images (n, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        return x

    def encode(self, x) -> torch.Tensor:
        """Features ``(n, latent_size)`` of images ``(n, [1,] 128, 128)`` in [0, 1]."""
        return self.encoder(self._as_batch(x)).flatten(1)

    def decode(self, z) -> torch.Tensor:
        return self.decoder(z[:, :, None, None])

    def forward(self, x) -> torch.Tensor:
        return self.decode(self.dropout(self.encode(x)))

    def config(self) -> dict:
        return {"latent_size": self.latent_size, "widths": list(self.widths), "input_size": self.input_size,
                "dropout": self.dropout.p, "batch_norm": self.batch_norm, "decoder_widths": list(self.decoder_widths)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_CPU_ENCODERS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _cpu_encoder(model: LaueAutoencoder) -> nn.Module:
    """The encoder of ``model`` with batch norm folded into its convolutions, channels-last
    (same features to float32 rounding), built once per model and rebuilt if its weights change."""
    version = _parameters_version(model)
    cached = _CPU_ENCODERS.get(model)
    if cached is None or cached[0] != version:
        encoder = _fold_batchnorm(nn.Sequential(model.encoder)).to(memory_format=torch.channels_last)
        cached = (version, encoder)
        _CPU_ENCODERS[model] = cached
    return cached[1]


def encode_images(model: LaueAutoencoder, images, *, batch_size: int = 256) -> np.ndarray:
    """Features ``(n, latent_size)`` float32 of preprocessed images ``(n, 128, 128)`` (numpy), in
    batches on the model's device (eval mode, no dropout). On the CPU in chunks of
    ≤ :data:`CPU_CHUNK` images, batch norm folded, channels-last (faster; same features to
    float32 rounding)."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    out = np.empty((len(x), model.latent_size), np.float32)
    cpu = device.type == "cpu"
    step = max(1, min(int(batch_size), CPU_CHUNK) if cpu else int(batch_size))
    was_training = model.training
    model.eval()
    try:
        encoder = _cpu_encoder(model) if cpu else model.encoder
        with torch.inference_mode():
            for lo in range(0, len(x), step):
                xb = model._as_batch(x[lo:lo + step].to(device, non_blocking=True))
                if cpu:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                out[lo:lo + len(xb)] = encoder(xb).flatten(1).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
