"""Truth spot table of a synthetic scan: which spots, how bright, what shape.

Takes a :class:`~laueflow.synth.microstructure.Microstructure`, simulates the Laue spots of every
(point, grain slot) with :func:`laueflow.physics.simulate.simulate_spots` (batched per material),
and draws amplitudes and profiles. Shape and brightness factors are tied to the reflection
``(grain, h, k, l)`` through a counter-based hash of the seed, so a reflection keeps its look over
all the points of its grain; a small per-point jitter is added on top.

Every spot is rendered as 1 to 4 elliptical Gaussian *components* (see :class:`SpotComponents`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from ..physics.simulate import DEFAULT_ENERGY_BAND_KEV, SPOT_QUALITY, simulate_spots
from .microstructure import Microstructure
from .render import render_components

__all__ = ["QUALITY", "SpotTable", "SpotComponents", "build_spots"]

#: ``spot_quality`` codes
QUALITY = SPOT_QUALITY  # the one vocabulary (laueflow.physics.simulate)
_N_COMPONENTS = np.array([1, 1, 2, 4])


@dataclass
class SpotTable:
    """Flat truth table, one row per rendered spot (names as in ``docs/truth-format.md``)."""

    y: np.ndarray
    x: np.ndarray
    slot: np.ndarray
    grain: np.ndarray
    material: np.ndarray
    h: np.ndarray
    k: np.ndarray
    l: np.ndarray
    energy_kev: np.ndarray
    two_theta: np.ndarray
    chi: np.ndarray
    col: np.ndarray
    row: np.ndarray
    amplitude: np.ndarray
    noise_sigma: np.ndarray
    background: np.ndarray
    sigma_major: np.ndarray
    sigma_minor: np.ndarray
    angle_deg: np.ndarray
    quality: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class SpotComponents:
    """Gaussian components to draw, sorted by image (``image = y · nx + x``)."""

    spot: np.ndarray  # index into the SpotTable
    image: np.ndarray
    col: np.ndarray
    row: np.ndarray
    amplitude: np.ndarray
    sigma_major: np.ndarray
    sigma_minor: np.ndarray
    angle: np.ndarray  # radians
    image_start: np.ndarray  # (n_images + 1,) components of image i: [start[i], start[i+1])


# ------------------------------------------------------------------------------------ hashing
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_uniform(seed: int, stream: int, *keys) -> np.ndarray:
    """Deterministic uniforms in (0, 1) from integer keys (arrays broadcast), one per stream."""
    with np.errstate(over="ignore"):
        x = np.full(np.broadcast(*keys).shape, np.uint64(seed & 0xFFFFFFFF) * np.uint64(2654435761) + np.uint64(stream))
        for key in keys:
            x = _splitmix64(x ^ (np.asarray(key).astype(np.int64).astype(np.uint64)))
        x = _splitmix64(x)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


# -------------------------------------------------------------------------------------- build
def build_spots(
    micro: Microstructure,
    materials: list,
    calibration,
    rng: np.random.Generator,
    *,
    seed: int,
    energy_band_kev=DEFAULT_ENERGY_BAND_KEV,
    background=None,
    halo_scale=None,
    read_noise: float = 2.5,
    gain: float = 0.08,
    saturation: int = 65535,
    amplitude_median: float = 800.0,
    amplitude_decades: float = 0.75,
    bad_spot_fraction: float = 0.1,
    broad_spot_fraction: float = 0.03,
    sigma_median: float = 1.05,
    min_amplitude: float = 5.0,
):
    """Simulate, draw and return ``(SpotTable, SpotComponents)`` for a whole scan.

    Amplitude (peak counts above background) of a spot of a grain with weight ``w``:
    ``log10 A = log10(amplitude_median) + amplitude_decades · (0.6 z + 0.8 n) + log10 w + 0.05 n'``,
    ``z`` = the spot's log-intensity from :func:`simulate_spots` standardised over the material's
    spots in the scan, ``n`` a normal deviate tied to the reflection (grain, hkl), ``n'`` a per-point
    jitter. Spots below ``min_amplitude`` counts are not rendered (and not in the truth).
    ``background = (dark, halo)`` images give each spot's local background and noise σ.
    """
    ny, nx, n_slots = micro.grain_id.shape
    flat_id = micro.grain_id.reshape(-1)
    sim = _simulated_reflections(micro, materials, calibration, energy_band_kev)
    entry = sim["entry"]
    grain = flat_id[entry]
    n = len(entry)

    def u(stream):  # uniform tied to the reflection (grain, hkl)
        return _hash_uniform(seed, stream, grain, sim["h"], sim["k"], sim["l"])

    log_amp = (np.log10(amplitude_median) + amplitude_decades * (0.6 * sim["z"] + 0.8 * ndtri(u(1)))
               + np.log10(micro.grain_weight.reshape(-1)[entry]) + 0.05 * rng.standard_normal(n))
    amp = 10.0**log_amp
    grain_factor = np.exp(0.12 * ndtri(_hash_uniform(seed, 2, np.arange(len(micro.domains)))))
    s_major, s_minor, angle, quality = _main_profiles(u, grain_factor[grain], sigma_median, broad_spot_fraction,
                                                      bad_spot_fraction)
    comp = _components(amp, s_major, s_minor, angle, quality, rng)
    sig_major_out, sig_minor_out, angle_out = _profile_moments(comp, n)
    comp["col"] = sim["col"][comp["spot"]] + comp["offset"][:, 0]
    comp["row"] = sim["row"][comp["spot"]] + comp["offset"][:, 1]
    peak = _peak_heights(amp, comp, calibration.frame_shape)
    iy, rem = np.divmod(entry, nx * n_slots)
    ix, slot = np.divmod(rem, n_slots)
    bg, sigma = _local_background(sim["col"], sim["row"], iy * nx + ix, calibration, background, halo_scale,
                                  read_noise, gain, ny * nx)
    quality = np.where(peak + bg >= saturation, QUALITY["saturated"], quality).astype(np.int8)
    table = SpotTable(
        y=iy.astype(np.int32), x=ix.astype(np.int32), slot=slot.astype(np.int32),
        grain=grain.astype(np.int32), material=micro.grain_material.reshape(-1)[entry].astype(np.int16),
        h=sim["h"].astype(np.int32), k=sim["k"].astype(np.int32), l=sim["l"].astype(np.int32),
        energy_kev=sim["energy_kev"], two_theta=sim["two_theta"], chi=sim["chi"],
        col=sim["col"], row=sim["row"], amplitude=peak, noise_sigma=sigma, background=bg,
        sigma_major=sig_major_out, sigma_minor=sig_minor_out, angle_deg=angle_out, quality=quality,
    )
    return _drop_faint(table, comp, peak >= min_amplitude, iy * nx + ix, ny * nx)


def _simulated_reflections(micro: Microstructure, materials: list, calibration, energy_band_kev) -> dict:
    """Every spot on the detector of every (point, slot), batched per material, sorted by
    ``entry`` = flat (y, x, slot): ``entry``, ``z`` (log intensity standardised per material),
    ``h, k, l``, ``col, row`` (px), ``energy_kev``, ``two_theta``, ``chi`` (degrees)."""
    flat_id = micro.grain_id.reshape(-1)
    flat_mat = micro.grain_material.reshape(-1)
    ub = micro.orientation_matrix.reshape(-1, 3, 3)
    parts = []
    for m, material in enumerate(materials):
        entries = np.flatnonzero((flat_id >= 0) & (flat_mat == m))
        if len(entries) == 0:
            continue
        s = simulate_spots(material, ub[entries], calibration, energy_band_kev=energy_band_kev)
        if len(s) == 0:
            continue
        log_i = np.log10(np.maximum(s.intensity, 1e-300))
        z = (log_i - np.median(log_i)) / max(np.std(log_i), 1e-9)
        parts.append((entries[s.pattern], s, z))
    if not parts:
        raise ValueError("no spot falls on the detector: check the calibration and energy band")
    entry = np.concatenate([p[0] for p in parts])
    order = np.argsort(entry, kind="stable")  # by (y, x, slot)
    out = {name: np.concatenate([getattr(p[1], name) for p in parts])[order]
           for name in ("h", "k", "l", "col", "row", "energy_kev", "two_theta", "chi")}
    return {**out, "entry": entry[order], "z": np.concatenate([p[2] for p in parts])[order]}


def _main_profiles(u, grain_factor, sigma_median: float, broad_fraction: float, bad_fraction: float):
    """``(sigma_major, sigma_minor, angle, quality)`` of each spot's main component (px, rad):
    the domain's broadening ``grain_factor`` × a scatter tied to the reflection (``u(stream)``:
    its uniform deviates); a few broad spots; bad spots streaked, split or irregular."""
    s_minor = np.clip(sigma_median * grain_factor * np.exp(0.15 * ndtri(u(3))), 0.7, 2.2)
    aspect = 1.0 + np.abs(0.18 * ndtri(u(4)))
    s_major = s_minor * aspect
    broad = u(5) < broad_fraction
    widen = 1.6 + 1.4 * u(6)
    s_major = np.where(broad, s_major * widen, s_major)
    s_minor = np.where(broad, s_minor * (1.0 + (widen - 1.0) * u(7)), s_minor)
    angle = np.pi * u(8)
    bad = u(9) < bad_fraction
    quality = np.where(bad, 1 + np.minimum((u(10) * 3).astype(np.int64), 2), 0).astype(np.int8)
    s_major = np.where(quality == QUALITY["streaked"], 2.0 + 2.5 * u(11), s_major)
    return s_major, s_minor, angle, quality


def _components(amp, s_major, s_minor, angle, quality, rng) -> dict:
    """The Gaussian components of every spot (1 for good / streaked, 2 for split, 4 for
    irregular): ``spot`` (index of the spot), ``n`` (components of that spot), ``amplitude``,
    ``major``, ``minor`` (px), ``angle`` (rad), ``offset (c, 2)`` from the spot's position (px),
    with each spot's flux-weighted centroid on its simulated position."""
    n = len(amp)
    n_comp = _N_COMPONENTS[quality]
    spot_of = np.repeat(np.arange(n), n_comp)
    first = np.cumsum(n_comp) - n_comp
    j = np.arange(len(spot_of)) - first[spot_of]  # component rank within its spot
    c_amp, c_major, c_minor, c_angle = (v[spot_of].copy() for v in (amp, s_major, s_minor, angle))
    off = np.zeros((len(spot_of), 2))
    q = quality[spot_of]
    extra = j > 0
    split = extra & (q == 2)
    nc = len(spot_of)
    direction = rng.uniform(0, 2 * np.pi, nc)
    unit = np.stack([np.cos(direction), np.sin(direction)], -1)
    # split / double: a second copy 2.5-5 px away, 30-90 % as bright
    sep = 2.5 + 2.5 * rng.random(nc)
    off[split] = (sep[:, None] * unit)[split]
    c_amp[split] *= rng.uniform(0.3, 0.9, nc)[split]
    # irregular: comet-like, a core and three fading blobs trailing along one direction
    irr = q == 3
    tail = irr & extra
    trail = unit[first[spot_of]]  # one direction per spot
    along = j * rng.uniform(1.2, 2.0, nc)
    across = rng.normal(0, 0.8, nc)
    off[tail] = (along[:, None] * trail + across[:, None] * trail[:, ::-1] * [-1, 1])[tail]
    c_amp[tail] *= (0.75 ** j * rng.uniform(0.5, 1.0, nc))[tail]
    c_major[irr] *= rng.uniform(0.8, 1.6, nc)[irr]
    c_minor[irr] = np.minimum(c_minor[irr] * rng.uniform(0.8, 1.6, nc)[irr], c_major[irr])
    c_angle[irr] = rng.uniform(0, np.pi, nc)[irr]
    # put the flux-weighted centroid of every spot on its simulated position
    flux = c_amp * c_major * c_minor
    total = np.bincount(spot_of, flux, minlength=n)
    centroid = np.stack([np.bincount(spot_of, flux * off[:, i], minlength=n) for i in range(2)], -1) / total[:, None]
    off -= centroid[spot_of]
    return {"spot": spot_of, "n": n_comp[spot_of], "amplitude": c_amp, "major": c_major, "minor": c_minor,
            "angle": c_angle, "offset": off, "flux": flux, "total": total}


def _profile_moments(comp: dict, n: int):
    """``(sigma_major, sigma_minor, angle_deg)`` of each of the ``n`` spots' whole profile, from
    the flux-weighted second moments of its components."""
    spot_of, off = comp["spot"], comp["offset"]
    major, minor = comp["major"], comp["minor"]
    ca, sa = np.cos(comp["angle"]), np.sin(comp["angle"])
    cov = np.empty((len(spot_of), 2, 2))
    cov[:, 0, 0] = major**2 * ca**2 + minor**2 * sa**2 + off[:, 0] ** 2
    cov[:, 1, 1] = major**2 * sa**2 + minor**2 * ca**2 + off[:, 1] ** 2
    cov[:, 0, 1] = cov[:, 1, 0] = (major**2 - minor**2) * ca * sa + off[:, 0] * off[:, 1]
    spot_cov = np.stack(
        [np.bincount(spot_of, comp["flux"] * cov[:, a, b], minlength=n) for a, b in ((0, 0), (1, 1), (0, 1))], -1
    ) / comp["total"][:, None]
    evals, evecs = np.linalg.eigh(np.stack([spot_cov[:, [0, 2]], spot_cov[:, [2, 1]]], axis=1))
    return np.sqrt(evals[:, 1]), np.sqrt(evals[:, 0]), np.rad2deg(np.arctan2(evecs[:, 1, 1], evecs[:, 0, 1])) % 180.0


def _peak_heights(amp, comp: dict, frame) -> np.ndarray:
    """Peak counts of each spot: its amplitude, or for a multi-component spot the maximum of
    its summed profile on the pixel grid of ``frame (rows, cols)``."""
    peak = amp.copy()
    multi = np.flatnonzero(comp["n"] > 1)
    if len(multi) == 0:
        return peak
    ci, idx, val = render_components(*(comp[name][multi] for name in ("col", "row", "amplitude", "major", "minor",
                                                                     "angle")), frame)
    key = comp["spot"][multi][ci].astype(np.int64) * (frame[0] * frame[1]) + idx
    uniq, inv = np.unique(key, return_inverse=True)
    summed = np.bincount(inv, val.astype(np.float64))
    owner = uniq // (frame[0] * frame[1])
    best = np.zeros(len(amp))
    np.maximum.at(best, owner, summed)
    has = np.unique(owner)
    peak[has] = best[has]
    return peak


def _local_background(col, row, image, calibration, background, halo_scale, read_noise: float, gain: float,
                      n_images: int):
    """``(background, noise_sigma)`` counts at each spot's pixel of image ``image`` (flat scan
    index): dark + halo (scaled per image by ``halo_scale``), σ² = read noise² + gain · halo."""
    ic = np.clip(np.rint(col).astype(np.int64), 0, calibration.n_cols - 1)
    ir = np.clip(np.rint(row).astype(np.int64), 0, calibration.n_rows - 1)
    if background is None:
        halo_here, bg = np.zeros(len(col)), np.zeros(len(col))
    else:
        dark, halo = background
        scale = np.ones(n_images) if halo_scale is None else np.asarray(halo_scale).reshape(-1)
        halo_here = halo[ir, ic].astype(float) * scale[image]
        bg = dark[ir, ic] + halo_here
    return bg, np.sqrt(read_noise**2 + gain * halo_here)


def _drop_faint(table: SpotTable, comp: dict, keep, image, n_images: int):
    """``(table, SpotComponents)`` of the spots in ``keep`` only, components renumbered and
    sorted by image (flat scan index ``image`` of each spot)."""
    new_index = np.cumsum(keep) - 1
    spot_of = comp["spot"]
    ckeep = keep[spot_of]
    table = SpotTable(**{name: getattr(table, name)[keep] for name in table.__dataclass_fields__})
    image = image[spot_of][ckeep]
    corder = np.argsort(image, kind="stable")
    comps = SpotComponents(
        spot=new_index[spot_of][ckeep][corder],
        image=image[corder],
        col=comp["col"][ckeep][corder],
        row=comp["row"][ckeep][corder],
        amplitude=comp["amplitude"][ckeep][corder].astype(np.float32),
        sigma_major=comp["major"][ckeep][corder].astype(np.float32),
        sigma_minor=comp["minor"][ckeep][corder].astype(np.float32),
        angle=comp["angle"][ckeep][corder].astype(np.float32),
        image_start=np.searchsorted(image[corder], np.arange(n_images + 1)),
    )
    return table, comps
