"""Twin / pseudo-symmetry acceptance (issue #12, deliverable 3): the issue's bars from one command.

Run:  python benchmarks/bench_indexing_twins.py [--n 1000] [--rules space_group,lauetools]
      [--only lists|scan] [--scan-seeds 4] [--first-scan-seed 0] [--rows '1 Si + 3 GaN'] [--failures]
      [--no-pseudo-symmetry] [--params '{"mr_min": 0}']

1. **Lists**: simulated clean lists (no missing or spurious spots), 0.2 px Gaussian noise on x
   and y, spots shuffled, no intensities (``bench_indexing_order.lists`` / ``shuffle``): 1–5 Cu
   grains and 1 Si + 1–3 GaN, ``--n`` lists per row, for each extinction rule set:
   ``space_group`` (library materials) and ``lauetools`` (``Cu@lauetools``, ``Si@lauetools``,
   ``GaN@lauetools``: LaueTools' lattice parameters and codes fcc / dia / wurtzite). Reported:
   truth grains found < 0.1° (right material), spurious grains, hkl accuracy, ms / list.
   Bars: ≥ 99.5 % found, 0 spurious, hkl ≥ 99.5 %.
2. **Scan**: ``--scan-seeds`` synthetic Cu scans (``laueflow.synth.plan_scan``: 12 × 12 points,
   1 µm step, 1.5 µm beam, 8 grains, Σ3 twin lamellae in ~60 % of the grains, 1° sub-grains in
   ~40 %, so boundary points show two or three patterns with their beam fractions). Each point's
   truth spots (amplitude ≥ 5 σ of the local noise; spots closer than 1 px merged into the
   brighter one, as a peak search would) with 0.2 px noise, shuffled, no intensities. Reported:
   (point, grain carrying ≥ 30 % of the beam) found (< 0.5°, and < 0.1°), spurious grains (indexed
   grains matching no truth grain of the point, whatever its weight). Bars: ≥ 99 % found, 0
   spurious.

Models: Cu = the cached default Cu model (``bench_indexing_order.cu_model``); for the lauetools
rules the same network with ``Cu@lauetools`` (cubic: the pair angles the network sees do not
depend on ``a``, and fcc gives the same reflections as the space-group rule). GaN + Si =
``bench_indexing_order``'s small model, and the same configuration trained for
``GaN@lauetools`` + ``Si@lauetools`` (the wurtzite code allows reflections the space-group rule
forbids), both cached in ``~/.cache/laueflow/bench_indexing_order``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_indexing_order import GANSI, WORK, cu_model, gansi_model, lists, shuffle  # noqa: E402

PIXEL_NOISE = 0.2


def models(rule: str):
    """(Cu indexer, GaN + Si indexer) for an extinction rule set."""
    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.physics.materials import get_material
    from laueflow.pipeline.indexers import get_indexer
    from laueflow.stages.indexing.training import IndexerConfig

    cu = cu_model()
    if rule == "space_group":
        return cu, gansi_model()
    cu = replace(cu, materials=[get_material("Cu@lauetools")])
    gs = get_indexer(["GaN@lauetools", "Si@lauetools"], DEFAULT_CALIBRATION, IndexerConfig(**GANSI),
                     cache_dir=WORK, verbose=True, threads=1)
    return cu, gs


def run_lists(indexer, counts, seed, max_grains, failures: bool = False, **kw):
    """Index a row's lists (seed ``seed``: simulation, ``seed + 1`` noise, ``seed + 2`` order);
    ``failures``: print each list (0-based index within the row) with a grain not found < 0.1° or
    a spurious grain."""
    from laueflow.stages.indexing.evaluate import evaluate_indexing
    from laueflow.stages.indexing.stage import index_peaks

    ps, tth, chi = lists(indexer, counts, seed)
    s_tth, s_chi, s_hkl, s_grain = shuffle(ps, tth, chi, seed + 2)
    t = time.perf_counter()
    out = index_peaks(s_tth, s_chi, None, indexer=indexer, max_grains=max_grains, **kw)
    dt = (time.perf_counter() - t) / len(ps)
    ev = evaluate_indexing(out, ps.ub, ps.grain_material, indexer.materials, truth_hkl=s_hkl, truth_grain=s_grain)
    for i in range(len(ps)) if failures else ():
        e = evaluate_indexing({k: v[i:i + 1] for k, v in out.items()}, ps.ub[i:i + 1], ps.grain_material[i:i + 1],
                              indexer.materials)
        if e["spurious"] or e["found_precise"] < e["n_truth_grains"]:
            print(f"  seed {seed} list {i}: found < 0.1° {e['found_precise']}/{e['n_truth_grains']}, "
                  f"spurious {e['spurious']}", flush=True)
    return ev, dt


def scan_lists(seed: int, shape=(12, 12), grains: int = 8, material: str = "Cu", intensities: bool = False,
               **plan_kw):
    """Per-point spot lists of a twinned / sub-grained scan (default: Cu, Σ3 twins in ~60 % of
    the grains, 1° sub-grains in ~40 %; ``plan_kw`` overrides): (two_theta, chi, truth hkl, truth
    slot) padded (P, M), truth UB (P, S, 3, 3), material (P, S), weight (P, S); with
    ``intensities`` also the spots' rendered peak amplitudes (P, M) (NaN padding), last."""
    from laueflow.physics.geometry import DEFAULT_CALIBRATION as cal, pixel_to_angles
    from laueflow.synth.scan import plan_scan

    kw = dict(twin_fraction=0.6, subgrain_fraction=0.4, subgrain_misorientation_deg=1.0, strain_magnitude=5e-4)
    plan = plan_scan(material=material, shape=shape, grains=grains, seed=seed, **{**kw, **plan_kw})
    s, m = plan.spots, plan.micro
    ny, nx, n_slots = m.grain_id.shape
    point = s.y * nx + s.x
    keep = s.amplitude >= 5 * s.noise_sigma
    rng = np.random.default_rng(seed + 11)
    per_point = []
    for p in range(ny * nx):
        idx = np.flatnonzero(keep & (point == p))
        idx = idx[np.argsort(-s.amplitude[idx], kind="stable")]
        col, row = s.col[idx], s.row[idx]
        d = np.hypot(col[:, None] - col[None], row[:, None] - row[None])
        near = np.tril(d < 1.0, -1)
        merged = near.any(axis=1)  # a brighter spot within 1 px holds it …
        total = s.amplitude[idx].copy()
        np.add.at(total, near[merged].argmax(axis=1), total[merged])  # … and adds its counts (coincident spots)
        idx, total = idx[~merged], total[~merged]
        perm = rng.permutation(len(idx))
        per_point.append((idx[perm], total[perm]))
    mp = max(len(i) for i, _ in per_point)
    tth = np.full((len(per_point), mp), np.nan)
    chi, amp, slot = tth.copy(), tth.copy(), np.full(tth.shape, -1)
    hkl = np.zeros(tth.shape + (3,), int)
    for p, (idx, total) in enumerate(per_point):
        col = s.col[idx] + rng.normal(0, PIXEL_NOISE, len(idx))
        row = s.row[idx] + rng.normal(0, PIXEL_NOISE, len(idx))
        tth[p, :len(idx)], chi[p, :len(idx)] = pixel_to_angles(col, row, cal)
        slot[p, :len(idx)] = s.slot[idx]
        amp[p, :len(idx)] = total
        hkl[p, :len(idx)] = np.stack([s.h[idx], s.k[idx], s.l[idx]], axis=1)
    flat = lambda a: a.reshape((ny * nx, n_slots) + a.shape[3:])  # noqa: E731
    out = (tth, chi, hkl, slot, flat(m.orientation_matrix), flat(m.grain_material), flat(m.grain_weight))
    return out + (amp,) if intensities else out


def run_scan(indexer, seed, **kw):
    from laueflow.stages.indexing.evaluate import evaluate_indexing
    from laueflow.stages.indexing.stage import index_peaks

    tth, chi, hkl, slot, ub, mat, w = scan_lists(seed)
    t = time.perf_counter()
    out = index_peaks(tth, chi, None, indexer=indexer, max_grains=5, **kw)
    dt = (time.perf_counter() - t) / len(tth)
    every = evaluate_indexing(out, ub, mat, indexer.materials, match_deg=0.5)
    strong = evaluate_indexing(out, ub, np.where(w >= 0.3, mat, -1), indexer.materials, match_deg=0.5)
    return dict(points=len(tth), strong=strong["n_truth_grains"], found=strong["found"],
                precise=strong["found_precise"], spurious=every["spurious"],
                multi=int(((w >= 0.3).sum(axis=1) >= 2).sum()), dt=dt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="lists per grain combination")
    ap.add_argument("--rules", default="space_group,lauetools")
    ap.add_argument("--only", choices=("lists", "scan"))
    ap.add_argument("--scan-seeds", type=int, default=4)
    ap.add_argument("--rows", default="", help="comma-separated subset of row labels, e.g. '1 Si + 2 GaN'")
    ap.add_argument("--failures", action="store_true", help="print the lists with a missed or spurious grain")
    ap.add_argument("--no-pseudo-symmetry", action="store_true", help="before: max_overlap 0.3, no variants")
    ap.add_argument("--params", default="{}", help='IndexingParams overrides as JSON, e.g. \'{"mr_min": 0}\'')
    ap.add_argument("--first-scan-seed", type=int, default=0, help="scan seeds first … first + scan-seeds − 1")
    args = ap.parse_args()
    kw = dict(pseudo_symmetry=False, max_overlap=0.3) if args.no_pseudo_symmetry else {}
    kw.update(json.loads(args.params))
    print(f"{'before (no variants, max_overlap 0.3)' if args.no_pseudo_symmetry else 'after'} {kw or ''}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.only in (None, "lists"):
        print("| rules | lists | found < 0.1° | spurious | hkl accuracy | ms / list |")
        print("|---|---|---|---|---|---|")
        for rule in args.rules.split(","):
            cu, gs = models(rule)
            rows = [(cu, f"{g} Cu", np.full((args.n, 1), g), 7000 + g, 5) for g in (1, 2, 3, 4, 5)]
            rows += [(gs, f"1 Si + {g} GaN", np.tile([g, 1], (args.n, 1)), 7100 + g, 4) for g in (1, 2, 3)]
            for indexer, label, counts, seed, mg in rows:
                if args.rows and label not in args.rows.split(","):
                    continue
                ev, dt = run_lists(indexer, counts, seed, mg, args.failures, **kw)
                print(f"| {rule} | {label} | {ev['found_precise']}/{ev['n_truth_grains']} "
                      f"({100 * ev['found_precise_fraction']:.2f} %) | {ev['spurious']} "
                      f"| {100 * ev['hkl_accuracy']:.2f} % | {1000 * dt:.0f} |", flush=True)
    if args.only in (None, "scan"):
        cu = cu_model()
        print("| scan seed | points | multi-pattern points | (point, grain ≥ 30 %) found < 0.5° | < 0.1° | spurious | ms / point |")
        print("|---|---|---|---|---|---|---|")
        for seed in range(args.first_scan_seed, args.first_scan_seed + args.scan_seeds):
            r = run_scan(cu, seed, **kw)
            print(f"| {seed} | {r['points']} | {r['multi']} | {r['found']}/{r['strong']} "
                  f"({100 * r['found'] / r['strong']:.2f} %) | {r['precise']} | {r['spurious']} "
                  f"| {1000 * r['dt']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
