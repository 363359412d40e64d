"""Where the autoencoder's features lose against the pixels: one-domain points or mixtures?

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~8 min)
    python benchmarks/where_autoencoder_loses.py --workdir /tmp/aescale [--model A.pt]   # ~1 min

On the eight 20 × 20 bar scans of ``choose_autoencoder_scaling.py`` (full frames, known grain
maps): the features of the `pixels` method (linear, standardized, unmixing labels, as the
segmentation stage runs them) and of a trained autoencoder (default: the shipped one; its own
stored preprocessing; standardized; nearest-centroid and unmixing labels) → the in-memory
segmentation kernel (PCA 32, KMeans at the K the silhouette suggests over 2–20, and at the
true K) → adjusted Rand index against the true domain map (the twin-variant map for fine twins)
**on every point** and **on the points that see one domain only** (the dominant grain has
> 90 % of the beam's diffracting weight), the suggested K, and the share of one-domain points.
Labels are fitted on all points; only the scoring is split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS, log_scaled  # noqa: E402
from choose_pixel_features import images_and_truth  # noqa: E402

SHIPPED = Path(__file__).parents[1] / "laueflow" / "data" / "autoencoder.pt"


def score(x: np.ndarray, true: np.ndarray, one_domain: np.ndarray, assign: str, k: int | None = None) -> str:
    """``"ARI all / ARI one-domain (K k)"`` of the kernel's labels of ``x``."""
    from laueflow.kernels.clustering import fit_in_memory, project

    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=k, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign=assign, feature_scaling="standardize")
    labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
    whole = adjusted_rand_score(true, labels)
    alone = adjusted_rand_score(true[one_domain], labels[one_domain])
    return f"{whole:.3f} / {alone:.3f} (K {fit['k']})"


def main() -> None:
    import torch

    from laueflow.io.model_files import autoencoder_metadata, load_autoencoder
    from laueflow.models.autoencoder import encode_images
    from laueflow.stages.features import pixel_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling",
                    help="the scans of `choose_autoencoder_scaling.py --prepare`")
    ap.add_argument("--model", default=str(SHIPPED), help="a trained autoencoder .pt (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_autoencoder(args.model, check_hash=False).eval()
    pre = autoencoder_metadata(args.model)["preprocess"]
    if pre["scaling"] != "log":
        raise SystemExit(f"--model: only log-scaled models, got {pre['scaling']!r}")
    print("ARI on all points / on the one-domain points (suggested K)")
    print("| scan (true domains, one-domain points) | pixels (unmix) | autoencoder (nearest) | autoencoder (unmix) "
          "| autoencoder at the true K (nearest) |")
    print("|---|---|---|---|---|")
    for name, seed in SCANS:
        folder = Path(args.workdir) / f"{name}-seed{seed}"
        if not (folder / "scan.zarr").exists():
            raise SystemExit(f"{folder}/scan.zarr is missing: run choose_autoencoder_scaling.py --prepare "
                             f"--workdir {args.workdir} first")
        small, truth = images_and_truth(folder)
        true, one_domain = truth["variant" if name == "fine_twins" else "domain"], truth["pure"]
        n_true = len(np.unique(true))
        features = encode_images(model, log_scaled(small["linear"], pre["log_scale_counts"], pre["log_max_counts"]))
        cells = [score(pixel_features(small["linear"], 256), true, one_domain, "unmix"),
                 score(features, true, one_domain, "nearest"), score(features, true, one_domain, "unmix"),
                 score(features, true, one_domain, "nearest", k=n_true)]
        print(f"| {name} {seed} ({n_true}, {one_domain.mean():.0%}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
