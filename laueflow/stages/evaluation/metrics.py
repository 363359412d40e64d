"""Metric plug-ins of ``laueflow evaluate``: the :class:`Metric` record, the registry, the options.

A metric names the results and truth variables it needs (and those it uses when present) and a
function ``(results, truth, options) -> report`` on :class:`StoreArrays`. A report is
``{"summary": {name: value}, "tables": {title: [row dicts]}, "notes": [str]}``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["DEFAULT_OPTIONS", "Metric", "METRICS", "StoreArrays", "register_metric", "percentile", "processed_points"]

DEFAULT_OPTIONS = {
    "radius_px": 1.5,
    "snr_min": 5.0,
    "overlap_px": 2.0,
    "fragment_px": 5.0,
    "snr_bins": (0.0, 2.0, 5.0, 10.0, 20.0, math.inf),
}


@dataclass(frozen=True)
class StoreArrays:
    """Arrays selected from a results or truth store (numpy, by variable name) and its attributes."""

    arrays: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays


@dataclass(frozen=True)
class Metric:
    name: str
    needs_results: tuple[str, ...]
    needs_truth: tuple[str, ...]
    func: Callable
    description: str = ""
    optional_results: tuple[str, ...] = ()  # passed to func when present
    optional_truth: tuple[str, ...] = ()


METRICS: list[Metric] = []


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` (replacing one of the same name); metrics run in registration order."""
    METRICS[:] = [m for m in METRICS if m.name != metric.name] + [metric]
    return metric


def percentile(values, q) -> float:
    """``np.percentile`` of ``values``, NaN when empty."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


#: results variables that tell which points the per-point stages processed (see processed_points)
PROCESSED_VARIABLES = ("status", "peak_count")


def processed_points(results: StoreArrays, shape: tuple[int, int]) -> np.ndarray:
    """``shape`` bool: the points the peak search (and the stages after it) processed — not an
    invalid image (``status`` 1) and ``peak_count`` ≥ 0 (−1: not processed, e.g. a point a
    delegates-first run did not select). All points when the results have neither variable."""
    out = np.ones(shape, bool)
    if "status" in results:
        out &= np.asarray(results["status"]) != 1
    if "peak_count" in results:
        out &= np.asarray(results["peak_count"]) >= 0
    return out

