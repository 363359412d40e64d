"""Simulated multi-grain Laue patterns for training and testing the indexer.

All grains of all patterns are simulated in one vectorised call per material
(:func:`laueflow.physics.simulate.simulate_spots`), then corrupted and packed into padded
per-pattern arrays ordered by decreasing intensity (the order of the peak stage's output).

Corruption (LaueNN §5.3, plus spurious spots), applied per pattern according to ``mode``:

* position noise: a fraction ``noise_fraction`` (0.3) of the spots gets Gaussian noise of
  ``noise_sigma_deg`` (0.15°) on 2θ and, independently, on χ;
* missing spots: among the weakest ``weak_fraction`` (40 %) of the spots, ``missing_fraction``
  (30 %) are deleted;
* spurious spots: up to ``spurious_fraction`` (5 %) × the number of spots, uniform on the
  detector, with intensities drawn from the weaker half of the pattern.

``mode="lauenn"`` applies LaueNN's quartiles (25 % clean, 25 % noise, 25 % missing, 25 % both, all
with spurious spots except the clean quarter); ``mode="all"`` applies everything to every pattern
(used for test images); ``mode="none"`` gives clean patterns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...physics.geometry import Calibration, pixel_to_angles
from ...physics.materials import Material
from ...physics.orientations import random_orientations
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV, simulate_spots

__all__ = ["PatternSet", "grain_count_table", "simulate_patterns", "CORRUPTION_DEFAULTS"]

CORRUPTION_DEFAULTS = {
    "noise_fraction": 0.3,
    "noise_sigma_deg": 0.15,
    "weak_fraction": 0.4,
    "missing_fraction": 0.3,
    "spurious_fraction": 0.05,
}


@dataclass
class PatternSet:
    """Padded per-pattern spot tables (n_patterns, max_spots), intensity-ordered.

    ``spot_grain`` / ``spot_material`` are −1 for spurious spots and padding; ``hkl`` holds the
    simulated (harmonic-resolved) Miller indices (0 for spurious/padding). ``ub`` / ``grain_material``
    are the truth per grain slot ``(n_patterns, max_grains)`` (NaN / −1 fill).
    """

    two_theta: np.ndarray
    chi: np.ndarray
    intensity: np.ndarray
    spot_grain: np.ndarray
    spot_material: np.ndarray
    hkl: np.ndarray
    ub: np.ndarray
    grain_material: np.ndarray

    def __len__(self) -> int:
        return self.two_theta.shape[0]

    @property
    def n_spots(self) -> np.ndarray:
        return np.isfinite(self.two_theta).sum(axis=1)


def grain_count_table(max_grains, n_per_combination: int) -> np.ndarray:
    """Grains per material for every pattern: (n, n_materials) int.

    One material: ``n_per_combination`` patterns of each count 1 … ``max_grains[0]``. Several
    materials: every combination (i, j, …) with 0 ≤ i ≤ max_grains[0] … except all-zero.
    """
    max_grains = [int(g) for g in np.atleast_1d(max_grains)]
    grids = np.stack(np.meshgrid(*[np.arange(g + 1) for g in max_grains], indexing="ij"), -1)
    combos = grids.reshape(-1, len(max_grains))
    combos = combos[combos.sum(axis=1) > 0]
    return np.repeat(combos, n_per_combination, axis=0)


def simulate_patterns(materials: list, calibration: Calibration, grain_counts, *, seed=0,
                      energy_band_kev=DEFAULT_ENERGY_BAND_KEV, mode: str = "lauenn", corruption: dict | None = None,
                      orientations: list | None = None) -> PatternSet:
    """Simulate patterns with ``grain_counts[p, m]`` grains of material ``m`` in pattern ``p``.

    Orientations are uniform random on SO(3), drawn from ``seed``: training, validation and test
    sets use distinct seeds, hence disjoint orientation draws.
    ``orientations`` may give one (n_grains_m, 3, 3) array per material instead.
    """
    if mode not in ("lauenn", "all", "none"):
        raise ValueError(f"mode must be 'lauenn', 'all' or 'none', got {mode!r}")
    rng = np.random.default_rng(seed)
    par = dict(CORRUPTION_DEFAULTS)
    par.update(corruption or {})
    counts = np.asarray(grain_counts, dtype=np.int64)
    if counts.ndim == 1:
        counts = counts[:, None]
    if counts.shape[1] != len(materials):
        raise ValueError(f"grain_counts has {counts.shape[1]} columns for {len(materials)} materials")
    flat, ub_truth, grain_mat = _clean_spots(materials, calibration, counts, rng, energy_band_kev, orientations)
    n_pat = len(counts)
    if mode == "lauenn":
        quart = rng.integers(0, 4, n_pat)  # 0 clean, 1 noise, 2 missing, 3 both
        noisy_pat, missing_pat, spurious_pat = np.isin(quart, (1, 3)), np.isin(quart, (2, 3)), quart > 0
    else:
        noisy_pat = missing_pat = spurious_pat = np.full(n_pat, mode == "all")
    flat = _noisy_and_missing(flat, noisy_pat, missing_pat, par, rng, n_pat)
    flat = _with_spurious(flat, spurious_pat, par, rng, calibration, n_pat)
    return _pack(flat, n_pat, ub_truth, grain_mat)


def _clean_spots(materials, calibration, counts, rng, energy_band_kev, orientations):
    """``(spots, ub (p, g, 3, 3), grain_material (p, g))``: every simulated spot of every
    pattern's grains (flat columns ``pattern, grain, material, two_theta, chi, intensity, h, k, l``)
    and the true orientations (NaN / −1 padded)."""
    n_pat, _ = counts.shape
    max_grains = int(counts.sum(axis=1).max())
    ub_truth = np.full((n_pat, max_grains, 3, 3), np.nan)
    grain_mat = np.full((n_pat, max_grains), -1, dtype=np.int64)
    slot_start = np.concatenate([np.zeros((n_pat, 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    cols = {k: [] for k in ("pattern", "grain", "material", "two_theta", "chi", "intensity", "h", "k", "l")}
    for m, mat in enumerate(materials):
        n_g = counts[:, m]
        total = int(n_g.sum())
        if total == 0:
            continue
        if orientations is not None:
            ub = np.asarray(orientations[m], dtype=float)[:total]
        else:
            ub = random_orientations(total, seed=int(rng.integers(2**62)))
        pat_of = np.repeat(np.arange(n_pat), n_g)
        within = np.arange(total) - np.repeat(np.cumsum(n_g) - n_g, n_g)
        slot = slot_start[pat_of, m] + within
        ub_truth[pat_of, slot] = ub
        grain_mat[pat_of, slot] = m
        s = simulate_spots(mat, ub, calibration, energy_band_kev)
        cols["pattern"].append(pat_of[s.pattern])
        cols["grain"].append(slot[s.pattern])
        cols["material"].append(np.full(len(s), m))
        for key in ("two_theta", "chi", "intensity", "h", "k", "l"):
            cols[key].append(getattr(s, key))
    return {k: np.concatenate(v) for k, v in cols.items()}, ub_truth, grain_mat


def _noisy_and_missing(flat: dict, noisy_pat, missing_pat, par: dict, rng, n_pat: int) -> dict:
    """Angular noise on a fraction of the spots of the noisy patterns; a fraction of the weakest
    spots of the patterns with missing spots dropped."""
    p = flat["pattern"]
    n = len(p)
    noisy = noisy_pat[p] & (rng.random(n) < par["noise_fraction"])
    flat["two_theta"] = flat["two_theta"] + noisy * rng.normal(0, par["noise_sigma_deg"], n)
    flat["chi"] = flat["chi"] + noisy * rng.normal(0, par["noise_sigma_deg"], n)
    # rank by decreasing intensity within pattern
    order = np.lexsort((-flat["intensity"], p))
    n_in = np.bincount(p, minlength=n_pat)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(n_in) - n_in, n_in)
    weak = rank >= np.ceil((1 - par["weak_fraction"]) * n_in[p])
    drop = missing_pat[p] & weak & (rng.random(n) < par["missing_fraction"])
    return {k: v[~drop] for k, v in flat.items()}


def _with_spurious(flat: dict, spurious_pat, par: dict, rng, calibration, n_pat: int) -> dict:
    """Spurious spots (uniform on the detector, intensities of the weaker half of their
    pattern, grain and material −1) added to the patterns ``spurious_pat``."""
    n_in = np.bincount(flat["pattern"], minlength=n_pat)
    n_spur = np.where(spurious_pat, rng.integers(0, np.floor(par["spurious_fraction"] * n_in) + 1), 0)
    if not n_spur.sum():
        return flat
    sp_pat = np.repeat(np.arange(n_pat), n_spur)
    col = rng.uniform(-0.5, calibration.n_cols - 0.5, len(sp_pat))
    row = rng.uniform(-0.5, calibration.n_rows - 0.5, len(sp_pat))
    tth, chi = pixel_to_angles(col, row, calibration)
    # intensities of the weaker half: median intensity of the pattern × U(0, 1)
    med = np.zeros(n_pat)
    for_med = np.lexsort((flat["intensity"], flat["pattern"]))
    starts = np.cumsum(n_in) - n_in
    has = n_in > 0
    med[has] = flat["intensity"][for_med][starts[has] + n_in[has] // 2]
    spur = {"pattern": sp_pat, "grain": np.full(len(sp_pat), -1), "material": np.full(len(sp_pat), -1),
            "two_theta": tth, "chi": chi, "intensity": med[sp_pat] * rng.random(len(sp_pat)),
            "h": np.zeros(len(sp_pat), np.int64), "k": np.zeros(len(sp_pat), np.int64),
            "l": np.zeros(len(sp_pat), np.int64)}
    return {k: np.concatenate([flat[k], spur[k]]) for k in flat}


def _pack(flat: dict, n_pat: int, ub_truth, grain_mat) -> PatternSet:
    """The flat spots as a :class:`PatternSet`, each pattern's spots by decreasing intensity."""
    order = np.lexsort((-flat["intensity"], flat["pattern"]))
    flat = {k: v[order] for k, v in flat.items()}
    p = flat["pattern"]
    n_in = np.bincount(p, minlength=n_pat)
    m_max = max(int(n_in.max()), 1)
    pos = np.arange(len(p)) - np.repeat(np.cumsum(n_in) - n_in, n_in)

    def pad(values, fill, dtype):
        out = np.full((n_pat, m_max), fill, dtype=dtype)
        out[p, pos] = values
        return out

    hkl = np.zeros((n_pat, m_max, 3), np.int64)
    hkl[p, pos] = np.stack([flat["h"], flat["k"], flat["l"]], -1)
    return PatternSet(
        two_theta=pad(flat["two_theta"], np.nan, np.float64),
        chi=pad(flat["chi"], np.nan, np.float64),
        intensity=pad(flat["intensity"], np.nan, np.float64),
        spot_grain=pad(flat["grain"], -1, np.int64),
        spot_material=pad(flat["material"], -1, np.int64),
        hkl=hkl, ub=ub_truth, grain_material=grain_mat,
    )
