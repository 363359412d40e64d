"""``laueflow run``: run a workflow over a whole scan on a Dask cluster → results.zarr."""
from __future__ import annotations

import argparse
import sys

from ..pipeline.cluster import ClusterConfigError, connect, describe, load_cluster_config
from ..pipeline.store import ResultsStoreError
from ..pipeline.workflow import WorkflowError, load_workflow
from .main import UserError

EXAMPLE = """\
examples:
  laueflow run workflows/demo.yaml                                  # LocalCluster sized to your CPUs
  laueflow run workflows/demo.yaml --cluster cluster-configs/local.yaml --output demo/results.zarr
  laueflow run workflows/demo.yaml --scheduler tcp://10.0.0.5:8786  # an existing Dask scheduler

A killed or failed run resumes where it stopped: run the same command again (finished tiles are
skipped). --overwrite starts from scratch. Schema of the output: docs/results-schema.md.
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args) -> int:
    from ..pipeline.run import format_stage_table, run_workflow  # deferred: imports scipy (~0.6 s)

    try:
        workflow = load_workflow(args.workflow, output=args.output)
        cluster_path = args.cluster or workflow.cluster
        config = load_cluster_config(cluster_path) if cluster_path and not args.scheduler else None
        with connect(config, address=args.scheduler) as client:
            description = describe(client)
            description["config"] = config.to_dict() if config else (
                {"type": "scheduler", "address": args.scheduler} if args.scheduler else {"type": "local"})
            summary = run_workflow(workflow, client, overwrite=args.overwrite,
                                   progress=not args.no_progress, cluster_description=description)
    except (WorkflowError, ClusterConfigError, ResultsStoreError) as err:
        raise UserError(str(err)) from None
    except RuntimeError as err:  # a task failed: finished tiles are kept for the next run
        print(f"laueflow run: error: {err}", file=sys.stderr)
        return 1
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
    return 0
