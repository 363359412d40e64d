"""Spot-descriptor stage: peaks → similarity to a Gaussian, refined position, area, aspect, good flag.

Contract (relied upon by the pipeline)::

    describe_spots(images, peak_col_int, peak_row_int, peak_background=None, *, method="cnn",
                   batch_size=4096, model=None, device="cpu", **other) -> dict[str, np.ndarray]

``images``: ``(n, rows, cols)``; peak arrays ``(n, max_peaks)`` (``-1`` fill). For every valid
peak the 32×32 cutout ``A(s)`` around ``s = (peak_col_int, peak_row_int)`` is cut
(:mod:`laueflow.kernels.cutouts`); all cutouts of the batch go through the model (or the batched
fit) at once, in batches of ``batch_size``. Outputs ``(n, max_peaks)``, declared once in
:data:`STAGE` ``.outputs``: ``spot_similarity`` (Sim ∈ [0, 1]), ``spot_col/spot_row`` (refined
sub-pixel position ``s + μ``, 0-based), ``spot_area`` (``π σ1 σ2`` px², CNN saturates at 5π),
``spot_aspect`` (``min σ / max σ``), ``spot_good`` (``Sim > 0.5`` and ``‖Pos − s‖ ≤ 0.9 px``),
``spot_border`` (cutout padded at the frame border).

``method="cnn"``: ``model`` is the loaded spot CNN — in a workflow the ``model`` parameter names
a weights file (null: the shipped ``laueflow/data/spotcnn.pt``, sha256-checked) and the pipeline
loads it once per worker on the stage's ``device``; ``method="fit"`` runs the exact batched
Levenberg–Marquardt fit (:mod:`laueflow.kernels.gaussfit`) on ``device``. CNN positions are
limited to ``s ± 1.1`` px by the ``Pos*`` encoding: spots further off are bad by definition.
``peak_background`` is accepted for the contract but not needed: both methods estimate the
background per cutout (documented in ``docs/spot-descriptors.md``).

Also here: :func:`evaluate_descriptors` (tables 1–3 of Kirstein, Petrich et al. 2023, used by
``laueflow evaluate``) and :func:`angular_error_medians` (2θ/χ of refined vs centroid positions).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..kernels.cutouts import (area_from_star, extract_cutouts_batch, good_spot, normalise_cutouts,
                               pos_from_star)
from ..physics.geometry import angular_distance, pixel_to_angles
from .base import StageSpec, Variable

__all__ = ["STAGE", "describe_spots", "describe_cutouts", "evaluate_descriptors",
           "angular_error_medians", "format_evaluation"]


def describe_cutouts(cutouts, valid=None, *, method="cnn", batch_size=4096, model=None, device="cpu"):
    """Descriptors of cutouts ``(m, 32, 32)``: dict of ``sim, dcol, drow, area, aspect, good``.

    ``model``: the loaded spot CNN for ``method="cnn"`` (on its device; e.g.
    :func:`laueflow.io.model_files.load_spotcnn`); ``device`` is used by ``method="fit"``.
    """
    if method == "fit":
        from ..kernels.gaussfit import fit_descriptors, fit_gaussians  # deferred: torch is heavy

        fit = fit_gaussians(cutouts, valid, batch_size=batch_size, device=device)
        d = fit_descriptors(cutouts, fit["params"], valid, fit["converged"])
        return {k: d[k] for k in ("sim", "dcol", "drow", "area", "aspect", "good")}
    if method != "cnn":
        raise ValueError(f"method must be 'cnn' or 'fit', got {method!r}")
    if model is None:
        raise ValueError("method='cnn' needs the loaded spot CNN (model=...); `laueflow run` loads the "
                         "shipped weights, in Python use laueflow.io.model_files.load_spotcnn()")
    from ..models.spotcnn import predict_descriptors  # deferred: torch is heavy

    desc = predict_descriptors(model, normalise_cutouts(cutouts, valid), batch_size=batch_size).astype(np.float64)
    dcol, drow = pos_from_star(desc[:, 1]), pos_from_star(desc[:, 2])
    return {"sim": desc[:, 0], "dcol": dcol, "drow": drow, "area": area_from_star(desc[:, 4]),
            "aspect": desc[:, 3], "good": good_spot(desc[:, 0], dcol, drow)}


def describe_spots(images, peak_col_int, peak_row_int, peak_background=None, peak_col=None, peak_row=None, *,
                   method="cnn", batch_size=4096, model=None, device="cpu", **other) -> dict[str, np.ndarray]:
    """Descriptors of every peak of a batch of images (see the module docstring).

    ``peak_col``, ``peak_row`` (the peak search's centroids, optional): a spot flagged bad reports
    its centroid as ``spot_col``/``spot_row`` — a refined position of a bad spot can be > 1 px
    off while its centroid is within 0.2 px (measured on real frames)."""
    images = to_numpy(images)
    if images.ndim == 2:
        images = images[None]
    ci = np.asarray(to_numpy(peak_col_int)).reshape(len(images), -1)
    ri = np.asarray(to_numpy(peak_row_int)).reshape(len(images), -1)
    n, max_peaks = ci.shape
    out = STAGE.empty_outputs(n, {}, peak=max_peaks)
    # every valid peak of the batch, image by image (row-major), cut in one gather
    i, k = np.nonzero((ci >= 0) & (ri >= 0))
    if len(i) == 0:
        return out
    cut, val, bord = extract_cutouts_batch(images, i, ci[i, k], ri[i, k])
    d = describe_cutouts(cut, val, method=method, batch_size=batch_size, model=model, device=device)
    out["spot_similarity"][i, k] = d["sim"]
    out["spot_col"][i, k] = ci[i, k] + d["dcol"]
    out["spot_row"][i, k] = ri[i, k] + d["drow"]
    out["spot_area"][i, k] = d["area"]
    out["spot_aspect"][i, k] = d["aspect"]
    out["spot_good"][i, k] = d["good"]
    out["spot_border"][i, k] = bord
    if peak_col is not None and peak_row is not None:
        bad = ~out["spot_good"] & np.isfinite(out["spot_col"])
        out["spot_col"][bad] = np.asarray(to_numpy(peak_col)).reshape(n, -1)[bad]
        out["spot_row"][bad] = np.asarray(to_numpy(peak_row)).reshape(n, -1)[bad]
    return out


# ------------------------------------------------------------------------------ evaluation
def _r2(y, p):
    y, p = np.asarray(y, float), np.asarray(p, float)
    ss = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - p) ** 2).sum() / ss) if ss > 0 else float("nan")


def _block(ref, pred, sel, true_pos=None):
    """MAE / R² of Sim, Pos (mean position error px), Area (Area*-units), Asp on a subset."""
    if not sel.any():
        return {"n": 0}
    row = {"n": int(sel.sum())}
    for name in ("sim", "aspect"):
        row[f"mae_{name}"] = float(np.abs(ref[name][sel] - pred[name][sel]).mean())
        row[f"r2_{name}"] = _r2(ref[name][sel], pred[name][sel])
    a_ref, a_pred = np.minimum(ref["area"][sel], 5 * np.pi), np.minimum(pred["area"][sel], 5 * np.pi)
    row["mae_area"] = float(np.abs(a_ref - a_pred).mean())
    row["r2_area"] = _r2(a_ref, a_pred)
    # positions compared within the Pos* range (±1.1 px) where the CNN can answer
    rc, rr = np.clip(ref["dcol"][sel], -1.1, 1.1), np.clip(ref["drow"][sel], -1.1, 1.1)
    err = np.hypot(rc - pred["dcol"][sel], rr - pred["drow"][sel])
    row["pos_err_mean"] = float(err.mean())
    row["pos_err_median"] = float(np.median(err))
    row["r2_pos"] = _r2(np.concatenate([rc, rr]), np.concatenate([pred["dcol"][sel], pred["drow"][sel]]))
    if true_pos is not None:
        tc, tr = true_pos
        ok = sel & np.isfinite(tc)
        if ok.any():
            row["pos_err_vs_truth_mean"] = float(np.hypot(tc[ok] - pred["dcol"][ok], tr[ok] - pred["drow"][ok]).mean())
            row["fit_pos_err_vs_truth_mean"] = float(np.hypot(tc[ok] - ref["dcol"][ok], tr[ok] - ref["drow"][ok]).mean())
    return row


def evaluate_descriptors(reference: dict, predicted: dict, *, true_dcol=None, true_drow=None) -> dict:
    """Paper-style evaluation (Kirstein, Petrich et al. 2023, Tables 1–3) of predicted descriptors.

    ``reference`` / ``predicted``: dicts with ``sim, dcol, drow, area, aspect`` (and ``good``;
    recomputed if absent) per spot — typically the batched fit and the CNN
    (:func:`describe_cutouts`). ``true_dcol/true_drow``: the simulator's true offsets from ``s``.
    Returns ``{"all": {...}, "predicted_good": {...}, "reference_good": {...}, "confusion":
    {...}}``: MAE and R² of Sim, Asp, Area (px², capped at 5π), mean/median position error (px)
    and R² of the position offsets, and the good/bad confusion matrix with the rates
    ``bad_predicted_good`` (false positives / reference-bad) and ``good_predicted_bad``.
    """
    ref = {k: np.asarray(v, float) for k, v in reference.items() if k != "good"}
    pred = {k: np.asarray(v, float) for k, v in predicted.items() if k != "good"}
    g_ref = good_spot(ref["sim"], ref["dcol"], ref["drow"])
    g_pred = good_spot(pred["sim"], pred["dcol"], pred["drow"])
    tp = None if true_dcol is None else (np.asarray(true_dcol, float), np.asarray(true_drow, float))
    everything = np.ones(len(g_ref), bool)
    n_gg = int((g_ref & g_pred).sum())
    n_gb = int((g_ref & ~g_pred).sum())
    n_bg = int((~g_ref & g_pred).sum())
    n_bb = int((~g_ref & ~g_pred).sum())
    return {
        "all": _block(ref, pred, everything, tp),
        "predicted_good": _block(ref, pred, g_pred, tp),
        "reference_good": _block(ref, pred, g_ref, tp),
        "confusion": {
            "good_predicted_good": n_gg, "good_predicted_bad": n_gb,
            "bad_predicted_good": n_bg, "bad_predicted_bad": n_bb,
            "rate_bad_predicted_good": n_bg / max(n_bg + n_bb, 1),
            "rate_good_predicted_bad": n_gb / max(n_gg + n_gb, 1),
        },
    }


def format_evaluation(result: dict, title: str = "") -> str:
    """Markdown tables of :func:`evaluate_descriptors` output."""
    lines = [f"#### {title}" if title else ""]
    lines += ["| subset | n | MAE Sim | R² Sim | mean pos err (px) | median pos err (px) | R² Pos | MAE Area (px²) "
              "| R² Area | MAE Asp | R² Asp | mean pos err vs truth (px) | fit's vs truth (px) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("all", "predicted_good", "reference_good"):
        r = result[name]
        if not r.get("n"):
            continue
        f = lambda k, d=4: f"{r[k]:.{d}f}" if k in r else "–"  # noqa: E731
        lines.append(f"| {name.replace('_', ' ')} | {r['n']} | {f('mae_sim')} | {f('r2_sim')} | {f('pos_err_mean')} | "
                     f"{f('pos_err_median')} | {f('r2_pos')} | {f('mae_area')} | {f('r2_area')} | {f('mae_aspect')} | "
                     f"{f('r2_aspect')} | {f('pos_err_vs_truth_mean')} | {f('fit_pos_err_vs_truth_mean')} |")
    c = result["confusion"]
    lines += ["", "| reference \\ predicted | good | bad |", "|---|---|---|",
              f"| good | {c['good_predicted_good']} | {c['good_predicted_bad']} ({100 * c['rate_good_predicted_bad']:.2f} %) |",
              f"| bad | {c['bad_predicted_good']} ({100 * c['rate_bad_predicted_good']:.2f} %) | {c['bad_predicted_bad']} |"]
    return "\n".join(lines)


def angular_error_medians(calibration, true_col, true_row, centroid_col, centroid_row, refined_col, refined_row,
                          good=None) -> dict:
    """Median angular distance (deg) to the truth of (2θ, χ) recomputed from centroid vs refined
    positions (0-based pixels), over the spots flagged ``good`` (all finite ones if None).

    Returns ``{"n", "median_centroid_deg", "median_refined_deg", "median_d2theta_centroid",
    "median_d2theta_refined", "median_dchi_centroid", "median_dchi_refined", "refined_better"}``.
    """
    arrs = [np.asarray(a, float).reshape(-1) for a in (true_col, true_row, centroid_col, centroid_row,
                                                         refined_col, refined_row)]
    sel = np.all([np.isfinite(a) for a in arrs], axis=0)
    if good is not None:
        sel &= np.asarray(good, bool).reshape(-1)
    tc, tr, cc, cr, rc, rr = (a[sel] for a in arrs)
    t2, tx = pixel_to_angles(tc, tr, calibration)
    c2, cx = pixel_to_angles(cc, cr, calibration)
    r2, rx = pixel_to_angles(rc, rr, calibration)
    if not sel.any():
        return {"n": 0}
    out = {
        "n": int(sel.sum()),
        "median_centroid_deg": float(np.median(angular_distance(t2, tx, c2, cx))),
        "median_refined_deg": float(np.median(angular_distance(t2, tx, r2, rx))),
        "median_d2theta_centroid": float(np.median(np.abs(c2 - t2))),
        "median_d2theta_refined": float(np.median(np.abs(r2 - t2))),
        "median_dchi_centroid": float(np.median(np.abs(cx - tx))),
        "median_dchi_refined": float(np.median(np.abs(rx - tx))),
    }
    out["refined_better"] = out["median_refined_deg"] < out["median_centroid_deg"]
    return out


# ------------------------------------------------------------------------------ declaration
def check_params(params) -> None:
    if params.get("method") not in ("cnn", "fit"):
        raise ValueError(f"method must be 'cnn' or 'fit', got {params.get('method')!r}")
    size = params.get("batch_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"batch_size must be an integer ≥ 1 (cutouts per forward pass), got {size!r}")


_NAN = float("nan")

STAGE = StageSpec(
    name="descriptors",
    func=describe_spots,
    inputs={"images": "images", "peak_col_int": "peak_col_int", "peak_row_int": "peak_row_int",
            "peak_background": "peak_background"},
    optional_inputs={"peak_col": "peak_col", "peak_row": "peak_row"},
    outputs=(
        Variable("spot_similarity", ("peak",), "float32", _NAN, "1", "Sim: similarity to a 2-D Gaussian, 0–1"),
        Variable("spot_col", ("peak",), "float32", _NAN, "px",
                 "refined column, 0-based (a spot flagged bad: the peak-search centroid)"),
        Variable("spot_row", ("peak",), "float32", _NAN, "px",
                 "refined row, 0-based (a spot flagged bad: the peak-search centroid)"),
        Variable("spot_area", ("peak",), "float32", _NAN, "px2", "pi sigma1 sigma2"),
        Variable("spot_aspect", ("peak",), "float32", _NAN, "1", "min(sigma)/max(sigma)"),
        Variable("spot_good", ("peak",), "bool", False, "1", "Sim > 0.5 and ‖Pos − s‖ ≤ 0.9 px"),
        Variable("spot_border", ("peak",), "bool", False, "1", "cutout padded at the frame border"),
    ),
    params={"method": "cnn", "batch_size": 4096, "model": None, "device": "auto"},
    models={"model": "spot-cnn"},
    check=check_params,
    description="spot morphology descriptors (CNN of Kirstein, Petrich et al. 2023, or batched Gaussian fit)",
)
