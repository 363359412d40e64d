"""Training images for the autoencoder: many small simulated scans, preprocessed like real frames.

A full 2018 × 2016 frame costs 40–190 ms to render (4 M noise draws, ``benchmarks/results.md``),
which would dominate training. :func:`fast_block_means` gives the *block means* of the frame that
:meth:`~laueflow.synth.scan.ScanPlan.render` would draw without drawing it: block means are
linear, so ``block_means(dark + s·halo + spots + noise) = block_means(dark) + s·block_means(halo)
+ block_means(spots) + noise of the mean``; the background terms are computed once per scan (by
:func:`~laueflow.kernels.downsample.block_means` itself), the spots from their sparse pixels with
their shot noise, and the noise of a block mean is Gaussian with variance ``Σ σ² / b⁴``. Saturation
is applied pixel by pixel; rounding and the two dead pixels are left out. The result then goes
through the same :func:`~laueflow.kernels.downsample.subtract_background` and
:func:`~laueflow.kernels.downsample.scale_counts` as a real frame; ``tests/synth`` checks it
against ``preprocess_frames(plan.render(i), mask)``.

:func:`random_scan_parameters` draws a scan (material, grains, twins, sub-grains, second phase,
strain, noise and intensity levels); :func:`training_images` renders a list of them.
"""
from __future__ import annotations

import numpy as np

from ..kernels.downsample import (PREPROCESS_DEFAULTS, block_means, crop_geometry, scale_counts,
                                  subtract_background)
from .render import render_components
from .scan import ScanParameters, ScanPlan, plan_scan

__all__ = ["TRAINING_MATERIALS", "HELD_OUT_MATERIAL", "random_scan_parameters", "fast_block_means",
           "scan_images", "training_images", "scored_scans"]

#: materials of the generic model's training scans (the library's, docs/materials.md) …
TRAINING_MATERIALS = ("Cu", "Al", "Ni", "W", "alpha-Fe", "Si", "Ge", "GaN", "ZnO", "Ti", "Al2O3", "ZrO2", "UO2")
#: … and the one left out, to evaluate on a material the model never saw (tetragonal β-Sn)
HELD_OUT_MATERIAL = "Sn"

_NOISE_STREAM = 7  # distinct from the scan's own streams (0–3)


def random_scan_parameters(rng: np.random.Generator, seed: int, materials=TRAINING_MATERIALS,
                           shape=(4, 5)) -> ScanParameters:
    """One training scan: random material, 1–10 grains, twins/sub-grains sometimes, a second phase
    or substrate sometimes, strain 10⁻⁴–3·10⁻³, read noise 1.5–5 counts, gain 0.04–0.15,
    median spot amplitude 200–5000 counts."""
    materials = list(materials)
    material = materials[rng.integers(len(materials))]
    others = [m for m in materials if m != material]
    kw = dict(
        material=material, shape=tuple(shape), seed=int(seed), grains=int(rng.integers(1, 11)),
        twin_fraction=float(rng.choice([0.0, 0.0, 0.3])),
        subgrain_fraction=float(rng.choice([0.0, 0.0, 0.3])),
        subgrain_misorientation_deg=float(rng.uniform(0.3, 2.0)),
        strain_magnitude=float(10 ** rng.uniform(-4, np.log10(3e-3))),
        orientation_gradient_deg_per_um=float(rng.uniform(0.0, 0.1)),
        read_noise=float(rng.uniform(1.5, 5.0)), gain=float(rng.uniform(0.04, 0.15)),
        amplitude_median=float(10 ** rng.uniform(np.log10(200), np.log10(5000))),
        deep_grains=int(rng.integers(0, 3)),
    )
    extra = rng.uniform()
    if extra < 0.15 and others:
        kw["second_phase"] = others[rng.integers(len(others))]
    elif extra < 0.25 and "Si" in others:
        kw["substrate"] = "Si"
    return ScanParameters(**kw)


def _background_terms(plan: ScanPlan, size: int):
    """Per scan: block means of the dark and halo images, σ of a block mean's background noise."""
    dark, halo, sigma = plan.dark, plan.halo, plan.background_sigma
    b = crop_geometry(*dark.shape, size)[2]
    var_mean = block_means(sigma.astype(np.float32) ** 2, size=size) / np.float32(b * b)
    return block_means(dark, size=size), block_means(halo, size=size), np.sqrt(var_mean)


def fast_block_means(plan: ScanPlan, indices, *, size: int = 128, terms=None) -> np.ndarray:
    """Block means ``(len(indices), n, n)`` float32 of the frames ``plan.render(i)`` would draw
    (module docstring), with their own noise stream (``[seed, 7, index]``)."""
    rows, cols = plan.calibration.frame_shape
    r0, c0, b, n = crop_geometry(rows, cols, size)
    dark_m, halo_m, sigma_m = terms if terms is not None else _background_terms(plan, size)
    c, p = plan.components, plan.params
    dark, halo = plan.dark, plan.halo
    out = np.empty((len(indices), n, n), np.float32)
    scale = plan.halo_scale.reshape(-1)
    for k, index in enumerate(indices):
        lo, hi = c.image_start[index], c.image_start[index + 1]
        _, flat, value = render_components(c.col[lo:hi], c.row[lo:hi], c.amplitude[lo:hi], c.sigma_major[lo:hi],
                                           c.sigma_minor[lo:hi], c.angle[lo:hi], (rows, cols))
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, _NOISE_STREAM, int(index)]))
        shot = value + rng.standard_normal(len(value), dtype=np.float32) * np.sqrt(
            np.float32(p.gain) * np.maximum(value, 0))
        pixel, which = np.unique(flat, return_inverse=True)  # components overlap: sum, then clip
        above = np.bincount(which, weights=shot).astype(np.float32)
        room = p.saturation - dark.reshape(-1)[pixel] - np.float32(scale[index]) * halo.reshape(-1)[pixel]
        above = np.minimum(above, room)  # saturated pixels stop at the detector's maximum
        r, cc = pixel // cols - r0, pixel % cols - c0
        inside = (r >= 0) & (r < n * b) & (cc >= 0) & (cc < n * b)
        block = (r[inside] // b) * n + cc[inside] // b
        spots = np.bincount(block, weights=above[inside], minlength=n * n).reshape(n, n) / (b * b)
        noise = rng.standard_normal((n, n), dtype=np.float32) * sigma_m
        out[k] = dark_m + np.float32(scale[index]) * halo_m + spots.astype(np.float32) + noise
    return out


def scan_images(plan: ScanPlan, preprocess=None) -> np.ndarray:
    """Every point of ``plan`` → ``(n_images, size, size)`` float32 in [0, 1] (fast path)."""
    p = {**PREPROCESS_DEFAULTS, **(preprocess or {})}
    means = fast_block_means(plan, range(plan.n_images), size=p["size"])
    counts = subtract_background(means, size=p["size"], background_block=p["background_block"])
    return scale_counts(counts, **{k: p[k] for k in ("scaling", "noise_floor_counts", "log_scale_counts",
                                                     "log_max_counts", "percentile")})


def training_images(seeds, *, materials=TRAINING_MATERIALS, shape=(4, 5), preprocess=None,
                    log=None) -> tuple[np.ndarray, list[str]]:
    """Images of one random scan per seed (:func:`random_scan_parameters`, its generator seeded by
    the seed): ``(n_scans · ny · nx, size, size)`` float32 and each scan's material."""
    images, names = [], []
    for seed in seeds:
        params = random_scan_parameters(np.random.default_rng([int(seed), 11]), int(seed), materials, shape)
        plan = plan_scan(params)
        images.append(scan_images(plan, preprocess))
        names.append(params.material)
        if log is not None:
            log(f"scan {seed}: {params.material}, {params.grains} grains → {len(images[-1])} images")
    return np.concatenate(images), names


def scored_scans(seeds, *, materials=TRAINING_MATERIALS, shape=(10, 10), preprocess=None,
                 min_domains: int = 3, count: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scans with known grain maps, to score how well features separate grains:
    ``{"<material> <seed>": (images (ny · nx, size, size), true domain per point (ny · nx,))}`` for
    each seed whose random scan (:func:`random_scan_parameters`) shows ≥ ``min_domains`` domains,
    the first ``count`` such seeds (None: all)."""
    out = {}
    for seed in seeds:
        if count is not None and len(out) >= count:
            break
        params = random_scan_parameters(np.random.default_rng([int(seed), 11]), int(seed), materials, shape)
        plan = plan_scan(params)
        truth = np.asarray(plan.micro.grain_map).reshape(-1)
        if len(np.unique(truth)) >= min_domains:
            out[f"{params.material} {seed}"] = (scan_images(plan, preprocess), truth)
    return out
