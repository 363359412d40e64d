"""Variants with the same spots (issue #12, "spots *and intensities*"): quartz and its Dauphiné twin.

Run:  python benchmarks/bench_intensity_variants.py [--scan-seeds 4] [--first-scan-seed 0]

Quartz (Laue group −3m on a hexagonal lattice): the Dauphiné twin, 60° about c, puts every spot at
the same place; only the intensities tell the two orientations apart
(``laueflow/stages/indexing/intensity_variants.py``). Per scan seed, two synthetic quartz scans
(``laueflow.synth.plan_scan``, 10 × 10 points, 1 µm step, 1.5 µm beam, 6 grains):

* ``plain``: no twins;
* ``dauphine``: Dauphiné twin lamellae in ~60 % of the grains (``twin_law="dauphine"``) and 1°
  sub-grains in ~30 %, so boundary points show a grain *and* its twin (every spot shared, each
  spot's counts the sum of both).

Each point's truth spots (amplitude ≥ 5 σ; spots within 1 px merged into the brighter one, which
gets their counts) with 0.2 px noise, shuffled; the measured intensity is the rendered peak
amplitude (the synthetic scans' intensity model: the simulated intensity compressed, with a
per-reflection scatter of ×/÷ 4, docs/truth-format.md). Indexed three ways: with intensities
(this step), without intensities (flags), and with the step off (``variant_min_coincidence``
1.1: the code before). Reported: (point, grain carrying ≥ 30 % of the beam) found < 0.1°, spurious
grains (no truth grain of the point within 1°) and how many of them are the Dauphiné twin of a
truth grain, spurious grains *not* flagged (silent errors), grains flagged ``variant_ambiguous``,
ms / point.

Model: a small quartz indexer (the configuration of ``bench_indexing_order.GANSI`` for one
material, ≤ 3 grains), cached in ``~/.cache/laueflow/bench_indexing_order``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_indexing_order import GANSI, WORK  # noqa: E402
from bench_indexing_twins import scan_lists  # noqa: E402

SCANS = {"plain": dict(twin_fraction=0.0, subgrain_fraction=0.0),
         "dauphine": dict(twin_fraction=0.6, twin_law="dauphine", subgrain_fraction=0.3)}
MODES = {"intensities": {}, "no intensities": {}, "step off": dict(variant_min_coincidence=1.1)}


def quartz_model():
    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.pipeline.indexers import get_indexer
    from laueflow.stages.indexing.training import IndexerConfig

    cfg = IndexerConfig(**{**GANSI, "max_index": (4,), "max_grains": (3,)})
    return get_indexer(["quartz"], DEFAULT_CALIBRATION, cfg, cache_dir=WORK, verbose=True, threads=1)


def score(out, ub, weight, material, twin):
    """(found, n_strong, spurious, twins among them, spurious not flagged, flagged)."""
    from laueflow.physics.symmetry import reduce_misorientation as mis

    found = strong = spurious = twins = silent = 0
    for p in range(len(ub)):
        got = out["orientation_matrix"][p, :out["grain_count"][p]]
        present = [k for k in range(ub.shape[1]) if weight[p, k] > 0]
        for k in present:
            if weight[p, k] >= 0.3:
                strong += 1
                found += any(mis(g, ub[p, k], material) < 0.1 for g in got)
        for gi, g in enumerate(got):
            if min(mis(g, ub[p, k], material) for k in present) >= 1:
                spurious += 1
                twins += min(mis(g, ub[p, k] @ twin, material) for k in present) < 1
                silent += not out["variant_ambiguous"][p, gi]
    return found, strong, spurious, twins, silent, int(out["variant_ambiguous"].sum())


def main():
    from laueflow.stages.indexing.intensity_variants import position_equivalent_variants
    from laueflow.stages.indexing.stage import index_peaks

    ap = argparse.ArgumentParser()
    ap.add_argument("--scan-seeds", type=int, default=4)
    ap.add_argument("--first-scan-seed", type=int, default=0)
    args = ap.parse_args()
    indexer = quartz_model()
    material = indexer.materials[0]
    twin = position_equivalent_variants(material)[0]
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| scan | seed | indexed | (point, grain ≥ 30 %) found < 0.1° | spurious (Dauphiné twins) | spurious not flagged "
          "| flagged | ms / point |")
    print("|---|---|---|---|---|---|---|---|")
    totals = {}
    for name, kw in SCANS.items():
        for seed in range(args.first_scan_seed, args.first_scan_seed + args.scan_seeds):
            tth, chi, _, _, ub, _, weight, amp = scan_lists(seed, (10, 10), 6, "quartz", intensities=True,
                                                          strain_magnitude=5e-4, **kw)
            for mode, params in MODES.items():
                t = time.perf_counter()
                out = index_peaks(tth, chi, None if mode == "no intensities" else amp, indexer=indexer,
                                  max_grains=3, **params)
                dt = (time.perf_counter() - t) / len(tth)
                r = score(out, ub, weight, material, twin)
                acc = totals.setdefault((name, mode), np.zeros(6, int))
                acc += r
                print(f"| {name} | {seed} | {mode} | {r[0]}/{r[1]} | {r[2]} ({r[3]}) | {r[4]} | {r[5]} "
                      f"| {1000 * dt:.0f} |", flush=True)
    for (name, mode), r in totals.items():
        print(f"| {name} | all | {mode} | {r[0]}/{r[1]} ({100 * r[0] / max(r[1], 1):.1f} %) | {r[2]} ({r[3]}) "
              f"| {r[4]} | {r[5]} | |")


if __name__ == "__main__":
    main()
