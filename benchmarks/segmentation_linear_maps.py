"""Which linear maps of the images segment well, and what the clusters of one scan are.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~8 min)
    python benchmarks/segmentation_linear_maps.py --workdir /tmp/aescale               # ~2 min
    python benchmarks/segmentation_linear_maps.py --workdir /tmp/aescale --clusters grains-seed21

Default: on the eight 20 × 20 bar scans of ``choose_autoencoder_scaling.py``, the linear 128 × 128
preprocessed images mapped to features by (a) 16 × 16 block means (the `pixels` method), (b) a
random Gaussian projection 16384 → 256, (c) a random sparse projection (5 % non-zero), (d) 32 × 32
block means → the in-memory segmentation kernel as the stage runs it (standardized, PCA 32, K the
silhouette suggests over 2–20, unmixing labels) → ARI on every point / on the one-domain points
(the dominant grain > 90 % of the beam's weight) against the domain map (variant map for fine
twins). Projections: fixed seed 0.

``--clusters SCAN``: the truth's domains of each cluster of the default segmentation at the
suggested K and at K + 1, and each domain's largest share of the beam at any scan position.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import zarr
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from choose_pixel_features import images_and_truth  # noqa: E402


def segment(x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, int]:
    """Labels ``(n,)`` and K of the default segmentation kernel on features ``x (n, M)``."""
    from laueflow.kernels.clustering import fit_in_memory, project

    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=k, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign="unmix", feature_scaling="standardize")
    return fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"])), fit["k"]


def linear_maps(n_pixels: int) -> dict:
    """``{name: function (n, 128, 128) → (n, M)}``."""
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((n_pixels, 256)).astype(np.float32) / 128
    sparse = (rng.standard_normal((n_pixels, 256)) * (rng.random((n_pixels, 256)) < 0.05)).astype(np.float32)

    def blocks(side):
        return lambda im: im.reshape(len(im), side, 128 // side, side, 128 // side).mean(axis=(2, 4)).reshape(len(im), -1)

    return {"16x16 block means": blocks(16), "random Gaussian": lambda im: im.reshape(len(im), -1) @ gauss,
            "random sparse 5%": lambda im: im.reshape(len(im), -1) @ sparse, "32x32 block means": blocks(32)}


def domain_shares(folder: Path) -> np.ndarray:
    """``(points, domains)`` each domain's share of the beam's diffracting weight."""
    truth = zarr.open_group(str(folder / "truth.zarr"), mode="r")
    ids = np.asarray(truth["grain_id"]).reshape(-1, truth["grain_id"].shape[-1])
    weight = np.asarray(truth["grain_weight"]).reshape(ids.shape)
    shares = np.zeros((len(ids), truth["grain"].shape[0]))
    rows, slots = np.nonzero(ids >= 0)
    np.add.at(shares, (rows, ids[rows, slots]), weight[rows, slots])
    return shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-300)


def show_clusters(folder: Path) -> None:
    small, truth = images_and_truth(folder)
    x = linear_maps(128 * 128)["16x16 block means"](small["linear"])
    domain, shares = truth["domain"], domain_shares(folder)
    for g in range(shares.shape[1]):
        print(f"domain {g}: {int((domain == g).sum())} map points, largest share of the beam "
              f"{shares[:, g].max():.2f}, points above 90 % {int((shares[:, g] > 0.9).sum())}")
    labels, k = segment(x)
    for kk in (k, k + 1):
        labels, _ = segment(x, kk)
        print(f"\nK = {kk}{' (suggested)' if kk == k else ''}: ARI {adjusted_rand_score(domain, labels):.3f}")
        for c in range(kk):
            print(f"  cluster {c}: domains {collections.Counter(domain[labels == c].tolist()).most_common(4)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling",
                    help="the scans of `choose_autoencoder_scaling.py --prepare`")
    ap.add_argument("--clusters", metavar="SCAN", help="show the clusters of one scan, e.g. grains-seed21")
    args = ap.parse_args()
    work = Path(args.workdir)
    if args.clusters:
        show_clusters(work / args.clusters)
        return
    maps = linear_maps(128 * 128)
    print("| scan | " + " | ".join(maps) + " |\n|---|" + "---|" * len(maps))
    for name, seed in SCANS:
        small, truth = images_and_truth(work / f"{name}-seed{seed}")
        true = truth["variant" if name == "fine_twins" else "domain"]
        cells = []
        for to_features in maps.values():
            labels, k = segment(to_features(small["linear"]))
            cells.append(f"{adjusted_rand_score(true, labels):.3f} / "
                         f"{adjusted_rand_score(true[truth['pure']], labels[truth['pure']]):.3f}, K {k}")
        print(f"| {name} {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
