"""Simulated peak lists for tests: padded 2θ, χ arrays of random orientations of a material."""
from __future__ import annotations

import numpy as np

from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.physics.materials import get_material
from laueflow.physics.orientations import random_orientations
from laueflow.physics.simulate import simulate_spots


def simulated_peak_lists(name: str, n: int, seed: int, width: int = 200):
    """``(two_theta, chi)`` (n, width) deg of ``n`` random orientations of ``name`` on the default
    detector, in simulation order; NaN: no spot."""
    spots = simulate_spots(get_material(name), random_orientations(n, seed), DEFAULT_CALIBRATION)
    tth, chi = np.full((n, width), np.nan), np.full((n, width), np.nan)
    for i in range(n):
        sel = spots.pattern == i
        tth[i, :sel.sum()], chi[i, :sel.sum()] = spots.two_theta[sel], spots.chi[sel]
    return tth, chi
