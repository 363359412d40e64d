"""`laueflow evaluate`: accuracy of a results store against the simulator's ground truth.

:func:`evaluate` takes the two stores as xarray Datasets, selects the numpy arrays each
registered metric needs (the metrics — science — are in :mod:`laueflow.stages.evaluation`),
runs the metrics whose variables are present and returns the report; :func:`format_report` and
:func:`to_json` turn it into text and JSON.
"""
from __future__ import annotations

import math

import numpy as np

from ..stages.evaluation import DEFAULT_OPTIONS, METRICS, StoreArrays

__all__ = ["evaluate", "format_report", "to_json"]


def _select(store, needs, optional) -> StoreArrays:
    """The variables ``needs`` and those of ``optional`` present in ``store``, as numpy arrays."""
    names = [*needs, *(v for v in optional if v in store.variables)]
    return StoreArrays({name: np.asarray(store[name].values) for name in names}, dict(store.attrs))


def evaluate(results, truth, **options) -> dict:
    """Run every metric whose variables are present; ``{"metrics": {...}, "skipped": {...}}``."""
    opts = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    out: dict = {"metrics": {}, "skipped": {}, "options": _jsonable(opts)}
    for metric in METRICS:
        missing = [v for v in metric.needs_results if v not in results.variables]
        missing += [f"truth:{v}" for v in metric.needs_truth if v not in truth.variables]
        if missing:
            out["skipped"][metric.name] = f"missing {', '.join(missing)}"
            continue
        out["metrics"][metric.name] = metric.func(_select(results, metric.needs_results, metric.optional_results),
                                                  _select(truth, metric.needs_truth, metric.optional_truth), opts)
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else ("inf" if math.isinf(v) else v)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["  (empty)"]
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [line, "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return out


def format_report(report: dict) -> str:
    lines = []
    for name, result in report["metrics"].items():
        lines.append(f"== {name} ==")
        width = max(len(k) for k in result["summary"])
        for k, v in result["summary"].items():
            lines.append(f"  {k.ljust(width)}  {_fmt(v)}")
        for title, rows in result.get("tables", {}).items():
            lines.append(f"  -- {title}")
            lines += _table(rows)
        lines += [f"  note: {n}" for n in result.get("notes", [])]
    for name, why in report.get("skipped", {}).items():
        lines.append(f"(skipped {name}: {why})")
    return "\n".join(lines)


def to_json(report: dict) -> dict:
    return _jsonable(report)
