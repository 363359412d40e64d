"""The blur before the pixel features' area averages (`pixel_blur_px`), chosen on 49 simulated scans.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # bar scans, once (~8 min)
    python benchmarks/choose_pixel_blur.py --workdir /tmp/aescale [--blurs 0,0.5,1] [--processes 2]

Scans (rendered once, their preprocessed 128 × 128 linear images cached in ``WORKDIR/blur-frames``):
the eight bar scans (with their detector mask), the fresh scans of the floor table (20 × 20; grains
seeds 31–41, fine twins and two phases 31–36) and larger grains scans (the same 6 grains with
sub-grains and twins: 30 × 30, seeds 31–41; 40 × 40, seeds 31–37), never used to design anything.
Each: ``pixel_features(images, 256, blur)`` → the segmentation kernel with its defaults
(standardized, PCA 32, KMeans at the K the silhouette suggests over 2–20, unmixing labels) →
the suggested K against the true count and the ARI against the domain map (twin variants for
fine twins). Printed per blur: the table, then per group the scans with K right, the mean and
lowest ARI, and the scans below the issue's bars (grains and two phases 0.95, fine twins 0.9).
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
from choose_standardization_floor import BARS, KINDS  # noqa: E402
from segmentation_intensity_changes import bar_plan_and_mask  # noqa: E402

FRESH = ([("grains", 20, s) for s in range(31, 42)] + [("fine_twins", 20, s) for s in range(31, 37)]
         + [("two_phase", 20, s) for s in range(31, 37)] + [("grains", 30, s) for s in range(31, 42)]
         + [("grains", 40, s) for s in range(31, 38)])


def render(job) -> Path:
    """Render (once) one scan: ``("bar", name, seed)`` or ``(kind, side, seed)``; its cache file."""
    work, (kind, side, seed) = Path(job[0]), job[1]
    cache = work / "blur-frames" / (f"bar-{side}-{seed}.npz" if kind == "bar" else f"{kind}-{side}-{seed}.npz")
    if cache.exists():
        return cache
    from laueflow.io.detfile import read_det
    from laueflow.kernels.downsample import preprocess_frames
    from laueflow.stages.evaluation.segmentation import orientation_groups
    from laueflow.synth.scan import plan_scan

    if kind == "bar":
        plan, mask = bar_plan_and_mask(work / f"{side}-seed{seed}")
    else:
        mask = None
        plan = plan_scan(calibration=read_det(work / "grains-seed3" / "calib.det"), shape=(side, side), seed=seed,
                         **KINDS[kind])
    frames = np.stack([preprocess_frames(plan.render(i)[None], mask, scaling="linear")[0]
                       for i in range(plan.n_images)])
    domain = plan.micro.grain_map.reshape(-1)
    d = plan.micro.domains
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=frames, domain=domain,
             variant=orientation_groups(d.rotation, d.material, plan.materials)[domain])
    return cache


def measure(cache: Path, kind: str, blur: float) -> tuple[int, int, float]:
    """``(true count, suggested K, ARI)`` of one scan's pixel features at ``blur``."""
    from laueflow.kernels.clustering import fit_in_memory, project
    from laueflow.stages.features import pixel_features

    f = np.load(cache)
    true = f["variant" if kind == "fine_twins" else "domain"]
    x = pixel_features(f["frames"], 256, blur).astype(np.float64)
    fit = fit_in_memory(x, pcs=32, ks=np.arange(2, 21), k=None, method="kmeans", seed=0, score_sample=3000,
                        max_iter=300, tol=1e-4, assign="unmix", feature_scaling="standardize")
    labels = fit["labeler"].predict(project(x, fit["mean"], fit["components"], fit["scale"]))
    return len(np.unique(true)), int(fit["k"]), adjusted_rand_score(true, labels)


def group(kind: str, side, bar: bool) -> str:
    return f"bar {kind}" if bar else f"fresh {kind} {side} × {side}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/aescale")
    ap.add_argument("--blurs", default="0,0.5,1", help="σ in pixels of the 128 × 128 image; 0: area averages only")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    work, blurs = Path(args.workdir), [float(v) for v in args.blurs.split(",")]
    for name, seed in SCANS:
        if not (work / f"{name}-seed{seed}" / "scan.zarr").exists():
            raise SystemExit(f"{work}/{name}-seed{seed} is missing: run choose_autoencoder_scaling.py --prepare first")
    scans = [("bar", name, seed) for name, seed in SCANS] + FRESH
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        caches = list(pool.map(render, [(str(work), s) for s in scans]))
    print("| scan | true | " + " | ".join(f"blur {b:g}: K, ARI" for b in blurs) + " |\n|---|---|" + "---|" * len(blurs))
    summary = {}
    for (kind, side, seed), cache in zip(scans, caches):
        bar, kind = kind == "bar", side if kind == "bar" else kind
        cells, n_true = [], 0
        for blur in blurs:
            n_true, k, ari = measure(cache, kind, blur)
            s = summary.setdefault((group(kind, side, bar), blur), {"k": 0, "ari": [], "below": 0})
            s["k"] += k == n_true
            s["ari"].append(ari)
            s["below"] += ari < BARS[kind]
            cells.append(f"{k}, {ari:.3f}")
        print(f"| {'bar' if bar else 'fresh'} {kind} {'' if bar else f'{side} × {side} '}{seed} | {n_true} | "
              + " | ".join(cells) + " |", flush=True)
    print("\n| group | blur | scans | K right | mean ARI | lowest | below a bar |\n|---|---|---|---|---|---|---|")
    for (name, blur), s in summary.items():
        print(f"| {name} | {blur:g} | {len(s['ari'])} | {s['k']} | {np.mean(s['ari']):.3f} | {np.min(s['ari']):.3f} "
              f"| {s['below']} |")


if __name__ == "__main__":
    main()
