"""The ``peaks`` metric of ``laueflow evaluate``, see ``docs/results-schema.md`` § Evaluation:

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

import numpy as np

from ...physics.simulate import SPOT_QUALITIES, SPOT_QUALITY
from .matching import overlapped_spots, spots_by_point
from .metrics import PROCESSED_VARIABLES, Metric, StoreArrays, percentile, processed_points, register_metric

__all__ = ["peak_metrics"]


def peak_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    """Peak recall, precision and position error (definitions: module docstring)."""
    radius, snr_min, overlap_px = float(opts["radius_px"]), float(opts["snr_min"]), float(opts["overlap_px"])
    peak_col = np.asarray(results["peak_col"], dtype=np.float64)
    ny, nx = peak_col.shape[:2]
    spots = _truth_spots(truth, ny, nx)
    matched = _match_peaks(results, spots, processed_points(results, (ny, nx)), radius, overlap_px,
                           float(opts["fragment_px"]))
    distance, snr, quality = matched["distance"], spots["snr"], spots["quality"]
    n_spots = len(spots["y"])
    at_processed = matched["processed"][spots["y"], spots["x"]] if n_spots else np.zeros(0, bool)
    found = distance <= radius
    counted = at_processed & ~matched["overlapped"]
    primary = counted & (snr >= snr_min)
    err = distance[primary & found]
    n_primary = int(primary.sum())
    good_found = primary & found & (quality == SPOT_QUALITY["good"])
    n_peaks, n_true = matched["n_peaks"], matched["n_true_peaks"]
    summary = {
        "recall": float((primary & found).sum() / n_primary) if n_primary else float("nan"),
        "precision": float(n_true / n_peaks) if n_peaks else float("nan"),
        "precision_strict": float(matched["n_strict_true_peaks"] / n_peaks) if n_peaks else float("nan"),
        "initial_position_within_1px": (float((matched["initial_distance"][good_found] <= 1.0).mean())
                                        if good_found.any() else float("nan")),
        "position_error_median_px": percentile(err, 50),
        "position_error_p95_px": percentile(err, 95),
        "truth_spots_recall_set": n_primary,
        "truth_spots_found": int((primary & found).sum()),
        "detected_peaks": int(n_peaks),
        "true_peaks": int(n_true),
        "truth_spots_total": int(n_spots),
        "excluded_overlapping": int((at_processed & matched["overlapped"]).sum()),
        "excluded_unprocessed_points": int((~at_processed).sum()),
    }
    tables = {"peak recall by SNR (amplitude / noise σ)": _recall_by_snr(counted, snr, found, distance,
                                                                          list(opts["snr_bins"]))}
    if "spot_quality" in truth:
        tables[f"peak recall by spot quality (SNR ≥ {snr_min:g})"] = _recall_by_quality(primary, quality, found,
                                                                                       distance)
    notes = [f"match radius {radius:g} px; recall over truth spots with SNR ≥ {snr_min:g}; "
             f"{summary['excluded_overlapping']} truth spots within {overlap_px:g} px of a brighter "
             f"one and {summary['excluded_unprocessed_points']} at unprocessed points excluded"]
    return {"summary": summary, "tables": tables, "notes": notes}


def _truth_spots(truth: StoreArrays, ny: int, nx: int) -> dict:
    """The truth's spots: scan point ``y, x``, ``col, row`` (px), ``amplitude``, ``snr``
    (amplitude / noise σ), ``quality``, ``fragmented`` (streaked, split or irregular: several maxima)."""
    sy = np.asarray(truth["spot_y"], dtype=np.int64)
    sx = np.asarray(truth["spot_x"], dtype=np.int64)
    if len(sy) and (sy.min() < 0 or sx.min() < 0 or sy.max() >= ny or sx.max() >= nx):
        raise ValueError(f"truth spots lie outside the results' {ny}×{nx} scan grid: "
                         "is this the truth of the same scan?")
    col = np.asarray(truth["spot_col"], dtype=np.float64)
    amp = np.asarray(truth["spot_amplitude"], dtype=np.float64)
    noise = np.asarray(truth["spot_noise_sigma"], dtype=np.float64)
    quality = np.asarray(truth["spot_quality"]) if "spot_quality" in truth else np.zeros(len(col), np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, amp / noise, np.inf)
    return {"y": sy, "x": sx, "col": col, "row": np.asarray(truth["spot_row"], dtype=np.float64), "amplitude": amp,
            "snr": snr, "quality": quality,
            "fragmented": np.isin(quality, [SPOT_QUALITY[q] for q in ("streaked", "split", "irregular")])}


def _match_peaks(results: StoreArrays, spots: dict, processed, radius: float, overlap_px: float,
                 fragment_px: float) -> dict:
    """Point by point, each truth spot's distance to the nearest peak (``distance``; from the
    peak's integer position: ``initial_distance``), the spots hidden by a brighter neighbour
    (``overlapped``), and the counts of peaks, of true peaks (within ``radius`` of a spot or
    ``fragment_px`` of a fragmented one) and of strictly true peaks."""
    peak_col = np.asarray(results["peak_col"], dtype=np.float64)
    peak_row = np.asarray(results["peak_row"], dtype=np.float64)
    has_int = "peak_col_int" in results and "peak_row_int" in results
    peak_col_int = np.asarray(results["peak_col_int"]) if has_int else np.rint(peak_col)
    peak_row_int = np.asarray(results["peak_row_int"]) if has_int else np.rint(peak_row)
    ny, nx = peak_col.shape[:2]
    scol, srow, fragmented = spots["col"], spots["row"], spots["fragmented"]
    n_spots = len(scol)
    distance = np.full(n_spots, np.inf)
    initial_distance = np.full(n_spots, np.inf)
    overlapped = np.zeros(n_spots, bool)
    n_peaks = n_true_peaks = n_strict_true_peaks = 0
    for p, sel in enumerate(spots_by_point(spots["y"], spots["x"], ny, nx)):
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
        overlapped[sel] = overlapped_spots(scol[sel], srow[sel], spots["amplitude"][sel], overlap_px)
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
    return {"distance": distance, "initial_distance": initial_distance, "overlapped": overlapped,
            "processed": processed, "n_peaks": n_peaks, "n_true_peaks": n_true_peaks,
            "n_strict_true_peaks": n_strict_true_peaks}


def _recall_by_snr(counted, snr, found, distance, bins: list) -> list:
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        in_bin = counted & (snr >= lo) & (snr < hi)
        n = int(in_bin.sum())
        err = distance[in_bin & found]
        rows.append({"snr": f"[{lo:g}, {hi:g})", "truth_spots": n, "found": int((in_bin & found).sum()),
                     "recall": (float((in_bin & found).sum() / n) if n else float("nan")),
                     "error_median_px": percentile(err, 50), "error_p95_px": percentile(err, 95)})
    return rows


def _recall_by_quality(primary, quality, found, distance) -> list:
    names = dict(enumerate(SPOT_QUALITIES))
    rows = []
    for q in np.unique(quality):
        sel = primary & (quality == q)
        n = int(sel.sum())
        rows.append({"quality": names.get(int(q), str(int(q))), "truth_spots": n,
                     "found": int((sel & found).sum()),
                     "recall": float((sel & found).sum() / n) if n else float("nan"),
                     "error_median_px": percentile(distance[sel & found], 50)})
    return rows


register_metric(Metric("peaks", ("peak_col", "peak_row"),
                       ("spot_y", "spot_x", "spot_col", "spot_row", "spot_amplitude", "spot_noise_sigma"),
                       peak_metrics, "peak recall, precision and position error",
                       optional_results=("peak_col_int", "peak_row_int", *PROCESSED_VARIABLES),
                       optional_truth=("spot_quality",)))
