"""The blur of the pixel features on cupy arrays gives the numpy answer (skipped without cupy and a device)."""
import numpy as np
import pytest

pytestmark = pytest.mark.requires_cupy_gpu


def test_gaussian_blur_cupy_matches_numpy():
    import cupy  # optional dependency (laueflow[gpu]); the marker skips where it is absent

    from laueflow.kernels.downsample import gaussian_blur

    images = np.random.default_rng(0).random((4, 128, 128)).astype(np.float32)
    gpu = gaussian_blur(cupy.asarray(images), 1.0)
    assert isinstance(gpu, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gpu), gaussian_blur(images, 1.0), atol=1e-5)
