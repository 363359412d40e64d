"""``laueflow evaluate``: accuracy of a results store against the simulator's ground truth."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..pipeline.evaluate import (check_evaluated, check_stores, evaluate, format_report, incomplete_warning,
                                  to_json)
from .main import UserError

EXAMPLE = """\
example:
  laueflow evaluate demo/results.zarr --truth demo/truth.zarr --json demo/evaluation.json

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
    parser.set_defaults(func=evaluate_command)
    return parser


def _open(path, what):
    import xarray as xr  # deferred: xarray is heavy

    if not Path(path).exists():
        raise UserError(f"{what} store {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata")
            return xr.open_zarr(str(path))
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot open {what} store {path} with xarray: {err}") from None


def evaluate_command(args) -> int:
    results = _open(args.results, "results")
    truth = _open(args.truth, "truth")
    try:  # before any metric: the right kinds of store, of the same scan shape
        check_stores(results, truth, results_name=str(args.results), truth_name=f"--truth {args.truth}")
        report = evaluate(results, truth, radius_px=args.radius, snr_min=args.snr_min,
                          overlap_px=args.overlap)
        check_evaluated(report)
    except ValueError as err:
        raise UserError(str(err)) from None
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
