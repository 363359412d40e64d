"""``laueflow train spots``: train or fine-tune the spot-descriptor CNN.

``laueflow/cli/train.py`` (the ``train`` command) calls :func:`add_train_target` with its
sub-parsers; until it exists, ``python -m laueflow.cli.train_spots ARGS`` runs the same target.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

from ..io.model_files import load_spotcnn, save_spotcnn
from ..pipeline.spot_data import patches_from_scan_zarr
from ..stages.spot_training import TRAIN_DEFAULTS as D, simulate_spot_scans, simulated_dataset, train_spotcnn

EXAMPLE = """\
examples:
  laueflow train spots                                   # reproduce the shipped weights (seed 0)
  laueflow train spots --out my_spotcnn.pt --epochs 3    # a quicker model
  laueflow train spots --scan-zarr myscan.zarr --init laueflow/data/spotcnn.pt --out tuned.pt
                                                         # fine-tune on your own data (labels: Gaussian fit)

Training data: simulated scans (seeds SEED*1000 + 0 … train_scans−1; validation SEED*1000 + 500 …)
and/or user scan.zarr stores; every dataset is resampled to a uniform Sim distribution
(12 bins, ≤ --per-bin spots each). Evaluation scans use seeds ≥ 900000, never used in training.
Details: docs/spot-descriptors.md.
"""

EVAL_SEED_BASE = 900_000


def add_train_target(train_subparsers) -> argparse.ArgumentParser:
    """Register ``spots`` under the ``train`` command's sub-parsers."""
    p = train_subparsers.add_parser(
        "spots", help="train / fine-tune the spot-descriptor CNN (Sim, Pos, Asp, Area)",
        description="Train the 32×32 spot CNN on simulated and/or user scans labelled by the batched "
                    "Gaussian fit; writes WEIGHTS.pt and WEIGHTS.json (sha256, command, seed, history).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="spotcnn.pt", help="weights file to write (default spotcnn.pt; the "
                   "shipped model is laueflow/data/spotcnn.pt)")
    p.add_argument("--seed", type=int, default=D["seed"], help="seed of data, augmentation and init (default 0)")
    p.add_argument("--train-scans", type=int, default=D["train_scans"], help="simulated training scans (0: none; default 80)")
    p.add_argument("--scans-per-dataset", type=int, default=D["scans_per_dataset"],
                   help="simulated scans per dataset; each dataset is resampled on its own (default 40)")
    p.add_argument("--val-scans", type=int, default=D["val_scans"], help="simulated validation scans")
    p.add_argument("--spots-per-scan", type=int, default=D["spots_per_scan"])
    p.add_argument("--per-bin", type=int, default=D["per_bin"], help="max spots per Sim bin per dataset (2000)")
    p.add_argument("--epochs", type=int, default=D["epochs"], help="epochs (default 14; the best on validation is kept)")
    p.add_argument("--hold-epochs", type=int, default=D["hold_epochs"],
                   help="epochs at --lr before the cosine decay to --lr-min (default 5; -1: constant lr)")
    p.add_argument("--lr-min", type=float, default=D["lr_min"], help="learning rate at the end of the decay (1e-5)")
    p.add_argument("--pos-weight", type=float, default=D["pos_weight"],
                   help="L1 loss weight of Pos*_col and Pos*_row relative to Sim, Asp, Area* (default 2)")
    p.add_argument("--patience", type=int, default=None, help="stop after this many epochs without a better "
                   "validation loss (default: run all epochs)")
    p.add_argument("--batch-size", type=int, default=D["batch_size"])
    p.add_argument("--lr", type=float, default=D["lr"])
    p.add_argument("--threads", type=int, default=D["threads"], help="torch CPU threads (default 1)")
    p.add_argument("--scan-zarr", action="append", default=[], metavar="ZARR",
                   help="user scan store to add as a training dataset (repeatable)")
    p.add_argument("--val-scan-zarr", metavar="ZARR", help="user scan store used for validation instead")
    p.add_argument("--max-images", type=int, default=50, help="images read per user scan (default 50)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (fine-tuning)")
    p.set_defaults(func=run_train_spots)
    return p


def run_train_spots(args) -> int:
    if args.train_scans + len(args.scan_zarr) == 0:
        raise ValueError("nothing to train on: give --train-scans > 0 or --scan-zarr")
    base = args.seed * 1000
    if args.train_scans > 500:
        raise ValueError("--train-scans must be ≤ 500 (validation scans start at SEED*1000 + 500)")
    if base + 999 >= EVAL_SEED_BASE:
        raise ValueError(f"--seed too large: training seeds must stay below {EVAL_SEED_BASE}")
    t0 = time.perf_counter()
    datasets = []
    if args.train_scans:
        # simulated scans in groups of --scans-per-dataset, each resampled to a uniform Sim on its own
        # (labelled scan by scan to bound memory; the resampling generator derives from the seed)
        rs = np.random.default_rng([args.seed, 1])
        per = max(1, args.scans_per_dataset)
        for lo in range(base, base + args.train_scans, per):
            seeds = range(lo, min(lo + per, base + args.train_scans))
            datasets.append(simulated_dataset(seeds, args.spots_per_scan, rs, per_bin=args.per_bin))
            print(f"simulated training scans {seeds.start}…{seeds.stop - 1} × {args.spots_per_scan} spots "
                  f"→ {len(datasets[-1])} after uniform-Sim resampling", flush=True)
    for k, path in enumerate(args.scan_zarr):
        datasets.append(patches_from_scan_zarr(path, max_images=args.max_images, scan_id=-(k + 1)))
        print(f"{path}: {len(datasets[-1])} peak patches")
    if args.val_scan_zarr:
        val = patches_from_scan_zarr(args.val_scan_zarr, max_images=args.max_images, scan_id=-100)
    else:
        val = simulate_spot_scans(range(base + 500, base + 500 + max(args.val_scans, 1)), args.spots_per_scan)
    init_state = load_spotcnn(args.init, check_hash=False).state_dict() if args.init else None
    model, hist = train_spotcnn(datasets, val, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                                lr=args.lr, per_bin=args.per_bin, threads=args.threads,
                                hold_epochs=None if args.hold_epochs < 0 else args.hold_epochs, lr_min=args.lr_min,
                                pos_weight=args.pos_weight, patience=args.patience, init_state=init_state,
                                log=lambda m: print(m, flush=True))
    argv = sys.argv[1:]
    rest = argv[argv.index("spots") + 1:] if "spots" in argv else argv
    command = "laueflow train spots " + shlex.join(rest)
    meta = save_spotcnn(model, args.out, metadata={
        "command": getattr(args, "command_line", None) or command.strip(),
        "seed": args.seed,
        "train_scan_seeds": [base, base + args.train_scans - 1] if args.train_scans else [],
        "val_scan_seeds": [base + 500, base + 500 + max(args.val_scans, 1) - 1] if not args.val_scan_zarr else [],
        "user_scans": [str(p) for p in args.scan_zarr],
        "scans_per_dataset": args.scans_per_dataset,
        "spots_per_scan": args.spots_per_scan, "per_bin": args.per_bin, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads, "init": args.init,
        "lr_schedule": (f"constant {args.lr:g} for {args.hold_epochs} epochs, then cosine per batch to {args.lr_min:g}"
                        if args.hold_epochs >= 0 else f"constant {args.lr:g}"),
        "loss": f"L1, weights (1, {args.pos_weight:g}, {args.pos_weight:g}, 1, 1)/sum; best weighted val loss kept",
        "patience": args.patience,
        "normalisation": "x = (I - median(cutout)) / max(I - median over central 7x7), clipped [-4, 8]",
        "outputs": ["Sim", "Pos*_col", "Pos*_row", "Asp", "Area*"],
        "history": hist["epochs"], "best_epoch": hist["best_epoch"], "best_val_loss": round(hist["best_val_loss"], 5),
        "n_train": hist["n_train"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "torch": __import__("torch").__version__, "numpy": np.__version__,
    })
    print(f"wrote {args.out} (sha256 {meta['sha256'][:16]}…, best epoch {hist['best_epoch']}, "
          f"val loss {hist['best_val_loss']:.4f}, {meta['wall_s']:.0f} s)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="laueflow train")
    sub = parser.add_subparsers(dest="target", required=True)
    add_train_target(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
