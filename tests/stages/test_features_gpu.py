"""The feature stage on CUDA equals the CPU (skipped where torch sees no CUDA device)."""
import numpy as np
import pytest

pytestmark = pytest.mark.requires_torch_cuda


def test_features_cuda_match_cpu():
    from laueflow.io.model_files import load_autoencoder
    from laueflow.stages.features import compute_features
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(material="Cu", shape=(2, 3), grains=3, seed=5)
    images = np.stack([plan.render(i) for i in range(plan.n_images)])
    cpu = compute_features(images, method="autoencoder", model=load_autoencoder(device="cpu"))["features"]
    gpu = compute_features(images, method="autoencoder", model=load_autoencoder(device="cuda"))["features"]
    scale = np.abs(cpu).max()
    assert np.abs(cpu - gpu).max() <= 1e-4 * scale + 1e-5
