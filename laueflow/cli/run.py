"""``laueflow run``: run a workflow over a whole scan on a Dask cluster → results.zarr."""
from __future__ import annotations

import argparse
import sys

from ..io.store_lock import StoreLock, StoreLockedError
from ..pipeline.cluster import ClusterConfigError, connect, describe, load_cluster_config
from ..pipeline.store import ResultsStoreError, read_chunk_done
from ..pipeline.workflow import WorkflowError, load_workflow
from .main import UserError

EXAMPLE = """\
examples:
  laueflow run workflows/demo.yaml                                  # LocalCluster sized to your CPUs
  laueflow run workflows/demo.yaml --cluster cluster-configs/local.yaml --output demo/results.zarr
  laueflow run workflows/demo.yaml --scheduler tcp://10.0.0.5:8786  # an existing Dask scheduler

A killed or failed run resumes where it stopped: run the same command again (finished tiles are
skipped) — only into a store computed from the same scan, calibration, materials, mask,
monitor, stage parameters and models (differences are listed). --overwrite starts from scratch
(it deletes only a laueflow results store). One run writes a store at a time; the scan store must come
from a finished `laueflow ingest`. Ctrl-C stops cleanly: running tiles finish and are kept.
Guarantees: docs/reliability.md. Schema of the output: docs/results-schema.md.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run", help="run a workflow (YAML) over a scan store on a Dask cluster",
        description="Run the stages of a workflow over every image of a scan store and write a "
                    "resumable results store (Zarr, open with xarray.open_zarr).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", help="workflow YAML file (see workflows/demo.yaml)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="YAML",
                       help="cluster config (default: the workflow's 'cluster:', else a local cluster)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--output", metavar="ZARR", help="results store (overrides the workflow's 'output:')")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing results store and start again (default: resume)")
    parser.add_argument("--allow-incomplete-scan", action="store_true",
                        help="run on a scan store whose ingest did not finish: only the points read so "
                             "far are processed (the others are marked invalid_input); recorded in the store")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args) -> int:
    return execute(args)


def execute(args, *, adjust_config=None, announce=None) -> int:
    """`laueflow run` (and `laueflow submit`, which passes ``adjust_config(config, workflow) →
    config``, applied to the cluster config, and ``announce(client)``, called once the cluster is up)."""
    workflow = None
    try:
        workflow = load_workflow(args.workflow, output=args.output)
        cluster_path = getattr(args, "cluster", None) or workflow.cluster
        scheduler = getattr(args, "scheduler", None)
        config = load_cluster_config(cluster_path) if cluster_path and not scheduler else None
        if adjust_config is not None:
            config = adjust_config(config, workflow)
        # the stores' locks and the scan's state before any worker starts: refused at once
        with StoreLock(workflow.output, "run", log=print), \
                StoreLock(workflow.input, "run (reading the scan)", shared=True):
            _validate(workflow, args)
            summary = _run(workflow, config, args, announce)
    except (WorkflowError, ClusterConfigError, ResultsStoreError, StoreLockedError) as err:
        raise UserError(str(err)) from None
    except KeyboardInterrupt:  # Ctrl-C (the driver's alone: workers ignore it), the cluster is shut down
        print(_interrupted(workflow), file=sys.stderr)
        return 130
    except RuntimeError as err:  # a task failed: finished tiles are kept for the next run
        print(f"laueflow run: error: {err}", file=sys.stderr)
        return 1
    _report(summary)
    return 0


def _interrupted(workflow) -> str:
    """The one line after Ctrl-C: the tiles kept, as the store says once the cluster is down."""
    try:
        done = read_chunk_done(workflow.output) if workflow is not None else None
    except (OSError, KeyError, ValueError):  # no results store yet, or one being created
        done = None
    if done is None:
        return "laueflow run: interrupted before any tile was run; run the same command again to start"
    return (f"laueflow run: interrupted — {int(done.sum())} of {done.size} tiles are done and kept; "
            "run the same command again to resume")


def _validate(workflow, args) -> None:
    """Everything that needs no cluster — scan, parameters, models, results store — before any
    worker starts (the run repeats it; cheap)."""
    from ..pipeline.run import validate_inputs  # deferred: imports scipy (~0.6 s)

    validate_inputs(workflow, overwrite=args.overwrite, allow_incomplete_scan=args.allow_incomplete_scan,
                    log=lambda *a: None)


def _run(workflow, config, args, announce=None):
    from ..pipeline.run import run_workflow  # deferred: imports scipy (~0.6 s)

    scheduler = getattr(args, "scheduler", None)
    with connect(config, address=scheduler) as client:
        if announce is not None:
            announce(client)
        description = describe(client)
        description["config"] = config.to_dict() if config else (
            {"type": "scheduler", "address": scheduler} if scheduler else {"type": "local"})
        return run_workflow(workflow, client, overwrite=args.overwrite,
                            progress=not args.no_progress, cluster_description=description,
                            allow_incomplete_scan=args.allow_incomplete_scan)


def _report(summary) -> None:
    from ..pipeline.run import format_stage_table  # deferred: imports scipy (~0.6 s)

    if summary.n_tiles_run:
        print(f"laueflow run: {summary.n_tiles_run} tiles ({summary.n_images_run} images) in "
              f"{summary.wall_s:.1f} s ({summary.images_per_s:.2f} images/s); "
              f"{summary.n_tiles_done_before} tiles were already done → {summary.results}")
    else:
        print(f"laueflow run: no tiles left to run ({summary.n_tiles_done_before} tiles were already done)"
              + (f"; reduce stages run: {', '.join(summary.reduce_timings_s)}" if summary.reduce_timings_s else "")
              + f" → {summary.results}")
    if not summary.complete:
        print("laueflow run: the results store is not complete yet: run the same command again to resume")
    table = format_stage_table(summary)
    if table:
        print(table)
    # no silent truncation: images whose peak search kept only the brightest `max_peaks`
    # (peak_count_found > peak_count, status peaks_truncated), read from the results store: every
    # tile written so far, by this run and earlier ones
    import numpy as np
    import zarr  # deferred: zarr is heavy

    try:
        group = zarr.open_group(str(summary.results), mode="r", use_consolidated=False)
        if "peak_count_found" not in group or "peak_count" not in group:
            return  # no peak stage, or one without the record
        found = np.asarray(group["peak_count_found"][...])
        kept = np.asarray(group["peak_count"][...])
        stages = (group.attrs.get("workflow") or {}).get("stages") or []
    except (OSError, KeyError, ValueError):
        return
    truncated = (kept >= 0) & (found > kept)
    if not truncated.any():
        return
    name, max_peaks = "peaks", int(kept[truncated].max())
    for entry in stages:  # the stage that wrote the peak tables: the one with a `max_peaks`
        for stage, params in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(params, dict) and "max_peaks" in params:
                name, max_peaks = stage, int(params["max_peaks"])
    largest = int(found[truncated].max())
    print(f"laueflow run: warning: {int(truncated.sum())} of {int((kept >= 0).sum())} images had more peaks "
          f"than max_peaks = {max_peaks} (up to {largest} found); only their brightest {max_peaks} were kept "
          f"(status peaks_truncated; peak_count_found holds the number found). To keep every peak, raise "
          f"`max_peaks` in the workflow's `{name}` stage to at least {largest} and run again with --overwrite.",
          file=sys.stderr)
