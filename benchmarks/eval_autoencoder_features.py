"""Do the shipped autoencoder's features keep grains apart? (docs/features.md)

    python benchmarks/eval_autoencoder_features.py [--shape 10 10] [--grains 6] [--finetune-epochs 10]

For small simulated scans with known grain maps (full 2018×2016 frames, ``plan.render``, bad
pixels masked; one of them of the held-out material Sn): PCA (32 components) → KMeans with K =
the number of grains → adjusted Rand index vs the true grain map, and the silhouette of the true
labels, for (a) the preprocessed 128×128 pixels themselves, (b) the features of an untrained
(seed-0) encoder, (c) the shipped model's features, (d) the shipped model fine-tuned on the scan
itself (``--init`` + ``--scan``, the paper's practice), ``--finetune-epochs`` epochs.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def separability(x, truth):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    pcs = PCA(n_components=min(32, x.shape[1], len(x) - 1), random_state=0).fit_transform(x)
    labels = KMeans(len(np.unique(truth)), n_init=10, random_state=0).fit_predict(pcs)
    return f"{adjusted_rand_score(truth, labels):.3f} / {silhouette_score(pcs, truth):.3f}"


def main():
    import torch

    torch.set_num_threads(1)
    from laueflow.io.model_files import load_autoencoder
    from laueflow.kernels.downsample import preprocess_frames
    from laueflow.models.autoencoder import LaueAutoencoder, encode_images
    from laueflow.stages.autoencoder_training import train_autoencoder
    from laueflow.synth.scan import plan_scan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=2, type=int, default=(10, 10))
    ap.add_argument("--grains", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    args = ap.parse_args()
    shipped = load_autoencoder()
    torch.manual_seed(0)
    untrained = LaueAutoencoder().eval()
    scans = [("Cu, twins 0.3", dict(seed=1, material="Cu", twin_fraction=0.3)),
             ("GaN on Si, sub-grains 1°", dict(seed=2, material="GaN", substrate="Si", subgrain_fraction=0.5,
                                               subgrain_misorientation_deg=1.0)),
             ("Ti, faint (median 300 counts)", dict(seed=3, material="Ti", amplitude_median=300.0)),
             ("Sn (held out)", dict(seed=4, material="Sn"))]
    print("| scan | grains | pixels | untrained encoder | shipped model | fine-tuned on the scan |")
    print("|---|---|---|---|---|---|")
    for name, kw in scans:
        t = time.perf_counter()
        plan = plan_scan(shape=tuple(args.shape), grains=args.grains, **kw)
        mask = np.zeros(plan.calibration.frame_shape, bool)
        mask.reshape(-1)[plan.dead_pixels] = True
        images = np.concatenate([preprocess_frames(np.stack([plan.render(i) for i in range(lo, min(lo + 20, plan.n_images))]),
                                                   mask, **shipped.preprocess) for lo in range(0, plan.n_images, 20)])
        truth = plan.micro.grain_map.reshape(-1)
        tuned, _ = train_autoencoder(images, {"scan": images[::10]}, seed=0, epochs=args.finetune_epochs,
                                     init_state=shipped.state_dict(), threads=1)
        cells = [separability(images.reshape(len(images), -1), truth), separability(encode_images(untrained, images), truth),
                 separability(encode_images(shipped, images), truth), separability(encode_images(tuned, images), truth)]
        print(f"| {name} | {len(np.unique(truth))} | " + " | ".join(cells) + f" |  <!-- {time.perf_counter() - t:.0f} s -->",
              flush=True)


if __name__ == "__main__":
    main()
