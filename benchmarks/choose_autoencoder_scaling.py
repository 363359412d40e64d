"""The autoencoder's input scaling, chosen by measurement (issue #13, docs/features.md).

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~6 min)
    python benchmarks/choose_autoencoder_scaling.py --workdir /tmp/aescale [--model A.pt ...]

``--prepare`` simulates and ingests eight 20 × 20 full-frame scans with known grain maps, the
microstructures of ``benchmarks/bench_segmentation_bars.py`` (grains 3, 11, 21, 22; fine twins 5,
25; two phases 7, 24). Then, for each log scaling ``log1p(s/s0) / log1p(max/s0)`` (``s`` counts
above background and noise floor, clipped at 1) the images → (a) their 16 × 16 area averages
(``pixel_features``) and (b) the features of an **untrained** encoder (seed 0, the shipped
architecture) → the in-memory segmentation kernel (``fit_in_memory``: PCA 32, KMeans with the K
the silhouette suggests over 2–20, nearest-centroid labels; features unscaled) → adjusted Rand
index against the true domain map (the twin-variant map for fine twins) and the suggested K.
``--model`` adds trained models' features, each on its own stored preprocessing, unscaled and
standardized (``feature_scaling``; the segmentation stage standardizes them by default). The
linear pixel features of the `pixels` method (standardized, unmixing labels) are the reference
column.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
import bench_segmentation_bars as bars  # noqa: E402
from choose_pixel_features import images_and_truth  # noqa: E402

SCANS = [("grains", 3), ("grains", 11), ("grains", 21), ("grains", 22), ("fine_twins", 5), ("fine_twins", 25),
         ("two_phase", 7), ("two_phase", 24)]
#: (s0, max) counts: the previous default, then less compression of weak spots
SCALINGS = [(4.0, 256.0), (4.0, 65536.0), (64.0, 65536.0), (256.0, 65536.0)]


def prepare(work: Path) -> None:
    for name, seed in SCANS:
        folder = work / f"{name}-seed{seed}"
        if (folder / "scan.zarr").exists():
            continue
        bars.laueflow("simulate", *bars.scan_args(name, seed), "--shape", "20x20", "--out", str(folder), "--quiet",
                      "--overwrite")
        bars.laueflow("ingest", str(folder / "images"), "--shape", "20x20", "--calibration", str(folder / "calib.det"),
                      "--mask", str(folder / "mask.tif"), *[a for m in bars.MATERIALS[name] for a in ("--material", m)],
                      "--out", str(folder / "scan.zarr"), "--overwrite", "--no-progress")
        shutil.rmtree(folder / "images", ignore_errors=True)
        print(f"prepared {folder}", flush=True)


def ari(x: np.ndarray, truth: np.ndarray, scaling: str = "none", assign: str = "nearest") -> str:
    from laueflow.kernels.clustering import fit_in_memory, project

    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign=assign, feature_scaling=scaling)
    labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
    return f"{adjusted_rand_score(truth, labels):.3f} (K {fit['k']})"


def log_scaled(linear: np.ndarray, s0: float, top: float) -> np.ndarray:
    return np.minimum(np.log1p(linear / s0) / np.log1p(top / s0), 1).astype(np.float32)


def main() -> None:
    import torch

    from laueflow.io.model_files import autoencoder_metadata, load_autoencoder
    from laueflow.models.autoencoder import LaueAutoencoder, encode_images
    from laueflow.stages.features import pixel_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling")
    ap.add_argument("--prepare", action="store_true", help="simulate and ingest the scans first")
    ap.add_argument("--model", action="append", default=[], help="a trained model's .pt (repeatable)")
    args = ap.parse_args()
    work = Path(args.workdir)
    if args.prepare:
        prepare(work)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    untrained = LaueAutoencoder().eval()
    models = {path: (load_autoencoder(path, check_hash=False), autoencoder_metadata(path)["preprocess"])
              for path in args.model}
    columns = ["pixels linear (standardized, unmix)"]
    columns += [f"{kind} log s0={s0:g} max={top:g}" for s0, top in SCALINGS for kind in ("pixels", "untrained encoder")]
    columns += [f"{Path(p).name} {scaling}" for p in models for scaling in ("unscaled", "standardized")]
    print("| scan (true domains) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, seed in SCANS:
        folder = work / f"{name}-seed{seed}"
        small, truth = images_and_truth(folder)
        true = truth["variant" if name == "fine_twins" else "domain"]
        cells = [ari(pixel_features(small["linear"], 256), true, "standardize", "unmix")]
        for s0, top in SCALINGS:
            image = log_scaled(small["linear"], s0, top)
            cells += [ari(pixel_features(image, 256), true), ari(encode_images(untrained, image), true)]
        for model, pre in models.values():
            if pre["scaling"] != "log" or pre["noise_floor_counts"] != 1.0 or pre["background_block"] != 8:
                raise SystemExit(f"--model: only log-scaled models with the default floor and background, got {pre}")
            image = log_scaled(small["linear"], pre["log_scale_counts"], pre["log_max_counts"])
            features = encode_images(model, image)
            cells += [ari(features, true), ari(features, true, "standardize")]
        print(f"| {name} {seed} ({len(np.unique(true))}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
