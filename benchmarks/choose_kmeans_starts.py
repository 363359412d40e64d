"""How many k-means++ starts the segmentation's KMeans on the score sample needs, on 41 simulated scans.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale       # bar scans, once
    python benchmarks/choose_standardization_floor.py --workdir /tmp/aescale --floors q0.7  # fresh scans, once
    python benchmarks/choose_kmeans_starts.py --workdir /tmp/aescale [--starts 4,8,16,32,64] [--seeds 0,1,2]

The scans and features of ``choose_standardization_floor.py`` (8 bar scans + 33 fresh ones, linear
16 × 16 pixel features). Each: the segmentation kernel (standardized, PCA 32, KMeans at the K the silhouette
suggests over 2–20, unmixing labels) with ``KMEANS_STARTS`` set to each
value → ARI against the true domain map (twin variants for fine twins), the suggested K. Per value
and seed: mean and lowest ARI, scans below the issue's bars, K = the true count (all, and grains).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_standardization_floor import BARS, scans  # noqa: E402


def score(x: np.ndarray, true: np.ndarray, starts: int, seed: int) -> tuple[float, int]:
    import laueflow.kernels.clustering as clustering

    clustering.KMEANS_STARTS = starts
    fit = clustering.fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=seed,
                                   score_sample=3000, max_iter=300, tol=1e-4, assign="unmix",
                                   feature_scaling="standardize")
    labels = fit["labeler"].predict(clustering.project(x, fit["mean"], fit["components"], fit["scale"]))
    return adjusted_rand_score(true, labels), int(fit["k"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling")
    ap.add_argument("--starts", default="4,8,16,32,64")
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    work = Path(args.workdir)
    if not (work / "floor").is_dir():
        raise SystemExit(f"{work}/floor is missing: run choose_standardization_floor.py --workdir {work} first")
    data = [(label, kind, np.asarray(x, np.float64), true) for label, kind, x, true in scans(work, 0)]
    starts = [int(v) for v in args.starts.split(",")]
    for seed in (int(v) for v in args.seeds.split(",")):
        print(f"\nseed {seed}: ARI (suggested K / true count)\n\n| scan | " + " | ".join(f"{n} starts" for n in starts)
              + " |\n|---|" + "---|" * len(starts))
        found = {n: [] for n in starts}
        for label, kind, x, true in data:
            cells = []
            for n in starts:
                a, k = score(x, true, n, seed)
                found[n].append((kind, a, k == len(np.unique(true))))
                cells.append(f"{a:.3f} ({k}/{len(np.unique(true))})")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        for n, rows in found.items():
            ari = np.array([r[1] for r in rows])
            grains = [r for r in rows if r[0] == "grains"]
            print(f"{n} starts, seed {seed}: mean {ari.mean():.3f}, lowest {ari.min():.3f}, below the bar "
                  f"{sum(r[1] < BARS[r[0]] for r in rows)} of {len(rows)}, K = truth {sum(r[2] for r in rows)} "
                  f"(grains {sum(r[2] for r in grains)} of {len(grains)}, mean {np.mean([r[1] for r in grains]):.3f})")


if __name__ == "__main__":
    main()
