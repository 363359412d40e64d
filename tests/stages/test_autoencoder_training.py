"""Autoencoder training: the epoch kept is the one whose features separate known grains best."""
import numpy as np
import torch

from laueflow.models.autoencoder import LaueAutoencoder
from laueflow.stages.autoencoder_training import separability, train_autoencoder


def _grain_images(n_grains=3, n=36, seed=0):
    """``n`` images of ``n_grains`` fixed spot patterns (brightness varies): (images, truth)."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((n_grains, 128, 128), np.float32)
    for p in patterns:
        p[rng.integers(0, 128, 40), rng.integers(0, 128, 40)] = 1.0
    truth = np.arange(n) % n_grains
    images = patterns[truth] * rng.uniform(0.95, 1.0, (n, 1, 1)).astype(np.float32)
    return images, truth


def test_separability_is_one_for_distinct_patterns_and_low_for_unrelated_labels():
    images, truth = _grain_images()
    torch.manual_seed(0)
    model = LaueAutoencoder().eval()
    good = separability(model, {"three grains": (images, truth)})
    assert good["three grains"] == 1.0 and good["mean"] == 1.0
    shuffled = np.random.default_rng(1).permutation(truth)  # labels that do not follow the images
    bad = separability(model, {"three grains": (images, truth), "shuffled": (images, shuffled)})
    assert bad["shuffled"] < 0.2 and bad["mean"] < 0.6


def test_epoch_kept_by_separability_includes_the_initial_weights():
    images, truth = _grain_images()
    torch.manual_seed(0)
    init = LaueAutoencoder().state_dict()
    model, hist = train_autoencoder(images, {"val": images[:6]}, epochs=2, batch_size=6, seed=0, threads=1,
                                    score_sets={"grains": (images, truth)})
    epochs = hist["epochs"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all(0 <= r["mean_ari"] <= 1 for r in epochs)
    best = max(epochs, key=lambda r: (r["mean_ari"], -r["epoch"]))
    assert hist["best_epoch"] == best["epoch"]
    kept = {k: v for k, v in model.state_dict().items()}
    if best["epoch"] == 0:  # the initial weights are kept as they were
        assert all(torch.equal(kept[k], init[k]) for k in init)
    assert separability(model, {"grains": (images, truth)})["mean"] == best["mean_ari"]


def test_without_score_sets_the_lowest_validation_loss_is_kept():
    images, _ = _grain_images()
    _, hist = train_autoencoder(images, {"val": images[:6]}, epochs=2, batch_size=6, seed=0, threads=1)
    assert [r["epoch"] for r in hist["epochs"]] == [1, 2]
    assert hist["best_epoch"] == min(hist["epochs"], key=lambda r: r["val_loss"])["epoch"]
