"""Benchmark strain refinement: ms per grain (one CPU core), including re-matching.

Run:  python benchmarks/bench_strain.py [--grains 200] [--material W]
Issue #6 target: <= 5 ms per grain for a 50-spot grain (5 tolerance steps 0.5° → 0.1°).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import time

import numpy as np

from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.geometry import pixel_to_angles
from laueflow.physics.orientations import random_orientations, rotation_about_axis
from laueflow.physics.strain import deviatoric_strain_crystal, ub_from_deviatoric_strain
from laueflow.stages.strain import refine_grains


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grains", type=int, default=200)
    parser.add_argument("--material", default="W")
    parser.add_argument("--noise-px", type=float, default=0.1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    material = get_material(args.material)
    u = random_orientations(args.grains, seed=1)
    e = rng.normal(0, 1e-3, (args.grains, 3, 3))
    e = (e + np.swapaxes(e, 1, 2)) / 2
    e -= np.trace(e, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    ub = np.stack([ub_from_deviatoric_strain(u[i], e[i], material.lattice_parameters) for i in range(args.grains)])
    spots = simulate_spots(material, ub, CAL)
    counts = spots.counts(args.grains)
    size = counts.max()
    col = np.full((args.grains, size), np.nan)
    row = col.copy()
    for i in range(args.grains):
        s = spots.for_pattern(i)
        col[i, : len(s)] = s.col + rng.normal(0, args.noise_px, len(s))
        row[i, : len(s)] = s.row + rng.normal(0, args.noise_px, len(s))
    tth, chi = pixel_to_angles(col, row, CAL)
    start = np.stack([x @ rotation_about_axis(rng.normal(size=3), 0.1) for x in u])
    t0 = time.perf_counter()
    result = refine_grains(start, np.arange(args.grains), np.zeros(args.grains, int), [material], tth, chi, col, row, CAL)
    elapsed = time.perf_counter() - t0
    ok = result.status == 0
    err = deviatoric_strain_crystal(result.ub, material.lattice_parameters) - e
    print(f"{args.material}: {args.grains} grains, median {np.median(result.n_pairs):.0f} matched spots, "
          f"{elapsed / args.grains * 1e3:.2f} ms/grain on one core ({args.grains / elapsed:.0f} grains/s), "
          f"{ok.mean():.1%} ok, strain RMS error {np.sqrt(np.mean(err[ok] ** 2)):.1e} at {args.noise_px} px noise")


if __name__ == "__main__":
    main()
