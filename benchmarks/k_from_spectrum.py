"""Would the number of domains be read from the features' singular values? (tried, not kept)

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # bar scans, once (~8 min)
    python benchmarks/k_from_spectrum.py --workdir /tmp/aescale [--processes 2]

The default pixel features are linear in the counts, so a point's features are the beam-weighted
sum of its domains' features: without noise the standardized, centred feature matrix has rank
D − 1 for D domains. Per scan (the 49 scans that chose the segmentation's defaults and the 24
held-out scans of ``choose_silhouette_tolerance.py``, rendered once into ``WORKDIR/blur-frames``):
the singular values s₁ ≥ s₂ ≥ … of that matrix (the segmentation's own standardization); the
estimate K = i + 1 at the largest ratio s_i / s_{i+1} (i = 2 … 20, so K 3 … 21); the Gavish–Donoho
hard threshold for white noise (``ω(β) · median(s)``) as a second estimate. Printed: the true count
(twin variants for fine twins), both estimates, the two largest ratios, and per group how often
the estimate is right.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS  # noqa: E402
from choose_pixel_blur import FRESH, render  # noqa: E402
from choose_silhouette_tolerance import HELD_OUT  # noqa: E402


def spectrum_estimates(cache: Path, kind: str) -> dict:
    """True count, largest-gap K, Gavish–Donoho K and the two largest ratios of one cached scan."""
    from laueflow.kernels.clustering import feature_scale
    from laueflow.stages.features import pixel_features

    f = np.load(cache)
    true = f["variant" if kind == "fine_twins" else "domain"]
    x = pixel_features(f["frames"], 256).astype(np.float64)
    s = np.linalg.svd((x - x.mean(0)) * feature_scale(x.std(0, ddof=1)), compute_uv=False)
    ratios = s[1:20] / s[2:21]  # s_i / s_{i+1}, i = 2 … 20 (1-based)
    beta = min(x.shape) / max(x.shape)
    omega = 0.56 * beta ** 3 - 0.95 * beta ** 2 + 1.82 * beta + 1.43
    return {"true": int(len(np.unique(true))), "gap_k": int(np.argmax(ratios)) + 3,
            "gavish_donoho_k": int(np.sum(s > omega * np.median(s))) + 1, "ratios": np.sort(ratios)[::-1][:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/aescale")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.workdir)
    for name, seed in SCANS:
        if not (work / f"{name}-seed{seed}" / "scan.zarr").exists():
            raise SystemExit(f"{work}/{name}-seed{seed} is missing: run choose_autoencoder_scaling.py --prepare first")
    groups = {"49 choosing scans": [("bar", name, seed) for name, seed in SCANS] + FRESH, "24 held-out scans": HELD_OUT}
    print("| scan | true | largest gap K | Gavish–Donoho K | two largest ratios |\n|---|---|---|---|---|")
    summary = {}
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        for group, scans in groups.items():
            caches = list(pool.map(render, [(str(work), s) for s in scans]))
            kinds = [side if kind == "bar" else kind for kind, side, _ in scans]
            rows = list(pool.map(spectrum_estimates, caches, kinds))
            for (kind, side, seed), row in zip(scans, rows):
                name = f"bar {side} {seed}" if kind == "bar" else f"{kind} {side} × {side} {seed}"
                print(f"| {name} | {row['true']} | {row['gap_k']} | {row['gavish_donoho_k']} | "
                      f"{row['ratios'][0]:.2f}, {row['ratios'][1]:.2f} |", flush=True)
            summary[group] = (sum(r["gap_k"] == r["true"] for r in rows), sum(r["gavish_donoho_k"] == r["true"] for r in rows),
                              len(rows))
    print("\n| scans | largest gap right | Gavish–Donoho right |\n|---|---|---|")
    for group, (gap, gd, n) in summary.items():
        print(f"| {group} | {gap} of {n} | {gd} of {n} |")


if __name__ == "__main__":
    main()
