"""Laue-group symmetry operators from the space group (via gemmi).

Two forms:

* ``hkl_operators`` — integer (n, 3, 3) matrices acting on Miller indices (``h' = M h``), the
  whole Laue group (point group + inversion); used to build hkl families.
* ``rotation_operators`` — the proper rotations of the Laue group as Cartesian (n, 3, 3)
  matrices in the B0 crystal frame; ``U · S`` describes the same crystal as ``U``.
"""
from __future__ import annotations

from functools import lru_cache

import gemmi
import numpy as np

from .materials import Material
from .strain import polar_rotation

__all__ = ["hkl_operators", "rotation_operators", "hkl_family", "reduce_misorientation"]


@lru_cache(maxsize=64)
def _point_rotations(space_group_xhm: str) -> np.ndarray:
    """Distinct rotation parts of the space-group operations, fractional basis (n, 3, 3)."""
    ops = gemmi.SpaceGroup(space_group_xhm).operations()
    rots = {tuple(np.array(op.rot).ravel() // op.DEN) for op in ops.sym_ops}
    return np.array(sorted(rots), dtype=np.int64).reshape(-1, 3, 3)


def hkl_operators(material: Material) -> np.ndarray:
    """Laue-group operators on Miller indices, integer (n, 3, 3) with ``h' = M @ h``."""
    rots = _point_rotations(material.spacegroup.xhm())
    # a direct-space rotation R (x' = R x) maps planes h to h' = R^{-T} h; over the group
    # {R^{-T}} = {R^T}. Add the inversion (Friedel) to get the Laue group.
    ops = np.concatenate([np.transpose(rots, (0, 2, 1)), -np.transpose(rots, (0, 2, 1))])
    return np.unique(ops, axis=0)


def rotation_operators(material: Material) -> np.ndarray:
    """Proper rotations of the Laue group, Cartesian in the B0 frame (n, 3, 3)."""
    b0 = material.b_matrix
    ops = hkl_operators(material).astype(float)
    cart = b0 @ ops @ np.linalg.inv(b0)  # q-space action: B0 M B0⁻¹
    proper = np.linalg.det(cart) > 0
    return cart[proper]


def hkl_family(hkl, material: Material) -> np.ndarray:
    """All distinct symmetry equivalents of one reflection ``hkl`` (3,) → (m, 3) int."""
    ops = hkl_operators(material)
    return np.unique(ops @ np.asarray(hkl, dtype=np.int64), axis=0)


def reduce_misorientation(ub_1, ub_2, material: Material):
    """Smallest rotation angle (deg) between orientations, over the Laue-group symmetry.

    ``ub_1``, ``ub_2``: (..., 3, 3) orientation matrices (rotation parts are used); broadcasting.
    """
    r1 = polar_rotation(ub_1)
    r2 = polar_rotation(ub_2)
    delta = np.swapaxes(r1, -1, -2) @ r2  # crystal-frame misorientation
    ops = rotation_operators(material)
    traces = np.einsum("...ij,nji->...n", delta, ops)  # trace(delta @ S) for each S
    cos = np.clip((traces.max(axis=-1) - 1) / 2, -1.0, 1.0)
    return np.rad2deg(np.arccos(cos))
