"""Comparing two labellings of the same points (pure numpy).

- :func:`contingency_table` — counts of points per (label in ``a``, label in ``b``).
- :func:`adjusted_rand_index` — Hubert & Arabie's adjusted Rand index: 1 for identical
  partitions (whatever the label values), ≈ 0 for independent ones, negative when worse than
  chance.
"""
from __future__ import annotations

import numpy as np

__all__ = ["contingency_table", "adjusted_rand_index"]


def contingency_table(a, b) -> np.ndarray:
    """``(n_a, n_b)`` int64 counts of points with each pair of labels (labels: any integers)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labellings of different sizes: {a.size} and {b.size} points")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((int(ia.max(initial=-1)) + 1, int(ib.max(initial=-1)) + 1), np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def _pairs(n):
    n = np.asarray(n, np.float64)
    return n * (n - 1) / 2


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index of two labellings ``a``, ``b`` of the same points (1-D or any shape).

    NaN for fewer than 2 points; 1.0 when both put every point in one cluster (identical).
    """
    table = contingency_table(a, b)
    n = table.sum()
    if n < 2:
        return float("nan")
    index = _pairs(table).sum()
    rows, cols = _pairs(table.sum(axis=1)).sum(), _pairs(table.sum(axis=0)).sum()
    expected = rows * cols / _pairs(n)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both trivial (one cluster each, or all singletons): identical partitions
        return 1.0
    return float((index - expected) / (maximum - expected))
