"""End-to-end `laueflow run` throughput on full-size (2018 × 2016) images, plus peak accuracy.

    .venv/bin/python benchmarks/bench_pipeline.py [--images 40] [--workers 2] [--images-per-task 4]

Builds a realistic scan with the simulator (``laueflow.synth``; Cu, 12 grains) written as a scan
store in the layout of `laueflow ingest` (one image per chunk, zstd), runs the workflow
``peaks → angles`` on a LocalCluster (threads_per_worker 1), and reports images/s (wall time of
the run, cluster start excluded), per-stage time per image, and `laueflow evaluate`'s peak recall /
precision against the truth. ``--json`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path


def make_scan(out: Path, n_images: int, seed: int):
    import numpy as np
    import xarray as xr

    from laueflow.synth.scan import plan_scan, truth_dataset

    nx = min(n_images, 8)
    ny = math.ceil(n_images / nx)
    t = time.perf_counter()
    plan = plan_scan(shape=(ny, nx), grains=12, seed=seed)
    images = np.stack([plan.render(i) for i in range(ny * nx)]).reshape(ny, nx, *plan.calibration.frame_shape)
    render_s = time.perf_counter() - t
    ds = xr.Dataset(
        {"images": (("y", "x", "row", "col"), images),
         "valid": (("y", "x"), np.ones((ny, nx), bool)),
         "status": (("y", "x"), np.zeros((ny, nx), np.int8))},
        attrs={"calibration": plan.calibration.to_dict(), "materials": list(plan.materials)
               if not hasattr(plan.materials[0], "name") else [m.name for m in plan.materials],
               "step_um": [plan.params.step_um] * 2},
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(out / "scan.zarr", mode="w", zarr_format=3, consolidated=True,
                   encoding={"images": {"chunks": (1, 1, *plan.calibration.frame_shape)}})
        truth_dataset(plan).to_zarr(out / "truth.zarr", mode="w", zarr_format=3, consolidated=True)
    return ny * nx, render_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images-per-task", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stores here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import xarray as xr

    from laueflow.pipeline.cluster import ClusterConfig, connect
    from laueflow.pipeline.evaluate import evaluate
    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import parse_workflow

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pipeline_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    n, render_s = make_scan(args.workdir, args.images, args.seed)
    print(f"scan: {n} images 2018×2016 simulated in {render_s:.1f} s → {args.workdir / 'scan.zarr'}")
    workflow = parse_workflow({"input": str(args.workdir / "scan.zarr"),
                               "output": str(args.workdir / "results.zarr"),
                               "images_per_task": args.images_per_task, "stages": ["peaks", "angles"]})
    config = ClusterConfig("local", {"n_workers": args.workers, "threads_per_worker": 1,
                                     "dashboard_address": ":0"})
    t = time.perf_counter()
    with connect(config) as client:
        start_s = time.perf_counter() - t
        summary = run_workflow(workflow, client, overwrite=True, progress=False)
    with xr.open_zarr(args.workdir / "results.zarr") as results, \
            xr.open_zarr(args.workdir / "truth.zarr") as truth:
        peaks = evaluate(results, truth)["metrics"]["peaks"]["summary"]
        n_peaks = int(results.peak_count.values.clip(0).sum())
    per_image = {k: v / summary.n_images_run for k, v in summary.stage_timings_s.items()}
    report = {
        "images": summary.n_images_run, "workers": args.workers, "images_per_task": args.images_per_task,
        "cluster_start_s": round(start_s, 2), "run_wall_s": round(summary.wall_s, 2),
        "images_per_s": round(summary.images_per_s, 3),
        "peaks_per_s": round(n_peaks / summary.wall_s, 1), "peaks_per_image": round(n_peaks / n, 1),
        "stage_s_per_image": {k: round(v, 4) for k, v in per_image.items()},
        "peak_recall": peaks["recall"], "peak_precision": peaks["precision"],
        "position_error_median_px": peaks["position_error_median_px"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
