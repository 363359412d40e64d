"""`laueflow evaluate`: accuracy of a results store against the simulator's ground truth.

Metrics are small plug-ins: a :class:`Metric` names the results and truth variables it needs
and a function ``(results, truth, options) -> report``; :func:`evaluate` runs every registered
metric whose variables are present (later stages add theirs with :func:`register_metric`:
descriptor errors, hkl accuracy, misorientation, strain error, segmentation agreement).

A report is ``{"summary": {name: value}, "tables": {title: [row dicts]}, "notes": [str]}``.

Peak metric (``peaks``), see ``docs/results-schema.md`` § Evaluation:

- a truth spot is *found* when the nearest detected peak at the same scan point lies within
  ``radius_px`` (default 1.5 px) of its true position (``spot_col, spot_row``);
- **recall** is over truth spots with ``spot_amplitude ≥ snr_min × spot_noise_sigma`` (default 5),
  other SNR bins are reported alongside; truth spots within ``overlap_px`` (default 2 px) of a
  brighter truth spot at the same point are excluded (counted), and so are spots at scan points
  the run did not process (invalid input or unfinished tiles);
- **precision** is over detected peaks at processed points: a peak is true when it lies within
  ``radius_px`` of any truth spot (any SNR, overlapped or not) at that point;
- **position error** is the distance (px) from each found recall spot to its nearest peak:
  median and 95th percentile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Metric", "METRICS", "register_metric", "evaluate", "format_report",
           "peak_metrics", "DEFAULT_OPTIONS"]

DEFAULT_OPTIONS = {
    "radius_px": 1.5,
    "snr_min": 5.0,
    "overlap_px": 2.0,
    "fragment_px": 5.0,
    "snr_bins": (0.0, 2.0, 5.0, 10.0, 20.0, math.inf),
}


@dataclass(frozen=True)
class Metric:
    name: str
    needs_results: tuple[str, ...]
    needs_truth: tuple[str, ...]
    func: Callable
    description: str = ""


METRICS: list[Metric] = []


def register_metric(metric: Metric) -> Metric:
    METRICS[:] = [m for m in METRICS if m.name != metric.name] + [metric]
    return metric


def evaluate(results, truth, **options) -> dict:
    """Run every metric whose variables are present; ``{"metrics": {...}, "skipped": {...}}``."""
    from . import evaluate_stages  # noqa: F401  (registers the science stages' metrics)

    opts = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    out: dict = {"metrics": {}, "skipped": {}, "options": _jsonable(opts)}
    for metric in METRICS:
        missing = [v for v in metric.needs_results if v not in results.variables]
        missing += [f"truth:{v}" for v in metric.needs_truth if v not in truth.variables]
        if missing:
            out["skipped"][metric.name] = f"missing {', '.join(missing)}"
            continue
        out["metrics"][metric.name] = metric.func(results, truth, opts)
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


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


# --------------------------------------------------------------------------- peaks
def _overlapped(cols, rows, amps, overlap_px) -> np.ndarray:
    """True for spots within ``overlap_px`` of a brighter spot (ties: the later one)."""
    d2 = (cols[:, None] - cols[None, :]) ** 2 + (rows[:, None] - rows[None, :]) ** 2
    near = d2 <= overlap_px ** 2
    np.fill_diagonal(near, False)
    idx = np.arange(len(amps))
    brighter = (amps[None, :] > amps[:, None]) | ((amps[None, :] == amps[:, None]) & (idx[None, :] < idx[:, None]))
    return (near & brighter).any(axis=1)


def spots_by_point(spot_y, spot_x, ny: int, nx: int) -> list[np.ndarray]:
    """Indices of the truth spots of every scan point, in raster order (``ny · nx`` arrays)."""
    point = np.asarray(spot_y) * nx + np.asarray(spot_x)
    order = np.argsort(point, kind="stable")
    starts = np.searchsorted(point[order], np.arange(ny * nx + 1))
    return [order[starts[p]:starts[p + 1]] for p in range(ny * nx)]


def peak_metrics(results, truth, opts) -> dict:
    radius, snr_min, overlap_px = float(opts["radius_px"]), float(opts["snr_min"]), float(opts["overlap_px"])
    peak_col = np.asarray(results["peak_col"].values, dtype=np.float64)
    peak_row = np.asarray(results["peak_row"].values, dtype=np.float64)
    has_int = "peak_col_int" in results.variables and "peak_row_int" in results.variables
    peak_col_int = np.asarray(results["peak_col_int"].values) if has_int else np.rint(peak_col)
    peak_row_int = np.asarray(results["peak_row_int"].values) if has_int else np.rint(peak_row)
    fragment_px = float(opts["fragment_px"])
    ny, nx = peak_col.shape[:2]
    processed = (np.asarray(results["status"].values) != 1) if "status" in results.variables \
        else np.ones((ny, nx), bool)

    sy = np.asarray(truth["spot_y"].values, dtype=np.int64)
    sx = np.asarray(truth["spot_x"].values, dtype=np.int64)
    if len(sy) and (sy.min() < 0 or sx.min() < 0 or sy.max() >= ny or sx.max() >= nx):
        raise ValueError(f"truth spots lie outside the results' {ny}×{nx} scan grid: "
                         "is this the truth of the same scan?")
    scol = np.asarray(truth["spot_col"].values, dtype=np.float64)
    srow = np.asarray(truth["spot_row"].values, dtype=np.float64)
    amp = np.asarray(truth["spot_amplitude"].values, dtype=np.float64)
    noise = np.asarray(truth["spot_noise_sigma"].values, dtype=np.float64)
    quality = np.asarray(truth["spot_quality"].values) if "spot_quality" in truth.variables \
        else np.zeros(len(scol), np.int8)
    fragmented = (quality >= 1) & (quality <= 3)  # streaked, split, irregular: several maxima
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, amp / noise, np.inf)

    n_spots = len(sy)
    distance = np.full(n_spots, np.inf)
    initial_distance = np.full(n_spots, np.inf)
    overlapped = np.zeros(n_spots, bool)
    n_peaks = n_true_peaks = n_strict_true_peaks = 0
    for p, sel in enumerate(spots_by_point(sy, sx, ny, nx)):
        y, x = divmod(p, nx)
        if not processed[y, x]:
            continue
        pc, pr = peak_col[y, x], peak_row[y, x]
        keep = np.isfinite(pc) & np.isfinite(pr)
        pc, pr = pc[keep], pr[keep]
        pci, pri = peak_col_int[y, x][keep].astype(np.float64), peak_row_int[y, x][keep].astype(np.float64)
        n_peaks += len(pc)
        if not len(sel):
            continue
        overlapped[sel] = _overlapped(scol[sel], srow[sel], amp[sel], overlap_px)
        if not len(pc):
            continue
        d = np.hypot(scol[sel][:, None] - pc[None, :], srow[sel][:, None] - pr[None, :])
        distance[sel] = d.min(axis=1)
        nearest = d.argmin(axis=1)
        initial_distance[sel] = np.hypot(scol[sel] - pci[nearest], srow[sel] - pri[nearest])
        strict = d.min(axis=0) <= radius
        fragment = (d[fragmented[sel]] <= fragment_px).any(axis=0) if fragmented[sel].any() else False
        n_strict_true_peaks += int(strict.sum())
        n_true_peaks += int((strict | fragment).sum())

    at_processed = processed[sy, sx] if n_spots else np.zeros(0, bool)
    found = distance <= radius
    counted = at_processed & ~overlapped
    primary = counted & (snr >= snr_min)

    rows = []
    bins = list(opts["snr_bins"])
    for lo, hi in zip(bins[:-1], bins[1:]):
        in_bin = counted & (snr >= lo) & (snr < hi)
        n = int(in_bin.sum())
        err = distance[in_bin & found]
        rows.append({"snr": f"[{lo:g}, {hi:g})", "truth_spots": n, "found": int((in_bin & found).sum()),
                     "recall": (float((in_bin & found).sum() / n) if n else float("nan")),
                     "error_median_px": _pct(err, 50), "error_p95_px": _pct(err, 95)})
    err = distance[primary & found]
    n_primary = int(primary.sum())
    good_found = primary & found & (quality == 0)
    summary = {
        "recall": float((primary & found).sum() / n_primary) if n_primary else float("nan"),
        "precision": float(n_true_peaks / n_peaks) if n_peaks else float("nan"),
        "precision_strict": float(n_strict_true_peaks / n_peaks) if n_peaks else float("nan"),
        "initial_position_within_1px": (float((initial_distance[good_found] <= 1.0).mean())
                                        if good_found.any() else float("nan")),
        "position_error_median_px": _pct(err, 50),
        "position_error_p95_px": _pct(err, 95),
        "truth_spots_recall_set": n_primary,
        "truth_spots_found": int((primary & found).sum()),
        "detected_peaks": int(n_peaks),
        "true_peaks": int(n_true_peaks),
        "truth_spots_total": int(n_spots),
        "excluded_overlapping": int((at_processed & overlapped).sum()),
        "excluded_unprocessed_points": int((~at_processed).sum()),
    }
    tables = {"peak recall by SNR (amplitude / noise σ)": rows}
    if "spot_quality" in truth.variables:
        quality = np.asarray(truth["spot_quality"].values)
        names = {0: "good", 1: "streak", 2: "split", 3: "irregular", 4: "saturated"}
        qrows = []
        for q in np.unique(quality):
            sel = primary & (quality == q)
            n = int(sel.sum())
            qrows.append({"quality": names.get(int(q), str(int(q))), "truth_spots": n,
                          "found": int((sel & found).sum()),
                          "recall": float((sel & found).sum() / n) if n else float("nan"),
                          "error_median_px": _pct(distance[sel & found], 50)})
        tables[f"peak recall by spot quality (SNR ≥ {snr_min:g})"] = qrows
    notes = [f"match radius {radius:g} px; recall over truth spots with SNR ≥ {snr_min:g}; "
             f"{summary['excluded_overlapping']} truth spots within {overlap_px:g} px of a brighter "
             f"one and {summary['excluded_unprocessed_points']} at unprocessed points excluded"]
    return {"summary": summary, "tables": tables, "notes": notes}


register_metric(Metric("peaks", ("peak_col", "peak_row"),
                       ("spot_y", "spot_x", "spot_col", "spot_row", "spot_amplitude", "spot_noise_sigma"),
                       peak_metrics, "peak recall, precision and position error"))


# --------------------------------------------------------------------------- formatting
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
