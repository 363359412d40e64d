"""The scores' K: the smallest K whose silhouette is within a tolerance of the highest, chosen on
simulated scans.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # bar scans, once (~8 min)
    python benchmarks/choose_silhouette_tolerance.py --workdir /tmp/aescale [--tolerances 0,0.002,0.005,0.01]
        [--seed 0] [--held-out] [--processes 2]

Scans: the 49 of ``choose_pixel_blur.py`` (8 bar scans, 23 fresh 20 × 20, 18 fresh grains 30 × 30
and 40 × 40), or with ``--held-out`` 24 others never used to choose anything (grains 20 × 20 seeds
42–53, 30 × 30 seeds 42–47; fine twins and two phases 20 × 20 seeds 42–44). Their preprocessed
images are rendered once into ``WORKDIR/blur-frames``. Per scan, once: the default pixel features
→ the segmentation kernel's defaults (standardized, PCA 32, 16-start KMeans, unmixing labels)
fitted at every K of 2–20 (``seed``), the silhouette of each K and the ARI of each K's labels
against the domain map (twin variants for fine twins); cached as JSON in
``WORKDIR/k-curves-seed<seed>``. Then per tolerance: the suggested K against the true count, and
the ARI at that K against the issue's bars (grains and two phases 0.95, fine twins 0.9).
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from choose_pixel_blur import FRESH, render  # noqa: E402
from choose_standardization_floor import BARS  # noqa: E402

HELD_OUT = ([("grains", 20, s) for s in range(42, 54)] + [("grains", 30, s) for s in range(42, 48)]
            + [("fine_twins", 20, s) for s in range(42, 45)] + [("two_phase", 20, s) for s in range(42, 45)])
KS = np.arange(2, 21)


def k_curve(job) -> dict:
    """Silhouette and ARI at every K of one cached scan (``(cache, kind, seed, out)``), cached."""
    cache, kind, seed, out = job
    out = Path(out)
    if out.exists():
        return json.loads(out.read_text())
    from sklearn.metrics import adjusted_rand_score

    import laueflow.kernels.clustering as clustering
    from laueflow.stages.features import pixel_features

    scores = {}
    scan_once = clustering.k_scan_scores

    def k_scan_once(sample, ks, seed, n_init=None):  # the K scan is the same for every K fitted below
        if "s" not in scores:
            scores["s"] = scan_once(sample, ks, seed, n_init)
        return scores["s"]

    f = np.load(cache)
    true = f["variant" if kind == "fine_twins" else "domain"]
    x = pixel_features(f["frames"], 256).astype(np.float64)
    ari = []
    clustering.k_scan_scores = k_scan_once
    try:
        for k in KS:
            fit = clustering.fit_in_memory(x, pcs=32, ks=KS, k=int(k), method="kmeans", seed=seed, score_sample=3000,
                                           max_iter=300, tol=1e-4, assign="unmix", feature_scaling="standardize")
            labels = fit["labeler"].predict(clustering.project(x, fit["mean"], fit["components"], fit["scale"]))
            ari.append(float(adjusted_rand_score(true, labels)))
    finally:
        clustering.k_scan_scores = scan_once
    curve = {"true": int(len(np.unique(true))), "silhouette": [float(v) for v in fit["silhouette"]], "ari": ari}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curve))
    return curve


def main() -> None:
    from laueflow.kernels.clustering import suggest_k

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/aescale")
    ap.add_argument("--tolerances", default="0,0.002,0.005,0.01", help="silhouette units; 0: the highest")
    ap.add_argument("--seed", type=int, default=0, help="the segmentation's seed (KMeans starts)")
    ap.add_argument("--held-out", action="store_true", help="the 24 held-out scans instead of the 49")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    work, tolerances = Path(args.workdir), [float(v) for v in args.tolerances.split(",")]
    scans = HELD_OUT if args.held_out else [("bar", name, seed) for name, seed in SCANS] + FRESH
    if not args.held_out:
        for name, seed in SCANS:
            if not (work / f"{name}-seed{seed}" / "scan.zarr").exists():
                raise SystemExit(f"{work}/{name}-seed{seed} is missing: run choose_autoencoder_scaling.py --prepare first")
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        caches = list(pool.map(render, [(str(work), s) for s in scans]))
        jobs = [(str(c), side if kind == "bar" else kind, args.seed,
                 str(work / f"k-curves-seed{args.seed}" / f"{c.stem}.json"))
                for (kind, side, _), c in zip(scans, caches)]
        curves = list(pool.map(k_curve, jobs))
    print("| scan | true | " + " | ".join(f"tolerance {t:g}: K, ARI" for t in tolerances) + " |\n|---|---|"
          + "---|" * len(tolerances))
    summary = {t: {"k": 0, "ari": [], "below": 0, "bar_grains": 0} for t in tolerances}
    for (kind, side, seed), job, curve in zip(scans, jobs, curves):
        bar, kind = kind == "bar", job[1]
        cells = []
        for t in tolerances:
            k = suggest_k(KS, np.array(curve["silhouette"]), t)
            ari = curve["ari"][int(k - KS[0])]
            s = summary[t]
            s["k"] += k == curve["true"]
            s["bar_grains"] += bar and kind == "grains" and k == curve["true"]
            s["ari"].append(ari)
            s["below"] += ari < BARS[kind]
            cells.append(f"{k}, {ari:.3f}")
        name = f"bar {kind} {seed}" if bar else f"{kind} {side} × {side} {seed}"
        print(f"| {name} | {curve['true']} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n| tolerance | K right ({len(scans)} scans) | bar grains K right | mean ARI | lowest | below a bar |"
          "\n|---|---|---|---|---|---|")
    for t, s in summary.items():
        print(f"| {t:g} | {s['k']} | {s['bar_grains'] if not args.held_out else '—'} | {np.mean(s['ari']):.4f} "
              f"| {np.min(s['ari']):.3f} | {s['below']} |")


if __name__ == "__main__":
    main()
