"""The shipped autoencoder weights: present, hash-checked on load, tampering refused."""
import json
import shutil

import numpy as np
import pytest

from laueflow.io.model_files import (WeightsHashError, default_autoencoder_path, file_sha256, load_autoencoder)


def test_shipped_weights_load_and_match_their_record():
    path = default_autoencoder_path()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert file_sha256(path) == meta["sha256"]
    assert path.stat().st_size < 5_000_000  # a few MB at most
    assert meta["command"].startswith("laueflow train autoencoder") and meta["seed"] == 0
    assert meta["heldout_material"] not in meta["training_materials"]
    model = load_autoencoder()
    assert model.latent_size == meta["config"]["latent_size"] == 256
    assert model.preprocess == meta["preprocess"] and not model.training
    features = model.encode(__import__("torch").zeros(1, 1, 128, 128))
    assert features.shape == (1, 256) and np.isfinite(features.detach().numpy()).all()


def test_modified_weights_are_refused(tmp_path):
    src = default_autoencoder_path()
    dst = tmp_path / "autoencoder.pt"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    load_autoencoder(dst)  # an exact copy loads
    with open(dst, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(WeightsHashError, match="does not match"):
        load_autoencoder(dst)
    dst.with_suffix(".json").unlink()
    with pytest.raises(WeightsHashError, match="autoencoder.json"):
        load_autoencoder(dst)
