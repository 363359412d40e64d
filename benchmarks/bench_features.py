"""Feature stage throughput: preprocessing (crop + area-average + background + scale) and encoding
of full 2018 × 2016 uint16 frames, image reading excluded.

    python benchmarks/bench_features.py [--images 256] [--workers 2] [--method autoencoder|pixels]

Frames: 16 distinct simulated frames (``plan.render``, Cu, 6 grains), repeated to ``--images``
(8 MB each: no cache reuse between frames). Prints, on one core (1 numpy/torch thread): the
preprocessing alone, the encoder alone (shipped model), the whole stage function; then the whole
stage in ``--workers`` processes with one thread each (as the Dask workers of ``laueflow run``
on this machine), images/s summed over the workers; and the load average before and after.
``--method pixels``: the stage with ``method: pixels`` (linear 16 × 16 area averages, no model)
in the "whole stage" lines.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core per process, before numpy/torch are imported

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def frames(n):
    from laueflow.synth.scan import plan_scan

    plan = plan_scan(material="Cu", shape=(4, 4), grains=6, seed=0)
    distinct = np.stack([plan.render(i) for i in range(16)])
    mask = np.zeros(distinct.shape[1:], bool)
    mask.reshape(-1)[plan.dead_pixels] = True
    return distinct[np.arange(n) % 16], mask


def best_rate(func, n, repeats=3):
    func()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t)
    return n / best


def _stage(compute_features, method, model):
    if method == "pixels":
        return lambda images, mask: compute_features(images, mask, method="pixels")
    return lambda images, mask: compute_features(images, mask, method="autoencoder", model=model)


def _worker(args):
    n, barrier, method = args
    import torch

    torch.set_num_threads(1)
    from laueflow.io.model_files import load_autoencoder
    from laueflow.stages.features import compute_features

    images, mask = frames(n)
    stage = _stage(compute_features, method, load_autoencoder())
    stage(images[:64], mask)  # warm-up
    barrier.wait()
    t = time.perf_counter()
    stage(images, mask)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--method", default="autoencoder", choices=("autoencoder", "pixels"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from laueflow.io.model_files import load_autoencoder
    from laueflow.kernels.downsample import block_means, preprocess_frames
    from laueflow.models.autoencoder import encode_images
    from laueflow.stages.features import compute_features

    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    images, mask = frames(args.images)
    model = load_autoencoder()
    small = preprocess_frames(images[:64], mask)
    n = len(images)
    r_mean = best_rate(lambda: [block_means(images[i:i + 64], mask) for i in range(0, n, 64)], n)
    r_pre = best_rate(lambda: [preprocess_frames(images[i:i + 64], mask) for i in range(0, n, 64)], n)
    enc_in = small[np.arange(n) % 64]
    r_enc = best_rate(lambda: encode_images(model, enc_in), n)
    stage = _stage(compute_features, args.method, model)
    r_stage = best_rate(lambda: stage(images, mask), n)
    print(f"1 core: block means {r_mean:.0f} images/s; preprocessing {r_pre:.0f} images/s; "
          f"encoder {r_enc:.0f} images/s; whole stage ({args.method}) {r_stage:.0f} images/s")
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(args.workers)
        with ctx.Pool(args.workers) as pool:
            t = time.perf_counter()
            walls = pool.map(_worker, [(n, barrier, args.method)] * args.workers)
            wall = time.perf_counter() - t
    total = args.workers * n / max(walls)
    print(f"{args.workers} worker processes × 1 thread: {total:.0f} images/s "
          f"(each {', '.join(f'{n / w:.0f}' for w in walls)} images/s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
