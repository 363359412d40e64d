"""Indexing stage: padded per-image peak angles → hkl, grains and orientation matrices.

Arrays in, arrays out (no Dask; the only file read is the model, once per process).

:func:`index_peaks` is the science function (takes a loaded :class:`Indexer`);
:func:`index_stage` is the pipeline entry (``laueflow.stages.indexing.stage:index_stage``): it
receives the indexer that the pipeline found (or trained) for the scan's materials and
calibration and loaded once per worker.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ...backend import to_numpy
from ...physics.geometry import Calibration, angles_to_qhat
from ...physics.materials import get_materials, material_differences
from ...physics.orientations import matrix_to_euler
from . import STAGE
from .intensity_variants import settle_by_intensity
from .orientation import (ClassGeometry, IndexingParams, at_cap, find_grains, free_spots, prune_grains,
                          replace_weakest, swap_due)
from .training import Indexer

__all__ = ["index_peaks", "index_stage", "model_to_scan_materials"]

_GEOMETRY_CACHE: dict = {}


def _geometry(indexer: Indexer) -> ClassGeometry:
    key = id(indexer)
    if key not in _GEOMETRY_CACHE or _GEOMETRY_CACHE[key][0] is not indexer:
        _GEOMETRY_CACHE[key] = (indexer, ClassGeometry(indexer.classes, indexer.materials))
    return _GEOMETRY_CACHE[key][1]


#: extra output of :func:`index_peaks`: spots per image that got a class prediction and could start
#: a grain (the first ``n_predict`` plus any further blocks); :func:`index_stage` drops it unless
#: the StageSpec declares it
SEED_KEY = "n_seed_spots"


def _unexplained(grains, m: int, p: IndexingParams, n_mat: int) -> bool:
    """True while a further block of seed spots may find a grain: fewer than ``max_grains`` grains
    (and some material below its cap) and ≥ max(``min_matched``, ``continue_unexplained`` · m) of
    the m valid spots matched by no accepted grain."""
    if at_cap(grains, p, n_mat):
        return False
    return free_spots(grains, m) >= max(p.min_matched, p.continue_unexplained * m)


def _params(max_grains, overrides) -> IndexingParams:
    names = {f.name for f in fields(IndexingParams)}
    kw = {k: v for k, v in overrides.items() if k in names and v is not None}
    for k in ("max_grains_per_material", "refine_tolerances_deg"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return IndexingParams(max_grains=int(max_grains), **kw)


def index_peaks(peak_two_theta, peak_chi, peak_intensity=None, *, indexer: Indexer,
                calibration: Calibration | None = None, max_grains: int = 5, previous_ub=None,
                previous_material=None, use_previous: bool = False, n_predict: int | None = None,
                device=None, **params) -> dict:
    """Index every image of a batch.

    Parameters
    ----------
    peak_two_theta, peak_chi : ``(n, max_peaks)`` degrees, NaN padding.
    peak_intensity : ``(n, max_peaks)`` or None. Spots are used brightest first; when given the
        peaks are re-ordered by it (outputs keep the input peak order).
    indexer : a trained :class:`Indexer` (its materials define the material indices).
    calibration : detector geometry used to simulate candidate patterns (default: the model's).
    max_grains : grains searched per image (output size of the ``grain`` dim).
    previous_ub, previous_material : optional ``(n, k, 3, 3)`` / ``(n, k)`` orientations of
        neighbouring scan points tried first (``use_previous``; NaN / −1 entries ignored).
    use_previous : where ``previous_ub`` gives nothing for an image, seed it with the grains found
        in the previous image of the batch (images of a pipeline tile are scan neighbours).
    n_predict : spots per image (brightest first) whose class is predicted and that may seed pairs;
        default ``max(model n_centres, 25 · max_grains)``. When fewer than ``max_grains`` grains
        are found and many spots stay unmatched (``continue_unexplained``, default 10 % of the
        spots and ≥ ``min_matched``), the next ``n_predict`` spots get predictions and may seed
        pairs too, block by block, until all spots had their chance (``n_seed_spots``).
    device : torch device for the network (default CPU; e.g. ``"cuda"``).
    **params : :class:`IndexingParams` overrides (``confidence_threshold``, ``mr_accept`` …);
        unknown keys are ignored.

    Returns
    -------
    dict of numpy arrays: per peak ``hkl (n, max_peaks, 3)`` int32 (0), ``peak_material`` (−1),
    ``peak_grain`` (−1); per grain ``(n, max_grains)``: ``grain_material`` (−1),
    ``orientation_matrix (…, 3, 3)`` (UB, LaueTools convention ``q = UB·B0·h``; NaN),
    ``euler_angles (…, 3)`` (Bunge, deg; NaN), ``matching_rate`` (%), ``matched_spots``,
    ``mean_residual_deg``, ``variant_ambiguous`` (1: a variant with the same spot positions, e.g.
    quartz's Dauphiné twin, fits as well — no intensities or they did not decide; 0); and
    ``grain_count (n,)``; ``n_seed_spots (n,)`` int32: spots that got a class prediction and
    could start a grain (``n_predict`` or more; 0 for images of < 2 spots).
    """
    tth = np.asarray(to_numpy(peak_two_theta), dtype=float)
    chi = np.asarray(to_numpy(peak_chi), dtype=float)
    if tth.ndim == 1:
        tth, chi = tth[None], chi[None]
        if peak_intensity is not None:
            peak_intensity = np.asarray(peak_intensity)[None]
    n, mp = tth.shape
    g_max = int(max_grains)
    if n_predict is None:
        n_predict = max(int(indexer.config.n_centres), 25 * g_max)
    order, tth_o, chi_o, inten_o = _brightest_first(tth, chi, peak_intensity)
    ranked = peak_intensity is not None  # brightest first: class priors of the intensity ranks
    cls, conf = indexer.predict(tth_o, chi_o, n_centres=int(n_predict), device=device, intensity_order=ranked)
    search = _ImageSearch(indexer=indexer, calibration=calibration or indexer.calibration, p=_params(g_max, params),
                          band=tuple(indexer.config.energy_band_kev), geom=_geometry(indexer),
                          block=max(int(n_predict), 2), device=device, ranked=ranked)
    out = STAGE.empty_outputs(n, {"max_grains": g_max}, peak=mp)
    out[SEED_KEY] = np.zeros(n, np.int32)
    for i in range(n):
        m = int(np.isfinite(tth_o[i]).sum())
        if m < 2:
            continue
        prev = _previous_grains(i, previous_ub, previous_material)
        if not prev and use_previous and i > 0:
            prev = [(int(mm), u) for mm, u in zip(out["grain_material"][i - 1], out["orientation_matrix"][i - 1])
                    if mm >= 0]
        c = min(cls.shape[1], m)
        grains, out[SEED_KEY][i] = search.run(tth_o[i, :m], chi_o[i, :m], cls[i, :c], conf[i, :c],
                                              None if inten_o is None else inten_o[i, :m], prev)
        _write_grains(out, i, grains, order[i], m)
    return out


def _brightest_first(tth, chi, peak_intensity):
    """``(order, tth, chi, intensity)`` with each image's peaks re-ordered valid first,
    brightest first (``order (n, max_peaks)``: input index of each re-ordered peak; the invalid
    ones NaN; ``intensity`` None when not given)."""
    valid = np.isfinite(tth) & np.isfinite(chi)
    inten = None
    if peak_intensity is not None:
        inten = np.asarray(to_numpy(peak_intensity), dtype=float)
        key = np.where(valid & np.isfinite(inten), -inten, np.inf)
        key = np.where(valid & ~np.isfinite(inten), np.finfo(float).max, key)
    else:
        key = np.where(valid, 0.0, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    inten_o = None if inten is None else np.take_along_axis(inten, order, 1)
    tth_o = np.take_along_axis(tth, order, 1)
    chi_o = np.take_along_axis(chi, order, 1)
    tth_o[~np.take_along_axis(valid, order, 1)] = np.nan
    return order, tth_o, chi_o, inten_o


def _previous_grains(i: int, previous_ub, previous_material) -> list:
    """``[(material, U)]`` of image ``i``'s neighbours' grains (``previous_ub``), NaN / −1 dropped."""
    if previous_ub is None:
        return []
    pu = np.asarray(previous_ub[i], dtype=float).reshape(-1, 3, 3)
    pm = np.zeros(len(pu), int) if previous_material is None else np.asarray(previous_material[i]).reshape(-1)
    return [(int(mm), u) for mm, u in zip(pm, pu) if mm >= 0 and np.isfinite(u).all()]


@dataclass
class _ImageSearch:
    """The grain search of one image, with what every image of the batch shares."""

    indexer: Indexer
    calibration: Calibration
    p: IndexingParams
    band: tuple
    geom: ClassGeometry
    block: int
    device: object
    ranked: bool

    def run(self, tth, chi, ci, fi, intensity, prev) -> tuple[list, int]:
        """``(grains, n_seed_spots)`` of one image's ``m`` valid spots (brightest first), its
        first spots' class predictions ``ci``/``fi`` and the neighbours' grains ``prev``."""
        m, c = len(tth), len(ci)
        geom, p, n_materials = self.geom, self.p, len(self.geom.materials)
        q = angles_to_qhat(tth, chi)
        grains = find_grains(q, ci, fi, geom, self.calibration, self.band, p, prev)

        # no silent n_predict cut (issue #12): while grains remain unexplained, the next block of
        # spots gets class predictions (same model, features from all spots) and may seed pairs
        # (each with at least one spot of the new block)
        def predict_more(end):  # class predictions of spots c … end − 1 (features from all spots)
            perm = np.r_[c:end, 0:c, end:m]
            bc, bf = self.indexer.predict(tth[perm], chi[perm], n_centres=end - c, device=self.device,
                                          intensity_order=self.ranked, first_rank=c)
            return np.concatenate([ci, bc]), np.concatenate([fi, bf])

        while c < m and _unexplained(grains, m, p, n_materials):
            end = min(c + self.block, m)
            ci, fi = predict_more(end)
            grains = find_grains(q, ci, fi, geom, self.calibration, self.band, p, grains=grains, seed_from=c)
            c = end
        if swap_due(grains, m, p, n_materials):
            # at the cap with spots left: every spot may seed the grain that replaces the weakest
            if c < m:
                ci, fi = predict_more(m)
                c = m
            grains = replace_weakest(grains, q, ci, fi, geom, self.calibration, self.band, p)
        grains = prune_grains(grains, q, geom, self.calibration, self.band, p)
        grains = settle_by_intensity(grains, q, intensity, geom, self.calibration, self.band, p)
        return grains, c


def _write_grains(out: dict, i: int, grains: list, order, m: int) -> None:
    """Image ``i``'s grains into ``out``; a spot matched by several grains goes to the one with
    the smallest residual (``order``: input index of each brightest-first spot)."""
    best_res = np.full(m, np.inf)
    for gi, g in enumerate(grains):
        out["grain_material"][i, gi] = g.material
        out["orientation_matrix"][i, gi] = g.ub
        out["euler_angles"][i, gi] = matrix_to_euler(g.ub)
        out["matching_rate"][i, gi] = g.matching_rate
        out["matched_spots"][i, gi] = g.n_matched
        out["mean_residual_deg"][i, gi] = g.mean_residual_deg
        out["variant_ambiguous"][i, gi] = g.ambiguous
        better = g.residual_deg < best_res[g.spot_index]
        idx = g.spot_index[better]
        best_res[idx] = g.residual_deg[better]
        orig = order[idx]
        out["hkl"][i, orig] = g.hkl[better]
        out["peak_material"][i, orig] = g.material
        out["peak_grain"][i, orig] = gi
    out["grain_count"][i] = len(grains)


def index_stage(peak_two_theta, peak_chi, peak_intensity=None, calibration=None, materials=None, *,
                model: Indexer | None = None, max_grains: int = 5, cache_dir=None,
                train_if_missing: bool = True, indexer_config: dict | None = None, device: str = "cpu",
                **params) -> dict:
    """Pipeline entry: :func:`index_peaks` with the loaded indexer ``model``.

    ``materials``, ``cache_dir``, ``train_if_missing`` and ``indexer_config`` are used by the
    pipeline to find or train the model (:mod:`laueflow.pipeline.indexers`), not here.
    """
    if not isinstance(model, Indexer):
        raise ValueError("the index stage needs a loaded indexer (parameter 'model'): run it through "
                         "`laueflow run`, which finds or trains the model for the scan's materials, or "
                         "pass laueflow.io.indexer_files.load_indexer(PATH)")
    lookup = None if materials is None else model_to_scan_materials(model.materials, get_materials(materials))
    caps = params.get("max_grains_per_material")
    if caps is not None and lookup is not None:  # caps come in the scan's order; the search uses the model's
        params = {**params, "max_grains_per_material": [caps[j] for j in lookup]}
    out = index_peaks(peak_two_theta, peak_chi, peak_intensity, indexer=model, calibration=calibration,
                      max_grains=max_grains, device=device, **params)
    if lookup is not None:  # material indices follow the scan's list (by name), never the model's order
        for key in ("grain_material", "peak_material"):
            out[key] = np.where(out[key] >= 0, lookup[np.maximum(out[key], 0)], -1).astype(out[key].dtype)
    return out


def model_to_scan_materials(model_materials, scan_materials) -> np.ndarray:
    """``lookup[i]`` = index in ``scan_materials`` of the model's material ``i``, matched by name;
    ``ValueError`` listing the differences unless both hold the same materials (names, lattice
    parameters to 1e-6 Å/°, space group), in any order."""
    problems = material_differences(model_materials, scan_materials, ("model", "scan"))
    if problems:
        raise ValueError("the indexer model and the scan do not have the same materials: " + "; ".join(problems)
                         + ". Use a model trained for the scan's materials (laueflow train indexer "
                         "--material …) or set model: null to find or train it")
    names = [m.name for m in scan_materials]
    return np.array([names.index(m.name) for m in model_materials], dtype=np.int64)
