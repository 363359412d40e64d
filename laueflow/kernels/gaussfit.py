"""Batched Levenberg–Marquardt fit of an axis-aligned 2-D Gaussian on 32×32 spot cutouts.

The ground-truth generator of the spot CNN and its exact fallback (``method="fit"`` of the
descriptor stage). One torch code path for CPU and GPU: thousands of cutouts are fitted at once,
each with its own damping, acceptance and convergence test; converged cutouts leave the active
set.

Model (pixel ``[i, j]`` of a cutout at offset ``x = j − 16`` (col), ``y = i − 16`` (row) from the
peak pixel ``s``)::

    f(x, y) = A · exp(−½ ((x − μ1)²/σ1² + (y − μ2)²/σ2²)) + β

i.e. ``α·g(a − s) + β`` with ``g`` the normal density and ``α = 2π σ1 σ2 A``. Parameters
``p = (A, μ1, μ2, ln σ1, ln σ2, β)``; unweighted least squares over the valid (non-padded)
pixels. Start values from background-subtracted moments (:func:`start_values`). A cutout is
*converged* when an accepted step lowers the cost by less than ``ftol`` (relative) and moves no
parameter by more than ``xtol`` (relative), when the damping saturates at a minimum, or when
(``stop="either"``, the default) the cost fell by less than 1e-6 (relative) over the last 25
iterations (a flat valley); it is
flagged not converged when ``max_iter`` is reached or the solution is unphysical (non-finite,
``|μ| > 16``, σ outside [0.05, 64] px).

Descriptors (:func:`fit_descriptors`): ``Sim0`` is computed on background-handled intensities:
the fitted offset β is subtracted from data and model, ``Sim0 = Σ (I−β)·αg / sqrt(Σ (I−β)² ·
Σ (αg)²)`` over the valid pixels (on raw counts the ≈1000-count offset would make every cutout
look perfect). ``Pos = s + μ``, ``Asp = min(σ)/max(σ)``, ``Area = π σ1 σ2``.
"""
from __future__ import annotations

import math

import numpy as np

from .cutouts import CUTOUT_CENTRE, descriptor_targets, good_spot, sim_from_sim0

__all__ = ["PARAM_NAMES", "start_values", "fit_gaussians", "fit_descriptors", "fit_spot_scipy",
           "model_image"]

PARAM_NAMES = ("amplitude", "mu_col", "mu_row", "log_sigma_col", "log_sigma_row", "offset")


def _torch():
    import torch  # deferred: torch is heavy

    return torch


def _offsets(size, centre, dtype, device):
    torch = _torch()
    return torch.arange(size, dtype=dtype, device=device) - centre


def start_values(cutouts, valid=None, *, centre: int = CUTOUT_CENTRE, window: int = 6):
    """Robust start values ``(m, 6)`` from moments (torch in, torch out).

    β0 = median of the valid pixels of the outer 3-pixel frame; A0 = value at the peak pixel − β0;
    μ0, σ0 from the first and second moments of ``max(I − β0, 0)`` over the pixels above 20 % of
    A0 inside a ±``window`` box around the peak pixel (μ0 clipped to ±2 px, σ0 to [0.5, 6] px).
    """
    torch = _torch()
    m, h, w = cutouts.shape
    frame = torch.ones(h, w, dtype=torch.bool, device=cutouts.device)
    frame[3:-3, 3:-3] = False
    ring = cutouts[:, frame]
    if valid is not None:
        ring = torch.where(valid[:, frame], ring, torch.full_like(ring, float("nan")))
        beta0 = torch.nanmedian(ring, dim=1).values
        beta0 = torch.where(torch.isnan(beta0), cutouts.reshape(m, -1).median(dim=1).values, beta0)
    else:
        beta0 = ring.median(dim=1).values
    lo, hi = centre - window, centre + window + 1
    sub = cutouts[:, lo:hi, lo:hi] - beta0[:, None, None]
    if valid is not None:
        sub = sub * valid[:, lo:hi, lo:hi]
    a0 = sub[:, window, window]
    a0 = torch.maximum(a0, sub.reshape(m, -1).amax(dim=1) * 0.5)
    a0 = torch.clamp(a0, min=1.0)
    d = torch.clamp(sub, min=0.0)
    d = torch.where(d > 0.2 * a0[:, None, None], d, torch.zeros_like(d))
    t = _offsets(2 * window + 1, window, cutouts.dtype, cutouts.device)
    wsum = d.sum(dim=(1, 2)).clamp(min=1e-12)
    mc = (d.sum(dim=1) * t).sum(dim=1) / wsum
    mr = (d.sum(dim=2) * t).sum(dim=1) / wsum
    vc = (d.sum(dim=1) * (t[None, :] - mc[:, None]) ** 2).sum(dim=1) / wsum
    vr = (d.sum(dim=2) * (t[None, :] - mr[:, None]) ** 2).sum(dim=1) / wsum
    mc = mc.clamp(-2.0, 2.0)
    mr = mr.clamp(-2.0, 2.0)
    sc = vc.sqrt().clamp(0.5, 6.0)
    sr = vr.sqrt().clamp(0.5, 6.0)
    return torch.stack([a0, mc, mr, sc.log(), sr.log(), beta0], dim=1)


def _eval(p, data, weight, x, y, *, need_jac=True):
    """Residuals' cost and (JᵀJ, Jᵀr) at ``p`` for a batch."""
    torch = _torch()
    a, mc, mr, lsc, lsr, b = p.unbind(1)
    sc = lsc.exp()
    sr = lsr.exp()
    u = (x[None, :] - mc[:, None]) / sc[:, None]  # (m, w) along columns
    v = (y[None, :] - mr[:, None]) / sr[:, None]  # (m, h) along rows
    gx = torch.exp(-0.5 * u * u)
    gy = torch.exp(-0.5 * v * v)
    # r = A·gy⊗gx + β − I in one fused pass
    r = torch.baddbmm(b[:, None, None] - data, gy[:, :, None], (a[:, None] * gx)[:, None, :])
    if weight is not None:
        r = r * weight
    rf = r.reshape(r.shape[0], 1, -1)
    cost = 0.5 * torch.bmm(rf, rf.transpose(1, 2)).reshape(-1)
    if not need_jac:
        return cost, None, None
    m = p.shape[0]
    if weight is None:
        # separable Jacobian: column k of J is rowfactor_k(i) · colfactor_k(j), so
        # JᵀJ = (RᵀR) ⊙ (CᵀC) and (Jᵀr)_k = Σ_ij R_ik r_ij C_jk: O(6·h·w) instead of O(36·h·w)
        one_y = torch.ones_like(gy)
        one_x = torch.ones_like(gx)
        rows = torch.stack([gy, a[:, None] * gy, a[:, None] * gy * v / sr[:, None], a[:, None] * gy,
                            a[:, None] * gy * v * v, one_y], dim=-1)  # (m, h, 6)
        cols = torch.stack([gx, gx * u / sc[:, None], gx, gx * u * u, gx, one_x], dim=-1)  # (m, w, 6)
        jtj = torch.bmm(rows.transpose(1, 2), rows) * torch.bmm(cols.transpose(1, 2), cols)
        rc = torch.bmm(r, cols)  # (m, h, 6)
        jtr = (rows * rc).sum(dim=1)
        return cost, jtj, jtr
    g = gy[:, :, None] * gx[:, None, :]
    ag = a[:, None, None] * g * weight
    gw = g * weight
    uc = u[:, None, :]
    vr = v[:, :, None]
    jac = torch.stack([
        gw,
        ag * uc / sc[:, None, None],
        ag * vr / sr[:, None, None],
        ag * uc * uc,
        ag * vr * vr,
        weight.expand_as(g),
    ], dim=-1).reshape(m, -1, 6)
    jtj = torch.bmm(jac.transpose(1, 2), jac)
    jtr = torch.bmm(jac.transpose(1, 2), r.reshape(m, -1, 1)).squeeze(-1)
    return cost, jtj, jtr


#: plateau test: a fit whose cost fell by less than this fraction over the last
#: ``_PLATEAU_ITERS`` iterations has converged (it would only crawl along a flat valley — on
#: real frames 5–7 % of cutouts did so until the 1000-iteration cap)
_PLATEAU_ITERS = 25
_PLATEAU_RTOL = 1e-6
#: steps that would leave the physical box (|μ| ≤ centre, σ in [0.05, 64] px) are rejected
_LOG_SIGMA_MIN, _LOG_SIGMA_MAX = math.log(0.05), math.log(64.0)


def _lm_batch(data, weight, p0, *, max_iter, ftol, xtol, centre, stop="either"):
    """LM on a batch; the working set is compacted whenever a quarter of it has converged."""
    torch = _torch()
    m, h, w = data.shape
    x = _offsets(w, centre, data.dtype, data.device)
    y = _offsets(h, centre, data.dtype, data.device)
    p_out = p0.clone()
    cost_out = torch.zeros(m, dtype=data.dtype, device=data.device)
    converged = torch.zeros(m, dtype=torch.bool, device=data.device)
    n_iter = torch.zeros(m, dtype=torch.int32, device=data.device)
    eye = torch.eye(6, dtype=data.dtype, device=data.device)
    # working set
    ids = torch.arange(m, device=data.device)
    d_w, w_w, p = data, weight, p0.clone()
    cost, jtj, jtr = _eval(p, d_w, w_w, x, y)
    lam = torch.full((m,), 1e-3, dtype=data.dtype, device=data.device)
    done = torch.zeros(m, dtype=torch.bool, device=data.device)
    cost_ref = cost.clone()  # cost at the last plateau check
    for it in range(max_iter):
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp(min=1e-12)
        damped = jtj + (lam[:, None] * diag)[:, :, None] * eye
        step = torch.linalg.solve(damped, -jtr.unsqueeze(-1)).squeeze(-1)
        trial = p + step
        c_new, jtj_new, jtr_new = _eval(trial, d_w, w_w, x, y)
        inside = ((trial[:, 1:3].abs() <= centre).all(dim=1)  # step control: stay physical
                  & (trial[:, 3:5] >= _LOG_SIGMA_MIN).all(dim=1) & (trial[:, 3:5] <= _LOG_SIGMA_MAX).all(dim=1))
        ok = torch.isfinite(c_new) & (c_new < cost) & inside & ~done
        small_f = (cost - c_new) <= ftol * cost.clamp(min=1e-300)
        small_x = (step.abs() <= xtol * (trial.abs() + xtol)).all(dim=1)
        p = torch.where(ok[:, None], trial, p)
        cost = torch.where(ok, c_new, cost)
        jtj = torch.where(ok[:, None, None], jtj_new, jtj)
        jtr = torch.where(ok[:, None], jtr_new, jtr)
        lam = torch.where(ok, (lam * 0.3).clamp(min=1e-12), lam * 10.0)
        small = (small_f | small_x) if stop == "either" else (small_f & small_x)
        newly = ~done & ((ok & small) | (lam > 1e12))  # lam blow-up: no downhill step left
        if stop == "either" and (it + 1) % _PLATEAU_ITERS == 0:  # a flat valley: no real progress
            newly = newly | (~done & ((cost_ref - cost) <= _PLATEAU_RTOL * cost_ref))
            cost_ref = cost.clone()
        done = done | newly
        n_iter[ids[~done | newly]] += 1
        n_done = int(done.sum())
        if n_done == len(ids) or it == max_iter - 1 or n_done * 4 >= len(ids):
            fin = done if it < max_iter - 1 else torch.ones_like(done)
            sel = ids[fin]
            p_out[sel] = p[fin]
            cost_out[sel] = cost[fin]
            converged[sel] = done[fin]
            keep = ~fin
            if not bool(keep.any()):
                break
            ids, p, cost, jtj, jtr, lam = ids[keep], p[keep], cost[keep], jtj[keep], jtr[keep], lam[keep]
            cost_ref = cost_ref[keep]
            d_w = d_w[keep]
            w_w = None if w_w is None else w_w[keep]
            done = done[keep]
    return p_out, cost_out, converged, n_iter


def fit_gaussians(cutouts, valid=None, *, max_iter: int = 1000, ftol: float = 1e-10, xtol: float = 1e-8,
                  batch_size: int = 4096, device=None, dtype=None, centre: int = CUTOUT_CENTRE,
                  start=None, threads: int | None = 1, stop: str = "either"):
    """Fit every cutout ``(m, h, w)`` (numpy or torch); return a dict of numpy arrays.

    ``params`` (m, 6) in :data:`PARAM_NAMES` order, ``start`` (m, 6), ``cost`` (½ Σ r²),
    ``converged`` (bool), ``n_iter``. ``device`` defaults to the input's (CPU for numpy);
    ``dtype`` defaults to float64 (float32 is faster on GPUs, and accurate to ≈1e-4 px).
    ``stop``: ``"either"`` (default, as scipy's least_squares) ends a fit when an accepted step
    meets ``ftol`` *or* ``xtol``; ``"both"`` needs both (slower in flat valleys; the CNN's
    training labels use it, see :func:`laueflow.stages.spot_training.label_cutouts`).
    """
    if stop not in ("either", "both"):
        raise ValueError(f"stop must be 'either' or 'both', got {stop!r}")
    torch = _torch()
    dtype = torch.float64 if dtype is None else dtype
    if isinstance(cutouts, torch.Tensor):
        device = cutouts.device if device is None else torch.device(device)
        data_all = cutouts.to(device=device, dtype=dtype)
    else:
        device = torch.device("cpu" if device is None else device)
        data_all = torch.as_tensor(np.asarray(cutouts), dtype=dtype, device=device)
    if data_all.ndim == 2:
        data_all = data_all[None]
    valid_all = None
    if valid is not None:
        valid_all = torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid,
                                    device=device).to(torch.bool)
        if valid_all.ndim == 2:
            valid_all = valid_all[None]
    m = data_all.shape[0]
    out = {"params": np.zeros((m, 6)), "start": np.zeros((m, 6)), "cost": np.zeros(m),
           "converged": np.zeros(m, bool), "n_iter": np.zeros(m, np.int32)}
    with torch.no_grad():
        for lo in range(0, m, batch_size):
            hi = min(m, lo + batch_size)
            data = data_all[lo:hi]
            vmask = None
            weight = None
            if valid_all is not None:
                vmask = valid_all[lo:hi]
                if not bool(vmask.all()):
                    weight = vmask.to(dtype)
            if start is not None:
                p0 = torch.as_tensor(np.asarray(start)[lo:hi], dtype=dtype, device=device)
            else:
                p0 = start_values(data, vmask, centre=centre)
            p, cost, conv, n_it = _lm_batch(data, weight, p0, max_iter=max_iter, ftol=ftol, xtol=xtol, stop=stop,
                                            centre=centre)
            sig = p[:, 3:5].exp()
            sane = (torch.isfinite(p).all(dim=1) & (p[:, 1:3].abs() <= centre).all(dim=1) & (sig >= 0.05).all(dim=1)
                    & (sig <= 64).all(dim=1))
            out["params"][lo:hi] = p.cpu().numpy()
            out["start"][lo:hi] = p0.cpu().numpy()
            out["cost"][lo:hi] = cost.cpu().numpy()
            out["converged"][lo:hi] = (conv & sane).cpu().numpy()
            out["n_iter"][lo:hi] = n_it.cpu().numpy()
    return out


def model_image(params, shape=(32, 32), centre: int = CUTOUT_CENTRE, *, include_offset=True):
    """The fitted model ``A g + β`` (or ``A g``) as numpy (m, h, w)."""
    p = np.atleast_2d(np.asarray(params, dtype=np.float64)).copy()
    p[:, 3:5] = np.clip(np.nan_to_num(p[:, 3:5], nan=0.0), -8.0, 8.0)
    x = np.arange(shape[1]) - centre
    y = np.arange(shape[0]) - centre
    gx = np.exp(-0.5 * ((x[None, :] - p[:, 1:2]) / np.exp(p[:, 3:4])) ** 2)
    gy = np.exp(-0.5 * ((y[None, :] - p[:, 2:3]) / np.exp(p[:, 4:5])) ** 2)
    img = p[:, 0, None, None] * gy[:, :, None] * gx[:, None, :]
    if include_offset:
        img = img + p[:, 5, None, None]
    return img


def fit_descriptors(cutouts, params, valid=None, converged=None, *, centre: int = CUTOUT_CENTRE):
    """Descriptors of fitted cutouts (numpy, one entry per cutout).

    Returns ``sim0, sim, dcol, drow`` (``Pos − s``, px), ``aspect, area`` (px²), ``sigma_col,
    sigma_row``, ``good`` and ``targets`` (m, 5) = ``(Sim, Pos*_col, Pos*_row, Asp, Area*)``.
    Not-converged fits get ``Sim = 0`` (hence bad) when ``converged`` is given.
    """
    data = np.asarray(cutouts, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    p = np.atleast_2d(np.asarray(params, dtype=np.float64))
    spot = model_image(p, data.shape[1:], centre, include_offset=False)
    resid = data - p[:, 5, None, None]
    if valid is not None:
        vm = np.asarray(valid, dtype=np.float64).reshape(data.shape)
        spot = spot * vm
        resid = resid * vm
    num = (resid * spot).sum(axis=(1, 2))
    den = np.sqrt((resid * resid).sum(axis=(1, 2)) * (spot * spot).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        sim0 = np.where(den > 0, num / den, 0.0)
    sim0 = np.nan_to_num(sim0, nan=0.0)
    sim = sim_from_sim0(sim0)
    if converged is not None:
        sim = np.where(np.asarray(converged, bool), sim, 0.0)
    s1 = np.exp(np.clip(p[:, 3], -8.0, 8.0))
    s2 = np.exp(np.clip(p[:, 4], -8.0, 8.0))
    aspect = np.minimum(s1, s2) / np.maximum(s1, s2)
    area = math.pi * s1 * s2
    dcol = np.clip(np.nan_to_num(p[:, 1], nan=0.0), -centre, centre)
    drow = np.clip(np.nan_to_num(p[:, 2], nan=0.0), -centre, centre)
    aspect = np.nan_to_num(aspect, nan=1.0)
    area = np.nan_to_num(area, nan=0.0)
    return {"sim0": sim0, "sim": sim, "dcol": dcol, "drow": drow, "aspect": aspect, "area": area,
            "sigma_col": s1, "sigma_row": s2, "good": good_spot(sim, dcol, drow),
            "targets": descriptor_targets(sim, dcol, drow, aspect, area)}


def fit_spot_scipy(cutout, valid=None, start=None, *, centre: int = CUTOUT_CENTRE, tol: float = 1e-12):
    """Careful per-spot reference: ``scipy.optimize.least_squares`` (MINPACK LM, analytic Jacobian,
    tolerances ``tol``) on the same model, parameters and start values. Returns ``(params, success)``."""
    from scipy.optimize import least_squares  # deferred: scipy.optimize takes ~1 s to import

    data = np.asarray(cutout, dtype=np.float64)
    h, w = data.shape
    wv = np.ones_like(data) if valid is None else np.asarray(valid, dtype=np.float64)
    if start is None:
        torch = _torch()
        vt = None if valid is None else torch.as_tensor(np.asarray(valid, bool))[None]
        start = start_values(torch.as_tensor(data)[None], vt, centre=centre)[0].numpy()
    x = np.arange(w) - centre
    y = np.arange(h) - centre
    sel = wv.reshape(-1) > 0

    def parts(p):
        a, mc, mr, lsc, lsr, b = p
        sc, sr = math.exp(lsc), math.exp(lsr)
        u = (x - mc) / sc
        v = (y - mr) / sr
        g = np.exp(-0.5 * v * v)[:, None] * np.exp(-0.5 * u * u)[None, :]
        return a, b, sc, sr, u, v, g

    def fun(p):
        a, b, _, _, _, _, g = parts(p)
        return (a * g + b - data).reshape(-1)[sel]

    def jac(p):
        a, _, sc, sr, u, v, g = parts(p)
        ag = a * g
        cols = [g, ag * u[None, :] / sc, ag * v[:, None] / sr, ag * u[None, :] ** 2, ag * v[:, None] ** 2,
                np.ones_like(g)]
        return np.stack([c.reshape(-1)[sel] for c in cols], axis=1)

    res = least_squares(fun, np.asarray(start, dtype=np.float64), jac=jac, method="lm", xtol=tol, ftol=tol,
                        gtol=tol, max_nfev=5000)
    return res.x, bool(res.success)
