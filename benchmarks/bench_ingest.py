"""Ingest throughput (MB/s) and compression ratio: chunked vs sharded, zstd vs blosc.

    python benchmarks/bench_ingest.py [--n 12] [--workers 2]

Writes ``--n`` realistic 2018 x 2016 uint16 TIFF frames (offset ≈ 1000, halo, noise σ 4,
300 spots) to a temporary folder, then ingests them with each layout/codec on a LocalCluster
(``--workers 0``: serially in this process).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from laueflow.kernels.testing import synthetic_frame
from laueflow.pipeline.ingest import ingest

CASES = [("chunked", "zstd", 3), ("chunked", "blosc", 3), ("chunked", "zstd", 1),
         ("sharded", "zstd", 3)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    client = cluster = None
    if args.workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               dashboard_address=":0")
        client = Client(cluster)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "images"
        src.mkdir()
        for k in range(args.n):
            tifffile.imwrite(src / f"bench_{k:04d}.tif",
                             synthetic_frame((2018, 2016), 300, seed=k)[0])
        ny, nx = 2, (args.n + 1) // 2
        print(f"{args.n} frames 2018x2016 uint16 ({args.n * 2018 * 2016 * 2 / 1e6:.0f} MB), "
              f"scan {ny}x{nx}, {'serial' if not client else f'{args.workers} workers'}")
        ingest([str(src)], str(Path(tmp) / "warmup.zarr"), shape=(ny, nx), client=client,
               progress=False, log=None)  # workers import zarr/tifffile once
        print(f"{'layout':<9}{'codec':<7}{'level':>6}{'MB/s':>9}{'ratio':>8}{'wall s':>8}")
        for layout, codec, level in CASES:
            out = Path(tmp) / f"{layout}-{codec}-{level}.zarr"
            t0 = time.perf_counter()
            s = ingest([str(src)], str(out), shape=(ny, nx), layout=layout, shard_x=nx,
                       compression=codec, level=level, client=client, progress=False, log=None)
            wall = time.perf_counter() - t0
            print(f"{layout:<9}{codec:<7}{level:>6}{s['raw_mb'] / wall:>9.1f}"
                  f"{s['compression_ratio']:>8.2f}{wall:>8.2f}")
    if client:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
