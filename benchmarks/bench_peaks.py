"""Peak-search throughput on full-size realistic frames (2018 x 2016 uint16), one core.

    OMP_NUM_THREADS=1 python benchmarks/bench_peaks.py [--n 10] [--spots 300]
"""
import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from laueflow.kernels.testing import synthetic_frame  # noqa: E402
from laueflow.stages.peaks import find_peaks  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--spots", type=int, default=300)
    args = parser.parse_args()
    frames = np.stack([synthetic_frame((2018, 2016), args.spots, seed=s)[0] for s in range(3)])
    find_peaks(frames[:1])  # warm-up
    times = []
    for i in range(args.n):
        t0 = time.perf_counter()
        res = find_peaks(frames[i % 3][None])
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    print(f"peak search, {args.n} frames 2018x2016, {args.spots} spots, 1 thread: "
          f"median {np.median(t) * 1e3:.1f} ms/image (min {t.min() * 1e3:.1f}, max "
          f"{t.max() * 1e3:.1f}) = {1 / np.median(t):.1f} images/s/core; "
          f"{res['peak_count'][0]} peaks found; bar 100 ms")


if __name__ == "__main__":
    main()
