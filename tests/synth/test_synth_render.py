"""Pure kernels of laueflow.synth.render: background, Gaussian components, noise."""
import numpy as np

from laueflow.synth.render import background_model, compose_image, noise_sigma, render_components


def test_background_halo_and_offset():
    dark, halo = background_model((2018, 2016), dark_offset=1000, halo_amplitude=100, halo_centre=(880, 965))
    assert dark.dtype == np.float32 and halo.dtype == np.float32
    assert np.allclose(dark, 1000)
    assert np.unravel_index(np.argmax(halo), halo.shape) == (880, 965)
    assert halo.max() <= 100 and halo[880, 965] > 99
    assert halo[0, 0] < 10  # falls off over ~1300 px


def test_single_component_flux_centroid_and_peak():
    col, row, amp = 100.3, 50.8, 1000.0
    comp, idx, val = render_components([col], [row], [amp], [1.6], [1.1], [0.4], (200, 300))
    assert (comp == 0).all()
    r, c = np.divmod(idx, 300)
    flux = val.sum()
    assert abs(flux - 2 * np.pi * amp * 1.6 * 1.1) / flux < 1e-3
    assert abs((c * val).sum() / flux - col) < 1e-3
    assert abs((r * val).sum() / flux - row) < 1e-3
    best = np.argmax(val)
    assert (c[best], r[best]) == (100, 51)


def test_components_clipped_at_frame_edges():
    comp, idx, val = render_components([0.0, 299.0], [0.0, 199.0], [100.0, 100.0], [1.0, 1.0], [1.0, 1.0],
                                       [0.0, 0.0], (200, 300))
    assert idx.min() >= 0 and idx.max() < 200 * 300
    assert set(np.unique(comp)) == {0, 1}


def test_noise_level_on_background():
    shape = (256, 256)
    dark, halo = background_model(shape, dark_offset=1000, halo_amplitude=100, halo_centre=(128, 128),
                                  halo_radius=1e6)
    sigma = noise_sigma(halo, read_noise=2.5, gain=0.08)
    img = compose_image(dark, halo, sigma, np.zeros(0, np.int64), np.zeros(0, np.float32),
                        np.random.default_rng(0), dead_pixels=[5])
    assert img.dtype == np.uint16 and img.shape == shape
    assert img.reshape(-1)[5] == 0
    residual = img.astype(float) - (dark + halo)
    residual.reshape(-1)[5] = 0
    expected = np.sqrt(2.5**2 + 0.08 * 100 + 1 / 12)  # + rounding
    assert abs(residual.std() - expected) < 0.1
    assert abs(residual.mean()) < 0.1


def test_saturation_clips():
    dark, halo = background_model((64, 64), halo_amplitude=0)
    sigma = noise_sigma(halo)
    _, idx, val = render_components([32.0], [32.0], [1e6], [1.0], [1.0], [0.0], (64, 64))
    img = compose_image(dark, halo, sigma, idx, val, np.random.default_rng(0))
    assert img.max() == 65535
