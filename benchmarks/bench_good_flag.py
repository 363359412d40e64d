"""Which spots should strain refinement use? Strain error vs the spots kept (issue #12, deliverable 6).

    python benchmarks/bench_good_flag.py [--cases cu,gansi] [--shape 6 6] [--seed 12000]

Simulated real-like frames (``laueflow.synth``: full 2018 × 2016 sCMOS frames, ≈1000-count dark
offset, halo, read + shot noise, spot amplitudes and shapes per
``/work/shared/docs/real-image-statistics.md``: median amplitude 600 counts above background over
0.75 decades, 20 % streaked / split / irregular spots, 5 % broad ones), several grains per point,
known deviatoric strain (``strain_magnitude`` 1e-3). Each frame goes through the peak stage
(defaults), the angle stage and the spot CNN (shipped weights); the batched Gaussian fit also runs
on every cutout, to report how many fits reach the iteration cap. The strain stage's refinement
then runs from the true orientation of every (point, grain) — the indexer is left out so that only
the spot selection differs — once per selection rule:

* ``good`` (before): spots flagged good (Sim > 0.5 and ‖Pos − s‖ ≤ 0.9 px) at their refined
  position, every other spot left out;
* ``sim>t``: Sim > t and ‖Pos − s‖ ≤ 0.9 px at the refined position, the rest left out;
* ``good+bad@w``: good spots at their refined position (weight 1), every other spot at its
  peak-search centroid with weight ``w`` (what ``describe_spots`` reports for a bad spot);
* ``centroid``: every spot at its centroid (no descriptors).

Reported per rule: spots kept per grain (mean), grains refined (status ok), and the error of the
deviatoric strain (sample frame, the 6 independent components, against the truth; median, p95,
RMS) on the grains every rule refined (and on each rule's own grains), plus the position error of
each kind of spot against the true spot centre. Results: ``benchmarks/results.md`` § "Good flag vs
strain error".
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REAL_LIKE = dict(amplitude_median=600.0, amplitude_decades=0.75, bad_spot_fraction=0.2, broad_spot_fraction=0.05,
                 strain_magnitude=1e-3, dead_pixels=2)
CASES = {
    "cu": dict(material="Cu", grains=10),
    "gansi": dict(material="GaN", substrate="Si", grains=8),
}
MATCH_PX = 2.0  # peak ↔ truth spot pairing radius (px), for the position errors only


def frames(case: str, shape, seed: int):
    """(plan, images (n, rows, cols) uint16) of one real-like scan."""
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(shape=tuple(shape), seed=seed, **CASES[case], **REAL_LIKE)
    images = np.stack([plan.render(i) for i in range(plan.n_images)])
    return plan, images


def spot_data(plan, images, model):
    """Peaks, angles, CNN descriptors, fit iteration counts and true positions of every peak."""
    from laueflow.kernels.cutouts import extract_cutouts_batch, good_spot
    from laueflow.kernels.gaussfit import fit_gaussians
    from laueflow.stages.angles import peak_angles
    from laueflow.stages.descriptors import describe_cutouts
    from laueflow.stages.peaks import find_peaks

    peaks = find_peaks(images)
    ang = peak_angles(peaks["peak_col"], peaks["peak_row"], plan.calibration)
    ci, ri = peaks["peak_col_int"], peaks["peak_row_int"]
    i, k = np.nonzero(ci >= 0)
    cut, val, _ = extract_cutouts_batch(images, i, ci[i, k], ri[i, k])
    d = describe_cutouts(cut, val, method="cnn", model=model)
    t = time.perf_counter()
    fit = fit_gaussians(cut, val)
    fit_ms = 1e3 * (time.perf_counter() - t) / max(len(cut), 1)
    shape = ci.shape
    out = {"two_theta": ang["peak_two_theta"].astype(float), "chi": ang["peak_chi"].astype(float),
           "centroid_col": peaks["peak_col"].astype(float), "centroid_row": peaks["peak_row"].astype(float),
           "fit_n_iter": fit["n_iter"], "fit_converged": fit["converged"], "fit_ms_per_spot": fit_ms}
    for name, values in (("sim", d["sim"]), ("dcol", d["dcol"]), ("drow", d["drow"])):
        out[name] = np.full(shape, np.nan)
        out[name][i, k] = values
    out["refined_col"] = ci + out["dcol"]
    out["refined_row"] = ri + out["drow"]
    out["good"] = np.zeros(shape, bool)
    out["good"][i, k] = good_spot(d["sim"], d["dcol"], d["drow"])
    out["distance_px"] = np.hypot(out["dcol"], out["drow"])
    out["true_col"], out["true_row"], out["quality"] = _true_positions(plan, out["centroid_col"], out["centroid_row"])
    return out


def _true_positions(plan, col, row):
    """The true centre (and quality) of the nearest truth spot within MATCH_PX of each peak (NaN / −1)."""
    s = plan.spots
    nx = plan.shape[1]
    image = s.y.astype(np.int64) * nx + s.x
    true_col, true_row = np.full(col.shape, np.nan), np.full(col.shape, np.nan)
    quality = np.full(col.shape, -1, np.int64)
    for n in range(col.shape[0]):
        sel = np.flatnonzero(image == n)
        ok = np.flatnonzero(np.isfinite(col[n]))
        if not len(sel) or not len(ok):
            continue
        dist = np.hypot(col[n, ok, None] - s.col[sel][None], row[n, ok, None] - s.row[sel][None])
        best = dist.argmin(axis=1)
        near = dist[np.arange(len(ok)), best] <= MATCH_PX
        true_col[n, ok[near]] = s.col[sel][best[near]]
        true_row[n, ok[near]] = s.row[sel][best[near]]
        quality[n, ok[near]] = s.quality[sel][best[near]]
    return true_col, true_row, quality


def rules(sd):
    """name → (col, row, weight) (n, P) arrays of each selection rule."""
    finite = np.isfinite(sd["centroid_col"])
    out = {}
    for t in (0.5, 0.3, 0.0):
        keep = finite & (np.nan_to_num(sd["sim"]) > t) & (sd["distance_px"] <= 0.9)
        if t == 0.0:
            keep &= np.nan_to_num(sd["sim"]) > 0  # a fit-like Sim of 0 = not Gaussian at all
        out["good" if t == 0.5 else f"sim>{t:g}"] = (sd["refined_col"], sd["refined_row"], keep.astype(float))
    good = sd["good"]
    col = np.where(good, sd["refined_col"], sd["centroid_col"])
    row = np.where(good, sd["refined_row"], sd["centroid_row"])
    for w in (1.0, 0.3, 0.2, 0.1, 0.05, 0.01):
        out[f"good+bad@{w:g}"] = (col, row, np.where(good, 1.0, np.where(finite, w, 0.0)))
    out["centroid"] = (sd["centroid_col"], sd["centroid_row"], finite.astype(float))
    return out


def strain_errors(plan, sd, col, row, weight):
    """Refine every (point, grain) from its true orientation; (status, n_pairs, error (G, 6))."""
    from laueflow.physics.strain import strain_crystal_to_sample
    from laueflow.stages.strain import refine_strain

    m = plan.micro
    n = plan.n_images
    gid = m.grain_id.reshape(n, -1)
    ub = np.where((gid >= 0)[..., None, None], m.orientation_matrix.reshape(n, -1, 3, 3), np.nan)
    gmat = np.where(gid >= 0, m.grain_material.reshape(n, -1), -1)
    res = refine_strain(sd["two_theta"], sd["chi"], col, row, ub, gmat, plan.materials, plan.calibration,
                        peak_weight=weight, energy_band_kev=tuple(plan.params.energy_band_kev))
    eps = m.deviatoric_strain.reshape(n, -1, 3, 3)
    iu = np.triu_indices(3)
    img, slot = np.nonzero(gid >= 0)
    err = np.full((len(img), 6), np.nan)
    for j, (a, b) in enumerate(zip(img, slot)):
        if res["strain_status"][a, b] != 0:
            continue
        lat = plan.materials[gmat[a, b]].lattice_parameters
        truth = strain_crystal_to_sample(eps[a, b], ub[a, b], lat)
        err[j] = (res["strain_sample"][a, b] - truth)[iu]
    return res["strain_status"][img, slot], res["strain_n_pairs"][img, slot], err


def _position_rows(sd) -> list[str]:
    """Median / p90 distance to the true centre by kind of spot and position used."""
    has = np.isfinite(sd["true_col"])
    good = sd["good"] & has
    bad = ~sd["good"] & has & np.isfinite(sd["centroid_col"])
    rows = []
    for label, sel, kind in (("good, refined", good, "refined"), ("good, centroid", good, "centroid"),
                             ("bad, centroid", bad, "centroid"), ("bad, refined (not used)", bad, "refined")):
        e = np.hypot(sd[f"{kind}_col"][sel] - sd["true_col"][sel], sd[f"{kind}_row"][sel] - sd["true_row"][sel])
        e = e[np.isfinite(e)]
        if len(e):
            rows.append(f"| {label} | {len(e)} | {np.median(e):.3f} | {np.percentile(e, 90):.3f} |")
    return rows


def run_case(case, shape, seed, model) -> list[str]:
    t0 = time.perf_counter()
    plan, images = frames(case, shape, seed)
    sd = spot_data(plan, images, model)
    finite = np.isfinite(sd["centroid_col"])
    n_spots = int(finite.sum())
    at_cap = int((sd["fit_n_iter"] >= 1000).sum())
    lines = [f"### {case}: {'+'.join(m.name for m in plan.materials)}, {plan.n_images} frames "
             f"({shape[0]} × {shape[1]}, seed {seed}), {n_spots} peaks "
             f"({n_spots / plan.n_images:.0f} per frame), {100 * sd['good'][finite].mean():.1f} % flagged good",
             "",
             f"Gaussian fit (batched, defaults) on the {n_spots} cutouts: {at_cap} at the 1000-iteration cap "
             f"({100 * at_cap / max(n_spots, 1):.2f} %), {100 * sd['fit_converged'].mean():.2f} % converged, "
             f"median {np.median(sd['fit_n_iter']):.0f} / max {sd['fit_n_iter'].max()} iterations, "
             f"{sd['fit_ms_per_spot']:.2f} ms/spot.", "",
             "| spots | n | median error (px) | p90 (px) |", "|---|---|---|---|", *_position_rows(sd), ""]
    results = {name: strain_errors(plan, sd, *r) for name, r in rules(sd).items()}
    common = np.all([np.isfinite(e).all(axis=1) for _, _, e in results.values()], axis=0)
    lines += [f"Strain (sample frame, |Δε| of 6 components) on the {int(common.sum())} (point, grain) refined by "
              f"every rule, of {len(common)}:", "",
              "| rule | spots per grain (mean) | grains ok | median | p95 | RMS | RMS, own grains |",
              "|---|---|---|---|---|---|---|"]
    for name, (status, n_pairs, err) in results.items():
        ok = status == 0
        e = np.abs(err[common]).ravel()
        own = np.abs(err[ok]).ravel()
        lines.append(f"| {name} | {n_pairs[ok].mean():.1f} | {int(ok.sum())} | {np.median(e):.2e} | "
                     f"{np.percentile(e, 95):.2e} | {np.sqrt(np.mean(e ** 2)):.2e} | {np.sqrt(np.mean(own ** 2)):.2e} |")
    lines += ["", f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", ""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="cu,gansi")
    ap.add_argument("--shape", type=int, nargs=2, default=(6, 6))
    ap.add_argument("--seed", type=int, default=12000)
    args = ap.parse_args(argv)
    import torch

    from laueflow.io.model_files import load_spotcnn

    torch.set_num_threads(1)
    model = load_spotcnn()
    print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    for j, case in enumerate(args.cases.split(",")):
        print("\n".join(run_case(case, args.shape, args.seed + j, model)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
