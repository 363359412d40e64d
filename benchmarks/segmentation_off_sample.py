"""Points off the sample: do they get a cluster of their own, and keep their label to themselves?

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~8 min)
    python benchmarks/segmentation_off_sample.py --workdir /tmp/aescale [--empty-fraction 0]   # ~3 min, 2 processes

Real scans run past the sample's edge or over holes, where the images hold no diffraction. The
eight bar scans of ``choose_autoencoder_scaling.py`` are rendered again from their generator
parameters with no spots from x = 16 on (the last 4 columns) and in a 3 × 3 hole
(``segmentation_intensity_changes.off_sample``): dark current, halo and noise only. The `pixels`
features (linear, 16 × 16, the scan's mask) → the segmentation kernel as the stage runs it
(standardized, PCA 32, KMeans at the K the silhouette suggests over 2–20), with unmixing labels
and with nearest-centroid labels. Printed: the ARI against the true domain map (twin variants
for fine twins) with the off-sample points as one more label, on every point and on the points
on the sample, the suggested K, how many diffracting points took the off-sample points' label,
and how many clusters the unmixing labeler found empty. ``--empty-fraction 0`` turns the empty
rule off (:data:`laueflow.kernels.clustering.EMPTY_NORM_FRACTION`), as before 2026-12-01.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from segmentation_intensity_changes import (off_sample, render_bar_scans, rendered_features, scan_shape,  # noqa: E402
                                            truth_of)

FIELD = "off-sample"


def cell(x: np.ndarray, true: np.ndarray, off: np.ndarray, assign: str) -> str:
    from laueflow.kernels.clustering import fit_in_memory, project

    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign=assign, feature_scaling="standardize")
    labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
    taken = int(np.isin(labels[~off], np.unique(labels[off])).sum())
    empty = f", {int(fit['labeler'].empty.sum())} empty" if assign == "unmix" else ""
    return (f"{adjusted_rand_score(true, labels):.3f} / {adjusted_rand_score(true[~off], labels[~off]):.3f} "
            f"(K {fit['k']}, {taken} taken{empty})")


def main() -> None:
    import laueflow.kernels.clustering as clustering

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling",
                    help="the scans of `choose_autoencoder_scaling.py --prepare`")
    ap.add_argument("--processes", type=int, default=2, help="rendering processes (default 2)")
    ap.add_argument("--empty-fraction", type=float, default=clustering.EMPTY_NORM_FRACTION,
                    help=f"EMPTY_NORM_FRACTION (default {clustering.EMPTY_NORM_FRACTION}; 0: the rule off)")
    args = ap.parse_args()
    clustering.EMPTY_NORM_FRACTION = args.empty_fraction
    folders = render_bar_scans(args.workdir, [FIELD], args.processes)
    print(f"EMPTY_NORM_FRACTION = {args.empty_fraction}; ARI all points / on the sample (suggested K, diffracting "
          "points with the off-sample label, empty clusters)")
    print("| scan (domains on the sample) | unmixing labels | nearest centroid |\n|---|---|---|")
    for (name, seed), folder in zip(SCANS, folders):
        off = off_sample(scan_shape(folder)).reshape(-1)
        true = truth_of(folder, name).copy()
        true[off] = -1
        x = rendered_features(folder, FIELD)
        print(f"| {name} {seed} ({len(np.unique(true[~off]))}) | {cell(x, true, off, 'unmix')} | "
              f"{cell(x, true, off, 'nearest')} |", flush=True)


if __name__ == "__main__":
    main()
