"""``laueflow train autoencoder``: train (or fine-tune) the Laue-image autoencoder of the feature stage."""
from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

from ..stages.autoencoder_training import TRAIN_DEFAULTS as D

#: = laueflow.synth.training_frames.HELD_OUT_MATERIAL (not imported here: `laueflow --help` stays
#: fast; tests/cli/test_cli_train_autoencoder.py checks they agree)
HELD_OUT_MATERIAL = "Sn"

EXAMPLE = f"""\
examples:
  laueflow train autoencoder --out laueflow/data/autoencoder.pt --seed 0   # reproduce the shipped model
  laueflow train autoencoder --out quick.pt --train-scans 40 --epochs 3      # a quicker model
  laueflow train autoencoder --init laueflow/data/autoencoder.pt --scan myscan.zarr --out tuned.pt
                                                           # fine-tune on your own scan (then use
                                                           # `features: {{model: tuned.pt}}` in a workflow)

Training data: one small random simulated scan per seed (SEED*10000 + 0 … train_scans−1: a random
material of the library but {HELD_OUT_MATERIAL} (laueflow/synth/training_frames.py); 1–10 grains, twins,
sub-grains, second phases or a Si substrate, strain, noise and intensity levels drawn per scan),
preprocessed like real frames. Validation: scans of the same materials with
seeds SEED*10000 + 5000 …; held-out evaluation: scans of {HELD_OUT_MATERIAL} (never in training), seeds
SEED*10000 + 8000 …. The epoch kept is the one whose features separate the grains of 8 simulated
10 × 10 score scans with known grain maps best (seeds SEED*10000 + 6000 …; the initial weights
included; reported for 2 {HELD_OUT_MATERIAL} scans, which choose nothing). The json next to the
weights records the sha256, this command, the seed, the torch version, the losses and
separabilities. Bit-identical on the CPU for the same command, seed, --threads and
torch version. Details: docs/features.md.
"""


def add_train_target(train_subparsers) -> argparse.ArgumentParser:
    p = train_subparsers.add_parser(
        "autoencoder", help="train / fine-tune the Laue-image autoencoder (features for segmentation)",
        description="Train the CNN autoencoder (128×128 preprocessed Laue images → 256 features, binary "
                    "cross-entropy) on simulated scans of many materials, or fine-tune it on a scan.zarr; "
                    "writes WEIGHTS.pt and WEIGHTS.json (sha256, command, seed, losses).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="autoencoder.pt", help="weights file to write (default autoencoder.pt; "
                   "the shipped model is laueflow/data/autoencoder.pt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scans, the shuffle and the initial weights")
    p.add_argument("--train-scans", type=int, default=None,
                   help="simulated training scans (default 200; 0 with --scan)")
    p.add_argument("--val-scans", type=int, default=4, help="validation scans of the training materials (4)")
    p.add_argument("--heldout-scans", type=int, default=4, help=f"scans of the held-out {HELD_OUT_MATERIAL} (4)")
    p.add_argument("--score-scans", type=int, default=None,
                   help="10 × 10 simulated scans with known grain maps (≥ 3 domains) of the training materials; "
                        "the epoch whose features separate their grains best is kept, the initial weights "
                        "included (default 8; 0 with --scan; 0: keep the epoch of the lowest validation loss)")
    p.add_argument("--scan-shape", type=int, nargs=2, default=(6, 8), metavar=("NY", "NX"),
                   help="points per simulated scan (default 6 8)")
    p.add_argument("--epochs", type=int, default=D["epochs"], help=f"epochs (default {D['epochs']}; best on validation kept)")
    p.add_argument("--batch-size", type=int, default=D["batch_size"])
    p.add_argument("--lr", type=float, default=D["lr"], help=f"initial learning rate (default {D['lr']:g}, cosine decay)")
    p.add_argument("--lr-min", type=float, default=D["lr_min"])
    p.add_argument("--latent-size", type=int, default=D["latent_size"], help="features M (default 256)")
    p.add_argument("--spot-weight", type=float, default=D["spot_weight"],
                   help=f"BCE pixel weight 1 + w·target (default {D['spot_weight']:g}; 0: plain BCE)")
    p.add_argument("--threads", type=int, default=D["threads"], help="torch CPU threads (default 1: reproducible "
                   "and fair to a shared machine)")
    p.add_argument("--scan", action="append", default=[], metavar="ZARR",
                   help="fine-tune on this scan store's images (repeatable; 10 %% kept for validation)")
    p.add_argument("--max-images", type=int, default=2000, help="images read per --scan (default 2000, evenly spread)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (fine-tuning), e.g. "
                   "laueflow/data/autoencoder.pt; their preprocessing is kept")
    p.set_defaults(func=run_train_autoencoder)
    return p


def _log(message: str) -> None:
    print(message, flush=True)


def run_train_autoencoder(args) -> int:
    # deferred: synth imports xarray/scipy (~1–2 s), not needed for `laueflow --help`
    from ..io.model_files import save_autoencoder
    from ..stages.autoencoder_training import train_autoencoder

    train_scans, n_score = _scan_counts(args)
    t0 = time.perf_counter()
    init_state, preprocess, architecture = _starting_point(args)
    data = _training_data(args, train_scans, n_score, preprocess)
    data_s = time.perf_counter() - t0
    _log(f"data ready in {data_s:.0f} s: train {sum(len(x) for x in data['parts'])}, "
         + ", ".join(f"{k} {len(v)}" for k, v in data["val_sets"].items()))
    model, hist = train_autoencoder(np.concatenate(data["parts"]), data["val_sets"], seed=args.seed,
                                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_min=args.lr_min,
                                    threads=args.threads, latent_size=args.latent_size, spot_weight=args.spot_weight,
                                    init_state=init_state, score_sets=data["score_sets"], log=_log, **architecture)
    heldout_ari = {}
    if data["score_sets"] and args.heldout_scans:
        from ..stages.autoencoder_training import separability

        heldout_ari = {k: round(v, 4) for k, v in separability(model, data["held"]).items()}
        _log(f"held-out {HELD_OUT_MATERIAL} separability (ARI, not used to choose): {heldout_ari}")
    best = next(r for r in hist["epochs"] if r["epoch"] == hist["best_epoch"])
    timing = {"data_s": round(data_s, 1), "wall_s": round(time.perf_counter() - t0, 1)}
    meta = save_autoencoder(model, args.out, preprocess=preprocess,
                            metadata=_metadata(args, train_scans, data["score_sets"], heldout_ari, hist, best, timing))
    held = f", held-out {HELD_OUT_MATERIAL} BCE {best['heldout_bce']}" if "heldout_bce" in best else ""
    first = next(iter(data["val_sets"]), None)
    kept = f", mean ARI {best['mean_ari']}" if "mean_ari" in best else ""
    _log(f"wrote {args.out} (sha256 {meta['sha256'][:16]}…, best epoch {hist['best_epoch']}{kept}"
         + (f", {first} BCE {best[f'{first}_bce']}" if first and f"{first}_bce" in best else "") + f"{held}, "
         f"{meta['wall_s']:.0f} s)")
    return 0


def _scan_counts(args) -> tuple[int, int]:
    """``(training scans, score scans)``, the defaults filled in and the ranges checked."""
    train_scans = args.train_scans if args.train_scans is not None else (0 if args.scan else 200)
    if train_scans < 0 or train_scans > 5000:
        raise ValueError("--train-scans must be in 0 … 5000 (validation seeds start at SEED*10000 + 5000)")
    if train_scans == 0 and not args.scan:
        raise ValueError("nothing to train on: give --train-scans > 0 or --scan ZARR")
    n_score = args.score_scans if args.score_scans is not None else (0 if args.scan else 8)
    if not 0 <= n_score <= 100:
        raise ValueError(f"--score-scans must be in 0 … 100, got {n_score}")
    return train_scans, n_score


def _starting_point(args) -> tuple[dict | None, dict, dict]:
    """``(initial weights, preprocessing, architecture)``: those of ``--init``, else none, the
    default preprocessing and the default architecture."""
    from ..io.model_files import autoencoder_metadata, load_autoencoder
    from ..kernels.downsample import PREPROCESS_DEFAULTS

    if not args.init:
        return None, dict(PREPROCESS_DEFAULTS), {}
    init_model = load_autoencoder(args.init, check_hash=False)
    if init_model.latent_size != args.latent_size:
        raise ValueError(f"--init has {init_model.latent_size} features; pass --latent-size {init_model.latent_size}")
    return (init_model.state_dict(), dict(autoencoder_metadata(args.init)["preprocess"]),
            {"batch_norm": init_model.batch_norm, "decoder_widths": init_model.decoder_widths})


def _training_data(args, train_scans: int, n_score: int, preprocess: dict) -> dict:
    """``{"parts", "val_sets", "score_sets", "held"}``: training images (simulated scans of
    seeds ``SEED*10000 + …``, then each ``--scan``'s images but a tenth kept for validation),
    validation sets (``val``, ``heldout`` of the held-out material), score scans and the held-out
    material's scored scans."""
    from ..pipeline.feature_data import images_from_scan_zarr
    from ..synth.training_frames import scored_scans, training_images

    base, shape = args.seed * 10000, tuple(args.scan_shape)
    parts, val_sets, score_sets, held = [], {}, {}, {}
    if train_scans:
        images, names = training_images(range(base, base + train_scans), shape=shape, preprocess=preprocess)
        parts.append(images)
        counts = {m: names.count(m) for m in sorted(set(names))}
        _log(f"simulated training scans {base}…{base + train_scans - 1}: {len(images)} images; scans per material {counts}")
    for path in args.scan:
        images = images_from_scan_zarr(path, max_images=args.max_images, preprocess=preprocess)
        n_val = max(1, len(images) // 10)
        parts.append(images[n_val:])
        val_sets[f"scan{len(val_sets)}"] = images[:n_val]
        _log(f"{path}: {len(images)} images ({n_val} for validation)")
    if args.val_scans:
        val_sets["val"], _ = training_images(range(base + 5000, base + 5000 + args.val_scans), shape=shape,
                                             preprocess=preprocess)
    if args.heldout_scans:
        val_sets["heldout"], _ = training_images(range(base + 8000, base + 8000 + args.heldout_scans), shape=shape,
                                                 preprocess=preprocess, materials=(HELD_OUT_MATERIAL,))
    if n_score:
        score_sets = scored_scans(range(base + 6000, base + 7000), count=n_score, preprocess=preprocess)
        if args.heldout_scans:  # reported, not used to choose: Sn never decides anything
            held = scored_scans(range(base + 9000, base + 9100), materials=(HELD_OUT_MATERIAL,), count=2,
                                preprocess=preprocess)
        _log(f"score scans (choose the epoch): {', '.join(score_sets)}")
    return {"parts": parts, "val_sets": val_sets, "score_sets": score_sets, "held": held}


def _metadata(args, train_scans: int, score_sets: dict, heldout_ari: dict, hist: dict, best: dict,
              timing: dict) -> dict:
    """What the weights file's JSON records: the command, seeds, settings and history."""
    from ..synth.training_frames import TRAINING_MATERIALS

    base = args.seed * 10000
    argv = sys.argv[1:]
    rest = argv[argv.index("autoencoder") + 1:] if "autoencoder" in argv else argv
    return {
        "command": getattr(args, "command_line", None) or ("laueflow train autoencoder " + shlex.join(rest)).strip(),
        "seed": args.seed,
        "train_scan_seeds": [base, base + train_scans - 1] if train_scans else [],
        "val_scan_seeds": [base + 5000, base + 5000 + args.val_scans - 1] if args.val_scans else [],
        "heldout_scan_seeds": [base + 8000, base + 8000 + args.heldout_scans - 1] if args.heldout_scans else [],
        "training_materials": list(TRAINING_MATERIALS) if train_scans else [],
        "heldout_material": HELD_OUT_MATERIAL if args.heldout_scans else None,
        "user_scans": [str(p) for p in args.scan], "init": args.init, "scan_shape": list(args.scan_shape),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "lr_min": args.lr_min,
        "threads": args.threads, "spot_weight": args.spot_weight,
        "loss": "binary cross-entropy, pixel weights 1 + spot_weight·target (plain BCE and MSE monitored)",
        "epoch_kept_by": ("separability: mean ARI of the segmentation kernel on the score scans, epoch 0 = initial "
                          "weights included" if score_sets else "lowest loss on the first validation set"),
        "score_scans": list(score_sets), "heldout_separability": heldout_ari,
        "history": hist["epochs"], "best_epoch": hist["best_epoch"], "n_train": hist["n_train"],
        "best": best, **timing, "torch": __import__("torch").__version__, "numpy": np.__version__,
    }
