"""Unit scattering vectors from scattering angles (numpy or cupy)."""
from __future__ import annotations

from ..backend import get_array_module

__all__ = ["angles_to_qhat"]


def angles_to_qhat(two_theta, chi):
    """Unit scattering vector ``q̂ = (-sinθ, cosθ sinχ, cosθ cosχ)`` (..., 3), lab frame.

    ``two_theta``, ``chi`` in degrees (θ = 2θ/2); NaN propagates.
    """
    xp = get_array_module(two_theta, chi)
    theta = xp.deg2rad(xp.asarray(two_theta, dtype=float)) / 2
    c = xp.deg2rad(xp.asarray(chi, dtype=float))
    ct = xp.cos(theta)
    return xp.stack([-xp.sin(theta), ct * xp.sin(c), ct * xp.cos(c)], axis=-1)
