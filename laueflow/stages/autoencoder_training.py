"""Training of the Laue autoencoder: preprocessed images in, trained model out (arrays only).

:func:`train_autoencoder` minimises the binary cross-entropy between images ``(n, 128, 128)`` in
[0, 1] and their reconstruction (Adam, cosine learning-rate decay per batch, 20 % dropout on the
bottleneck), monitors the MSE, evaluates every epoch on named validation sets (e.g. the training
materials' own validation scans and a material left out of training) and keeps the epoch with the
lowest loss on the first validation set — or, given ``score_sets`` (scans with known grain maps),
the epoch whose features separate those grains best (:func:`separability`: the mean adjusted Rand
index of the segmentation kernel at the K it suggests), the initial weights (epoch 0) included:
the reconstruction loss of sparse spot images says little about how well the features keep
grains apart (docs/features.md). Deterministic on the CPU for a given seed and thread
count (``torch.manual_seed``, a seeded shuffle, a fixed number of torch threads). The data come
from :mod:`laueflow.synth.training_frames` or a user's scan (``laueflow train autoencoder``).
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np

__all__ = ["TRAIN_DEFAULTS", "train_autoencoder", "evaluate_autoencoder"]

TRAIN_DEFAULTS = {"epochs": 8, "batch_size": 16, "lr": 1e-3, "lr_min": 2e-5, "threads": 1, "latent_size": 256,
                  "spot_weight": 20.0}


def bce_loss(reconstruction, target, spot_weight: float = 0.0, reduction: str = "mean"):
    """Binary cross-entropy with pixel weights ``1 + spot_weight · target`` (bright pixels count
    more: a preprocessed Laue image is ≈ 97 % background; 0 = plain BCE)."""
    import torch.nn.functional as F  # deferred: torch is heavy

    weight = None if not spot_weight else 1 + spot_weight * target
    return F.binary_cross_entropy(reconstruction, target, weight=weight, reduction=reduction)


#: The separability's KMeans starts and silhouette tolerance, fixed at the segmentation defaults of
#: 2026-12-01 when the shipped model was trained (the defaults have moved since: 16 starts, a
#: tolerance of 0.005), so the documented command keeps choosing the same epoch and reproduces
#: the shipped file byte for byte.
SEPARABILITY_STARTS = 4
SEPARABILITY_TOLERANCE = 0.0


def separability(model, score_sets: dict, *, ks=range(2, 21), pcs: int = 32) -> dict:
    """``{name: ARI}`` and ``"mean"``: for each ``(images (n, 128, 128), truth (n,))`` of
    ``score_sets`` the model's features → PCA (``pcs``) → KMeans with the K of the highest
    silhouette over ``ks`` (nearest-centroid labels; :func:`~laueflow.kernels.clustering.fit_in_memory`,
    what the segmentation stage runs, with :data:`SEPARABILITY_STARTS` starts and
    :data:`SEPARABILITY_TOLERANCE`) → adjusted Rand index against ``truth``."""
    from sklearn.metrics import adjusted_rand_score  # deferred: heavy

    from ..kernels.clustering import fit_in_memory, project
    from ..models.autoencoder import encode_images  # deferred: imports torch

    out = {}
    for name, (images, truth) in score_sets.items():
        x = encode_images(model, images)
        fit = fit_in_memory(x, pcs=min(pcs, len(x) - 1, x.shape[1]), ks=np.asarray(list(ks)), k=None, method="kmeans",
                            seed=0, score_sample=len(x), max_iter=300, tol=1e-4,
                            silhouette_tolerance=SEPARABILITY_TOLERANCE, n_init=SEPARABILITY_STARTS)
        labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
        out[name] = float(adjusted_rand_score(np.asarray(truth), labels))
    out["mean"] = float(np.mean([out[k] for k in score_sets])) if score_sets else float("nan")
    return out


def evaluate_autoencoder(model, images, *, batch_size: int = 256, spot_weight: float = 0.0) -> dict:
    """``{"bce": …, "wbce": …, "mse": …}`` (means over pixels; ``wbce`` with ``spot_weight``) of
    ``model`` on ``images (n, 128, 128)``, eval mode."""
    import torch  # deferred: torch is heavy
    import torch.nn.functional as F  # deferred: torch is heavy

    was_training = model.training
    model.eval()
    bce = wbce = mse = 0.0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[lo:lo + batch_size], np.float32), device=device)[:, None]
            y = model(x)
            bce += float(F.binary_cross_entropy(y, x, reduction="sum"))
            wbce += float(bce_loss(y, x, spot_weight, reduction="sum"))
            mse += float(F.mse_loss(y, x, reduction="sum"))
    model.train(was_training)
    n = max(1, images[0].size * len(images))
    return {"bce": bce / n, "wbce": wbce / n, "mse": mse / n}


def train_autoencoder(train, val_sets: dict, *, seed: int = 0, epochs: int = TRAIN_DEFAULTS["epochs"],
                      batch_size: int = TRAIN_DEFAULTS["batch_size"], lr: float = TRAIN_DEFAULTS["lr"],
                      lr_min: float = TRAIN_DEFAULTS["lr_min"], threads: int | None = TRAIN_DEFAULTS["threads"],
                      latent_size: int = TRAIN_DEFAULTS["latent_size"], spot_weight: float = TRAIN_DEFAULTS["spot_weight"],
                      init_state: dict | None = None, batch_norm: bool = True, decoder_widths=(128, 64, 32, 16, 8),
                      score_sets: dict | None = None,
                      device: str = "cpu", log=None):
    """Train on ``train (n, 128, 128)`` float32 in [0, 1]; ``val_sets``: ``{name: images}`` (the first
    one chooses the epoch kept unless ``score_sets`` are given: ``{name: (images, truth)}``, the
    epoch of the highest mean :func:`separability` is kept, epoch 0 = the initial weights
    included). Returns ``(model, history)``; ``init_state``: start from these weights (fine-tuning)."""
    import torch  # deferred: torch is heavy

    from ..models.autoencoder import LaueAutoencoder  # deferred: imports torch

    train = _checked_images(train, epochs)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    model = LaueAutoencoder(latent_size=latent_size, input_size=train.shape[-1], batch_norm=batch_norm,
                            decoder_widths=decoder_widths)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = _CosineSchedule(lr, lr_min, max(1, epochs * math.ceil(len(train) / batch_size)))
    rng = np.random.default_rng([int(seed), 3])
    data = torch.from_numpy(train)
    history, best, best_state = [], math.inf, None
    first = next(iter(val_sets)) if val_sets else None
    if score_sets:  # epoch 0: the initial weights are a candidate too
        scores = separability(model, score_sets)
        history.append({"epoch": 0, **{f"{k}_ari": round(v, 4) for k, v in scores.items()}})
        # the recorded (rounded) mean decides, so the epoch reported is the epoch kept
        best = -history[0]["mean_ari"]
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if log is not None:
            log(" ".join(f"{k} {v}" for k, v in history[-1].items()))
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(train)))
        record = {"epoch": epoch, **_one_epoch(model, optimiser, schedule, data, order, batch_size, spot_weight,
                                               device)}
        record.update(_validation_record(model, val_sets, score_sets, spot_weight))
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        history.append(record)
        if log is not None:
            log(" ".join(f"{k} {v}" for k, v in record.items()))
        score = (-record["mean_ari"] if score_sets else record[f"{first}_loss"] if first else record["train_loss"])
        if score < best:
            best, best_state = score, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    model.load_state_dict(best_state)
    model.eval()
    if score_sets:
        best_epoch = max(history, key=lambda r: (r["mean_ari"], -r["epoch"]))["epoch"]
    else:
        best_epoch = min(history, key=lambda r: r[f"{first}_loss"] if first else r["train_loss"])["epoch"]
    return model, {"epochs": history, "best_epoch": best_epoch, "n_train": int(len(train))}


def _checked_images(train, epochs) -> np.ndarray:
    train = np.asarray(train, dtype=np.float32)
    if train.ndim != 3 or len(train) == 0:
        raise ValueError(f"training images must be a non-empty (n, 128, 128) array, got {train.shape}")
    if float(train.min()) < 0 or float(train.max()) > 1:
        raise ValueError("training images must be in [0, 1] (binary cross-entropy targets); preprocess them "
                         "with laueflow.kernels.downsample.preprocess_frames")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    return train


class _CosineSchedule:
    """Learning rate from ``lr`` down to ``lr_min`` over ``total`` steps (half a cosine)."""

    def __init__(self, lr: float, lr_min: float, total: int):
        self.lr, self.lr_min, self.total, self.step = lr, lr_min, total, 0

    def next(self) -> float:
        lr_now = self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * self.step / self.total))
        self.step += 1
        return lr_now


def _one_epoch(model, optimiser, schedule: _CosineSchedule, data, order, batch_size: int, spot_weight: float,
               device) -> dict:
    """One pass over ``data`` in ``order``: ``{"lr_end", "train_loss", "train_mse"}``."""
    import torch  # deferred: torch is heavy
    import torch.nn.functional as F  # deferred: torch is heavy

    cpu = torch.device(device).type == "cpu"
    model.train()
    bce_sum = mse_sum = 0.0
    for lo in range(0, len(data), batch_size):
        lr_now = schedule.next()
        for group in optimiser.param_groups:
            group["lr"] = lr_now
        x = data[order[lo:lo + batch_size]][:, None].to(device)
        if cpu:
            x = x.contiguous(memory_format=torch.channels_last)
        y = model(x)
        loss = bce_loss(y, x, spot_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        bce_sum += float(loss.detach()) * len(x)
        mse_sum += float(F.mse_loss(y.detach(), x)) * len(x)
    return {"lr_end": float(f"{lr_now:.3g}"), "train_loss": round(bce_sum / len(data), 6),
            "train_mse": round(mse_sum / len(data), 7)}


def _validation_record(model, val_sets: dict, score_sets: dict | None, spot_weight: float) -> dict:
    """Losses on each validation set and, with ``score_sets``, the separability ARIs."""
    record = {}
    for name, images in val_sets.items():
        scores = evaluate_autoencoder(model, images, spot_weight=spot_weight)
        record[f"{name}_loss"] = round(scores["wbce"], 6)
        record[f"{name}_bce"] = round(scores["bce"], 6)
        record[f"{name}_mse"] = round(scores["mse"], 7)
    if score_sets:
        record.update({f"{k}_ari": round(v, 4) for k, v in separability(model, score_sets).items()})
    return record
