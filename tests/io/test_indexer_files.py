"""LaueNN model files: what a file stored before an option or the class priors loads as."""
from __future__ import annotations

import numpy as np
import torch

from laueflow.io.indexer_files import load_indexer
from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.pipeline.indexers import get_indexer
from laueflow.stages.indexing.training_data import simulate_patterns
from tiny_models import TINY


def test_a_model_stored_before_the_options_loads_as_it_was_trained(tmp_path):
    """A file without ``training_centres`` (models before issue #12 drew the brightest centres) and
    without class priors: loaded with brightest centres and no correction, so it predicts exactly
    what its network says, in either order."""
    trained = get_indexer(["Cu"], DEFAULT_CALIBRATION, TINY, cache_dir=tmp_path, verbose=False, threads=1)
    payload = torch.load(trained.path, weights_only=False)
    del payload["config"]["training_centres"], payload["log_prior_rank"], payload["log_prior_any"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded = load_indexer(old)
    assert loaded.config.training_centres == "brightest"
    assert loaded.log_prior_rank is None and loaded.log_prior_any is None
    assert trained.config.training_centres == "random" and trained.log_prior_rank is not None
    ps = simulate_patterns(loaded.materials, DEFAULT_CALIBRATION, np.full((3, 1), 2), seed=4)
    plain, _ = loaded.predict(ps.two_theta, ps.chi)
    ranked, _ = loaded.predict(ps.two_theta, ps.chi, intensity_order=True)
    np.testing.assert_array_equal(plain, ranked)
    feats = torch.from_numpy(loaded.features(ps.two_theta, ps.chi)[np.isfinite(ps.two_theta[:, :loaded.config.n_centres])])
    with torch.inference_mode():
        network = loaded.model(feats).argmax(-1).numpy()
    np.testing.assert_array_equal(plain[plain >= 0], network)
