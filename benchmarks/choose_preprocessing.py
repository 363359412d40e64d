"""Which preprocessing keeps grains apart? (the measurement behind PREPROCESS_DEFAULTS)

    python benchmarks/choose_preprocessing.py [--shape 12 12] [--grains 6]

Renders full 2018×2016 frames of small simulated scans with known grain maps (``plan.render``,
the same pixels as ``laueflow simulate``), preprocesses them with each candidate setting
(``laueflow.kernels.downsample.preprocess_frames``, bad-pixel mask applied) and measures how well
the 128×128 images alone separate the grains: PCA (32 components) → KMeans with K = the number of
grains → adjusted Rand index vs the true grain map, and the silhouette score of the true labels in
the PCA space. No autoencoder involved: this isolates what the preprocessing keeps.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

_NO_FLOOR = {"noise_floor_counts": 0.0, "log_max_counts": 4096.0}
CANDIDATES = {
    "log s0=1 max=4096, no floor, bg 8": {**_NO_FLOOR, "log_scale_counts": 1.0},
    "log s0=4 max=4096, no floor, bg 8": {**_NO_FLOOR},
    "log s0=0.25 max=4096, no floor, bg 8": {**_NO_FLOOR, "log_scale_counts": 0.25},
    "log s0=1 max=4096, no floor, bg 4": {**_NO_FLOOR, "log_scale_counts": 1.0, "background_block": 4},
    "log s0=1 max=4096, no floor, bg 128 (one median)": {**_NO_FLOOR, "log_scale_counts": 1.0, "background_block": 128},
    "percentile 99.9, no floor, bg 8": {"scaling": "percentile", "percentile": 99.9, "noise_floor_counts": 0.0},
    "percentile 100 (linear/max), no floor, bg 8": {"scaling": "percentile", "percentile": 100.0, "noise_floor_counts": 0.0},
    "log s0=4 max=256, floor 1 count, bg 8 (default)": {},
}


def scan(seed, shape, grains, material, **kw):
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(material=material, shape=shape, grains=grains, seed=seed, **kw)
    mask = np.zeros(plan.calibration.frame_shape, bool)
    mask.reshape(-1)[plan.dead_pixels] = True
    frames = np.stack([plan.render(i) for i in range(plan.n_images)])
    return frames, mask, plan.micro.grain_map.reshape(-1)


def separability(images, truth, k):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    x = images.reshape(len(images), -1)
    pcs = PCA(n_components=min(32, len(x) - 1), random_state=0).fit_transform(x)
    labels = KMeans(k, n_init=10, random_state=0).fit_predict(pcs)
    return adjusted_rand_score(truth, labels), silhouette_score(pcs, truth)


def main():
    from laueflow.kernels.downsample import preprocess_frames

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=2, type=int, default=(10, 10))
    ap.add_argument("--grains", type=int, default=6)
    args = ap.parse_args()
    scans = [("Cu, twins 0.3", dict(seed=1, material="Cu", twin_fraction=0.3)),
             ("GaN on Si, sub-grains 1°", dict(seed=2, material="GaN", substrate="Si", subgrain_fraction=0.5,
                                               subgrain_misorientation_deg=1.0)),
             ("Ti, faint (median 300 counts)", dict(seed=3, material="Ti", amplitude_median=300.0))]
    data = []
    for name, kw in scans:
        t = time.perf_counter()
        frames, mask, truth = scan(shape=tuple(args.shape), grains=args.grains, **kw)
        data.append((name, frames, mask, truth))
        print(f"{name}: {len(frames)} frames, {len(np.unique(truth))} grains present ({time.perf_counter() - t:.0f} s)",
              flush=True)
    print("| preprocessing | " + " | ".join(f"{n}: ARI / silhouette" for n, *_ in data) + " | mean ARI |")
    print("|---|" + "---|" * (len(data) + 1))
    for cand, params in CANDIDATES.items():
        cells, aris = [], []
        for name, frames, mask, truth in data:
            images = preprocess_frames(frames, mask, **params)
            ari, sil = separability(images, truth, len(np.unique(truth)))
            aris.append(ari)
            cells.append(f"{ari:.3f} / {sil:.3f}")
        print(f"| {cand} | " + " | ".join(cells) + f" | {np.mean(aris):.3f} |", flush=True)


if __name__ == "__main__":
    main()
