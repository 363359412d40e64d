"""Per-point grains for the evaluation metrics: each point's best indexed grain (the maps' choice)
and its dominant true grain, and the misorientation between two per-point orientations."""
from __future__ import annotations

import numpy as np

from ...physics.symmetry import reduce_misorientation
from ..grain_choice import best_grains, grain_peak_intensity
from .metrics import StoreArrays

__all__ = ["misorientations", "best_indexed_grains", "true_dominant", "share_within"]


def misorientations(ub_a, material_a, ub_b, material_b, materials) -> np.ndarray:
    """``(n,)`` deg between ``ub_a (n, 3, 3)`` and ``ub_b`` where both are finite and of the same
    material (``material_a/b (n,)``, indices into ``materials``); NaN elsewhere."""
    ub_a, ub_b = np.asarray(ub_a, float), np.asarray(ub_b, float)
    out = np.full(len(ub_a), np.nan)
    both = np.isfinite(ub_a).all(axis=(1, 2)) & np.isfinite(ub_b).all(axis=(1, 2)) & (material_a == material_b)
    for m in np.unique(material_a[both & (material_a >= 0)]):
        rows = both & (material_a == m)
        out[rows] = reduce_misorientation(ub_a[rows], ub_b[rows], materials[int(m)])
    return out


def best_indexed_grains(results: StoreArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's best indexed grain, as the maps and ``delegate_map`` choose it (the brightest,
    then the highest matching rate; :mod:`laueflow.stages.grain_choice`): ``(n, 3, 3)`` UB (NaN:
    none), ``(n,)`` material (−1: none), ``(n,)`` slot (−1: none). ``matching_rate``,
    ``peak_grain`` and ``peak_intensity`` are used when the results have them."""
    full = np.asarray(results["orientation_matrix"], float)
    full = full.reshape(-1, *full.shape[-3:])
    full_mat = np.asarray(results["grain_material"], np.int64).reshape(len(full), -1)
    rate = np.asarray(results["matching_rate"]).reshape(len(full), -1) if "matching_rate" in results else None
    height = None
    if "peak_grain" in results and "peak_intensity" in results:
        peak_grain = np.asarray(results["peak_grain"]).reshape(len(full), -1)
        height = grain_peak_intensity(peak_grain, np.asarray(results["peak_intensity"]).reshape(len(full), -1),
                                      full_mat.shape[1])
    best = best_grains(full, full_mat, rate, height)
    rows = np.arange(len(full))
    full_ub = np.where((best >= 0)[:, None, None], full[rows, np.maximum(best, 0)], np.nan)
    full_material = np.where(best >= 0, full_mat[rows, np.maximum(best, 0)], -1)
    return full_ub, full_material, best


def true_dominant(truth: StoreArrays, names: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, 3, 3)`` UB of each point's dominant true grain, its material as an index into the
    results' materials (``names``; −1: none or unknown) and whether the point has one."""
    grain_map = np.asarray(truth["grain_map"], np.int64).reshape(-1)
    ids = np.asarray(truth["grain_id"], np.int64).reshape(len(grain_map), -1)
    ub = np.asarray(truth["orientation_matrix"], float).reshape(len(grain_map), -1, 3, 3)
    mats = np.asarray(truth["grain_material"], np.int64).reshape(len(grain_map), -1)
    hit = (ids == grain_map[:, None]) & (grain_map[:, None] >= 0)
    has = hit.any(axis=1)
    slot = hit.argmax(axis=1)
    rows = np.arange(len(grain_map))
    lookup = np.array([names.index(n) if n in names else -1 for n in truth.attrs.get("materials") or []] + [-1])
    material = np.where(has, lookup[np.where(mats[rows, slot] >= 0, mats[rows, slot], -1)], -1)
    return np.where(has[:, None, None], ub[rows, slot], np.nan), material, has


def share_within(values: np.ndarray, tolerance: float, of: int) -> float:
    """Fraction (4 decimals) of ``of`` points whose ``values`` are ≤ ``tolerance`` (NaN when ``of`` is 0)."""
    return round(float(np.sum(values <= tolerance) / of), 4) if of else float("nan")

