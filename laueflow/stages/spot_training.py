"""Training data and training loop of the spot-descriptor CNN (``laueflow train spots``).

Data
----
*Simulated scans* (:func:`simulate_spot_scan`): a "scan" is a seed that fixes the detector
conditions (dark offset ≈1000 + halo 0–150 counts, read noise 3–4.5 counts, gain 0.08 counts of
variance per count, as measured on BM32 images, ``real-image-statistics.md``) and draws its
spots: a realistic mix of good compact spots (σ 0.7–2.2 px, aspect ≤ ≈1.5, rotated ellipses,
10 % broad), streaks (σ_major 2.5–6 px), split/double spots, irregular 4-component spots,
saturated spots (clipped at 65535), and neighbours inside the cutout (12 %); peak amplitudes
log-uniform from ≈30 to 50,000 counts above background. Profiles are elliptical Gaussian
components sampled at pixel centres (the profile of :func:`laueflow.synth.render.render_components`);
noise = Gaussian of variance ``read² + gain·signal``, rounded and clipped to uint16. The peak
pixel ``s`` is the hottest pixel within ±2 px of the spot, as the peak search would report.
Each spot is stored as a 37×37 *patch* (rows/cols ``s−18 … s+18``) so that shifts of ±1 px and
the 8 rotations/reflections about ``s`` can be cut as 32×32 cutouts without padding.

*User scans* (:func:`patches_from_images`, fed by :func:`laueflow.pipeline.spot_data.patches_from_scan_zarr`): the images of a ``scan.zarr`` are searched with
the peak stage and the peaks' patches are cut (peaks whose patch crosses the frame border are
skipped). Labels always come from the batched Gaussian fit, so fine-tuning on one's own data
needs no annotation.

Labels, resampling, augmentation
--------------------------------
Labels ``Desc = (Sim, Pos*_col, Pos*_row, Asp, Area*)`` are computed by
:func:`laueflow.kernels.gaussfit.fit_gaussians` on the final 32×32 cutout *after* augmentation
(fitting is fast, ≈0.2 ms/spot, so every epoch's augmented cutouts are re-labelled exactly; the
``Pos*`` of a rotated/reflected cutout equals :func:`laueflow.kernels.cutouts.transform_targets`
of the original up to the one row/column the 32×32 window exchanges).
Each dataset (the simulated scans, or one user scan) is resampled to a uniform ``Sim``
distribution: 12 equal bins on [0, 1], at most 2000 spots per bin (bins with fewer keep all).
Augmentation per sample and epoch: one of the 8 dihedral transforms about ``s``, and with
probability 0.25 an integer shift of the window by ±1 px in col and/or row.

Training: Adam (lr 1e-3), batch 32, MAE (L1) loss on the 5 outputs with the two ``Pos*`` outputs
weighted ``pos_weight`` (default 2; a documented deviation from the paper's unweighted MAE, the
sub-pixel position being the descriptor that needs the most precision), lr 1e-3 for
``hold_epochs`` epochs and then a per-batch cosine decay to ``lr_min`` (1e-5) at the last epoch;
the epoch with the lowest weighted validation loss is kept (optional ``patience``). Data are split **by scan** (training,
validation and test scans have different seeds, never shared spots). Deterministic by seed:
``torch.manual_seed``, numpy generators from the seed, ``torch.use_deterministic_algorithms``.

Arrays in, model out: reading scans and weight files and writing weights is done by the callers
(``laueflow train spots``, :mod:`laueflow.pipeline.spot_data`, :mod:`laueflow.io.model_files`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..kernels.cutouts import (CUTOUT_CENTRE, CUTOUT_SIZE, dihedral_transform, extract_patches,
                               normalise_cutouts)
from ..kernels.gaussfit import fit_descriptors, fit_gaussians
from ..physics.geometry import DEFAULT_CALIBRATION
from ..physics.simulate import SPOT_QUALITIES, SPOT_QUALITY
from .descriptors import angular_error_medians, describe_cutouts, describe_spots, evaluate_descriptors
from .peaks import find_peaks

__all__ = ["PATCH_HALF", "SpotPatches", "simulate_spot_scan", "simulate_spot_scans", "crop_cutouts",
           "label_cutouts", "resample_uniform_sim", "simulated_dataset", "lr_at", "patches_from_images", "train_spotcnn",
           "TRAIN_DEFAULTS"]

PATCH_HALF = 18  # patches are (2·18+1)² = 37×37 around s
QUALITY_NAMES = SPOT_QUALITIES  # code = index

TRAIN_DEFAULTS = {
    "seed": 0,
    "train_scans": 80,
    "scans_per_dataset": 40,  # simulated scans are grouped into datasets of 40, resampled on their own
    "val_scans": 4,
    "spots_per_scan": 3000,
    "per_bin": 2000,
    "bins": 12,
    "epochs": 14,
    "hold_epochs": 5,  # lr 1e-3 for these epochs, then cosine decay (per batch) to lr_min
    "lr_min": 1e-5,
    "pos_weight": 2.0,  # L1 loss weights (1, w, w, 1, 1) on (Sim, Pos*_col, Pos*_row, Asp, Area*)
    "batch_size": 32,
    "lr": 1e-3,
    "threads": 1,
}


@dataclass
class SpotPatches:
    """Patches (m, 37, 37) float32 around the peak pixel ``s`` and what is known about them."""

    patches: np.ndarray
    scan: np.ndarray  # (m,) scan id
    true_dcol: np.ndarray  # simulator's true centre − s (NaN for user data)
    true_drow: np.ndarray
    quality: np.ndarray  # 0..4 (-1 unknown)
    amplitude: np.ndarray  # peak counts above background (NaN unknown)
    noise: np.ndarray  # background noise σ

    def __len__(self):
        return len(self.patches)

    def subset(self, index):
        return SpotPatches(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(parts):
        return SpotPatches(**{k: np.concatenate([getattr(p, k) for p in parts])
                              for k in SpotPatches.__dataclass_fields__})


# ------------------------------------------------------------------------------ simulation
def _components(n, rng):
    """Up to 5 Gaussian components per spot (4 for the spot, 1 neighbour): arrays (n, 5)."""
    k = 5
    quality = rng.choice(len(SPOT_QUALITIES), size=n, p=[0.5, 0.13, 0.13, 0.13, 0.11])
    amp = 10 ** rng.uniform(1.5, 4.7, n)
    s_minor = np.clip(1.05 * np.exp(0.25 * rng.standard_normal(n)), 0.7, 2.2)
    s_major = s_minor * (1.0 + np.abs(0.18 * rng.standard_normal(n)))
    broad = (quality == SPOT_QUALITY["good"]) & (rng.random(n) < 0.1)
    widen = 1.6 + 1.4 * rng.random(n)
    s_major = np.where(broad, s_major * widen, s_major)
    s_minor = np.where(broad, s_minor * (1 + (widen - 1) * rng.random(n)), s_minor)
    s_major = np.where(quality == SPOT_QUALITY["streaked"], 2.5 + 3.5 * rng.random(n), s_major)
    angle = rng.uniform(0, np.pi, n)
    c_amp = np.zeros((n, k))
    c_maj = np.ones((n, k))
    c_min = np.ones((n, k))
    c_ang = np.zeros((n, k))
    off = np.zeros((n, k, 2))
    c_amp[:, 0], c_maj[:, 0], c_min[:, 0], c_ang[:, 0] = amp, s_major, s_minor, angle
    split = quality == SPOT_QUALITY["split"]
    sep = 1.5 + 2.5 * rng.random(n)
    d = rng.uniform(0, 2 * np.pi, n)
    c_amp[split, 1] = amp[split] * rng.uniform(0.3, 0.9, split.sum())
    c_maj[split, 1], c_min[split, 1], c_ang[split, 1] = s_major[split], s_minor[split], angle[split]
    off[split, 1] = (sep[:, None] * np.stack([np.cos(d), np.sin(d)], -1))[split]
    irr = quality == SPOT_QUALITY["irregular"]
    for j in range(1, 4):
        c_amp[irr, j] = amp[irr] * rng.uniform(0.25, 0.9, irr.sum())
        c_maj[irr, j] = s_major[irr] * rng.uniform(0.7, 1.5, irr.sum())
        c_min[irr, j] = np.minimum(s_minor[irr] * rng.uniform(0.7, 1.5, irr.sum()), c_maj[irr, j])
        c_ang[irr, j] = rng.uniform(0, np.pi, irr.sum())
        off[irr, j] = rng.normal(0, 1.3, (irr.sum(), 2))
    sat = quality == SPOT_QUALITY["saturated"]  # any shape, driven far past saturation
    c_amp[sat, :4] *= (rng.uniform(65000, 200000, sat.sum()) / amp[sat])[:, None]
    # flux-weighted centroid of the spot's components on its nominal centre
    flux = c_amp[:, :4] * c_maj[:, :4] * c_min[:, :4]
    cen = (flux[:, :, None] * off[:, :4]).sum(1) / flux.sum(1)[:, None]
    off[:, :4] -= cen[:, None, :]
    # neighbour (not part of the spot)
    nb = rng.random(n) < 0.12
    r_nb = rng.uniform(5.0, 13.0, n)
    d_nb = rng.uniform(0, 2 * np.pi, n)
    c_amp[nb, 4] = amp[nb] * 10 ** rng.uniform(-1.0, 0.5, nb.sum())
    c_min[nb, 4] = np.clip(1.05 * np.exp(0.2 * rng.standard_normal(nb.sum())), 0.7, 2.2)
    c_maj[nb, 4] = c_min[nb, 4] * (1 + np.abs(0.2 * rng.standard_normal(nb.sum())))
    c_ang[nb, 4] = rng.uniform(0, np.pi, nb.sum())
    off[nb, 4] = (r_nb[:, None] * np.stack([np.cos(d_nb), np.sin(d_nb)], -1))[nb]
    return quality, c_amp, c_maj, c_min, c_ang, off


def simulate_spot_scan(scan_seed: int, n_spots: int = 3000, *, chunk: int = 1000) -> SpotPatches:
    """Patches of ``n_spots`` simulated spots of one scan (conditions fixed by ``scan_seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([20230517, int(scan_seed)]))
    read_noise = rng.uniform(3.0, 4.5)
    gain = 0.08
    dark = rng.uniform(995, 1010)
    halo_max = rng.uniform(0, 150)
    grid = 2 * PATCH_HALF + 9  # 45: room for s within ±2 px and ±2 px of sub-pixel slack
    c0 = grid // 2
    t = np.arange(grid, dtype=np.float64) - c0
    out = []
    for lo in range(0, n_spots, chunk):
        n = min(chunk, n_spots - lo)
        quality, amp, maj, mnr, ang, off = _components(n, rng)
        centre = rng.uniform(-0.5, 0.5, (n, 2))
        halo = halo_max * rng.random(n)
        grad = rng.normal(0, 0.3, (n, 2))
        img = (dark + halo)[:, None, None] + grad[:, 0, None, None] * t[None, None, :] \
            + grad[:, 1, None, None] * t[None, :, None]
        spot = np.zeros((n, grid, grid))
        for j in range(amp.shape[1]):
            cc = centre[:, 0] + off[:, j, 0]
            rr = centre[:, 1] + off[:, j, 1]
            dc = t[None, None, :] - cc[:, None, None]
            dr = t[None, :, None] - rr[:, None, None]
            ca, sa = np.cos(ang[:, j])[:, None, None], np.sin(ang[:, j])[:, None, None]
            u = dc * ca + dr * sa
            v = dr * ca - dc * sa
            spot += amp[:, j, None, None] * np.exp(-0.5 * (u * u / maj[:, j, None, None] ** 2
                                                         + v * v / mnr[:, j, None, None] ** 2))
        signal = halo[:, None, None] + spot
        sigma = np.sqrt(read_noise ** 2 + gain * np.maximum(signal, 0))
        noisy = np.clip(np.rint(img + spot + sigma * rng.standard_normal(img.shape)), 0, 65535)
        # peak pixel: hottest pixel within ±2 px of the nominal centre (ties: first)
        win = noisy[:, c0 - 2:c0 + 3, c0 - 2:c0 + 3].reshape(n, -1)
        k = win.argmax(axis=1)
        s_row = c0 - 2 + k // 5
        s_col = c0 - 2 + k % 5
        idx = np.arange(-PATCH_HALF, PATCH_HALF + 1)
        patches = noisy[np.arange(n)[:, None, None], (s_row[:, None] + idx)[:, :, None],
                        (s_col[:, None] + idx)[:, None, :]]
        q = np.where(noisy.reshape(n, -1).max(1) >= 65535, 4, quality)
        out.append(SpotPatches(
            patches=patches.astype(np.float32), scan=np.full(n, scan_seed, np.int32),
            true_dcol=centre[:, 0] + c0 - s_col, true_drow=centre[:, 1] + c0 - s_row,
            quality=q.astype(np.int8), amplitude=spot.reshape(n, -1).max(1),
            noise=np.full(n, np.sqrt(read_noise ** 2 + gain * halo_max / 2))))
    return SpotPatches.concat(out)


def simulate_spot_scans(seeds, n_spots: int = 3000) -> SpotPatches:
    return SpotPatches.concat([simulate_spot_scan(s, n_spots) for s in seeds])


# ------------------------------------------------------------------------------ cutting, labels
def crop_cutouts(patches, k=None, flip=None, shift=None):
    """32×32 cutouts from 37×37 patches: dihedral transform ``(k, flip)`` about ``s``, then the
    window ``s + shift − 16 … s + shift + 15`` (``shift = (dcol, drow)``, per patch arrays or None)."""
    p = np.asarray(patches)
    m = len(p)
    k = np.zeros(m, int) if k is None else np.asarray(k)
    flip = np.zeros(m, bool) if flip is None else np.asarray(flip)
    shift = np.zeros((m, 2), int) if shift is None else np.asarray(shift)
    out = np.empty((m, CUTOUT_SIZE, CUTOUT_SIZE), np.float32)
    for kk in range(4):
        for ff in (False, True):
            sel = np.flatnonzero((k % 4 == kk) & (flip == ff))
            if len(sel):
                t = dihedral_transform(p[sel], kk, ff)
                for dc in (-1, 0, 1):
                    for dr in (-1, 0, 1):
                        ss = (shift[sel, 0] == dc) & (shift[sel, 1] == dr)
                        if ss.any():
                            r0 = PATCH_HALF + dr - CUTOUT_CENTRE
                            c0 = PATCH_HALF + dc - CUTOUT_CENTRE
                            out[sel[ss]] = t[ss, r0:r0 + CUTOUT_SIZE, c0:c0 + CUTOUT_SIZE]
    return out


def label_cutouts(cutouts, valid=None, **fit_kwargs):
    """Descriptors of cutouts from the batched Gaussian fit (dict, see ``fit_descriptors``).

    Training labels use the strict stop rule (``stop="both"``: ftol and xtol), with which the
    shipped weights were trained, so that the documented command reproduces them exactly.
    """
    fit_kwargs.setdefault("stop", "both")
    fit = fit_gaussians(cutouts, valid, **fit_kwargs)
    desc = fit_descriptors(cutouts, fit["params"], valid, fit["converged"])
    desc["converged"] = fit["converged"]
    desc["params"] = fit["params"]
    return desc


def simulated_dataset(seeds, n_spots: int, rng, *, bins: int = 12, per_bin: int = 2000, fit_kwargs=None):
    """One resampled dataset from the simulated scans ``seeds``: simulated and labelled scan by
    scan (bounded memory), then resampled to a uniform Sim (≤ ``per_bin`` per bin) with ``rng``."""
    parts, sims = [], []
    for sd in seeds:
        sp = simulate_spot_scan(sd, n_spots)
        sims.append(label_cutouts(crop_cutouts(sp.patches), **(fit_kwargs or {}))["sim"])
        parts.append(sp)
    data = SpotPatches.concat(parts)
    return data.subset(resample_uniform_sim(np.concatenate(sims), rng, bins=bins, per_bin=per_bin))


def resample_uniform_sim(sim, rng, *, bins: int = 12, per_bin: int = 2000):
    """Indices giving a uniform ``Sim`` distribution: ≤ ``per_bin`` per bin of ``bins`` on [0, 1]."""
    b = np.minimum((np.asarray(sim) * bins).astype(int), bins - 1)
    keep = []
    for i in range(bins):
        idx = np.flatnonzero(b == i)
        if len(idx) > per_bin:
            idx = rng.choice(idx, per_bin, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def patches_from_images(images, *, peak_kwargs=None, scan_id: int = -1, max_peaks: int = 300) -> SpotPatches:
    """37×37 patches around the peaks of a stack of images ``(n, rows, cols)`` (e.g. a user's scan).

    Arrays in, arrays out; :func:`laueflow.pipeline.spot_data.patches_from_scan_zarr` reads the
    images of a ``scan.zarr`` and calls this.
    """
    parts = []
    kw = {"max_peaks": max_peaks, **(peak_kwargs or {})}
    for img in images:
        img = np.asarray(img)
        pk = find_peaks(img[None], **kw)
        n = int(pk["peak_count"][0])
        if n == 0:
            continue
        p, _, border = extract_patches(img, pk["peak_col_int"][0, :n], pk["peak_row_int"][0, :n],
                                       before=PATCH_HALF, after=PATCH_HALF)
        p = p[~border]
        m = len(p)
        if m:
            parts.append(SpotPatches(patches=p, scan=np.full(m, scan_id, np.int32),
                                     true_dcol=np.full(m, np.nan), true_drow=np.full(m, np.nan),
                                     quality=np.full(m, -1, np.int8), amplitude=np.full(m, np.nan),
                                     noise=pk["peak_noise"][0, :n][~border].astype(np.float64)))
    if not parts:
        raise ValueError("no peak away from the frame border was found in these images")
    return SpotPatches.concat(parts)


# ------------------------------------------------------------------------------ training
def _augment(patches, rng, shift_prob=0.25):
    m = len(patches)
    k = rng.integers(0, 4, m)
    flip = rng.random(m) < 0.5
    shift = np.where(rng.random((m, 1)) < shift_prob, rng.integers(-1, 2, (m, 2)), 0)
    return crop_cutouts(patches, k, flip, shift)


def _val_errors(model, x, y, batch=2048):
    """Per-output mean absolute error (5,) of the model on normalised cutouts ``x``."""
    import torch  # deferred: torch is heavy

    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(torch.as_tensor(x[i:i + batch])[:, None]) for i in range(0, len(x), batch)])
    return (pred - torch.as_tensor(y)).abs().mean(0).double().numpy()


def lr_at(step, total_steps, hold_steps, lr, lr_min):
    """Constant ``lr`` for ``hold_steps`` batches, then cosine decay to ``lr_min`` at ``total_steps``."""
    if step < hold_steps or total_steps <= hold_steps:
        return lr
    t = min(1.0, (step - hold_steps) / (total_steps - hold_steps))
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + np.cos(np.pi * t))


def train_spotcnn(datasets, val: SpotPatches, *, seed: int = 0, epochs: int = 14, batch_size: int = 32,
                  lr: float = 1e-3, per_bin: int = 2000, bins: int = 12, threads: int = 1,
                  hold_epochs: int | None = 5, lr_min: float = 1e-5, pos_weight: float = 2.0,
                  patience: int | None = None, init_state=None, log=print, fit_kwargs=None):
    """Train (or fine-tune from the ``state_dict`` ``init_state``) the spot CNN; returns ``(model, history)``.

    ``datasets``: list of :class:`SpotPatches`, each resampled to a uniform Sim on its own.
    Adam at ``lr`` for ``hold_epochs`` epochs, then cosine decay per batch to ``lr_min`` at the
    last epoch (``hold_epochs=None``: constant lr). Loss: mean over the batch of the L1 error
    weighted ``(1, pos_weight, pos_weight, 1, 1)`` / their sum on ``(Sim, Pos*_col, Pos*_row,
    Asp, Area*)``. The epoch with the lowest weighted validation loss is kept (early stopping:
    ``patience`` epochs without improvement end training; None: run all epochs).
    """
    import torch  # deferred: torch is heavy

    from ..models.spotcnn import SpotCNN  # deferred: imports torch

    torch.manual_seed(seed)
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    fit_kwargs = fit_kwargs or {}
    train = SpotPatches.concat([_resampled(ds, rng, bins, per_bin, fit_kwargs, log) for ds in datasets])
    val_cut = crop_cutouts(val.patches)
    val_y = label_cutouts(val_cut, **fit_kwargs)["targets"].astype(np.float32)
    val_x = normalise_cutouts(val_cut)
    w = np.array([1.0, pos_weight, pos_weight, 1.0, 1.0])
    w = w / w.sum()
    wt = torch.as_tensor(w, dtype=torch.float32)
    model = SpotCNN()
    if init_state is not None:
        model.load_state_dict(init_state)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = sum(1 for lo in range(0, len(train), batch_size) if len(train) - lo >= 2)
    total_steps = epochs * steps_per_epoch
    hold_steps = total_steps if hold_epochs is None else hold_epochs * steps_per_epoch

    def lr_of(step):
        return lr_at(step, total_steps, hold_steps, lr, lr_min)

    step, best, history = 0, (np.inf, None, -1), []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        cut = _augment(train.patches, rng)
        y = label_cutouts(cut, **fit_kwargs)["targets"]
        x = normalise_cutouts(cut)
        t_lab = time.perf_counter() - t0
        order = rng.permutation(len(x))
        train_loss, step = _spot_epoch(model, opt, x[order], y[order], wt, batch_size, lr_of, step)
        errs = _val_errors(model, val_x, val_y)
        val_loss = float((errs * w).sum())
        wall = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "lr_end": float(f"{opt.param_groups[0]['lr']:.3g}"),
                        "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                        "val_mae": round(float(errs.mean()), 5), "val_mae_per_output": [round(float(e), 5) for e in errs],
                        "label_s": round(t_lab, 1), "wall_s": round(wall, 1), "n_train": len(x)})
        log(f"epoch {epoch + 1}/{epochs}: lr {opt.param_groups[0]['lr']:.2e}  train loss {train_loss:.4f}  "
            f"val loss {val_loss:.4f}  val MAE {errs.mean():.4f} ({' '.join(f'{e:.4f}' for e in errs)})  "
            f"({len(x)} cutouts, labels {t_lab:.0f} s, {wall:.0f} s)", )
        if val_loss < best[0]:
            best = (val_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch + 1)
        elif patience is not None and epoch + 1 - best[2] >= patience:
            log(f"early stop: no improvement for {patience} epochs")
            break
    model.load_state_dict(best[1])
    model.eval()
    return model, {"epochs": history, "best_epoch": best[2], "best_val_loss": best[0], "n_train": len(train)}


def _resampled(ds: SpotPatches, rng, bins: int, per_bin: int, fit_kwargs: dict, log) -> SpotPatches:
    """``ds`` resampled on its un-augmented labels to a uniform Sim (≤ ``per_bin`` per bin)."""
    lab = label_cutouts(crop_cutouts(ds.patches), **fit_kwargs)
    idx = resample_uniform_sim(lab["sim"], rng, bins=bins, per_bin=per_bin)
    log(f"dataset: {len(ds)} spots → {len(idx)} after uniform-Sim resampling "
        f"(bin counts {np.bincount(np.minimum((lab['sim'][idx] * bins).astype(int), bins - 1), minlength=bins).tolist()})")
    return ds.subset(idx)


def _spot_epoch(model, opt, x, y, weights, batch_size: int, lr_of, step: int) -> tuple[float, int]:
    """One pass over the cutouts ``x (n, 32, 32)`` and targets ``y (n, 5)`` (in this order;
    a last batch of 1 is skipped): ``(mean weighted L1 loss, step after it)``."""
    import torch  # deferred: torch is heavy

    xt = torch.as_tensor(x)[:, None]
    yt = torch.as_tensor(y, dtype=torch.float32)
    model.train()
    total = 0.0
    for lo in range(0, len(xt), batch_size):
        xb, yb = xt[lo:lo + batch_size], yt[lo:lo + batch_size]
        if len(xb) < 2:
            continue
        for g in opt.param_groups:
            g["lr"] = lr_of(step)
        loss = ((model(xb) - yb).abs() * weights).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        total += float(loss.detach()) * len(xb)
    return total / len(xt), step


# ------------------------------------------------------------------------------ evaluation
#: seeds of the held-out evaluation scans (training seeds are < 900000, enforced by the CLI)
EVAL_SEEDS = tuple(range(900_000, 900_006))


def heldout_evaluation(seeds=EVAL_SEEDS, n_spots: int = 3000, *, model, uniform_sim=True,
                       per_bin: int = 2000, seed: int = 12345):
    """CNN ``model`` (loaded, e.g. :func:`laueflow.io.model_files.load_spotcnn`) vs batched fit on
    held-out simulated scans (Tables 1–3 of the paper).

    Returns ``{"natural": evaluate_descriptors(...), "uniform_sim": ...}`` — on every spot of the
    scans as simulated, and on the set resampled to a uniform Sim (as the training data); position
    errors are also given against the simulator's true positions.
    """
    data = simulate_spot_scans(seeds, n_spots)
    cut = crop_cutouts(data.patches)
    ref = label_cutouts(cut)
    pred = describe_cutouts(cut, method="cnn", model=model)
    keys = ("sim", "dcol", "drow", "area", "aspect")
    out = {"n_spots": len(data), "seeds": list(seeds),
           "natural": evaluate_descriptors({k: ref[k] for k in keys}, pred, true_dcol=data.true_dcol,
                                           true_drow=data.true_drow)}
    if uniform_sim:
        idx = resample_uniform_sim(ref["sim"], np.random.default_rng(seed), per_bin=per_bin)
        out["uniform_sim"] = evaluate_descriptors({k: ref[k][idx] for k in keys}, {k: pred[k][idx] for k in keys},
                                                  true_dcol=data.true_dcol[idx], true_drow=data.true_drow[idx])
    return out


def mosaic_angle_check(scan_seed: int = 900_100, n_spots: int = 3000, *, method: str = "cnn", model=None,
                       calibration=None, match_px: float = 1.5):
    """2θ/χ of good spots from refined vs centroid positions, against the simulator's truth.

    The patches of one held-out simulated scan are tiled into one detector-sized frame (37-px
    tiles; 3000 spots ≈ a 2035² frame), the real peak search (:func:`laueflow.stages.peaks.find_peaks`)
    gives ``peak_col/peak_row`` centroids and ``peak_*_int`` peak pixels, :func:`describe_spots`
    refines them, and :func:`~laueflow.stages.descriptors.angular_error_medians` compares the
    angles over the spots the method calls good (detected within ``match_px`` of a true centre).
    ``model``: the loaded spot CNN for ``method="cnn"`` (:func:`laueflow.io.model_files.load_spotcnn`).
    """
    from scipy.spatial import cKDTree  # deferred: scipy.spatial is heavy for `laueflow --help`

    cal = DEFAULT_CALIBRATION if calibration is None else calibration
    data = simulate_spot_scan(scan_seed, n_spots)
    w = 2 * PATCH_HALF + 1
    per_row = int(np.ceil(np.sqrt(len(data))))
    side = per_row * w
    frame = np.zeros((side, side), np.float32)
    ty, tx = np.divmod(np.arange(len(data)), per_row)
    for k in range(len(data)):
        frame[ty[k] * w:(ty[k] + 1) * w, tx[k] * w:(tx[k] + 1) * w] = data.patches[k]
    frame[frame == 0] = np.median(data.patches)  # unused tiles
    true_col = tx * w + PATCH_HALF + data.true_dcol
    true_row = ty * w + PATCH_HALF + data.true_drow
    pk = find_peaks(frame[None].astype(np.uint16), max_peaks=4 * len(data))
    n = int(pk["peak_count"][0])
    desc = describe_spots(frame[None].astype(np.uint16), pk["peak_col_int"][:, :n], pk["peak_row_int"][:, :n],
                          method=method, model=model)
    pc, pr = pk["peak_col"][0, :n], pk["peak_row"][0, :n]
    # match each true spot to the nearest detected peak pixel within match_px
    tree = cKDTree(np.stack([pk["peak_col_int"][0, :n], pk["peak_row_int"][0, :n]], 1))
    dist, j = tree.query(np.stack([true_col, true_row], 1))
    ok = dist <= match_px
    j = j[ok]
    res = angular_error_medians(cal, true_col[ok], true_row[ok], pc[j], pr[j], desc["spot_col"][0, j],
                                desc["spot_row"][0, j], good=desc["spot_good"][0, j])
    g = desc["spot_good"][0, j]
    res["pixel_err_centroid_median"] = float(np.median(np.hypot(pc[j] - true_col[ok], pr[j] - true_row[ok])[g]))
    res["pixel_err_refined_median"] = float(np.median(np.hypot(desc["spot_col"][0, j] - true_col[ok],
                                                               desc["spot_row"][0, j] - true_row[ok])[g]))
    res["n_true"] = len(data)
    res["n_matched"] = int(ok.sum())
    res["frame"] = [side, side]
    return res
