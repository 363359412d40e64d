"""How the default segmentation copes with changes of the incident intensity between points.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~8 min)
    python benchmarks/segmentation_intensity_changes.py --workdir /tmp/aescale          # ~2 min

Real scans are not lit evenly: the ring current decays between top-ups, and the diffracting
volume changes with the sample's thickness or at its edge. The simulated bar scans are. Here each
point's counts above background (the linear preprocessed images of the eight bar scans of
``choose_autoencoder_scaling.py``) are multiplied by a factor: a ramp across the scan
(min → max along x), or independent random factors per point (seeded). Then the `pixels`
method's features (16 × 16 area averages) go through the segmentation kernel as the stage runs
it (standardized, PCA 32, KMeans at the K of the highest silhouette over 2–20, unmixing labels).
The script prints the ARI against the true domain map (the twin-variant map for fine twins) and
the suggested K.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from choose_pixel_features import images_and_truth  # noqa: E402


def factors(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{name: (ny·nx,) factor}``: none, ramps along x, random per point."""
    ny, nx = shape
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, nx), shape).reshape(-1)
    rng = np.random.default_rng(0)
    out = {"none": np.ones(ny * nx)}
    for lo, hi in ((0.8, 1.2), (0.67, 1.33), (0.5, 1.5)):
        out[f"ramp {lo:g}–{hi:g}"] = lo + (hi - lo) * ramp
    for lo, hi in ((0.8, 1.2), (0.5, 1.5)):
        out[f"random {lo:g}–{hi:g}"] = rng.uniform(lo, hi, ny * nx)
    return out


def segment(x: np.ndarray, true: np.ndarray) -> str:
    from laueflow.kernels.clustering import fit_in_memory, project

    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign="unmix", feature_scaling="standardize")
    labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
    return f"{adjusted_rand_score(true, labels):.3f} (K {fit['k']})"


def main() -> None:
    import zarr

    from laueflow.stages.features import pixel_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling",
                    help="the scans of `choose_autoencoder_scaling.py --prepare`")
    args = ap.parse_args()
    header = None
    for name, seed in SCANS:
        folder = Path(args.workdir) / f"{name}-seed{seed}"
        if not (folder / "scan.zarr").exists():
            raise SystemExit(f"{folder}/scan.zarr is missing: run choose_autoencoder_scaling.py --prepare "
                             f"--workdir {args.workdir} first")
        small, truth = images_and_truth(folder)
        true = truth["variant" if name == "fine_twins" else "domain"]
        shape = zarr.open_group(str(folder / "scan.zarr"), mode="r")["images"].shape[:2]
        per_point = factors(shape)
        if header is None:
            header = list(per_point)
            print("| scan (true domains) | " + " | ".join(header) + " |")
            print("|---|" + "---|" * len(header))
        cells = [segment(pixel_features(small["linear"] * f[:, None, None].astype(np.float32), 256), true)
                 for f in per_point.values()]
        print(f"| {name} {seed} ({len(np.unique(true))}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
