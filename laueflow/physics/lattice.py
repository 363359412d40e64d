"""Lattice parameters, metric tensors and the B0 / A0 matrices (LaueTools conventions).

Lattice parameters are ``(a, b, c, alpha, beta, gamma)`` in Å and degrees. Reciprocal vectors
carry no 2π (``a_i · a*_j = δ_ij``).

* ``B0`` (Busing–Levy, LaueTools ``calc_B_RR``): columns a*, b*, c* (Å⁻¹) in a Cartesian crystal
  frame with x ∥ a*, y in the (a*, b*) plane, z ∥ c. Cubic: ``B0 = I / a``.
* ``A0`` (direct form): columns a, b, c (Å) in a frame with x ∥ a, z ∥ c*.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "direct_metric",
    "reciprocal_metric",
    "reciprocal_parameters",
    "cell_volume",
    "b_matrix",
    "a_matrix",
    "d_spacing",
    "angle_between_normals",
    "lattice_parameters_from_reciprocal_basis",
]


def _params(lattice_parameters):
    a, b, c, alpha, beta, gamma = (float(v) for v in lattice_parameters)
    return a, b, c, np.deg2rad(alpha), np.deg2rad(beta), np.deg2rad(gamma)


def cell_volume(lattice_parameters) -> float:
    """Unit-cell volume (Å³)."""
    a, b, c, al, be, ga = _params(lattice_parameters)
    ca, cb, cg = np.cos(al), np.cos(be), np.cos(ga)
    return a * b * c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)


def direct_metric(lattice_parameters) -> np.ndarray:
    """Direct metric tensor G (3, 3), Å²."""
    a, b, c, al, be, ga = _params(lattice_parameters)
    return np.array(
        [
            [a * a, a * b * np.cos(ga), a * c * np.cos(be)],
            [a * b * np.cos(ga), b * b, b * c * np.cos(al)],
            [a * c * np.cos(be), b * c * np.cos(al), c * c],
        ]
    )


def reciprocal_metric(lattice_parameters) -> np.ndarray:
    """Reciprocal metric tensor G* = G⁻¹ (3, 3), Å⁻²."""
    return np.linalg.inv(direct_metric(lattice_parameters))


def reciprocal_parameters(lattice_parameters):
    """``(a*, b*, c*, alpha*, beta*, gamma*)`` in Å⁻¹ and degrees."""
    a, b, c, al, be, ga = _params(lattice_parameters)
    volume = cell_volume(lattice_parameters)
    astar = b * c * np.sin(al) / volume
    bstar = c * a * np.sin(be) / volume
    cstar = a * b * np.sin(ga) / volume
    cos_al = (np.cos(be) * np.cos(ga) - np.cos(al)) / (np.sin(be) * np.sin(ga))
    cos_be = (np.cos(ga) * np.cos(al) - np.cos(be)) / (np.sin(ga) * np.sin(al))
    cos_ga = (np.cos(al) * np.cos(be) - np.cos(ga)) / (np.sin(al) * np.sin(be))
    angles = np.rad2deg(np.arccos(np.clip([cos_al, cos_be, cos_ga], -1, 1)))
    return (astar, bstar, cstar, *angles)


def b_matrix(lattice_parameters) -> np.ndarray:
    """LaueTools ``B0`` (3, 3): reciprocal basis a*, b*, c* as columns (Å⁻¹)."""
    a, b, c, al, be, ga = _params(lattice_parameters)
    astar, bstar, cstar, als, bes, gas = reciprocal_parameters(lattice_parameters)
    als, bes, gas = np.deg2rad([als, bes, gas])
    return np.array(
        [
            [astar, bstar * np.cos(gas), cstar * np.cos(bes)],
            [0.0, bstar * np.sin(gas), -cstar * np.sin(bes) * np.cos(al)],
            [0.0, 0.0, 1.0 / c],
        ]
    )


def a_matrix(lattice_parameters) -> np.ndarray:
    """Direct ``A0`` (..., 3, 3): direct basis a, b, c as columns (Å), x ∥ a, z ∥ c*.

    ``lattice_parameters`` may be (6,) or a stack (..., 6).
    """
    p = np.asarray(lattice_parameters, dtype=float)
    a, b, c = p[..., 0], p[..., 1], p[..., 2]
    al, be, ga = np.deg2rad(p[..., 3]), np.deg2rad(p[..., 4]), np.deg2rad(p[..., 5])
    cos_als = (np.cos(be) * np.cos(ga) - np.cos(al)) / (np.sin(be) * np.sin(ga))
    sin_als = np.sqrt(1 - cos_als**2)
    zero = np.zeros_like(a)
    return np.stack(
        [
            np.stack([a, b * np.cos(ga), c * np.cos(be)], axis=-1),
            np.stack([zero, b * np.sin(ga), -c * np.sin(be) * cos_als], axis=-1),
            np.stack([zero, zero, c * np.sin(be) * sin_als], axis=-1),
        ],
        axis=-2,
    )


def d_spacing(hkl, lattice_parameters):
    """Interplanar spacing d_hkl (Å) for Miller indices ``hkl`` (..., 3)."""
    hkl = np.asarray(hkl, dtype=float)
    gstar = reciprocal_metric(lattice_parameters)
    return 1.0 / np.sqrt(np.einsum("...i,ij,...j->...", hkl, gstar, hkl))


def angle_between_normals(hkl_1, hkl_2, lattice_parameters):
    """Angle (deg) between the normals of planes ``hkl_1`` and ``hkl_2`` (broadcasting)."""
    h1 = np.asarray(hkl_1, dtype=float)
    h2 = np.asarray(hkl_2, dtype=float)
    gstar = reciprocal_metric(lattice_parameters)
    dot = np.einsum("...i,ij,...j->...", h1, gstar, h2)
    n1 = np.sqrt(np.einsum("...i,ij,...j->...", h1, gstar, h1))
    n2 = np.sqrt(np.einsum("...i,ij,...j->...", h2, gstar, h2))
    return np.rad2deg(np.arccos(np.clip(dot / (n1 * n2), -1.0, 1.0)))


def lattice_parameters_from_reciprocal_basis(reciprocal_basis) -> np.ndarray:
    """Direct lattice parameters (..., 6) from matrices whose columns are a*, b*, c* (any frame)."""
    m = np.asarray(reciprocal_basis, dtype=float)
    direct = np.swapaxes(np.linalg.inv(m), -1, -2)  # columns a, b, c
    lengths = np.linalg.norm(direct, axis=-2)
    a, b, c = (direct[..., :, i] for i in range(3))
    dot = lambda u, v: np.einsum("...i,...i->...", u, v)  # noqa: E731
    cos_al = dot(b, c) / (lengths[..., 1] * lengths[..., 2])
    cos_be = dot(c, a) / (lengths[..., 2] * lengths[..., 0])
    cos_ga = dot(a, b) / (lengths[..., 0] * lengths[..., 1])
    angles = np.rad2deg(np.arccos(np.clip(np.stack([cos_al, cos_be, cos_ga], axis=-1), -1, 1)))
    return np.concatenate([lengths, angles], axis=-1)
