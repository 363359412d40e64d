"""``laueflow index``: index LaueTools peak lists (``.dat`` / ``.cor``) → one ``.fit`` file per
grain (refined strain) and a summary table, files in parallel on Dask."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .main import UserError
from .materials_args import add_materials_file_argument, use_materials_files

EXAMPLE = """\
examples:
  laueflow index peaks/ --calibration calib.det --material Cu --out fits/
  laueflow index img_0001.cor img_0002.cor --material GaN --material Si --out fits/     # calibration from the .cor headers
  laueflow index peaks/*.dat --calibration calib.det --material Cu --max-grains 3 --serial --out fits/
  laueflow index peaks/ --calibration calib.det --material Cu --scheduler tcp://10.0.0.5:8786 --out /shared/fits/
  laueflow index peaks/ --calibration calib.det --materials-file mine.yaml --material ZnCuOCl --out fits/ \\
      --ub-variant lauetools --summary summary.tsv

Inputs: .dat files (LaueTools peak search: peak_X peak_Y … columns; pixels X = col + 1), .cor files
(2theta chi X Y I …, the calibration in '# dd : …' header lines; a .cor without X Y columns is
indexed only, without strain refinement) or folders of them (a .dat next to a .cor of the same
name is left out). Without intensities (or with all equal ones) the spots are used in file order.

Calibration: --calibration FILE.det is needed for .dat files. Without it every .cor must hold the
same calibration in its header. With it, it wins: the angles of a .cor are recomputed from its
pixel columns, and a .cor whose header differs gets a warning.

Model: the LaueNN indexer for the materials and calibration is found in the model cache or trained
once (minutes; `laueflow train indexer` does the same beforehand); --no-train refuses to train.

Output in --out: <name>_g<k>.fit for every grain k of each file (spots with hkl, UB, strain in
1e-3 units; --ub-variant as in `laueflow export`, see docs/strain.md) and summary.csv (one row per
grain: file, n_peaks, n_predict = spots that could start a grain, material, matching rate, Euler
angles, strain status …; failed files with their error). Nothing in --out is ever deleted; files
of these names already there are refused unless --overwrite (which replaces only them).
Exit code: 0 all files read (with or without grains), 1 some file failed, 2 bad arguments.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index", help="index LaueTools .dat/.cor peak lists → .fit files with refined strain",
        description="Index peak lists (LaueTools .dat/.cor) with the LaueNN indexer, refine the strain of "
                    "every grain and write LaueTools .fit files and a summary table; files run in parallel "
                    "on Dask (a local cluster by default).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peaklists", nargs="+", metavar="PEAKLIST", help=".dat/.cor files or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--calibration", metavar="DET", help="LaueTools .det file (needed for .dat files; "
                                                              "wins over .cor headers)")
    parser.add_argument("--material", action="append", required=True, metavar="NAME",
                        help="material (repeat for several phases), e.g. Cu, Si, GaN")
    add_materials_file_argument(parser)
    parser.add_argument("--max-grains", type=int, default=5, metavar="N", help="grains searched per file (default 5)")
    parser.add_argument("--ub-variant", default="laueflow", metavar="VARIANT",
                        help="UB written to the .fit files: laueflow (default), identity, lauetools, sample or "
                             "reference:FILE (as `laueflow export --ub-variant`)")
    parser.add_argument("--summary", default="summary.csv", metavar="NAME",
                        help="summary table in --out: .csv (default summary.csv) or .tsv")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the same names in --out (only those this run writes)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--serial", action="store_true", help="no Dask: index the files one by one in this process")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786 "
                                                              "(workers must see the files and --out)")
    where.add_argument("--cluster", metavar="YAML", help="cluster config (cluster-configs/*.yaml)")
    parser.add_argument("--workers", type=int, metavar="N", help="workers of the local cluster (default: one per CPU)")
    advanced = parser.add_argument_group("indexer model")
    advanced.add_argument("--no-train", action="store_true", help="refuse to train a model that is not cached")
    advanced.add_argument("--cache-dir", metavar="DIR", help="model cache (default $LAUEFLOW_CACHE/indexers or "
                                                             "~/.cache/laueflow/indexers)")
    advanced.add_argument("--indexer-config", metavar="FILE",
                          help="JSON or YAML mapping of indexer settings (IndexerConfig fields, as `laueflow "
                               "train indexer` sets them; default: its defaults)")
    advanced.add_argument("--n-predict", type=int, metavar="N",
                          help="spots per file (brightest first, else in file order) that may start a grain "
                               "(default max(model centres, 25 × max grains))")
    parser.set_defaults(func=index_command)
    return parser


def _indexer_config(path):
    from ..stages.indexing.training import IndexerConfig  # deferred: imports scipy (~0.5 s)

    if not path:
        return IndexerConfig()
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--indexer-config {file}: no such file")
    try:
        text = file.read_text()
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise UserError(f"--indexer-config {file}: not valid JSON/YAML ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"--indexer-config {file}: must be a mapping of IndexerConfig fields")
    unknown = sorted(set(data) - set(IndexerConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"--indexer-config {file}: unknown setting(s) {', '.join(unknown)}; known: "
                        + ", ".join(IndexerConfig.__dataclass_fields__))
    try:
        return IndexerConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"--indexer-config {file}: {err}") from None


def _check_args(args) -> None:
    if args.max_grains < 1:
        raise UserError(f"--max-grains must be ≥ 1, got {args.max_grains}")
    if args.n_predict is not None and args.n_predict < 2:
        raise UserError(f"--n-predict must be ≥ 2, got {args.n_predict}")
    if args.workers is not None and (args.workers < 1 or args.serial or args.scheduler or args.cluster):
        raise UserError("--workers N (≥ 1) sets the size of the default local cluster: not with --serial, "
                        "--scheduler or --cluster")
    if Path(args.summary).name != args.summary or Path(args.summary).suffix.lower() not in (".csv", ".tsv"):
        raise UserError(f"--summary must be a file name ending in .csv or .tsv (written in --out), got {args.summary!r}")


def index_command(args) -> int:
    from ..io.detfile import read_det
    from ..io.lauetools_files import parse_ub_variant  # deferred: imports scipy (~0.5 s)
    from ..physics.materials import get_materials
    from ..pipeline import peaklists as pl  # deferred: imports scipy

    _check_args(args)
    use_materials_files(args.materials_file)
    try:
        materials = get_materials(args.material)
        ub_variant, reference_ub = parse_ub_variant(args.ub_variant)
        files, notes = pl.find_peaklists(args.peaklists)
        stems = pl.output_stems(files)
        if args.calibration:
            calibration = read_det(args.calibration)
        else:
            calibration = pl.choose_calibration(files)
    except ValueError as err:
        raise UserError(str(err)) from None
    config = _indexer_config(args.indexer_config)
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    existing = pl.existing_outputs(out, stems, args.max_grains, args.summary) if out.is_dir() else []
    if existing and not args.overwrite:
        raise UserError(f"--out {out} already holds {len(existing)} file(s) this run would write, e.g. "
                        + ", ".join(p.name for p in existing[:3])
                        + ": use --overwrite to replace them (nothing else is touched), or another --out")
    for note in notes:
        print(f"laueflow index: {note}")
    model = _model(materials, calibration, config, args)
    out.mkdir(parents=True, exist_ok=True)
    job = pl.IndexJob(out_dir=str(out), model_path=str(Path(model.path).resolve()), calibration=calibration,
                      from_det=bool(args.calibration), max_grains=args.max_grains, n_predict=args.n_predict,
                      ub_variant=ub_variant, reference_ub=reference_ub,
                      strain_params={"energy_band_kev": tuple(model.config.energy_band_kev)})
    print(f"laueflow index: {len(files)} file(s), materials {', '.join(m.name for m in model.materials)}, "
          f"model {model.path}")
    results = _run(files, stems, job, args)
    summary = pl.write_summary(out / args.summary, results)
    written = {Path(p).name for r in results for p in r.written}
    stale = [p for p in existing if p.name not in written and p.name != args.summary]
    _report(results, summary, stale)
    return 1 if any(r.error for r in results) else 0


def _model(materials, calibration, config, args):
    from ..pipeline.indexers import IndexerNotTrainedError, get_indexer

    try:
        return get_indexer(materials, calibration, config, cache_dir=args.cache_dir, train=not args.no_train,
                           log=lambda *a: print("laueflow index:", *a))
    except IndexerNotTrainedError as err:
        raise UserError(f"{err} (--no-train was given)") from None


def _run(files, stems, job, args):
    from ..pipeline import peaklists as pl
    from ..pipeline.cluster import ClusterConfig, ClusterConfigError, connect, load_cluster_config

    if args.serial:
        return pl.run_index(files, stems, job)
    try:
        if args.cluster:
            config = load_cluster_config(args.cluster)
        else:
            config = ClusterConfig("local", {"n_workers": args.workers or "auto", "dashboard_address": ":0"})
        with connect(config, address=args.scheduler) as client:
            print(f"laueflow index: Dask dashboard {client.dashboard_link}")
            return pl.run_index(files, stems, job, client)
    except ClusterConfigError as err:
        raise UserError(str(err)) from None


def _report(results, summary, stale) -> None:
    failed = [r for r in results if r.error]
    indexed = [r for r in results if not r.error]
    grains = sum(len(r.grains) for r in indexed)
    refined = sum(1 for r in indexed for g in r.grains if g.get("strain_status") == "ok")
    empty = sum(1 for r in indexed if not r.grains)
    print(f"laueflow index: {len(results)} file(s): {len(indexed) - empty} with grains ({grains} grains, "
          f"{refined} strain-refined), {empty} without grain, {len(failed)} failed → {summary}")
    unordered = [r for r in indexed if r.intensities in ("none", "all equal")]
    if unordered:
        most = max(r.n_predict or 0 for r in unordered)
        print(f"laueflow index: {len(unordered)} file(s) without intensities (or with all equal ones): spots "
              f"used in file order; the first {most} of each could start a grain (n_predict in the summary)")
    no_pixels = [r for r in indexed if any("no pixel columns" in n for n in r.notes)]
    if no_pixels:
        print(f"laueflow index: {len(no_pixels)} .cor file(s) without pixel columns: indexed only, no strain "
              f"refinement (e.g. {Path(no_pixels[0].file).name})")
    for r in indexed:
        for note in r.notes:
            if note.startswith("warning:"):
                print(f"laueflow index: {Path(r.file).name}: {note}", file=sys.stderr)
    for r in failed[:20]:
        print(f"laueflow index: failed: {r.file}: {r.error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"laueflow index: … and {len(failed) - 20} more failed files (see {summary})", file=sys.stderr)
    if stale:
        print(f"laueflow index: note: {len(stale)} older file(s) of the same names were not rewritten and are "
              f"left as they were (not in {summary.name}), e.g. {stale[0].name}")
