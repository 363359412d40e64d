"""White-beam Laue spot simulation, vectorised over many orientations at once.

For every allowed reflection ``h`` and orientation ``UB`` (LaueTools convention
``q_lab = UB · B0 · h``), the spot exists if ``q_x < 0`` and ``q_z > 0`` (top detector), its
energy ``E = hc |q|² / (2 |q_x|)`` lies in the band (inclusive), and the outgoing ray hits the
detector area. Harmonics ``n·h`` share one spot; as in LaueTools (``removeharmonics=1``) the
lowest-order allowed member inside the band is reported.

Implementation: reflections are grouped by *primitive* direction ``h_p`` (gcd 1) with a lookup
table of the allowed multiples, so each pattern costs one (3×3)·(3×P) product plus a few
elementwise passes over the P directions — no per-spot Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from .geometry import Calibration, in_frame, outgoing_to_pixel
from .materials import Material

__all__ = ["HC_KEV_ANGSTROM", "DEFAULT_ENERGY_BAND_KEV", "SPOT_QUALITIES", "SPOT_QUALITY", "LaueSpots", "ReflectionTable", "reflection_table", "simulate_spots", "spectrum"]

#: hc in keV·Å, LaueTools' value (``CST_ENERGYKEV``)
HC_KEV_ANGSTROM = 12.398
#: isotropic displacement parameter (Å²) of the intensity model
_B_ISO = 0.5


@dataclass
class LaueSpots:
    """Flat table of simulated spots (all arrays 1-D, one row per spot).

    ``pattern`` indexes the input orientations; positions are 0-based ``col, row`` (pixels),
    angles in degrees, energy in keV; ``intensity`` is relative (see :func:`simulate_spots`).
    """

    pattern: np.ndarray
    h: np.ndarray
    k: np.ndarray
    l: np.ndarray
    energy_kev: np.ndarray
    two_theta: np.ndarray
    chi: np.ndarray
    col: np.ndarray
    row: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.pattern)

    @property
    def hkl(self) -> np.ndarray:
        """(n_spots, 3) Miller indices."""
        return np.stack([self.h, self.k, self.l], axis=-1)

    def select(self, mask) -> "LaueSpots":
        """Rows where ``mask`` (bool or index array) selects."""
        return LaueSpots(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def for_pattern(self, index: int) -> "LaueSpots":
        return self.select(self.pattern == index)

    def counts(self, n_patterns: int) -> np.ndarray:
        """Spots per pattern (n_patterns,)."""
        return np.bincount(self.pattern, minlength=n_patterns)


def spectrum(energy_kev):
    """Relative white-beam flux at ``energy_kev`` (documented simple model).

    A smooth bending-magnet-like curve peaking at 9 keV:
    ``S(E) = (E/9)³ · exp(3 (1 − E/9))`` (S = 1 at 9 keV, ≈ 0.35 at 5 keV, ≈ 0.33 at 23 keV).
    """
    x = np.asarray(energy_kev, dtype=float) / 9.0
    return x**3 * np.exp(3.0 * (1.0 - x))


@dataclass(frozen=True)
class ReflectionTable:
    """Primitive reciprocal-lattice directions and their allowed harmonics for one material.

    Attributes
    ----------
    hkl : (P, 3) int primitive Miller indices (gcd 1) with at least one allowed multiple.
    next_allowed : (P, n_max + 2) int; ``next_allowed[p, m]`` = smallest allowed multiple
        ``n ≥ m`` of ``hkl[p]`` within the band's reach, 0 if none.
    structure_factor : (P, n_max + 2) float; intensity factor |F|²·exp(−2B s²) of ``n·hkl[p]``.
    """

    hkl: np.ndarray
    next_allowed: np.ndarray
    structure_factor: np.ndarray

    @property
    def n_max(self) -> int:
        return self.next_allowed.shape[1] - 2


@lru_cache(maxsize=32)
def _cached_table(material: Material, q_max: float) -> ReflectionTable:
    return _build_table(material, q_max)


def reflection_table(material: Material, energy_max_kev: float = 23.0, margin: float = 0.02) -> ReflectionTable:
    """The :class:`ReflectionTable` of ``material`` up to ``|q| ≤ 2 E_max / hc · (1 + margin)``.

    The margin keeps strained crystals (|ε| ≲ 1 %) complete. Cached per material.
    """
    q_max = 2.0 * energy_max_kev / HC_KEV_ANGSTROM * (1.0 + margin)
    return _cached_table(material, round(q_max, 9))


def _build_table(material: Material, q_max: float) -> ReflectionTable:
    b0 = material.b_matrix
    direct_lengths = np.linalg.norm(np.linalg.inv(b0).T, axis=0)  # |a|, |b|, |c| (Å)
    h_max = np.floor(q_max * direct_lengths).astype(int)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in h_max], indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=-1)
    q_len = np.linalg.norm(hkl @ b0.T, axis=-1)
    hkl = hkl[(q_len <= q_max) & (q_len > 0)]
    primitive = hkl[np.gcd.reduce(np.abs(hkl), axis=1) == 1]
    q_prim = np.linalg.norm(primitive @ b0.T, axis=-1)
    n_reach = np.floor(q_max / q_prim).astype(int)  # multiples inside the sphere
    n_max = int(n_reach.max())
    multiples = np.arange(1, n_max + 1)
    all_hkl = primitive[:, None, :] * multiples[None, :, None]  # (P, n_max, 3)
    inside = multiples[None, :] <= n_reach[:, None]
    allowed = np.zeros(inside.shape, bool)
    allowed[inside] = material.allowed(all_hkl[inside])
    keep = allowed.any(axis=1)
    primitive, allowed, all_hkl = primitive[keep], allowed[keep], all_hkl[keep]
    # next_allowed[p, m] for m = 0 .. n_max + 1 (0 and n_max + 1 are sentinels)
    n_table = np.where(allowed, multiples[None, :], n_max + 10)
    suffix_min = np.minimum.accumulate(n_table[:, ::-1], axis=1)[:, ::-1]
    next_allowed = np.zeros((len(primitive), n_max + 2), dtype=np.int32)
    next_allowed[:, 1 : n_max + 1] = np.where(suffix_min <= n_max, suffix_min, 0)
    next_allowed[:, 0] = next_allowed[:, 1]
    factor = np.zeros(next_allowed.shape)
    s2 = np.linalg.norm(all_hkl @ b0.T, axis=-1) ** 2 / 4
    f2 = np.zeros(allowed.shape)
    f2[allowed] = material.structure_factor_squared(all_hkl[allowed])
    factor[:, 1 : n_max + 1] = f2 * np.exp(-2 * _B_ISO * s2)
    return ReflectionTable(primitive.astype(np.int32), next_allowed, factor)


#: morphologies of simulated spots; a spot's quality code is its index (truth stores'
#: ``spot_quality``, the spot-CNN training data, ``laueflow evaluate``'s recall by quality)
SPOT_QUALITIES: tuple[str, ...] = ("good", "streaked", "split", "irregular", "saturated")
SPOT_QUALITY: dict[str, int] = {name: code for code, name in enumerate(SPOT_QUALITIES)}

#: the default energy band of the simulated and indexed spots, keV (BM32's polychromatic beam)
DEFAULT_ENERGY_BAND_KEV: tuple[float, float] = (5.0, 23.0)


def simulate_spots(
    material: Material,
    orientation_matrices,
    calibration: Calibration,
    energy_band_kev=DEFAULT_ENERGY_BAND_KEV,
    *,
    margin_px: float = 0.0,
    batch_size: int = 256,
) -> LaueSpots:
    """Simulate the Laue spots of one material for many orientations at once.

    Parameters
    ----------
    material : the phase (its extinction rule decides the allowed reflections).
    orientation_matrices : (N, 3, 3) or (3, 3) ``UB`` matrices, lab frame (a rotation, or a
        rotation × deviatoric distortion, e.g. from :func:`~laueflow.physics.strain.ub_from_deviatoric_strain`).
    calibration : detector geometry; spots are kept on the detector area (pixel edges) at least
        ``margin_px`` inside it.
    energy_band_kev : inclusive ``(E_min, E_max)``.

    Returns
    -------
    LaueSpots with one row per spot. ``intensity`` = |F|²·exp(−2B s²) (B = 0.5 Å²; |F|² = 1
    when no atom sites are known) × :func:`spectrum` (E) × λ⁴ / sin²θ (white-beam Lorentz factor).
    """
    ub = np.asarray(orientation_matrices, dtype=float)
    if ub.ndim == 2:
        ub = ub[None]
    if ub.ndim != 3 or ub.shape[1:] != (3, 3):
        raise ValueError(f"orientation_matrices must be (N, 3, 3) or (3, 3), got {ub.shape}")
    e_min, e_max = (float(v) for v in energy_band_kev)
    if not 0 < e_min < e_max:
        raise ValueError(f"energy_band_kev must be 0 < E_min < E_max, got {energy_band_kev}")
    table = reflection_table(material, e_max)
    parts = [
        _simulate_batch(material, ub[start : start + batch_size], start, table, calibration, e_min, e_max, margin_px)
        for start in range(0, len(ub), batch_size)
    ]
    return LaueSpots(*[np.concatenate([p[i] for p in parts]) for i in range(len(fields(LaueSpots)))])


def _simulate_batch(material, ub, offset, table, calibration, e_min, e_max, margin_px):
    hkl_p = table.hkl.astype(float)
    q = np.matmul(ub @ material.b_matrix, hkl_p.T)  # (n, 3, P)
    qx, qz = q[:, 0], q[:, 2]
    pattern, prim = np.nonzero((qx < 0) & (qz > 0))
    qx = qx[pattern, prim]
    qy = q[:, 1][pattern, prim]
    qz = qz[pattern, prim]
    q2 = qx * qx + qy * qy + qz * qz
    energy_1 = HC_KEV_ANGSTROM * q2 / (-2.0 * qx)  # energy of the primitive reflection
    n_needed = np.clip(np.ceil(e_min / energy_1 - 1e-12), 1, table.n_max + 1).astype(np.int64)
    n = table.next_allowed[prim, n_needed]
    ok = (n > 0) & (n * energy_1 <= e_max * (1 + 1e-12)) & (n * energy_1 >= e_min * (1 - 1e-12))
    pattern, prim, n = pattern[ok], prim[ok], n[ok]
    qx, qy, qz, q2, energy_1 = qx[ok], qy[ok], qz[ok], q2[ok], energy_1[ok]
    wavelength_1 = -2.0 * qx / q2  # wavelength of the primitive reflection (Å)
    u_f = np.stack([1.0 + wavelength_1 * qx, wavelength_1 * qy, wavelength_1 * qz], axis=-1)
    col, row = outgoing_to_pixel(u_f, calibration)
    hit = in_frame(col, row, calibration, margin_px)
    pattern, prim, n, u_f, col, row = pattern[hit], prim[hit], n[hit], u_f[hit], col[hit], row[hit]
    energy = n * energy_1[hit]
    two_theta = np.rad2deg(np.arccos(np.clip(u_f[:, 0], -1.0, 1.0)))
    chi = np.rad2deg(np.arctan2(u_f[:, 1], u_f[:, 2]))
    hkl = table.hkl[prim] * n[:, None]
    wavelength = HC_KEV_ANGSTROM / energy
    sin_theta = np.sin(np.deg2rad(two_theta) / 2)
    intensity = table.structure_factor[prim, n] * spectrum(energy) * wavelength**4 / sin_theta**2
    return (
        (pattern + offset).astype(np.int64),
        hkl[:, 0], hkl[:, 1], hkl[:, 2],
        energy, two_theta, chi, col, row, intensity,
    )
