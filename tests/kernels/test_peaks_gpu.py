"""The peak-search kernel on cupy arrays gives the numpy answer (skipped without cupy and a device)."""
import numpy as np
import pytest

from laueflow.kernels.testing import synthetic_frame

pytestmark = pytest.mark.requires_cupy_gpu


def test_kernel_cupy_matches_numpy():
    import cupy  # optional dependency (laueflow[gpu]); the marker skips where it is absent

    from laueflow.kernels.peaks import find_peaks_2d
    from laueflow.stages.peaks import find_peaks

    image, _ = synthetic_frame((512, 512), 80, seed=2)
    cpu = find_peaks_2d(image)
    gpu = find_peaks_2d(cupy.asarray(image))
    assert isinstance(gpu["col"], cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(gpu["col_int"]), cpu["col_int"])
    np.testing.assert_allclose(cupy.asnumpy(gpu["col"]), cpu["col"], atol=1e-3)
    stage = find_peaks(cupy.asarray(image[None]))
    assert isinstance(stage["peak_col"], np.ndarray) and stage["peak_count"][0] == len(cpu["col"])
