"""Which of a point's indexed grains the maps should show: rules compared against the truth.

    python benchmarks/choose_best_grain_rule.py RESULTS.zarr TRUTH.zarr [RESULTS2.zarr TRUTH2.zarr ...]
    python benchmarks/choose_best_grain_rule.py --time 100    # best_grain's cost on 100 × 100 points

For each full-indexing results store (e.g. of ``laueflow demo``) and its simulator truth: the
fraction of points whose chosen grain is within 1° of the point's dominant true grain (the
largest beam share, ``grain_weight``), over all points and over the points with two or more
indexed grains, for the rules: highest matching rate; highest median / mean / sum of the heights
of the peaks matched to the grain (then the rate); most matched spots; brightest matched spot.
``--time N``: ``laueflow.best_grain`` by brightness and by matching rate on an N × N store of
random grains and peaks (1500 peak slots, 100 used; 8 × 8 chunks), written under ``/tmp``.
Results: benchmarks/results.md ("The maps' best grain by the same rule").
"""
import argparse
import tempfile
import time
import warnings

import numpy as np
import xarray as xr

import laueflow
from laueflow.physics.materials import get_materials
from laueflow.stages.evaluation.grains import misorientations
from laueflow.stages.grain_choice import best_indexed_grain


def grain_height_stats(peak_grain, height, n_grains):
    stats = {k: np.full((len(peak_grain), n_grains), np.nan) for k in ("median", "mean", "sum", "count", "max")}
    for g in range(n_grains):
        mine = np.where(peak_grain == g, height, np.nan)
        has = np.isfinite(mine).any(1)
        for name, func in (("median", np.nanmedian), ("mean", np.nanmean), ("sum", np.nansum), ("max", np.nanmax)):
            stats[name][has, g] = func(mine[has], 1)
        stats["count"][has, g] = np.isfinite(mine[has]).sum(1)
    return stats


def compare(results, truth):
    t, ds = xr.open_zarr(truth).load(), laueflow.open_results(results).load()
    materials = get_materials(list(ds.material.values))
    weight = t.grain_weight.values
    dominant = np.nanargmax(np.where(np.isfinite(weight), weight, -1), axis=-1)[..., None]
    true_ub = np.take_along_axis(t.orientation_matrix.values, dominant[..., None, None], 2)[:, :, 0].reshape(-1, 3, 3)
    true_material = np.take_along_axis(t.grain_material.values, dominant, 2).reshape(-1)
    n_grains = ds.sizes["grain"]
    ub = ds.orientation_matrix.values.reshape(-1, n_grains, 3, 3)
    material = ds.grain_material.values.reshape(len(ub), n_grains)
    rate = ds.matching_rate.values.reshape(len(ub), n_grains).astype(float)
    stats = grain_height_stats(ds.peak_grain.values.reshape(len(ub), -1),
                               ds.peak_intensity.values.reshape(len(ub), -1).astype(float), n_grains)
    indexed = np.isfinite(rate) & (material >= 0)
    several = indexed.sum(1) > 1
    print(f"{results}: {len(ub)} points, {several.sum()} with two or more indexed grains")
    rows = np.arange(len(ub))
    for name, key in [("matching rate", None), *stats.items()]:
        best = best_indexed_grain(indexed, rate, key)
        chosen = np.where((best >= 0)[:, None, None], ub[rows, np.maximum(best, 0)], np.nan)
        angle = misorientations(chosen, np.where(best >= 0, material[rows, np.maximum(best, 0)], -1),
                                true_ub, true_material, materials)
        within = np.nan_to_num(angle, nan=np.inf) <= 1.0
        print(f"  {name:14s} within 1°: all points {100 * within.mean():6.2f} %   "
              f"points with ≥ 2 grains {100 * within[several].mean():6.2f} %")


def time_best_grain(n):
    rng = np.random.default_rng(0)
    slots, peaks, used = 3, 1500, 100
    rate = np.where(rng.random((n, n, slots)) < 0.6, rng.uniform(25, 100, (n, n, slots)), np.nan).astype(np.float32)
    height = np.full((n, n, peaks), np.nan, np.float32)
    height[..., :used] = -np.sort(-rng.uniform(10, 6e4, (n, n, used)))
    peak_grain = np.full((n, n, peaks), -1, np.int16)
    peak_grain[..., :used] = rng.integers(-1, slots, (n, n, used))
    ub = np.where(np.isfinite(rate)[..., None, None], np.eye(3), np.nan)
    ds = xr.Dataset({"matching_rate": (("y", "x", "grain"), rate), "peak_intensity": (("y", "x", "peak"), height),
                     "peak_grain": (("y", "x", "peak"), peak_grain),
                     "orientation_matrix": (("y", "x", "grain", "i3", "j3"), ub)})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(f"{tmp}/r.zarr", encoding={v: {"chunks": (8, 8) + ds[v].shape[2:]} for v in ds.data_vars})
        lazy = xr.open_zarr(f"{tmp}/r.zarr")
        for by in ("matching_rate", "brightness"):
            start = time.perf_counter()
            laueflow.best_grain(lazy, by=by)
            print(f"best_grain(by={by!r}) on {n} × {n} points: {time.perf_counter() - start:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="*", help="RESULTS.zarr TRUTH.zarr pairs")
    parser.add_argument("--time", type=int, metavar="N", help="time best_grain on N × N random points")
    args = parser.parse_args()
    if len(args.stores) % 2 or not (args.stores or args.time):
        parser.error("give RESULTS.zarr TRUTH.zarr pairs and/or --time N")
    for results, truth in zip(args.stores[::2], args.stores[1::2]):
        compare(results, truth)
    if args.time:
        time_best_grain(args.time)


if __name__ == "__main__":
    main()
