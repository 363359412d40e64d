"""Orientation matrices: random sampling, Bunge Euler angles, small rotations."""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["random_orientations", "euler_to_matrix", "matrix_to_euler", "rotation_about_axis"]


def random_orientations(n: int, seed=None) -> np.ndarray:
    """``n`` rotation matrices uniformly distributed on SO(3), (n, 3, 3), reproducible by seed."""
    rng = np.random.default_rng(seed)
    return Rotation.random(n, random_state=rng).as_matrix()


def euler_to_matrix(phi1, Phi, phi2) -> np.ndarray:
    """Bunge (ZXZ) Euler angles in degrees → orientation matrices (..., 3, 3).

    Columns are the crystal axes in the lab frame (``UB`` of an unstrained crystal).
    """
    angles = np.stack(np.broadcast_arrays(phi1, Phi, phi2), axis=-1)
    return Rotation.from_euler("ZXZ", angles.reshape(-1, 3), degrees=True).as_matrix().reshape(angles.shape[:-1] + (3, 3))


def matrix_to_euler(matrices) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → Bunge Euler angles (..., 3) in degrees."""
    m = np.asarray(matrices, dtype=float)
    with warnings.catch_warnings():  # gimbal lock (Φ = 0): scipy sets φ2 = 0, which is fine
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_euler("ZXZ", degrees=True)
    return np.mod(angles, 360.0).reshape(m.shape[:-2] + (3,))


def rotation_about_axis(axis, angle_deg) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle_deg`` about ``axis`` (any length, lab frame)."""
    axis = np.asarray(axis, dtype=float)
    return Rotation.from_rotvec(np.deg2rad(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()
