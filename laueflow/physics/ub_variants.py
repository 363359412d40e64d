"""Symmetry-equivalent orientation matrices ("UB variants") and the choice of one of them.

A crystal whose Laue group holds the proper rotation ``S`` (Cartesian, B0 frame) is described
equally well by ``UB`` and by ``UB' = UB · S``. With ``M = B0⁻¹ · S · B0`` — the integer matrix of
the same rotation acting on Miller indices (:func:`laueflow.physics.symmetry.hkl_operators`) —
every reflection keeps its scattering vector when its indices become ``h' = M⁻¹ h``::

    q = UB · B0 · h = UB · B0 · M · M⁻¹ h = (UB · S) · B0 · (M⁻¹ h) = UB' · B0 · h'

The direct-crystal-frame strain (x ∥ a, z ∥ c*) becomes ``ε' = S_dᵀ ε S_d`` with
``S_d = Qᵀ S Q`` (``Q`` turns the direct crystal frame into the B0 frame,
:func:`laueflow.physics.strain.crystal_to_lab_rotation`); lab and sample strains do not change.
For LaueTools' strain definition (upper-triangular ``F``, not rotation-covariant beyond first
order) this holds to first order: recomputed from ``UB'``, the strain differs from ``S_dᵀ ε S_d``
by at most about ``4·max|ε_ij|²`` (4e-6 for strains of 1e-3; ``docs/strain.md``).

Variants (:func:`choose_ub_variant`), all scored on the rotation part ``R`` of ``UB`` (polar
decomposition) unless said otherwise:

* ``laueflow``  — unchanged (``S = I``).
* ``identity``  — ``R·S`` closest to the identity matrix (largest ``tr(R·S)``, i.e. the smallest
  rotation angle): the crystal's B0 axes (a*, b*, c direction; a, b, c for cubic, tetragonal,
  orthorhombic) closest to the lab axes x (beam), y, z (up).
* ``lauetools`` — LaueTools' own rule (``FindOrientMatrix.find_lowest_Euler_Angles_matrix``,
  which LaueTools' automatic indexing, ``indexingSpotsSet``, applies to cubic materials only):
  the ``UB·S`` whose third column (the c axis) has the largest z component (most vertical), then,
  among those, whose first column (a*) has the largest x component (most along the beam), on
  ``UB`` itself as LaueTools does. For cubic materials this is exactly LaueTools' choice; for
  other systems it is the same rule on their own rotations. It differs from ``identity`` for
  about 8 % of random cubic orientations.
* ``sample``    — ``R·S`` closest to the sample frame ``P`` (largest ``tr(Pᵀ·R·S)``): the crystal's
  B0 axes closest to the sample axes X_s, Y_s, Z_s (``P = R_y(−40°)``, ``docs/conventions.md``).
* ``reference`` — ``R·S`` closest to the rotation part of a given reference ``UB`` (smallest
  misorientation), e.g. the UB LaueTools wrote for the same grain.

Exact ties (measure zero for real data) go to the operator listed first (the identity first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lattice import a_matrix
from .materials import Material
from .strain import polar_rotation, sample_rotation
from .symmetry import hkl_operators

__all__ = ["UB_VARIANTS", "UBVariant", "proper_rotations", "ub_variants", "choose_ub_variant", "check_reference_ub"]

#: the variant names :func:`choose_ub_variant` accepts
UB_VARIANTS = ("laueflow", "identity", "lauetools", "sample", "reference")

_TIE = 1e-9  # scores closer than this count as equal (tie → operator listed first)


@dataclass(frozen=True, eq=False)
class UBVariant:
    """One symmetry-equivalent orientation matrix and the operator that produced it.

    ``ub = ub_in · rotation``; ``rotation = B0 · operator · B0⁻¹`` (proper, Cartesian, B0 frame);
    ``operator`` is the integer matrix on Miller indices; indices of this variant are
    ``operator⁻¹ · h`` (:meth:`hkl`).
    """

    name: str
    ub: np.ndarray
    operator: np.ndarray
    rotation: np.ndarray
    material: Material

    @property
    def hkl_transform(self) -> np.ndarray:
        """Integer ``T = operator⁻¹`` (3, 3): ``h' = T · h``."""
        return np.rint(np.linalg.inv(self.operator)).astype(np.int64)

    def hkl(self, hkl) -> np.ndarray:
        """Miller indices (..., 3) of the input ``UB`` → those of this variant (same ``q``)."""
        hkl = np.asarray(hkl)
        out = hkl @ self.hkl_transform.T
        return out if np.issubdtype(hkl.dtype, np.integer) else out.astype(float)

    @property
    def direct_rotation(self) -> np.ndarray:
        """``S_d = Qᵀ · S · Q``: the symmetry rotation in the direct crystal frame (x ∥ a, z ∥ c*)."""
        q = _direct_to_b0(self.material)
        return q.T @ self.rotation @ q

    def strain_crystal(self, strain) -> np.ndarray:
        """Direct-crystal-frame tensors (..., 3, 3) of the input ``UB`` → this variant: ``S_dᵀ ε S_d``."""
        s = self.direct_rotation
        return s.T @ np.asarray(strain, dtype=float) @ s


def _direct_to_b0(material: Material) -> np.ndarray:
    """``Q = B0⁻ᵀ · A0⁻¹``: direct crystal frame (x ∥ a) → B0 frame (x ∥ a*), as in ``strain``."""
    return polar_rotation(np.linalg.inv(material.b_matrix).T @ np.linalg.inv(a_matrix(material.lattice_parameters)))


def proper_rotations(material: Material) -> tuple[np.ndarray, np.ndarray]:
    """The proper rotations of the material's Laue group, identity first.

    Returns ``(operators, rotations)``: integer (n, 3, 3) matrices on Miller indices (``h' = M h``,
    the space group's rotation parts, :func:`~laueflow.physics.symmetry.hkl_operators`) and the
    Cartesian rotations ``B0 M B0⁻¹`` (n, 3, 3) in the B0 frame. n = 24 cubic, 12 hexagonal,
    8 tetragonal, 6 trigonal, 4 orthorhombic, 2 monoclinic, 1 triclinic.
    """
    ops = hkl_operators(material)
    ops = ops[np.rint(np.linalg.det(ops)).astype(int) == 1]
    is_identity = np.all(ops == np.eye(3, dtype=ops.dtype), axis=(1, 2))
    ops = np.concatenate([ops[is_identity], ops[~is_identity]])
    b0 = material.b_matrix
    rotations = b0 @ ops.astype(float) @ np.linalg.inv(b0)
    rotations[0] = np.eye(3)  # exactly: the 'laueflow' variant leaves UB bit-identical
    return ops, rotations


def ub_variants(ub, material: Material) -> np.ndarray:
    """All symmetry-equivalent ``UB · S`` (n, 3, 3), in the order of :func:`proper_rotations`."""
    return np.asarray(ub, dtype=float) @ proper_rotations(material)[1]


def check_reference_ub(reference_ub, where: str = "reference UB") -> np.ndarray:
    """A (3, 3) float matrix usable as a reference orientation, or ``ValueError`` saying why not."""
    try:
        m = np.asarray(reference_ub, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where} is not a numeric matrix") from None
    if m.size == 9:
        m = m.reshape(3, 3)
    if m.shape != (3, 3):
        raise ValueError(f"{where} must be a 3×3 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{where} holds non-finite values")
    det = float(np.linalg.det(m))
    if not det > 1e-6 * max(np.abs(m).max(), 1e-300) ** 3:
        raise ValueError(f"{where} is not a right-handed orientation matrix (det = {det:.3g}; "
                         "an orientation matrix UB has det > 0)")
    return m


def _first_best(scores) -> int:
    scores = np.asarray(scores, dtype=float)
    return int(np.flatnonzero(scores >= scores.max() - _TIE)[0])


def choose_ub_variant(ub, material: Material, variant: str = "identity", reference_ub=None) -> UBVariant:
    """The symmetry-equivalent ``UB`` chosen by ``variant`` (module docstring); one grain, (3, 3).

    ``reference_ub`` (3, 3) is required for ``variant="reference"`` and ignored otherwise.
    """
    if variant not in UB_VARIANTS:
        raise ValueError(f"unknown UB variant {variant!r}; choose one of {', '.join(UB_VARIANTS)}")
    ub = np.asarray(ub, dtype=float)
    if ub.shape != (3, 3):
        raise ValueError(f"choose_ub_variant takes one (3, 3) UB, got shape {ub.shape}")
    ops, rotations = proper_rotations(material)
    if variant == "laueflow" or not np.all(np.isfinite(ub)):
        k = 0
    elif variant == "lauetools":
        candidates = ub @ rotations
        scale = max(np.abs(ub).max(), 1e-300)
        c_z = candidates[:, 2, 2] / scale
        a_x = np.where(c_z >= c_z.max() - _TIE, candidates[:, 0, 0] / scale, -np.inf)
        k = _first_best(a_x)
    else:
        if variant == "identity":
            target = np.eye(3)
        elif variant == "sample":
            target = sample_rotation()
        else:
            if reference_ub is None:
                raise ValueError("UB variant 'reference' needs a reference UB (reference:FILE)")
            target = polar_rotation(check_reference_ub(reference_ub))
        r = polar_rotation(ub)
        k = _first_best(np.einsum("ij,ik,nkj->n", target, r, rotations))  # tr(targetᵀ · R · S)
    return UBVariant(name=variant, ub=ub @ rotations[k], operator=ops[k], rotation=rotations[k], material=material)
