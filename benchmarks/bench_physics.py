"""Benchmark the Laue spot simulator: single-grain patterns/s on one CPU core.

Run:  python benchmarks/bench_physics.py [--patterns 4000] [--material Cu]
Issue #2 target: >= 2,000 single-grain Cu patterns/s on one core.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, set before numpy loads

import argparse
import time

import numpy as np

from laueflow.physics import DEFAULT_CALIBRATION, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations
from laueflow.physics.strain import ub_from_deviatoric_strain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", type=int, default=4000)
    parser.add_argument("--material", default="Cu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    material = get_material(args.material)
    orientations = random_orientations(args.patterns, seed=0)
    simulate_spots(material, orientations[:8], DEFAULT_CALIBRATION)  # build the reflection table once
    best = np.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        spots = simulate_spots(material, orientations, DEFAULT_CALIBRATION)
        best = min(best, time.perf_counter() - start)
    print(f"{args.material}: {args.patterns / best:,.0f} single-grain patterns/s on one core "
          f"({len(spots) / args.patterns:.1f} spots/pattern, best of {args.repeats})")
    eps = np.diag([1e-3, -5e-4, -5e-4])
    strained = np.array([ub_from_deviatoric_strain(u, eps, material.lattice_parameters) for u in orientations])
    start = time.perf_counter()
    simulate_spots(material, strained, DEFAULT_CALIBRATION)
    print(f"{args.material} strained UB: {args.patterns / (time.perf_counter() - start):,.0f} patterns/s on one core")


if __name__ == "__main__":
    main()
