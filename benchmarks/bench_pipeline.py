"""End-to-end `laueflow run` throughput of the whole demo chain on a simulated scan.

    .venv/bin/python benchmarks/bench_pipeline.py [--shape 20x20] [--grains 12] [--workers 2]
                                                 [--images-per-task 10] [--repeat 2]
                                                 [--workdir DIR] [--json out.json] [--write]

What it does (≈ 3–4 minutes for 20×20 on a 2-core machine, most of it making the scan):

1. **Scan** (not timed): a simulated Cu scan made exactly as `laueflow demo` makes it —
   :func:`laueflow.synth.scan.simulate_scan` (TIFF frames 2018×2016, ``calib.det``, ``mask.tif``,
   ``truth.zarr``) then :func:`laueflow.pipeline.ingest.ingest` on the cluster (``scan.zarr``,
   one blosc-zstd frame per chunk, the detector mask). ``--workdir`` keeps it and reuses it.
2. **Cluster** (timed apart): a LocalCluster through :func:`laueflow.pipeline.cluster.connect`,
   ``--workers`` × 1 thread, as `laueflow run` / `laueflow demo` start it.
3. **Warm-up** (timed apart): one :func:`laueflow.pipeline.run.run_workflow` over the first
   ``--workers`` tiles into a scratch store. It resolves the cached LaueNN model (training it
   first if it is missing: that is excluded from the figures), imports torch and loads the
   models in every worker.
4. **Timed runs**: ``--repeat`` full runs of the demo chain (``laueflow.cli.demo.DEMO_STAGES``:
   peaks → angles → descriptors → index → strain, and the scan-wide ``scan_summary``) with
   :func:`run_workflow`, each into a fresh results store. Reported for the best run: images/s
   end to end (``RunSummary.images_per_s``: store creation, every tile, the reduce stage and
   the provenance, nothing else) and per stage the ms per image (``RunSummary.stage_timings_s``
   summed over the tiles, divided by the images: the time of one worker, so with ``W`` busy
   workers the wall time per image is ≈ the total / ``W``).
5. **Accuracy** of the best run against the truth (`laueflow evaluate`): peak recall/precision,
   grains found, hkl accuracy, strain error — so a faster chain that changed results shows here.

``--write`` appends the figures (with the machine's load average) to ``benchmarks/results.md``.
Repeat on a quiet machine: the figures count CPU time shared with anything else running.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "results.md"
SECTION = "## End-to-end demo chain (`python benchmarks/bench_pipeline.py`)"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def make_scan(workdir: Path, shape, grains: int, seed: int, material: str, client) -> dict:
    """simulate + ingest like `laueflow demo` (reused when ``workdir/scan.zarr`` is complete)."""
    from laueflow.io.detfile import read_det
    from laueflow.pipeline.ingest import ingest
    from laueflow.synth.scan import simulate_scan

    marker = workdir / "bench-scan.json"
    wanted = {"shape": list(shape), "grains": grains, "seed": seed, "material": material}
    if marker.is_file() and json.loads(marker.read_text()) == wanted and (workdir / "scan.zarr").is_dir():
        return {"reused": True}
    t = time.perf_counter()
    simulate_scan(workdir, material=material, shape=shape, grains=grains, seed=seed, overwrite=True,
                  progress=False)
    simulate_s = time.perf_counter() - t
    t = time.perf_counter()
    ingest([workdir / "images"], workdir / "scan.zarr", shape=shape, calibration=read_det(workdir / "calib.det"),
           materials=[material], mask=workdir / "mask.tif", overwrite=True, client=client, progress=False,
           log=lambda *a: None)
    ingest_s = time.perf_counter() - t
    shutil.rmtree(workdir / "images", ignore_errors=True)  # the scan store holds the frames now
    marker.write_text(json.dumps(wanted))
    return {"reused": False, "simulate_s": round(simulate_s, 1), "ingest_s": round(ingest_s, 1)}


def _workflow(workdir: Path, output: Path, stages, images_per_task: int):
    from laueflow.pipeline.workflow import parse_workflow

    return parse_workflow({"input": str(workdir / "scan.zarr"), "output": str(output),
                           "images_per_task": images_per_task, "stages": list(stages)})


def _summary_figures(summary) -> dict:
    n = max(summary.n_images_run, 1)
    return {
        "images": summary.n_images_run,
        "wall_s": round(summary.wall_s, 2),
        "images_per_s": round(summary.images_per_s, 2),
        "stage_ms_per_image": {k: round(1000 * v / n, 1) for k, v in summary.stage_timings_s.items()},
        "warm_ms_per_image": {k: round(v, 1) for k, v in (getattr(summary, "warm_ms_per_image", None) or {}).items()},
        "reduce_s": {k: round(v, 2) for k, v in (getattr(summary, "reduce_timings_s", None) or {}).items()},
    }


def _accuracy(results: Path, truth: Path) -> dict:
    import xarray as xr

    from laueflow.pipeline.evaluate import evaluate, to_json

    with xr.open_zarr(results) as res, xr.open_zarr(truth) as tru:
        metrics = to_json(evaluate(res, tru))["metrics"]

    def get(metric, key):
        m = metrics.get(metric, {})
        return m.get("summary", m).get(key)

    return {
        "peak_recall": get("peaks", "recall"), "peak_precision": get("peaks", "precision"),
        "grains_found": get("indexing", "found"), "grains_truth": get("indexing", "n_truth_grains"),
        "grains_spurious": get("indexing", "spurious"), "hkl_accuracy": get("indexing", "hkl_accuracy"),
        "strain_error_median": get("strain", "strain_error_median"),
        "strain_error_p95": get("strain", "strain_error_p95"),
    }


def _fmt_stages(ms: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in ms.items())


def write_results_md(report: dict, path: Path = RESULTS_MD) -> None:
    """Append one row (and the section header, the first time) to benchmarks/results.md."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + (
            "Whole demo chain (peaks → angles → descriptors → index → strain → scan_summary) on a\n"
            "simulated Cu scan, LocalCluster, best of the timed runs after a warm-up run; ms/image per\n"
            "stage = one worker's time (stage_timings_s / images). Load = `/proc/loadavg` before the runs.\n\n"
            "| date | commit | scan | workers × threads | images/s | ms/image per stage (one worker) | "
            "cluster start / warm-up | accuracy (recall / precision / grains / hkl / strain median) | load |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    b, a = report["best"], report["accuracy"]
    row = (f"| {report['date']} | {report.get('commit') or '–'} | {report['shape']} Cu, {report['grains']} grains, "
           f"{b['images']} images, tiles of {report['images_per_task']} | {report['workers']} × 1 | "
           f"**{b['images_per_s']:.2f}** (runs: {', '.join(f'{r:.2f}' for r in report['images_per_s_runs'])}) | "
           f"{_fmt_stages(b['stage_ms_per_image'])} | {report['cluster_start_s']:.1f} s / {report['warmup_s']:.1f} s | "
           f"{a['peak_recall']:.3f} / {a['peak_precision']:.3f} / {a['grains_found']} of {a['grains_truth']} "
           f"({a['grains_spurious']} spurious) / {a['hkl_accuracy']:.4f} / {a['strain_error_median']:.2e} | "
           f"{report['load_before']} |\n")
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + row)


def _commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="20x20", help="scan points NYxNX (default 20x20)")
    parser.add_argument("--grains", type=int, default=12, help="grains of the simulated map (default 12)")
    parser.add_argument("--material", default="Cu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster", type=Path, default=None,
                        help="a cluster config instead of a LocalCluster of --workers (e.g. "
                             "cluster-configs/local-cuda.yaml: one worker per GPU, GPU stages on them)")
    parser.add_argument("--images-per-task", type=int, default=10, help="as workflows/demo.yaml (default 10)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs; the best is reported (default 2)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the scan here")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--write", action="store_true", help="append the figures to benchmarks/results.md")
    args = parser.parse_args(argv)
    ny, nx = (int(v) for v in args.shape.lower().split("x"))

    from laueflow.cli.demo import DEMO_STAGES
    from laueflow.pipeline.cluster import ClusterConfig, connect
    from laueflow.pipeline.run import run_workflow
    from laueflow.stages.base import registered_stages

    stages = [s for s in DEMO_STAGES if s in registered_stages()]
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pipeline_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    if args.cluster is not None:
        from laueflow.pipeline.cluster import load_cluster_config

        config = load_cluster_config(args.cluster)
    else:
        config = ClusterConfig("local", {"n_workers": args.workers, "threads_per_worker": 1, "dashboard_address": ":0"})
    quiet = {"progress": False, "log": lambda *a: None}
    try:
        t = time.perf_counter()
        with connect(config) as client:
            cluster_start_s = time.perf_counter() - t
            scan = make_scan(workdir, (ny, nx), args.grains, args.seed, args.material, client)
            made = ("reused" if scan["reused"] else
                    f"simulated in {scan['simulate_s']} s, ingested in {scan['ingest_s']} s")
            print(f"scan: {ny}×{nx} {args.material} ({made}) → {workdir / 'scan.zarr'}", flush=True)
            # warm-up: model resolved (trained if missing) on the driver, torch + models in every worker
            t = time.perf_counter()
            run_workflow(_workflow(workdir, workdir / "warmup.zarr", stages, args.images_per_task), client,
                         overwrite=True, max_tiles=args.workers, **quiet)
            warmup_s = time.perf_counter() - t
            print(f"cluster start {cluster_start_s:.1f} s; warm-up run ({args.workers} tiles, model resolution "
                  f"and worker start-up) {warmup_s:.1f} s", flush=True)
            load_before = _load()
            runs = []
            for i in range(args.repeat):
                output = workdir / f"results-{i}.zarr"
                shutil.rmtree(output, ignore_errors=True)  # a fresh store: no --overwrite delete in the timing
                summary = run_workflow(_workflow(workdir, output, stages, args.images_per_task), client, **quiet)
                figures = _summary_figures(summary)
                figures["output"] = str(output)
                runs.append(figures)
                print(f"run {i + 1}: {figures['images']} images in {figures['wall_s']:.1f} s = "
                      f"{figures['images_per_s']:.2f} images/s; ms/image per stage (one worker): "
                      f"{_fmt_stages(figures['stage_ms_per_image'])}", flush=True)
            load_after = _load()
        best = max(runs, key=lambda r: r["images_per_s"])
        accuracy = _accuracy(Path(best["output"]), workdir / "truth.zarr")
        report = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": socket.gethostname(),
            "commit": _commit(), "cpus": os.cpu_count(), "shape": f"{ny}x{nx}", "grains": args.grains,
            "workers": args.workers, "images_per_task": args.images_per_task, "stages": stages,
            "cluster_start_s": round(cluster_start_s, 2), "warmup_s": round(warmup_s, 2),
            "images_per_s_runs": [r["images_per_s"] for r in runs], "best": best, "accuracy": accuracy,
            "load_before": load_before, "load_after": load_after, "scan": scan,
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        if args.write:
            write_results_md(report)
            print(f"appended to {RESULTS_MD}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
