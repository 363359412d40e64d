"""`train_spotcnn`: a short training lowers the loss, is reproducible from its seed, and
fine-tuning starts from the weights it is given (real simulated spots, no mocks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from laueflow.stages.spot_training import simulate_spot_scans, simulated_dataset, train_spotcnn


@pytest.fixture(scope="module")
def spots():
    train = simulated_dataset(range(0, 2), 60, np.random.default_rng([0, 1]), per_bin=20)
    return train, simulate_spot_scans(range(500, 501), 60)


def _train(spots, **kw):
    train, val = spots
    args = dict(seed=0, epochs=3, batch_size=32, per_bin=20, hold_epochs=1, log=lambda m: None)
    return train_spotcnn([train], val, **{**args, **kw})


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _parameters(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_short_training_lowers_the_loss_and_keeps_the_best_epoch(spots):
    model, hist = _train(spots)
    losses = [e["train_loss"] for e in hist["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    val = [e["val_loss"] for e in hist["epochs"]]
    assert hist["best_epoch"] == 1 + int(np.argmin(val))
    assert hist["best_val_loss"] == pytest.approx(min(val), abs=1e-5)
    assert not model.training  # returned in eval mode


def test_same_seed_same_weights_other_seed_other_weights(spots):
    a, _ = _train(spots, epochs=1)
    b, _ = _train(spots, epochs=1)
    c, _ = _train(spots, epochs=1, seed=1)
    assert _same(a.state_dict(), b.state_dict())
    assert not _same(a.state_dict(), c.state_dict())


def test_fine_tuning_starts_from_the_given_weights(spots):
    first, _ = _train(spots, epochs=1)
    start = {k: v.clone() for k, v in first.state_dict().items()}
    # learning rate 0: the weights cannot move (the batch-norm statistics still do), so the
    # parameters returned are those given, not a fresh initialisation of seed 5
    tuned, hist = _train(spots, epochs=1, lr=0.0, lr_min=0.0, init_state=start, seed=5)
    assert _same(_parameters(tuned), _parameters(first))
    fresh, _ = _train(spots, epochs=1, lr=0.0, lr_min=0.0, seed=5)
    assert not _same(_parameters(fresh), _parameters(first))
    assert hist["epochs"][0]["val_loss"] == pytest.approx(hist["best_val_loss"], abs=1e-5)
