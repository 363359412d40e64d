"""Pixel features and labels for the index-free segmentation, chosen by measurement (issue #13).

    python benchmarks/choose_pixel_features.py DIR [DIR ...]

Each ``DIR`` is a scan folder written by ``benchmarks/bench_segmentation_bars.py`` (``scan.zarr``
and ``truth.zarr``). For every scan: the images → ``preprocess_frames`` (log or linear scaling)
→ area averages 16 × 16 or 32 × 32 (``pixel_features``) → the in-memory segmentation kernel
(``fit_in_memory``: PCA 32, KMeans with the K the silhouette suggests over 2–20) with nearest-
centroid or unmixing labels → ARI against the true domain map (the twin-variant map for
``fine_twins``: lamellae of one variant are one label) and the suggested K. Also the ARI on the
points that see one domain (dominant weight > 0.9): where the loss is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import zarr
from sklearn.metrics import adjusted_rand_score

from laueflow.kernels.clustering import fit_in_memory
from laueflow.kernels.downsample import preprocess_frames
from laueflow.physics.materials import get_materials
from laueflow.pipeline.scan_store import detector_mask
from laueflow.stages.evaluation.segmentation import orientation_groups
from laueflow.stages.features import pixel_features


def images_and_truth(folder: Path) -> tuple[dict, dict]:
    """``{scaling: (n, 128, 128)}`` preprocessed images and the true label maps of a scan folder."""
    scan = zarr.open_group(str(folder / "scan.zarr"), mode="r")
    mask, images = detector_mask(scan), scan["images"]
    ny, nx = images.shape[:2]
    small = {s: np.zeros((ny * nx, 128, 128), np.float32) for s in ("log", "linear")}
    for y in range(ny):
        rows = np.asarray(images[y])
        for s in small:
            small[s][y * nx:(y + 1) * nx] = preprocess_frames(rows, mask, scaling=s)
    return small, images_and_truth_maps(folder)


def images_and_truth_maps(folder: Path) -> dict:
    """The true label maps of a scan folder, flat ``(n,)``: ``domain``, ``variant`` (twin
    variants merged by orientation group) and ``pure`` (the dominant grain > 90 % of the weight)."""
    truth = zarr.open_group(str(folder / "truth.zarr"), mode="r")
    domain = np.asarray(truth["grain_map"]).reshape(-1)
    phase = np.asarray(truth["grain_phase"])
    names = list(truth.attrs.get("materials") or [])
    variant = orientation_groups(np.asarray(truth["grain_base_orientation"]), phase, get_materials(names))[domain]
    weight = np.asarray(truth["grain_weight"]).reshape(len(domain), -1)
    return {"domain": domain, "variant": variant, "pure": weight.max(axis=1) > 0.9 * weight.sum(axis=1)}


def measure(small: dict, truth: dict, key: str) -> list:
    rows = []
    true = truth[key]
    for scaling in ("log", "linear"):
        for side in (16, 32):
            x = pixel_features(small[scaling], side * side)
            for assign in ("nearest", "unmix"):
                fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0,
                                    score_sample=3000, max_iter=300, tol=1e-4, assign=assign)
                labels = fit["labeler"].predict((x - fit["mean"]) @ fit["components"].T)
                rows.append({"scaling": scaling, "side": side, "assign": assign, "suggested_k": fit["suggested_k"],
                             "true_labels": int(len(np.unique(true))),
                             f"ari_{key}": round(adjusted_rand_score(true, labels), 4),
                             "ari_one_domain_points": round(adjusted_rand_score(true[truth["pure"]],
                                                                                labels[truth["pure"]]), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args()
    for folder in map(Path, args.folders):
        small, truth = images_and_truth(folder)
        key = "variant" if folder.name.startswith("fine_twins") else "domain"
        for row in measure(small, truth, key):
            print(json.dumps({"scan": folder.name, **row}), flush=True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
