"""``laueflow train``: train models used by the pipeline (``train indexer`` …).

Targets are sub-subcommands. Each target module listed in :data:`TRAIN_TARGETS` exposes
``add_train_target(train_subparsers)`` which registers its parser and sets ``func``; a new target
plugs in by adding its module path here (modules not yet written are skipped, as in
:mod:`laueflow.cli.main`). The ``indexer`` target lives in this module; ``spots`` in
:mod:`laueflow.cli.train_spots`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..io.detfile import read_det
from .materials_args import add_materials_file_argument, use_materials_files
from ..physics.geometry import DEFAULT_CALIBRATION
from ..physics.simulate import DEFAULT_ENERGY_BAND_KEV
from .main import UserError, main

#: modules providing ``add_train_target(train_subparsers)``, in ``laueflow train --help`` order
TRAIN_TARGETS = ["laueflow.cli.train", "laueflow.cli.train_spots", "laueflow.cli.train_autoencoder"]

EXAMPLE = """\
examples:
  laueflow train indexer --material Cu --calibration calib.det
  laueflow train indexer --material GaN --material Si --max-grains 3 --max-grains 1 --calibration calib.det
  laueflow train indexer --material Ti --max-index 5 --cache-dir ./models --seed 1
  laueflow train indexer --materials-file my_materials.yaml --material ZnCuOCl --calibration calib.det

The model is stored in the cache (default ~/.cache/laueflow/indexers, or $LAUEFLOW_CACHE/indexers)
under a hash of (materials, calibration, energy band, feature, class and training parameters);
`laueflow run` with the same materials and calibration reuses it. Training again with the same
arguments loads the cached model unless --retrain is given.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train models used by the pipeline (indexer, …)",
        description="Train a model on simulated data and store it in the model cache.",
        epilog="examples:\n  laueflow train indexer --material Cu --calibration demo/calib.det\n"
               "  laueflow train spots --out my-spotcnn.pt --seed 0      # or fine-tune on your scan.zarr\n"
               "  laueflow train autoencoder --out laueflow/data/autoencoder.pt --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    for name in TRAIN_TARGETS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a target still being written
            if err.name != name:
                raise
            continue
        module.add_train_target(targets)
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])
    return parser


def add_train_target(targets) -> argparse.ArgumentParser:
    p = targets.add_parser(
        "indexer", help="LaueNN hkl-family classifier for one or more materials",
        description="Simulate Laue patterns of the material(s) with the detector calibration, train the "
                    "LaueNN dense classifier (angular-distance histograms → hkl family + material), print "
                    "and store its validation accuracy.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--material", action="append", required=True, metavar="NAME",
                   help="material key (repeat for multi-phase models), e.g. Cu, Si, GaN")
    add_materials_file_argument(p)
    p.add_argument("--calibration", metavar="DET", help="LaueTools .det file (default: built-in sCMOS calibration)")
    p.add_argument("--energy-band", nargs=2, type=float, default=DEFAULT_ENERGY_BAND_KEV, metavar=("EMIN", "EMAX"),
                   help="energy band in keV (default 5 23)")
    p.add_argument("--max-index", type=int, action="append", metavar="N",
                   help="largest Miller index of the classes (default 5; once per material or once for all)")
    p.add_argument("--max-grains", type=int, action="append", metavar="N",
                   help="most grains per training pattern (default 5; once per material or once for all)")
    p.add_argument("--max-angle", type=float, help="histogram range, deg (default 60)")
    p.add_argument("--step", type=float, help="histogram bin, deg (default 0.1)")
    p.add_argument("--patterns", type=int, help="training patterns per grain-count combination and epoch (default "
                                                "600, at most 3000 in all: several materials share them)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 6, new patterns every epoch; cosine "
                                              "learning-rate decay over them, early stopping, patience 2)")
    p.add_argument("--precision", choices=("auto", "bfloat16", "float32"),
                   help="training arithmetic (default auto: bfloat16 autocast where the CPU/GPU has native "
                        "bf16, else float32; validation is always float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extinction-rule", choices=("space_group", "lauetools"), default="space_group")
    p.add_argument("--cache-dir", metavar="DIR", help="model cache (default $LAUEFLOW_CACHE/indexers or "
                                                      "~/.cache/laueflow/indexers)")
    p.add_argument("--retrain", action="store_true", help="train even if a cached model exists")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads for training (default: torch's minus one, "
                                              "which simulates the next epoch's data; use 1 on a machine "
                                              "shared with other jobs)")
    p.set_defaults(func=train_indexer_command)
    return p


def config_from_args(args):
    from ..stages.indexing.training import IndexerConfig  # deferred: imports scipy (~0.5 s)

    kw = dict(energy_band_kev=tuple(args.energy_band), seed=args.seed, extinction_rule=args.extinction_rule)
    for key, value in (("max_angle_deg", args.max_angle), ("step_deg", args.step), ("n_train", args.patterns),
                       ("epochs", args.epochs), ("precision", args.precision)):
        if value is not None:  # else IndexerConfig's default
            kw[key] = value
    if args.max_index:
        kw["max_index"] = tuple(args.max_index)
    if args.max_grains:
        kw["max_grains"] = tuple(args.max_grains)
    return IndexerConfig(**kw)


def train_indexer_command(args) -> int:
    from ..io.indexer_files import save_indexer  # deferred: imports scipy (~0.5 s)
    from ..pipeline.indexers import get_indexer, model_path  # deferred: imports scipy (~0.5 s)
    from ..stages.indexing.training import train_indexer  # deferred: imports scipy (~0.5 s)

    use_materials_files(args.materials_file)
    if args.calibration:
        calibration = read_det(args.calibration)
    else:
        calibration = DEFAULT_CALIBRATION
    config = config_from_args(args)
    try:
        path = model_path(args.material, calibration, config, args.cache_dir)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.device:  # explicit device: always (re)train on it
        indexer = train_indexer(args.material, calibration, config, device=args.device, threads=args.threads)
        save_indexer(indexer, path)
        print(f"indexer: saved {path}")
    else:
        indexer = get_indexer(args.material, calibration, config, cache_dir=args.cache_dir, retrain=args.retrain,
                              threads=args.threads)
    print(f"validation accuracy: {100 * indexer.validation_accuracy:.3f} % "
          f"({indexer.classes.n_classes} classes; trained in {indexer.train_seconds:.1f} s) → {indexer.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(["train", *sys.argv[1:]]))
