"""Order dependence of the indexing (issue #12): spots in intensity order vs shuffled, no intensities.

Run:  python benchmarks/bench_indexing_order.py [--n 200] [--before] [--only cu|gansi]
      [--orders intensity,shuffled,grouped]

Simulated lists (default calibration, the model's energy band): clean spots (no missing or
spurious ones) with 0.2 px Gaussian noise on the pixel position (x and y); 1–5 Cu grains and
1 Si + 1–3 GaN. Each list is indexed twice: spots in intensity order with their intensities, and
the same spots shuffled and without intensities (a peak list without an intensity column, in an
arbitrary order), and grouped grain by grain without intensities (all spots of the
first grain, then the next…; Si last: the list of the issue, whose last grain has no spot among
the first ``n_predict``). Reported: truth grains found within 0.1° (right material), spurious grains
(indexed grains paired with no truth grain), hkl accuracy (``evaluate_indexing``), the mean number
of spots that could start a grain (``n_seed_spots``) and the time per list.

``--before``: ``continue_unexplained=2`` — only the first ``n_predict`` spots may start a grain,
as before issue #12.

Models: Cu = the cached default Cu model (``~/.cache/laueflow/indexers/lauenn-Cu-*.pt``, trained
with ``laueflow train indexer --material Cu``; trained into the work dir with the default config
when absent); GaN + Si = a small model (TINY-sized network, ≤ 3 GaN, ≤ 1 Si) trained once into
``~/.cache/laueflow/bench_indexing_order`` (about a minute).
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

WORK = Path(os.environ.get("LAUEFLOW_BENCH_WORK", Path.home() / ".cache" / "laueflow" / "bench_indexing_order"))
GANSI = dict(max_index=(4, 4), max_grains=(3, 1), n_train=150, n_validation=30, n_centres=40,
             hidden=(96, 96, 96), epochs=20, batch_size=256, learning_rate=3e-3, min_class_count=5,
             patience=3, seed=0)
PIXEL_NOISE = 0.2


def cu_model():
    from laueflow.io.indexer_files import load_indexer
    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.pipeline.indexers import get_indexer

    files = sorted(glob.glob(str(Path.home() / ".cache" / "laueflow" / "indexers" / "lauenn-Cu-*.pt")))
    if files:
        return load_indexer(files[0])
    return get_indexer(["Cu"], DEFAULT_CALIBRATION, cache_dir=WORK, verbose=True, threads=1)


def gansi_model():
    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.pipeline.indexers import get_indexer
    from laueflow.stages.indexing.training import IndexerConfig

    return get_indexer(["GaN", "Si"], DEFAULT_CALIBRATION, IndexerConfig(**GANSI), cache_dir=WORK,
                       verbose=True, threads=1)


def lists(indexer, counts, seed):
    """Clean simulated lists with 0.2 px position noise: (PatternSet, two_theta, chi)."""
    from laueflow.physics.geometry import DEFAULT_CALIBRATION as cal, angles_to_pixel, pixel_to_angles
    from laueflow.stages.indexing.training_data import simulate_patterns

    ps = simulate_patterns(indexer.materials, cal, counts, seed=seed, mode="none",
                           energy_band_kev=indexer.config.energy_band_kev)
    rng = np.random.default_rng(seed + 1)
    col, row = angles_to_pixel(ps.two_theta, ps.chi, cal)
    col = col + rng.normal(0, PIXEL_NOISE, col.shape)
    row = row + rng.normal(0, PIXEL_NOISE, row.shape)
    tth, chi = pixel_to_angles(col, row, cal)
    valid = np.isfinite(ps.two_theta)
    return ps, np.where(valid, tth, np.nan), np.where(valid, chi, np.nan)


def shuffle(ps, tth, chi, seed):
    """Spots of each list in a random order (padding stays at the end)."""
    rng = np.random.default_rng(seed)
    perm = np.tile(np.arange(tth.shape[1]), (len(tth), 1))
    for i, m in enumerate(np.isfinite(tth).sum(axis=1)):
        perm[i, :m] = rng.permutation(m)
    take = lambda a: np.take_along_axis(a, perm if a.ndim == 2 else perm[..., None], 1)  # noqa: E731
    return take(tth), take(chi), take(ps.hkl), take(ps.spot_grain)


def grouped(ps, tth, chi):
    """'File order' by grain: all spots of grain slot 0 (intensity order), then slot 1, … (GaN
    grains first, Si last): the last grain's spots all come after the first n_predict."""
    key = np.where(ps.spot_grain >= 0, ps.spot_grain, np.iinfo(np.int64).max)
    key = np.where(np.isfinite(tth), key, np.iinfo(np.int64).max)
    perm = np.argsort(key, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, perm if a.ndim == 2 else perm[..., None], 1)  # noqa: E731
    return take(tth), take(chi), take(ps.hkl), take(ps.spot_grain)


ORDERS = ("intensity", "shuffled", "grouped")


def run_case(indexer, counts, seed, max_grains, before: bool, orders=ORDERS):
    from laueflow.stages.indexing.evaluate import evaluate_indexing
    from laueflow.stages.indexing.stage import index_peaks

    kw = {"continue_unexplained": 2.0} if before else {}
    ps, tth, chi = lists(indexer, counts, seed)
    rows = {}
    s_tth, s_chi, s_hkl, s_grain = shuffle(ps, tth, chi, seed + 2)
    g_tth, g_chi, g_hkl, g_grain = grouped(ps, tth, chi)
    for name, label, args, hkl, grain in (
            ("intensity", "intensity order", (tth, chi, ps.intensity), ps.hkl, ps.spot_grain),
            ("shuffled", "shuffled, no intensities", (s_tth, s_chi, None), s_hkl, s_grain),
            ("grouped", "grain by grain, no intensities", (g_tth, g_chi, None), g_hkl, g_grain)):
        if name not in orders:
            continue
        t = time.perf_counter()
        out = index_peaks(*args, indexer=indexer, max_grains=max_grains, **kw)
        dt = (time.perf_counter() - t) / len(ps)
        ev = evaluate_indexing(out, ps.ub, ps.grain_material, indexer.materials, truth_hkl=hkl, truth_grain=grain)
        rows[label] = (ev, float(np.mean(out["n_seed_spots"])) if "n_seed_spots" in out else float("nan"), dt)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="lists per grain combination")
    ap.add_argument("--before", action="store_true", help="only the first n_predict spots seed (pre-#12)")
    ap.add_argument("--only", choices=("cu", "gansi"))
    ap.add_argument("--orders", default=",".join(ORDERS), help=f"comma-separated subset of {ORDERS}")
    args = ap.parse_args()
    cases = []
    if args.only in (None, "cu"):
        cu = cu_model()
        cases += [(cu, f"{g} Cu", np.full((args.n, 1), g), 7000 + g, 5) for g in (1, 2, 3, 4, 5)]
    if args.only in (None, "gansi"):
        gs = gansi_model()
        cases += [(gs, f"1 Si + {g} GaN", np.tile([g, 1], (args.n, 1)), 7100 + g, 4) for g in (1, 2, 3)]
    print(f"{'before' if args.before else 'after'} (issue #12); {args.n} lists per row; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    print("| lists | order | found < 0.1° | spurious | hkl accuracy | seed spots (mean) | ms / list |")
    print("|---|---|---|---|---|---|---|")
    for indexer, label, counts, seed, mg in cases:
        for order, (ev, seeds, dt) in run_case(indexer, counts, seed, mg, args.before, args.orders.split(",")).items():
            print(f"| {label} | {order} | {ev['found_precise']}/{ev['n_truth_grains']} "
                  f"({100 * ev['found_precise_fraction']:.2f} %) | {ev['spurious']} "
                  f"| {100 * ev['hkl_accuracy']:.2f} % | {seeds:.0f} | {1000 * dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
