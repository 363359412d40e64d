"""Angular-distance histograms of Laue spots (the LaueNN input feature), batched.

For every *centre* spot ``i`` of an image, the histogram of the angles ``Δ_ij`` between its
scattering vector ``q̂_i`` and those of all other valid spots ``j`` of the same image, up to
``max_angle_deg``, in bins of ``step_deg``; normalised so that the tallest bin is 1 (LaueNN,
``docs/laue-conventions.md`` §5.1). Angles use ``cos Δ = q̂_i · q̂_j`` with
``q̂ = (−sinθ, cosθ sinχ, cosθ cosχ)`` and θ = 2θ/2.

Bins follow ``numpy.histogram(Δ, bins=arange(0, A_max + s, s))``: ``n_bins = round(A_max / s)``,
bin ``b`` holds ``b·s ≤ Δ < (b+1)·s`` and the last bin is closed (``Δ = A_max`` counts). The spot
itself (Δ = 0) is *not* counted; a second spot at exactly the same position is.

``smooth_bins`` (σ in bins, default 0 = off) convolves each histogram with a Gaussian truncated at
4σ, zero beyond the ends, before normalisation: a spot whose position is off by a fraction of a bin
then still overlaps the template bin (``IndexerConfig.smooth_bins``; off by default: measured
no gain on Cu and a loss on ZrO2).

Inputs are padded ``(n_images, max_spots)`` arrays (NaN = no spot), as produced by the peak and
angle stages. Two implementations with one contract:

* :func:`angular_histograms` — numpy or cupy (dispatch on the input arrays);
* :func:`angular_histograms_torch` — torch tensors on any device (CPU or CUDA).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .vectors import angles_to_qhat as qhat_from_angles

__all__ = ["n_bins_for", "angular_histograms", "angular_histograms_torch", "qhat_from_angles",
           "gaussian_kernel_1d"]


#: elements of the (images × centres × spots) temporaries per chunk
_CHUNK_ELEMENTS = 1 << 20


def n_bins_for(max_angle_deg: float, step_deg: float) -> int:
    """Number of bins of ``arange(0, max_angle + step, step)`` (network input size)."""
    n = int(round(float(max_angle_deg) / float(step_deg)))
    if n < 1:
        raise ValueError(f"max_angle_deg / step_deg must be ≥ 1, got {max_angle_deg}/{step_deg}")
    return n


def gaussian_kernel_1d(sigma_bins: float) -> np.ndarray:
    """Normalised Gaussian weights at offsets −⌈4σ⌉ … ⌈4σ⌉ bins (σ in bins, > 0)."""
    half = int(np.ceil(4 * float(sigma_bins)))
    x = np.arange(-half, half + 1, dtype=float)
    w = np.exp(-0.5 * (x / float(sigma_bins)) ** 2)
    return w / w.sum()


def _smooth_last_axis(hist, sigma_bins: float, xp):
    """Zero-padded Gaussian convolution along the last axis (numpy, cupy or torch)."""
    w = gaussian_kernel_1d(sigma_bins)
    if xp is np:  # one C pass (same weights and zero padding as the loop below)
        from scipy.ndimage import correlate1d  # deferred: scipy.ndimage takes ~0.5 s to import

        return correlate1d(hist, w.astype(hist.dtype), axis=-1, mode="constant", cval=0.0)
    half = len(w) // 2
    n = hist.shape[-1]
    out = hist * float(w[half])
    for k in range(1, half + 1):
        if k >= n:
            break
        out[..., k:] += float(w[half + k]) * hist[..., :-k]
        out[..., :-k] += float(w[half - k]) * hist[..., k:]
    return out


def _batch_shape(tth, ch, n_centres, max_angle_deg, step_deg):
    """Promote one image to a batch; ``(tth, ch, single, n_images, max_spots, n_centres, n_bins)``."""
    single = tth.ndim == 1
    if single:
        tth, ch = tth[None], ch[None]
    n_img, m = tth.shape
    c = m if n_centres is None else min(int(n_centres), m)
    return tth, ch, single, n_img, m, c, n_bins_for(max_angle_deg, step_deg)


def angular_histograms(two_theta, chi, *, max_angle_deg: float = 20.0, step_deg: float = 0.1,
                       n_centres: int | None = None, normalise: bool = True, dtype=np.float32,
                       smooth_bins: float = 0.0):
    """Angular-distance histograms for many images at once (numpy or cupy).

    Parameters
    ----------
    two_theta, chi : ``(n_images, max_spots)`` (or ``(max_spots,)`` for one image) in degrees,
        NaN where there is no spot.
    max_angle_deg, step_deg : histogram range and bin width (degrees).
    n_centres : compute histograms only for the first ``n_centres`` spots of each image (spots are
        ordered by decreasing intensity upstream); distances still use all spots. Default: all.
    normalise : divide each histogram by its tallest bin (rows without any neighbour stay 0).
    smooth_bins : Gaussian smoothing σ in bins before normalisation (0 = none).

    Returns
    -------
    ``(n_images, n_centres, n_bins)`` array of ``dtype`` (rows of missing centre spots are 0).
    """
    xp = get_array_module(two_theta, chi)
    tth = xp.asarray(two_theta, dtype=float)
    ch = xp.asarray(chi, dtype=float)
    tth, ch, single, n_img, m, c, n_bins = _batch_shape(tth, ch, n_centres, max_angle_deg, step_deg)
    per_image = max(c * m, 1)
    chunk = max(1, int(_CHUNK_ELEMENTS // per_image))
    if n_img > chunk:  # bounded temporaries (cache-friendly on CPU, bounded memory on GPU)
        out = xp.empty((n_img, c, n_bins), dtype=dtype)
        for s in range(0, n_img, chunk):
            out[s:s + chunk] = angular_histograms(tth[s:s + chunk], ch[s:s + chunk], max_angle_deg=max_angle_deg,
                                                  step_deg=step_deg, n_centres=c, normalise=normalise,
                                                  dtype=dtype, smooth_bins=smooth_bins)
        return out
    q = qhat_from_angles(tth, ch)  # (n, m, 3), NaN rows for padding
    valid = xp.isfinite(q[..., 0])
    q = xp.where(valid[..., None], q, 0.0)  # padding: zero vector → cos = 0 → never within range
    qc = q[:, :c]
    cos = xp.matmul(qc, xp.swapaxes(q, 1, 2))  # (n, c, m)
    cos_max = float(np.cos(np.deg2rad(max_angle_deg)))
    if max_angle_deg >= 90.0:
        pair_ok = valid[:, :c, None] & valid[:, None, :]
    else:  # only pairs within range need an arccos
        pair_ok = cos >= cos_max - 1e-12
    eye = xp.arange(c)[:, None] == xp.arange(m)[None, :]
    pair_ok &= ~eye[None]
    img, ctr, _ = xp.nonzero(pair_ok)
    angle = xp.rad2deg(xp.arccos(xp.clip(cos[pair_ok], -1.0, 1.0)))
    inside = angle <= max_angle_deg
    bins = xp.minimum(xp.floor(angle[inside] / step_deg).astype(xp.int64), n_bins - 1)
    flat = (img[inside] * c + ctr[inside]) * n_bins + bins
    hist = xp.bincount(flat, minlength=n_img * c * n_bins).astype(dtype).reshape(n_img, c, n_bins)
    if smooth_bins > 0:
        hist = _smooth_last_axis(hist, smooth_bins, xp)
    if normalise:
        top = hist.max(axis=-1, keepdims=True)
        hist = hist / xp.where(top > 0, top, 1).astype(dtype)
    return hist[0] if single else hist


def angular_histograms_torch(two_theta, chi, *, max_angle_deg: float = 20.0, step_deg: float = 0.1,
                             n_centres: int | None = None, normalise: bool = True, device=None,
                             dtype=None, smooth_bins: float = 0.0):
    """Torch version of :func:`angular_histograms` (same contract; returns a float32 tensor).

    ``two_theta``/``chi`` may be numpy arrays or tensors; ``device`` selects where to compute
    (default: the input tensor's device, else CPU). Angles are computed in float64 on CPU and in
    ``dtype`` (default float32) on an accelerator.
    """
    import torch  # deferred: torch is heavy

    if device is None:
        device = two_theta.device if isinstance(two_theta, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float64 if device.type == "cpu" else torch.float32
    tth = torch.as_tensor(two_theta, device=device).to(dtype)
    ch = torch.as_tensor(chi, device=device).to(dtype)
    tth, ch, single, n_img, m, c, n_bins = _batch_shape(tth, ch, n_centres, max_angle_deg, step_deg)
    theta = torch.deg2rad(tth) / 2
    cr = torch.deg2rad(ch)
    ct = torch.cos(theta)
    q = torch.stack([-torch.sin(theta), ct * torch.sin(cr), ct * torch.cos(cr)], dim=-1)
    valid = torch.isfinite(q[..., 0])
    q = torch.where(valid[..., None], q, torch.zeros((), dtype=dtype, device=device))
    cos = torch.matmul(q[:, :c], q.transpose(1, 2))  # (n, c, m)
    if max_angle_deg >= 90.0:
        pair_ok = valid[:, :c, None] & valid[:, None, :]
    else:
        pair_ok = cos >= float(np.cos(np.deg2rad(max_angle_deg))) - 1e-12
    pair_ok &= ~torch.eye(c, m, dtype=torch.bool, device=device)[None]
    img, ctr, _ = torch.nonzero(pair_ok, as_tuple=True)
    angle = torch.rad2deg(torch.arccos(cos[pair_ok].clamp(-1.0, 1.0)))
    inside = angle <= max_angle_deg
    bins = torch.clamp(torch.floor(angle[inside] / step_deg).long(), max=n_bins - 1)
    flat = (img[inside] * c + ctr[inside]) * n_bins + bins
    hist = torch.bincount(flat, minlength=n_img * c * n_bins).to(torch.float32).reshape(n_img, c, n_bins)
    if smooth_bins > 0:
        hist = _smooth_last_axis(hist, smooth_bins, torch)
    if normalise:
        top = hist.amax(dim=-1, keepdim=True)
        hist = hist / torch.where(top > 0, top, torch.ones_like(top))
    return hist[0] if single else hist
