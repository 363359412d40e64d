"""``laueflow demo``: the whole job on an embedded default — simulate → ingest → run → evaluate."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..io.detfile import read_det
from ..physics.materials import get_material
from ..pipeline.cluster import ClusterConfig, connect, describe
from ..pipeline.evaluate import check_stores, evaluate, format_report, to_json
from ..pipeline.ingest import format_summary, ingest
from ..pipeline.workflow import load_workflow
from .main import UserError

EXAMPLE = """\
example:
  laueflow demo --out demo/                 # 10×10 Cu scan, LocalCluster, local Zarr, ~2 minutes
  laueflow demo --out demo/ --shape 4x5 --material Si --workers 2

It writes demo/images/*.tif, demo/calib.det, demo/truth.zarr (simulator), demo/scan.zarr
(ingest), demo/workflow.yaml, demo/results.zarr (run) and demo/evaluation.json (evaluate).
Open the results with:  python -c "import xarray; print(xarray.open_zarr('demo/results.zarr'))"
"""

#: stages of the demo workflow, in order: the per-image chain with the features on the same images,
#: then the scan-wide reduce stages (summary, segmentation, every point's delegate orientation)
DEMO_STAGES = ["peaks", "features", "angles", "descriptors", "index", "strain", "scan_summary", "segmentation",
               "delegate_map"]
#: the index-free half, left out of scans too small to segment
SEGMENTATION_STAGES = ("features", "segmentation", "delegate_map")


def demo_stages(n_points: int) -> list:
    """The demo's workflow stages for a scan of ``n_points``: names, and ``{name: params}`` where
    the defaults do not fit a small scan (``pcs`` ≤ points; the segmentation's own limits)."""
    from ..stages.segmentation import MIN_POINTS, PARAMS  # deferred: imports the clustering kernels

    if n_points < MIN_POINTS:
        return [s for s in DEMO_STAGES if s not in SEGMENTATION_STAGES]
    return [{s: {"pcs": n_points}} if s == "segmentation" and n_points < PARAMS["pcs"] else s for s in DEMO_STAGES]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="simulate a small scan and run the whole workflow on it (start here)",
        description="Run the main laueflow job end to end on a simulated scan: simulate, ingest, "
                    "run the workflow on a LocalCluster and evaluate against the ground truth.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--shape", default="10x10", help="scan points NYxNX (default 10x10)")
    parser.add_argument("--material", default="Cu", help="material of the simulated grains (default Cu)")
    parser.add_argument("--grains", type=int, default=6, help="grains in the simulated map (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", default="auto", help="Dask workers (default: CPUs this process may use)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    parser.set_defaults(func=run_demo)
    return parser


def _shape(text):
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
        if ny < 1 or nx < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--shape must look like 10x10 (NYxNX, positive integers), got {text!r}") from None
    return ny, nx


def _workers(text) -> dict:
    if text == "auto":
        return {}
    try:
        n = int(text)
        if n < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--workers must be 'auto' or an integer >= 1, got {text!r}") from None
    return {"n_workers": n}


def _check_args(args) -> tuple[tuple[int, int], dict]:
    """Every argument, before anything is created: ``((ny, nx), worker options)`` or UserError."""
    shape = _shape(args.shape)
    try:
        get_material(args.material)
    except ValueError as err:
        raise UserError(f"--material: {err}") from None
    if args.grains < 1:
        raise UserError(f"--grains must be >= 1, got {args.grains}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    workers = _workers(args.workers)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it or choose another --out")
    return shape, workers


def _stage_line(stage) -> str:
    if isinstance(stage, str):
        return stage
    (name, params), = stage.items()
    return f"{name}: {{{', '.join(f'{k}: {v}' for k, v in params.items())}}}"


def _stage_name(stage) -> str:
    return stage if isinstance(stage, str) else next(iter(stage))


def _workflow_yaml(out: Path, stages: list) -> Path:
    lines = ["# Written by `laueflow demo`; run again with:  laueflow run " + str(out / "workflow.yaml"),
             "input: scan.zarr", "output: results.zarr", "images_per_task: 10", "stages:"]
    lines += [f"  - {_stage_line(stage)}" for stage in stages]
    path = out / "workflow.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(args) -> int:
    (ny, nx), workers = _check_args(args)  # before anything is created
    import xarray as xr  # deferred: xarray is heavy

    from ..pipeline.run import format_stage_table, run_workflow  # deferred: imports scipy (~0.6 s)
    from ..synth.scan import simulate_scan  # deferred: imports scipy and xarray (~1.5 s)

    out = Path(args.out)
    timings = {}
    start = time.perf_counter()
    print(f"[1/4] simulate: {ny}×{nx} {args.material} scan, {args.grains} grains → {out}")
    simulate_scan(out, material=args.material, shape=(ny, nx), grains=args.grains, seed=args.seed, overwrite=args.overwrite)
    timings["simulate_s"] = time.perf_counter() - start
    stages = demo_stages(ny * nx)
    config = ClusterConfig("local", {"threads_per_worker": 1, "dashboard_address": ":0", **workers})
    with connect(config) as client:
        print(f"      Dask dashboard: {client.dashboard_link}")
        t = time.perf_counter()
        print("[2/4] ingest: images → scan.zarr")
        summary = ingest([out / "images"], out / "scan.zarr", shape=(ny, nx), calibration=read_det(out / "calib.det"),
                         materials=[args.material], mask=out / "mask.tif", overwrite=args.overwrite, client=client,
                         log=lambda *a: None)
        print(format_summary(summary))
        timings["ingest_s"] = time.perf_counter() - t
        t = time.perf_counter()
        print(f"[3/4] run: stages {' → '.join(map(_stage_name, stages))}")
        if len(stages) < len(DEMO_STAGES):
            print(f"      ({', '.join(SEGMENTATION_STAGES)} left out: a scan of {ny * nx} point(s) is too small "
                  "to segment)")
        workflow = load_workflow(_workflow_yaml(out, stages))
        description = describe(client)
        description["config"] = config.to_dict()
        run_summary = run_workflow(workflow, client, overwrite=args.overwrite, cluster_description=description)
        print(format_stage_table(run_summary))
        timings["run_s"] = time.perf_counter() - t
    print("[4/4] evaluate against the simulator's truth")
    results, truth = xr.open_zarr(out / "results.zarr"), xr.open_zarr(out / "truth.zarr")
    unchecked = check_stores(results, truth)
    if unchecked:
        print(f"      warning: {unchecked}")
    report = evaluate(results, truth)
    print(format_report(report))
    timings["total_s"] = time.perf_counter() - start
    result = {**to_json(report), "timings": timings}
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    print(f"done in {timings['total_s']:.0f} s; results: {out / 'results.zarr'} (xarray.open_zarr), "
          f"report: {out / 'evaluation.json'}")
    return 0
