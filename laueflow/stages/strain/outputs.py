"""Per-grain quantities derived from refined orientation matrices (batched over grains)."""
from __future__ import annotations

import numpy as np

from ...physics.materials import Material
from ...physics.orientations import matrix_to_euler
from ...physics.strain import (
    deviatoric_strain_crystal,
    lattice_parameters_from_ub,
    polar_rotation,
    strain_crystal_to_lab,
    strain_crystal_to_sample,
    von_mises_strain,
)

__all__ = ["strain_outputs", "stiffness_matrix", "deviatoric_stress"]

_VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def stiffness_matrix(material: Material) -> np.ndarray | None:
    """Voigt stiffness (6, 6) in GPa in the direct crystal frame (x ∥ a, z ∥ c), or None.

    Cubic needs C11, C12, C44; hexagonal C11, C12, C13, C33, C44 (C66 = (C11 − C12)/2).
    """
    c = material.elastic_constants_gpa
    system = material.crystal_system
    if system == "cubic" and {"C11", "C12", "C44"} <= set(c):
        m = np.full((3, 3), c["C12"]) + np.eye(3) * (c["C11"] - c["C12"])
        return np.block([[m, np.zeros((3, 3))], [np.zeros((3, 3)), np.eye(3) * c["C44"]]])
    if system == "hexagonal" and {"C11", "C12", "C13", "C33", "C44"} <= set(c):
        m = np.array([[c["C11"], c["C12"], c["C13"]], [c["C12"], c["C11"], c["C13"]], [c["C13"], c["C13"], c["C33"]]])
        shear = np.diag([c["C44"], c["C44"], (c["C11"] - c["C12"]) / 2])
        return np.block([[m, np.zeros((3, 3))], [np.zeros((3, 3)), shear]])
    return None


def deviatoric_stress(strain_crystal, stiffness) -> np.ndarray:
    """Deviatoric part of ``σ = C : ε`` (..., 3, 3), GPa, crystal frame (engineering shear strains)."""
    eps = np.asarray(strain_crystal)
    voigt = np.stack([eps[..., i, j] * (1 if i == j else 2) for i, j in _VOIGT], axis=-1)
    sigma_v = voigt @ np.asarray(stiffness).T
    sigma = np.zeros(eps.shape)
    for index, (i, j) in enumerate(_VOIGT):
        sigma[..., i, j] = sigma_v[..., index]
        sigma[..., j, i] = sigma_v[..., index]
    return sigma - np.trace(sigma, axis1=-2, axis2=-1)[..., None, None] / 3 * np.eye(3)


def strain_outputs(ub, material: Material, *, tilt_deg: float = 40.0) -> dict[str, np.ndarray]:
    """Strain tensors in every frame and derived quantities for refined ``ub`` (G, 3, 3).

    Returns ``strain_crystal``, ``strain_lab``, ``strain_sample`` (G, 3, 3), ``von_mises_strain``
    (G,), ``lattice_parameters`` (G, 6; Å with ``a`` fixed, degrees), ``euler_angles`` (G, 3; Bunge,
    of the rotation part, degrees) and, where elastic constants are known, ``stress_crystal`` and
    ``stress_sample`` (G, 3, 3; GPa, deviatoric).
    """
    ub = np.asarray(ub, dtype=float)
    latt = material.lattice_parameters
    crystal = deviatoric_strain_crystal(ub, latt)
    out = {
        "strain_crystal": crystal,
        "strain_lab": strain_crystal_to_lab(crystal, ub, latt),
        "strain_sample": strain_crystal_to_sample(crystal, ub, latt, tilt_deg),
        "von_mises_strain": von_mises_strain(crystal),
        "lattice_parameters": lattice_parameters_from_ub(ub, latt),
        "euler_angles": matrix_to_euler(polar_rotation(ub)) if len(ub) else np.zeros((0, 3)),
    }
    stiffness = stiffness_matrix(material)
    if stiffness is not None:
        stress = deviatoric_stress(crystal, stiffness)
        out["stress_crystal"] = stress
        out["stress_sample"] = strain_crystal_to_sample(stress, ub, latt, tilt_deg)
    return out
