"""How to honour per-stage resources on a mixed cluster: stage groups ("split") or whole tiles
on the GPU workers ("whole")? Measured on a simulated mixed cluster.

    .venv/bin/python benchmarks/bench_stage_groups.py [--scan demo/scan.zarr] [--repeats 2] [--write]

The cluster: one scheduler and two single-thread workers started as separate processes, one
offering the Dask resource ``GPU=1`` (a stand-in GPU worker: this machine has no GPU, so its
"GPU" stages run on its CPU) and one CPU-only. The workflow is the demo chain
(peaks → angles → descriptors → index → strain) with ``descriptors`` and ``index`` tagged
``resources={"GPU": 1}`` (device cpu), as they would be on a real GPU cluster. ``split`` runs
each tile as three tasks (peaks+angles anywhere → descriptors+index on the GPU worker → strain
anywhere, intermediate peak tables passed between them); ``whole`` runs each tile as one task
on the GPU worker. Reports images/s (best of ``--repeats``, after a warm-up that loads the models
on both workers) and checks that both give identical results. Without ``--scan`` it simulates
and ingests the demo's 10×10 Cu scan first (the LaueNN model is trained once if not cached).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAGES = ["peaks", "angles", "descriptors", "index", "strain"]
GPU_STAGES = ("descriptors", "index")


def make_scan(out: Path) -> Path:
    from laueflow.pipeline.ingest import ingest
    from laueflow.synth.scan import simulate_scan

    simulate_scan(out, material="Cu", shape=(10, 10), grains=6, seed=0, progress=False)
    ingest([out / "images"], out / "scan.zarr", shape=(10, 10), calibration=_read_det(out / "calib.det"),
           materials=["Cu"], mask=out / "mask.tif", progress=False, log=lambda *a: None)
    return out / "scan.zarr"


def _read_det(path):
    try:
        from laueflow.io.detfile import read_det
    except ImportError:  # before the .det reader moved to io/
        from laueflow.physics.detfile import read_det
    return read_det(path)


def start_workers(address: str) -> list[subprocess.Popen]:
    dask = str(Path(sys.executable).parent / "dask")
    common = ["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--memory-limit", "8GB"]
    return [subprocess.Popen([dask, *common, "--resources", "GPU=1", "--name", "gpu-0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([dask, *common, "--name", "cpu-0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]


def tag_gpu_stages() -> None:
    """Register copies of the GPU-capable stages that need the GPU resource (device cpu)."""
    import warnings

    from laueflow.stages.base import get_stage, register_stage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # StageOverrideWarning: on purpose here
        for name in GPU_STAGES:
            spec = get_stage(name)
            register_stage(replace(spec, resources={"GPU": 1}, params={**spec.params, "device": "cpu"}),
                           replace=True)


def run_once(scan: Path, out: Path, client, grouping: str, max_tiles=None) -> float:
    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import parse_workflow

    workflow = parse_workflow({"input": str(scan), "output": str(out), "images_per_task": 10,
                               "stages": STAGES})
    t = time.perf_counter()
    summary = run_workflow(workflow, client, overwrite=True, progress=False, log=lambda *a: None,
                           grouping=grouping, max_tiles=max_tiles)
    wall = time.perf_counter() - t
    return summary.n_images_run / wall


def identical(a: Path, b: Path) -> bool:
    import xarray as xr

    with xr.open_zarr(a) as da, xr.open_zarr(b) as db:
        return all(np.array_equal(da[k].values, db[k].values, equal_nan=True) for k in da.data_vars)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", type=Path, default=None, help="an existing scan store (default: simulate one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="append the figures to benchmarks/results.md")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="laueflow-groups-"))
    scan = args.scan or make_scan(work / "scan")
    tag_gpu_stages()
    cluster = LocalCluster(n_workers=0, processes=True, dashboard_address=":0")
    workers = start_workers(cluster.scheduler_address)
    best = {}
    try:
        client = Client(cluster)
        client.wait_for_workers(2, timeout=120)
        run_once(scan, work / "warm.zarr", client, "split")  # models loaded on both workers
        for _ in range(args.repeats):
            for grouping in ("whole", "split"):
                rate = run_once(scan, work / f"{grouping}.zarr", client, grouping)
                best[grouping] = max(best.get(grouping, 0.0), rate)
                print(f"{grouping:>5}: {rate:.2f} images/s", flush=True)
        same = identical(work / "whole.zarr", work / "split.zarr")
        client.close()
    finally:
        for proc in workers:
            proc.terminate()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    ratio = best["split"] / best["whole"]
    print(f"best: split {best['split']:.2f} images/s, whole {best['whole']:.2f} images/s "
          f"(split / whole = {ratio:.2f}); identical results: {same}")
    if args.write:
        with open(HERE / "results.md", "a") as fh:
            fh.write(f"\n## Stage groups on a mixed cluster (`bench_stage_groups.py`, {time.strftime('%Y-%m-%d')})\n"
                     f"1 GPU-resource worker + 1 CPU worker (1 thread each), demo chain, descriptors + index "
                     f"on the GPU worker: split {best['split']:.2f} images/s, whole {best['whole']:.2f} images/s "
                     f"(×{ratio:.2f}); identical results: {same}.\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
