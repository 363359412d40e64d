"""Throughput of the synthetic scan generator on one core.

    python benchmarks/bench_render.py [--images 20] [--patterns 2000]

Prints full-size (2018 × 2016 uint16) images rendered per second (build the array: background,
spots, noise; no file writing), and Laue patterns simulated per second by
``simulate_spots`` for single-grain Cu orientations in one batched call.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def bench_render(n_images: int) -> float:
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(material="Cu", shape=(4, 5), grains=6, seed=0, twin_fraction=0.3, deep_grains=2)
    plan.render(0)  # warm-up
    n = min(n_images, plan.n_images)
    t = time.perf_counter()
    for i in range(n):
        plan.render(i)
    dt = time.perf_counter() - t
    spots = len(plan.spots) / plan.n_images
    print(f"render: {n / dt:.1f} images/s ({1e3 * dt / n:.1f} ms/image, {spots:.0f} spots/image, 1 core)")
    return n / dt


def bench_simulate_spots(n_patterns: int) -> float:
    from scipy.spatial.transform import Rotation

    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.physics.materials import get_material
    from laueflow.physics.simulate import simulate_spots

    cu = get_material("Cu")
    ub = Rotation.random(n_patterns, rng=np.random.default_rng(0)).as_matrix()
    simulate_spots(cu, ub[:4], DEFAULT_CALIBRATION)  # warm-up (reflection table)
    t = time.perf_counter()
    spots = simulate_spots(cu, ub, DEFAULT_CALIBRATION)
    dt = time.perf_counter() - t
    print(f"simulate_spots: {n_patterns / dt:.0f} patterns/s (Cu, 5-23 keV, "
          f"{len(spots) / n_patterns:.0f} spots/pattern, batched, 1 core)")
    return n_patterns / dt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--patterns", type=int, default=2000)
    args = parser.parse_args()
    bench_render(args.images)
    bench_simulate_spots(args.patterns)
