"""Benchmark LaueNN training time and validation accuracy (issue #12, deliverable 4).

Default case: the two-phase model GaN + Si with up to 3 GaN and 1 Si grain per pattern
(``laueflow train indexer --material GaN --material Si --max-grains 3 --max-grains 1``), trained
from scratch (never from the cache) with the default configuration, the default thread split
(torch on all cores but one, the last simulates the next epoch's patterns). Prints the wall time
(data + fit), the process CPU time, the validation accuracy overall and per grain count, and
where the time went:

* ``--profile``: one epoch's training data, timed piece by piece (simulation, histograms +
  labels), and the network's time per batch;
* ``--set KEY=VALUE``: an :class:`~laueflow.stages.indexing.training.IndexerConfig` override
  (JSON value), e.g. ``--set epochs=4 --set 'hidden=[600,600,600]'``, for experiments;
* ``--write LABEL``: append the result as a row to the table "Two-material training" of
  ``benchmarks/results.md`` (command, machine, load).

The code measured is the ``laueflow`` that Python imports: to measure another version, extract it
(``git archive COMMIT laueflow | tar -x -C /tmp/base``) and run with ``PYTHONPATH=/tmp/base``.

    python benchmarks/bench_training.py                  # GaN + Si, ≤ 3 GaN + ≤ 1 Si
    python benchmarks/bench_training.py --profile --no-train
    python benchmarks/bench_training.py --materials Cu --max-grains 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")
SECTION = "## Two-material training (issue #12)"


def _load() -> float:
    return os.getloadavg()[0]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPU cores ({model or 'unknown CPU'}), torch {torch.__version__}"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
        return out + (" + working tree" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _config(args):
    from laueflow.stages.indexing.training import IndexerConfig

    kw = {"max_grains": tuple(args.max_grains), "seed": args.seed}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in IndexerConfig.__dataclass_fields__:
            raise SystemExit(f"--set {key}: not an IndexerConfig field")
        value = json.loads(value)
        kw[key] = tuple(value) if isinstance(value, list) else value
    return IndexerConfig(**kw)


def profile(materials, calibration, config, threads) -> list[str]:
    """One epoch's training data, piece by piece, and the network's time per batch."""
    import numpy as np
    import torch

    from laueflow.kernels.histograms import n_bins_for
    from laueflow.models.lauenn import LaueNN
    from laueflow.stages.indexing import training
    from laueflow.stages.indexing.classes import build_class_table
    from laueflow.stages.indexing.training_data import grain_count_table, simulate_patterns

    mats = training.resolve_materials(materials, config.extinction_rule)
    cfg = config.for_materials(len(mats))
    classes = build_class_table(mats, list(cfg.max_index), cfg.max_angle_deg, cfg.step_deg)
    n_combos = len(grain_count_table(cfg.max_grains, 1))
    n_tr = max(1, min(cfg.n_train, cfg.max_train_patterns // n_combos))
    counts = grain_count_table(cfg.max_grains, n_tr)
    simulate_patterns(mats, calibration, counts[:2], seed=0)  # reflection tables (cached)
    t = time.perf_counter()
    ps = simulate_patterns(mats, calibration, counts, seed=(cfg.seed, 1, 1), energy_band_kev=cfg.energy_band_kev)
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    x, y = training.make_samples(ps, classes, cfg, centres=cfg.training_centres, rng=(cfg.seed, 1, 1, 3))
    t_samples = time.perf_counter() - t
    keep = np.bincount(y, minlength=classes.n_classes) > cfg.min_class_count  # as training does
    remap = np.cumsum(keep) - 1
    x, y = x[keep[y]], remap[y[keep[y]]]
    torch.set_num_threads(threads)
    model = LaueNN(n_bins_for(cfg.max_angle_deg, cfg.step_deg), int(keep.sum()), cfg.hidden, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n_batches = min(20, len(y) // cfg.batch_size)
    for warm in (True, False):
        t = time.perf_counter()
        for b in range(2 if warm else n_batches):
            idx = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    t_batch = (time.perf_counter() - t) / n_batches
    n_spots = np.isfinite(ps.two_theta).sum(axis=1)
    macs = sum(a * b for a, b in zip((model.n_bins, *model.hidden), (*model.hidden, model.n_classes)))
    return [f"one epoch: {len(counts)} patterns ({n_spots.mean():.0f} spots on average, padded to "
            f"{ps.two_theta.shape[1]}), {len(y)} labelled spots, {model.n_classes} classes",
            f"  simulate_patterns {t_sim:.2f} s; histograms + labels (make_samples) {t_samples:.2f} s",
            f"  network {model.hidden}, {macs / 1e6:.2f} M multiply-adds per spot: {1e3 * t_batch:.0f} ms per batch "
            f"of {cfg.batch_size} ({threads} thread(s)) → {t_batch * len(y) / cfg.batch_size:.1f} s per epoch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--materials", nargs="+", default=["GaN", "Si"])
    parser.add_argument("--max-grains", nargs="+", type=int, default=[3, 1], help="per material (default 3 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the fit (default: train_indexer's, all cores but one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="IndexerConfig override")
    parser.add_argument("--profile", action="store_true", help="time one epoch's data and network batches first")
    parser.add_argument("--no-train", action="store_true", help="only --profile")
    parser.add_argument("--write", metavar="LABEL", help=f"append a row to {RESULTS.name} ({SECTION!r})")
    args = parser.parse_args()

    from laueflow.physics.geometry import DEFAULT_CALIBRATION
    from laueflow.stages.indexing.training import train_indexer

    config = _config(args)
    lines = []
    if args.profile:
        lines += profile(args.materials, DEFAULT_CALIBRATION, config, args.threads or 1)
        print("\n".join(lines), flush=True)
    if args.no_train:
        return
    load0, cpu0, t0 = _load(), _cpu_seconds(), time.perf_counter()
    ix = train_indexer(args.materials, DEFAULT_CALIBRATION, config, threads=args.threads)
    wall, cpu, load1 = time.perf_counter() - t0, _cpu_seconds() - cpu0, _load()
    info = ix.history[-1]
    per = ", ".join(f"{g}: {100 * a:.2f}" for g, a in info["validation_accuracy_per_grain_count"].items())
    shuffled = info.get("validation_accuracy_shuffled", float("nan"))
    per_shuffled = ", ".join(f"{g}: {100 * a:.2f}"
                             for g, a in info.get("validation_accuracy_shuffled_per_grain_count", {}).items())
    epochs = sum(1 for h in ix.history if "epoch" in h)
    best = max((h for h in ix.history if "val_accuracy" in h), key=lambda h: h["val_accuracy"])
    raw = (f"; without the class priors {100 * best['val_accuracy_uncorrected']:.3f} % / "
           f"{100 * best['val_accuracy_shuffled_uncorrected']:.3f} %" if "val_accuracy_uncorrected" in best else "")
    result = (f"{'+'.join(args.materials)} (max grains {args.max_grains}): validation accuracy "
              f"{100 * ix.validation_accuracy:.3f} % ({per}) in intensity order, {100 * shuffled:.3f} % "
              f"({per_shuffled}) shuffled{raw}, {wall:.1f} s wall (data {info['data_seconds']:.1f} s "
              f"before the first epoch, {epochs} epochs), {cpu:.0f} s CPU, load {load0:.1f} → {load1:.1f}")
    print(result, flush=True)
    if args.write:
        argv = [a for a in sys.argv[1:] if a not in ("--write", args.write)]
        command = " ".join(["python benchmarks/bench_training.py", *argv])
        row = (f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC | {args.write} | {_commit()} | `{command}` | "
               f"**{100 * ix.validation_accuracy:.3f} %** ({per}); shuffled **{100 * shuffled:.3f} %** "
               f"({per_shuffled}){raw} | **{wall:.0f} s** ({cpu:.0f} s CPU; "
               f"{epochs} epochs, {info['threads']} torch thread(s) + 1 data thread) | {load0:.1f} → {load1:.1f} |")
        _append_row(RESULTS, row)
        print(f"written to {RESULTS}")


def _append_row(path: Path, row: str) -> None:
    """Add ``row`` at the end of the table of :data:`SECTION` in ``path`` (the section is created
    at the end of the file if missing)."""
    text = path.read_text().rstrip("\n") + "\n"
    if SECTION not in text:
        text += (f"\n{SECTION}\n\nMachine: {_machine()}.\n\n"
                 "| date | what | commit | command | validation accuracy (per grain count, %) | time | load |\n"
                 "|---|---|---|---|---|---|---|\n")
    header = text.index("|---|", text.index(SECTION))
    end = text.find("\n\n", header)  # the table ends at the first blank line after its header
    end = len(text) - 1 if end < 0 else end
    path.write_text(text[:end] + "\n" + row + text[end:])


if __name__ == "__main__":
    main()
