"""Segmentation (PCA + KMeans) on large synthetic feature sets through the distributed path.

Writes a results-like store (``features (y, x, feature)`` float32 chunked like a run's results:
``(1, images_per_task)`` tiles of whole rows' parts, ``chunk_done`` all true, the results
marker) holding Gaussian blobs, then runs ``laueflow segment``'s code (``segment_store``,
``path: distributed``) on a LocalCluster and reports: wall time per step (the stage's own
timings), peak RSS of each worker and of the driver (sampled every 0.25 s), load average.

    python benchmarks/bench_segmentation.py --points 200000          # the ≤ 60 s bar
    python benchmarks/bench_segmentation.py --points 1000000 --memory-limit 2GB

Results: benchmarks/results.md ("Segmentation").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def write_features(path: Path, ny: int, nx: int, m: int, k: int, chunk: tuple[int, int], seed: int = 0,
                   sigma: float = 1.0) -> np.ndarray:
    """A results-like store of ``k`` Gaussian blobs (centres N(0, 1) in m-D), written in
    bands of rows (this process never holds the matrix). Returns the blob centres."""
    import zarr

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, m)).astype(np.float32)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    features = root.create_array("features", shape=(ny, nx, m), chunks=(*chunk, m), dtype="float32",
                                 fill_value=np.nan, dimension_names=("y", "x", "feature"))
    nty, ntx = -(-ny // chunk[0]), -(-nx // chunk[1])
    done = root.create_array("chunk_done", shape=(nty, ntx), chunks=(1, 1), dtype="bool", fill_value=False,
                             dimension_names=("chunk_y", "chunk_x"))
    band = max(chunk[0], (64 << 20) // (nx * m * 4) // chunk[0] * chunk[0])
    for y0 in range(0, ny, band):
        y1 = min(ny, y0 + band)
        labels = rng.integers(0, k, (y1 - y0, nx))
        block = centres[labels] + rng.standard_normal((y1 - y0, nx, m), dtype=np.float32) * sigma
        features[y0:y1] = block
    done[...] = True
    root.attrs.update({"laueflow_results": True, "layout_complete": True, "complete": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    return centres


def _rss_and_cpu():
    """(RSS bytes, CPU seconds user + system) of the calling worker process."""
    import psutil

    p = psutil.Process()
    cpu = p.cpu_times()
    return p.memory_info().rss, cpu.user + cpu.system


class PeakMemory:
    """Peak RSS of each worker (``client.run``) and of this process, sampled in a thread."""

    def __init__(self, client, every_s: float = 0.25):
        self.client, self.every_s = client, every_s
        self.workers: dict = {}
        self.worker_cpu_s: dict = {}
        self.driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                for address, (rss, cpu) in self.client.run(_rss_and_cpu).items():
                    self.workers[address] = max(self.workers.get(address, 0), rss)
                    self.worker_cpu_s[address] = cpu
            except Exception:  # a worker busy starting or closing: next sample
                pass
            self.driver = max(self.driver, me.memory_info().rss)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000, help="scan points (a grid of 500 columns)")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--blobs", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--k-range", type=int, nargs=2, default=(2, 20))
    parser.add_argument("--nx", type=int, default=500)
    parser.add_argument("--images-per-task", type=int, default=100, help="results chunk (1, this) like a run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GB", help="per worker")
    parser.add_argument("--workdir", default="/tmp/laueflow-bench-segmentation")
    parser.add_argument("--keep", action="store_true", help="reuse the feature store if present")
    args = parser.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from laueflow.pipeline.cluster import ClusterConfig, connect
    from laueflow.pipeline.segment import segment_store

    ny, nx = args.points // args.nx, args.nx
    store = Path(args.workdir) / f"features_{ny}x{nx}x{args.features}.zarr"
    store.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (args.keep and store.exists()):
        write_features(store, ny, nx, args.features, args.blobs, (1, args.images_per_task))
    print(f"feature store {store}: {ny}×{nx}×{args.features} float32 "
          f"({ny * nx * args.features * 4 / 1e9:.2f} GB), chunks (1, {args.images_per_task}); "
          f"written in {time.perf_counter() - t:.1f} s")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load_before = os.getloadavg()
    config = ClusterConfig("local", {"n_workers": args.workers, "threads_per_worker": 1,
                                     "memory_limit": args.memory_limit, "dashboard_address": ":0"})
    with connect(config) as client:
        cpu_start = {a: c for a, (_, c) in client.run(_rss_and_cpu).items()}
        driver_cpu = time.process_time()
        with PeakMemory(client) as memory:
            t = time.perf_counter()
            summary = segment_store(store, client, k=args.k, k_min=args.k_range[0],
                                    k_max=max(args.k_range[1], args.k), path="distributed",
                                    feature_scaling="standardize", log=print)
            wall = time.perf_counter() - t
        driver_cpu = time.process_time() - driver_cpu
        cpu_end = {a: c for a, (_, c) in client.run(_rss_and_cpu).items()}
    load_after = os.getloadavg()
    import xarray as xr

    with xr.open_zarr(str(store), group=summary.group) as ds:
        labels = ds.cluster_label.values  # (the check reads them back; the run never did)
        suggested = int(ds.suggested_k)
    truth_rng = np.random.default_rng(0)  # the labels of the blobs, drawn again band by band
    truth_rng.normal(size=(args.blobs, args.features))
    band = max(1, (64 << 20) // (nx * args.features * 4))
    truth = []
    for y0 in range(0, ny, band):
        rows = min(ny, y0 + band) - y0
        truth.append(truth_rng.integers(0, args.blobs, (rows, nx)))
        truth_rng.standard_normal((rows, nx, args.features), dtype=np.float32)
    ari = adjusted_rand_score(np.concatenate(truth).ravel(), labels.ravel()) if args.blobs == args.k else None
    info = summary.info
    result = {
        "points": ny * nx, "features": args.features, "k": args.k, "chunks": [1, args.images_per_task],
        "workers": args.workers, "memory_limit": args.memory_limit, "wall_s": round(wall, 2),
        "stage_timings_s": info["timings_s"], "lloyd_iterations": info["lloyd_iterations"],
        "blocks": info["blocks"], "suggested_k": suggested, "ari_vs_blobs": ari,
        "peak_worker_rss_GB": {a.split(":")[-1]: round(v / 1e9, 3) for a, v in memory.workers.items()},
        "worker_cpu_s": {a.split(":")[-1]: round(cpu_end[a] - cpu_start[a], 2) for a in cpu_end},
        "driver_cpu_s": round(driver_cpu, 2),
        "driver_rss_GB_sampled_peak": round(memory.driver / 1e9, 3),
        "driver_maxrss_GB_before_segment": round(rss_before / 1e9, 3),
        "feature_matrix_GB": round(ny * nx * args.features * 4 / 1e9, 3),
        "load_avg_before": [round(v, 2) for v in load_before], "load_avg_after": [round(v, 2) for v in load_after],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
