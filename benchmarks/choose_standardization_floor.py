"""The floor of the segmentation's `standardize` feature scaling, measured on 41 simulated scans.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # bar scans, once (~8 min)
    python benchmarks/choose_standardization_floor.py --workdir /tmp/aescale [--floors median,q0.7] [--deep 0,3,6]

`standardize` multiplies feature j by ``1 / (σ_j + floor)``. Candidates: ``median`` (the floor
until 2026-12-01) and ``qP``: the P quantile of the spreads. Scans: the eight bar scans of
``choose_autoencoder_scaling.py`` (their `pixels` features as rendered by
``segmentation_intensity_changes.py``, cached) and 33 fresh ones rendered here — the bar scans'
three kinds (6 grains with 1.5° sub-grains and Σ3 twins; 3 grains, one of them finely twinned;
8 grains Cu + Si), 20 × 20 points, seeds 31–41, never used to design anything — with
``--deep``: 0 (default), or also 3 or 6 faint deeper grains (`deep_weight` 0.08). The fresh
scans are rendered without a detector mask; the features are cached in ``WORKDIR/floor``.
Each: linear 16 × 16 pixel features → the segmentation kernel (PCA 32, KMeans at the K the silhouette
suggests over 2–20, unmixing labels) → ARI against the true domain map (twin variants
for fine twins) and the suggested K. Summary per floor: mean and lowest ARI, the scans below the
issue's bars (grains 0.95, fine twins 0.9, two phases 0.95) and how often K = the true count.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from segmentation_intensity_changes import rendered_features, truth_of  # noqa: E402

KINDS = {
    "grains": dict(material="Cu", grains=6, subgrain_fraction=0.5, subgrain_misorientation_deg=1.5, twin_fraction=0.3),
    "fine_twins": dict(material="Cu", grains=3, fine_twin_grains=1, fine_twin_period_um=4.0),
    "two_phase": dict(material="Cu", second_phase="Si", second_phase_fraction=0.5, grains=8),
}
FRESH_SEEDS = range(31, 42)
BARS = {"grains": 0.95, "fine_twins": 0.9, "two_phase": 0.95}


def fresh_features(job) -> Path:
    """Render (once) the fresh scan ``(workdir, kind, seed, deep)``; its cache file."""
    work, kind, seed, deep = job
    cache = Path(work) / "floor" / f"{kind}-{seed}-deep{deep}.npz"
    if cache.exists():
        return cache
    from laueflow.io.detfile import read_det
    from laueflow.kernels.downsample import preprocess_frames
    from laueflow.stages.evaluation.segmentation import orientation_groups
    from laueflow.stages.features import pixel_features
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(calibration=read_det(Path(work) / "grains-seed3" / "calib.det"), shape=(20, 20), seed=seed,
                     deep_grains=deep, **KINDS[kind])
    frames = np.stack([preprocess_frames(plan.render(i)[None], None, scaling="linear")[0]
                       for i in range(plan.n_images)])
    domain = plan.micro.grain_map.reshape(-1)
    d = plan.micro.domains
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=pixel_features(frames, 256), domain=domain,
             variant=orientation_groups(d.rotation, d.material, plan.materials)[domain])
    return cache


def floor_scale(name: str):
    """A ``feature_scale`` with the floor ``name`` (``median`` or ``qP``)."""
    def scale(sigma, scaling="standardize"):
        sigma = np.asarray(sigma, np.float64)
        if scaling == "none":
            return np.ones_like(sigma)
        floor = np.median(sigma) if name == "median" else np.quantile(sigma, float(name[1:]))
        return 1.0 / (sigma + float(floor))
    return scale


def score(x: np.ndarray, true: np.ndarray, floor: str) -> tuple[float, int]:
    import laueflow.kernels.clustering as clustering

    clustering.feature_scale = floor_scale(floor)
    fit = clustering.fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0,
                                   score_sample=3000, max_iter=300, tol=1e-4, assign="unmix",
                                   feature_scaling="standardize")
    labels = fit["labeler"].predict(clustering.project(x, fit["mean"], fit["components"], fit["scale"]))
    return adjusted_rand_score(true, labels), int(fit["k"])


def scans(work: Path, deep: int):
    """``(label, kind, features, true map)`` of the bar scans (deep 0 only) and the fresh ones."""
    if deep == 0:
        for name, seed in SCANS:
            folder = work / f"{name}-seed{seed}"
            yield f"bar {name} {seed}", name, rendered_features(folder, "none"), truth_of(folder, name)
    for kind in KINDS:
        for seed in FRESH_SEEDS:
            f = np.load(work / "floor" / f"{kind}-{seed}-deep{deep}.npz")
            yield f"fresh {kind} {seed}", kind, f["features"], f["variant" if kind == "fine_twins" else "domain"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling")
    ap.add_argument("--floors", default="median,q0.6,q0.7,q0.75,q0.8")
    ap.add_argument("--deep", default="0", help="deeper grains of the fresh scans, e.g. 0,3,6")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    work, floors, deeps = Path(args.workdir), args.floors.split(","), [int(v) for v in args.deep.split(",")]
    for name, seed in SCANS:
        if not (work / f"{name}-seed{seed}" / "scan.zarr").exists():
            raise SystemExit(f"{work}/{name}-seed{seed} is missing: run choose_autoencoder_scaling.py --prepare first")
    jobs = [(str(work), kind, seed, deep) for deep in deeps for kind in KINDS for seed in FRESH_SEEDS]
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        list(pool.map(fresh_features, jobs))
    for deep in deeps:
        print(f"\n{deep} deeper grains: ARI (suggested K / true count)\n\n| scan | " + " | ".join(floors)
              + " |\n|---|" + "---|" * len(floors))
        found = {f: {"ari": [], "below": 0, "k": 0} for f in floors}
        for label, kind, x, true in scans(work, deep):
            cells = []
            for floor in floors:
                a, k = score(x, true, floor)
                found[floor]["ari"].append(a)
                found[floor]["below"] += a < BARS[kind]
                found[floor]["k"] += k == len(np.unique(true))
                cells.append(f"{a:.3f} ({k}/{len(np.unique(true))})")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        for floor, f in found.items():
            print(f"{floor}: mean {np.mean(f['ari']):.3f}, lowest {np.min(f['ari']):.3f}, below the bar "
                  f"{f['below']} of {len(f['ari'])}, K = truth {f['k']}")


if __name__ == "__main__":
    main()
