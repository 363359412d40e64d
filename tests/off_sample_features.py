"""A feature matrix with points off the sample (a helper module for the segmentation tests, no tests here)."""
from __future__ import annotations

import numpy as np


def off_sample_features(seed: int, m: int = 64, k: int = 3, n_pure: int = 60, n_mixed: int = 40, n_off: int = 60):
    """``(features (n, m), domain (n,))`` like linear pixel features: ``k`` sparse spot patterns
    (8 spots of 10–1000 counts), points that see one domain (× 0.9–1.1), points that see two
    (55–80 % of the dominant one), each diffracting point with 12 weak extra spots (5–40 counts:
    other reflections, the tails of spots), and ``n_off`` points off the sample (no spots;
    domain −1); every cell has a little positive noise, as the clipped counts above background."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((k, m))
    for j in range(k):
        patterns[j, rng.choice(m, 8, replace=False)] = 10 ** rng.uniform(1, 3, 8)
    rows, domain = [], []
    for j in range(k):
        rows += [patterns[j] * rng.uniform(0.9, 1.1) for _ in range(n_pure)]
        domain += [j] * n_pure
    for _ in range(n_mixed):
        i, j = rng.choice(k, 2, replace=False)
        f = rng.uniform(0.55, 0.8)
        rows.append(f * patterns[i] + (1 - f) * patterns[j])
        domain.append(i)
    rows += [np.zeros(m)] * n_off
    domain += [-1] * n_off
    x, domain = np.array(rows), np.array(domain)
    for r in np.flatnonzero(domain >= 0):
        x[r, rng.choice(m, 12, replace=False)] += rng.uniform(5, 40, 12)
    return x + np.abs(rng.normal(scale=0.3, size=x.shape)), domain
