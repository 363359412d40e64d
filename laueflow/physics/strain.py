"""Deviatoric strain from an orientation matrix, and its crystal / lab / sample frames.

Conventions (LaueTools 3.2.19, corrected sample frame; ``docs/conventions.md``):

* ``UB`` maps the *reference* reciprocal basis: ``q_lab = UB · B0 · h``; strain lives in UB.
* Crystal frame = direct crystal frame (x ∥ a, y in (a, b), z ∥ c*), as LaueTools reports it.
* Lab frame = LaueTools lab frame (x along the beam, z up).
* Sample frame = lab frame rotated by −40° about y: ``q_lab = P · q_sample``.
Strain is dimensionless (not 10⁻³ as in ``.fit`` files, not % as in LaueNN).
"""
from __future__ import annotations

import numpy as np

from .lattice import a_matrix, b_matrix, lattice_parameters_from_reciprocal_basis

__all__ = [
    "SAMPLE_TILT_DEG",
    "sample_rotation",
    "polar_rotation",
    "deviatoric_strain_crystal",
    "crystal_to_lab_rotation",
    "strain_crystal_to_lab",
    "strain_crystal_to_sample",
    "von_mises_strain",
    "lattice_parameters_from_ub",
    "ub_from_deviatoric_strain",
    "deformation_gradient",
    "normalise_ub_scale",
]

SAMPLE_TILT_DEG = 40.0


def sample_rotation(tilt_deg: float = SAMPLE_TILT_DEG) -> np.ndarray:
    """``P = R_y(−tilt)``: columns are the sample axes in lab coordinates (``q_lab = P q_s``)."""
    t = np.deg2rad(tilt_deg)
    return np.array([[np.cos(t), 0, -np.sin(t)], [0, 1, 0], [np.sin(t), 0, np.cos(t)]])


def polar_rotation(matrix) -> np.ndarray:
    """Rotation ``R`` of the polar decomposition ``M = R · S`` (..., 3, 3)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=float))
    return u @ vt


def _transpose(m):
    return np.swapaxes(m, -1, -2)


def lattice_parameters_from_ub(ub, lattice_parameters, constant_length: str | None = "a"):
    """Strained lattice parameters (..., 6) from ``UB``; lengths rescaled so ``a`` keeps its value."""
    params = lattice_parameters_from_reciprocal_basis(np.asarray(ub) @ b_matrix(lattice_parameters))
    if constant_length is not None:
        index = "abc".index(constant_length)
        params[..., :3] *= lattice_parameters[index] / params[..., index : index + 1]
    return params


def deformation_gradient(ub, lattice_parameters) -> np.ndarray:
    """Upper-triangular ``F = A'·A0⁻¹`` (..., 3, 3) between strained and reference direct matrices."""
    strained = lattice_parameters_from_reciprocal_basis(np.asarray(ub) @ b_matrix(lattice_parameters))
    return a_matrix(strained) @ np.linalg.inv(a_matrix(lattice_parameters))


def deviatoric_strain_crystal(ub, lattice_parameters) -> np.ndarray:
    """Deviatoric strain (..., 3, 3) in the direct crystal frame (LaueTools' definition).

    ``ε = sym(F) − I`` with ``F`` from :func:`deformation_gradient`, minus its trace / 3.
    """
    deformation = deformation_gradient(ub, lattice_parameters)
    eps = (deformation + _transpose(deformation)) / 2 - np.eye(3)
    return eps - np.trace(eps, axis1=-2, axis2=-1)[..., None, None] / 3 * np.eye(3)


def normalise_ub_scale(ub, lattice_parameters) -> np.ndarray:
    """Rescale ``UB`` (..., 3, 3) so that ``tr F = 3`` (no hydrostatic part).

    White-beam Laue does not see the cell scale, so a fitted ``UB`` carries an arbitrary one; the
    deviatoric strain of LaueTools' definition depends on it at second order (ε·δs). After this
    normalisation the deviatoric strain is that of the unique scale with zero hydrostatic strain,
    the convention of :func:`ub_from_deviatoric_strain`.
    """
    trace = np.trace(deformation_gradient(ub, lattice_parameters), axis1=-2, axis2=-1)
    return np.asarray(ub) * (trace / 3.0)[..., None, None]


def crystal_to_lab_rotation(ub, lattice_parameters) -> np.ndarray:
    """Rotation taking direct-crystal-frame components to lab components: ``R · Q``."""
    b0 = b_matrix(lattice_parameters)
    q = np.linalg.inv(b0).T @ np.linalg.inv(a_matrix(lattice_parameters))
    return polar_rotation(ub) @ polar_rotation(q)


def strain_crystal_to_lab(strain_crystal, ub, lattice_parameters) -> np.ndarray:
    """Express crystal-frame tensors (..., 3, 3) in the lab frame."""
    m = crystal_to_lab_rotation(ub, lattice_parameters)
    return m @ strain_crystal @ _transpose(m)


def strain_crystal_to_sample(strain_crystal, ub, lattice_parameters, tilt_deg=SAMPLE_TILT_DEG):
    """Express crystal-frame tensors (..., 3, 3) in the sample frame (``tilt_deg`` about lab y)."""
    m = sample_rotation(tilt_deg).T @ crystal_to_lab_rotation(ub, lattice_parameters)
    return m @ strain_crystal @ _transpose(m)


def von_mises_strain(deviatoric_strain) -> np.ndarray:
    """Equivalent (von Mises) strain ``sqrt(2/3 ε:ε)`` of (..., 3, 3) deviatoric tensors."""
    e = np.asarray(deviatoric_strain, dtype=float)
    return np.sqrt(2.0 / 3.0 * np.einsum("...ij,...ij->...", e, e))


def ub_from_deviatoric_strain(orientation_matrix, strain_crystal, lattice_parameters) -> np.ndarray:
    """``UB`` of a crystal with rotation ``U`` carrying strain ε (direct crystal frame).

    LaueTools measures strain through the upper-triangular deformation ``F = A'·A0⁻¹`` between
    the strained and reference direct matrices (x ∥ a, z ∥ c*), ``ε = sym(F) − I``. The unique
    upper-triangular ``F`` with ``sym(F) = I + ε`` is ``F_ii = 1 + ε_ii``, ``F_ij = 2 ε_ij``
    (i < j); the direct basis in the lab is ``U · Q · F · A0`` (``Q`` turns the direct crystal
    frame into the B0 frame, so an unstrained crystal gives ``UB = U``), and
    ``UB = (direct)⁻ᵀ · B0⁻¹``. Hence :func:`deviatoric_strain_crystal` returns exactly the
    deviatoric part of ε (no second-order error): the simulator's truth is what a fit reports.
    """
    eps = np.asarray(strain_crystal, dtype=float)
    deformation = np.eye(3) + np.triu(2 * eps, 1) + np.diag(np.diag(eps))
    a0 = a_matrix(lattice_parameters)
    b0 = b_matrix(lattice_parameters)
    q = np.linalg.inv(b0).T @ np.linalg.inv(a0)  # direct crystal frame → B0 frame
    direct = np.asarray(orientation_matrix) @ q @ deformation @ a0
    return np.linalg.inv(direct).T @ np.linalg.inv(b0)
