"""Hot pixels: one-pixel peaks found in most images, never a real (σ ≥ 0.7 px) spot."""
import numpy as np

from hot_pixel_frames import HOT, frames
from laueflow.kernels.hot_pixels import hot_pixel_mask, single_pixel_peaks

def test_hot_pixels_found_spots_never():
    images, spots = frames()
    flags = np.stack([single_pixel_peaks(im) for im in images])
    for k, r, c in spots:  # no real spot's maximum is flagged
        window = flags[k, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        assert not window.any() or any(abs(r - hr) <= 1 and abs(c - hc) <= 1 for hr, hc in HOT + [(40, 60)])
    hot = hot_pixel_mask(flags)
    assert sorted(map(tuple, np.argwhere(hot).tolist())) == sorted(HOT)  # not (40, 60): 2 of 12 frames
    assert not hot_pixel_mask(flags[:2]).any()  # too few images to tell
