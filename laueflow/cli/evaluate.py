"""``laueflow evaluate``: accuracy of a results store against the simulator's ground truth."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..pipeline.evaluate import (check_evaluated, check_stores, evaluate, format_report, incomplete_warning,
                                  to_json, with_segmentation)
from .main import UserError

EXAMPLE = """\
example:
  laueflow evaluate demo/results.zarr --truth demo/truth.zarr --json demo/evaluation.json
  laueflow evaluate demo/results.zarr --truth demo/truth.zarr --segmentation k6-pcs32-kmeans

Peaks: a truth spot is found when a detected peak at the same scan point lies within --radius px
(default 1.5); recall counts truth spots with amplitude ≥ --snr-min × noise σ (default 5; other
SNR bins are listed); truth spots within 2 px of a brighter one are excluded and counted;
precision counts detected peaks within --radius of any truth spot. Details: docs/results-schema.md.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="compare a results store with the simulator's ground truth",
        description="Peak recall, precision and position error (and, as stages land, more "
                    "metrics) of a results store against a truth store from `laueflow simulate`.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results store written by `laueflow run`")
    parser.add_argument("--truth", required=True, help="truth store written by `laueflow simulate`")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--radius", type=float, default=None, metavar="PX",
                        help="match radius in pixels (default 1.5)")
    parser.add_argument("--snr-min", type=float, default=None,
                        help="recall counts truth spots with amplitude/noise ≥ this (default 5)")
    parser.add_argument("--overlap", type=float, default=None, metavar="PX",
                        help="exclude truth spots this close to a brighter one (default 2)")
    parser.add_argument("--segmentation", metavar="NAME",
                        help="score the named segmentation written by `laueflow segment` (group segmentations/NAME) "
                             "instead of the run's own; the delegate and phase-group metrics, computed from the "
                             "run's segmentation, are then skipped")
    parser.set_defaults(func=evaluate_command)
    return parser


def _open(path, what, group=None):
    import xarray as xr  # deferred: xarray is heavy

    if not Path(path).exists():
        raise UserError(f"{what} store {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata")
            return xr.open_zarr(str(path), group=group)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot open {what} store {path} with xarray: {err}") from None


def _segmentation(args, results):
    """``(results, withheld, label)``: the dataset to score, the variables withheld and which
    segmentation is scored (None: the store has no segmentation)."""
    listed = [s.get("name") for s in results.attrs.get("segmentations", []) or []]
    if args.segmentation is None:
        if "cluster_label" not in results.variables:
            return results, {}, None
        label = "the run's own (root variables)"
        if listed:
            label += f"; named segmentations in this store: {', '.join(listed)} (score one with --segmentation NAME)"
        return results, {}, label
    if args.segmentation not in listed:
        raise UserError(f"{args.results} has no finished segmentation named {args.segmentation!r}; its "
                        f"segmentations: {', '.join(listed) if listed else 'none'} (written by `laueflow segment`)")
    group = _open(args.results, "results", group=f"segmentations/{args.segmentation}")
    try:
        results, withheld = with_segmentation(results, group, args.segmentation)
    except ValueError as err:
        raise UserError(str(err)) from None
    return results, withheld, f"segmentations/{args.segmentation}"


def evaluate_command(args) -> int:
    results = _open(args.results, "results")
    truth = _open(args.truth, "truth")
    try:  # before any metric: the right kinds of store, of the same scan shape
        unchecked = check_stores(results, truth, results_name=str(args.results), truth_name=f"--truth {args.truth}")
    except ValueError as err:
        raise UserError(str(err)) from None
    if unchecked:
        print(f"laueflow evaluate: warning: {unchecked}", file=sys.stderr)
    results, withheld, scored = _segmentation(args, results)
    try:
        report = evaluate(results, truth, withheld=withheld, radius_px=args.radius, snr_min=args.snr_min,
                          overlap_px=args.overlap)
        check_evaluated(report)
    except ValueError as err:
        raise UserError(str(err)) from None
    if scored:
        report["segmentation"] = scored
    warning = incomplete_warning(report, str(args.results))
    if warning:
        print(f"laueflow evaluate: warning: {warning}", file=sys.stderr)
    report["results"] = str(args.results)
    report["truth"] = str(args.truth)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(report), indent=2))
        print(f"wrote {args.json}")
    return 0
