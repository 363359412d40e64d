"""``laueflow evaluate`` metrics of the science stages: spot descriptors, indexing, strain.

Each metric compares arrays of the results store with the simulator's truth
(``docs/truth-format.md``) and registers itself with :func:`.metrics.register_metric`; it runs
only when its variables are present in both stores. Detected peaks are paired with truth spots of
the same scan point by nearest distance within ``radius_px`` (1.5 px).
"""
from __future__ import annotations

import numpy as np

from ...physics.geometry import Calibration, pixel_to_angles
from ...physics.materials import get_materials
from ...physics.strain import strain_crystal_to_sample
from ...physics.symmetry import reduce_misorientation
from ..indexing.evaluate import evaluate_indexing
from .grains import best_indexed_grains, misorientations, share_within, true_dominant
from .matching import peak_truth_table
from .metrics import PROCESSED_VARIABLES, Metric, StoreArrays, percentile, processed_points, register_metric

__all__ = ["descriptor_metrics", "indexing_metrics", "strain_metrics", "best_grain_map_summary"]


def _values(arrays: StoreArrays, name, dtype=np.float64):
    return np.asarray(arrays[name], dtype=dtype)


def _truth_spot_of_peaks(results: StoreArrays, truth: StoreArrays, radius_px: float) -> np.ndarray:
    """:func:`.matching.peak_truth_table` of the two stores' arrays."""
    return peak_truth_table(results["peak_col"], results["peak_row"], truth["spot_y"], truth["spot_x"],
                            truth["spot_col"], truth["spot_row"], radius_px)


def _calibration(results) -> Calibration | None:
    cal = results.attrs.get("calibration")
    return Calibration.from_dict(cal) if cal else None


def descriptor_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    spot = _truth_spot_of_peaks(results, truth, float(opts["radius_px"]))
    matched = spot >= 0
    good = np.asarray(results["spot_good"], bool) & matched
    quality = _values(truth, "spot_quality", np.int64)
    tc, tr = _values(truth, "spot_col")[spot[good]], _values(truth, "spot_row")[spot[good]]
    cc, cr = _values(results, "peak_col")[good], _values(results, "peak_row")[good]
    rc, rr = _values(results, "spot_col")[good], _values(results, "spot_row")[good]
    summary = {
        "peaks_matched_to_truth": int(matched.sum()),
        "flagged_good": int(good.sum()),
        "good_flag_on_good_truth_spots": float(np.mean(np.asarray(results["spot_good"], bool)[matched & (quality[spot] == 0)])) if (matched & (quality[spot] == 0)).any() else float("nan"),
        "good_flag_on_bad_truth_spots": float(np.mean(np.asarray(results["spot_good"], bool)[matched & np.isin(quality[spot], [1, 2, 3])])) if (matched & np.isin(quality[spot], [1, 2, 3])).any() else float("nan"),
        "position_error_refined_median_px": percentile(np.hypot(rc - tc, rr - tr), 50),
        "position_error_centroid_median_px": percentile(np.hypot(cc - tc, cr - tr), 50),
    }
    cal = _calibration(results)
    if cal is not None and good.any():
        t_tth, t_chi = pixel_to_angles(tc, tr, cal)
        c_tth, c_chi = pixel_to_angles(cc, cr, cal)
        r_tth, r_chi = pixel_to_angles(rc, rr, cal)
        summary.update({
            "two_theta_error_refined_median_deg": percentile(np.abs(r_tth - t_tth), 50),
            "two_theta_error_centroid_median_deg": percentile(np.abs(c_tth - t_tth), 50),
            "chi_error_refined_median_deg": percentile(np.abs(r_chi - t_chi), 50),
            "chi_error_centroid_median_deg": percentile(np.abs(c_chi - t_chi), 50),
        })
    return {"summary": summary, "notes": [
        "good spots = descriptor flag spot_good; errors against the simulator's true positions; "
        "good/bad truth classes: quality 0 vs streaked/split/irregular"]}


def _materials(results):
    """The results' materials: their stored definitions (any material), else library names."""
    return get_materials(results.attrs.get("material_definitions") or results.attrs.get("materials") or [])


def _truth_slots(truth):
    """Truth grain slot of every truth spot (−1 if its grain is not at that point)."""
    gid = _values(truth, "grain_id", np.int64)
    sy, sx = _values(truth, "spot_y", np.int64), _values(truth, "spot_x", np.int64)
    sg = _values(truth, "spot_grain", np.int64)
    hit = gid[sy, sx] == sg[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def indexing_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    materials = _materials(results)
    if not materials:
        raise ValueError("results store has no 'materials' attribute")
    spot = _truth_spot_of_peaks(results, truth, float(opts["radius_px"]))
    ny, nx, n_peaks = spot.shape
    slot = _truth_slots(truth)
    hkl = np.stack([_values(truth, f"spot_{c}", np.int64) for c in "hkl"], axis=-1)
    truth_grain = np.where(spot >= 0, slot[np.maximum(spot, 0)], -1)
    truth_hkl = np.where((spot >= 0)[..., None], hkl[np.maximum(spot, 0)], 0)
    truth_names = list(truth.attrs.get("materials") or [])
    material_map = np.array([[m.name for m in materials].index(n) if n in [m.name for m in materials] else -1
                             for n in truth_names] or [-1])
    tmat = _values(truth, "grain_material", np.int64)
    tmat = np.where(tmat >= 0, material_map[np.maximum(tmat, 0)], -1)
    n = ny * nx
    rows = processed_points(results, (ny, nx)).reshape(n)  # a delegates-first run indexes only a few
    result = {k: np.asarray(results[k]).reshape(n, *results[k].shape[2:])[rows]
              for k in ("orientation_matrix", "grain_material", "peak_grain", "hkl")}
    out = evaluate_indexing(result, _values(truth, "orientation_matrix").reshape(n, -1, 3, 3)[rows],
                            tmat.reshape(n, -1)[rows], materials, truth_hkl=truth_hkl.reshape(n, n_peaks, 3)[rows],
                            truth_grain=truth_grain.reshape(n, n_peaks)[rows])
    mis = out.pop("misorientation_deg")
    summary = {"points_evaluated": int(rows.sum())}
    summary.update({k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in out.items()})
    summary["misorientation_median_deg"] = percentile(mis, 50)
    summary["misorientation_p95_deg"] = percentile(mis, 95)
    notes = ["grains: found = same material within 1° (symmetry-reduced); found_precise < 0.1°; "
             "hkl accuracy over detected peaks matched to truth spots (after the symmetry operator "
             "relating found and true orientations); over the points_evaluated: the points the peak "
             "search processed (peak_count ≥ 0, status not invalid_input)"]
    if "grain_map" in truth:
        summary.update(best_grain_map_summary(results, truth, materials))
        notes.append("map_*: the grain the maps show at each point (laueflow.best_grain: the brightest indexed "
                     "grain, then the highest matching rate) against the point's dominant true grain "
                     "(grain_map), within 1°, over the points_evaluated; points with no indexed grain count as misses")
    if "variant_ambiguous" in results:
        summary["variant_ambiguous"] = int(np.asarray(results["variant_ambiguous"]).sum())
        notes.append("variant_ambiguous: grains whose orientation may be a variant with the same spots "
                     "(e.g. quartz's Dauphiné twin); intensities absent or not decisive")
    return {"summary": summary, "notes": notes}


def best_grain_map_summary(results: StoreArrays, truth: StoreArrays, materials) -> dict:
    """How often the best grain (what the maps show) is the point's dominant true grain."""
    true_ub, true_material, has_truth = true_dominant(truth, [m.name for m in materials])
    has_truth &= processed_points(results, np.shape(results["grain_material"])[:2]).reshape(-1)
    ub, material, best = best_indexed_grains(results)
    angle = misorientations(ub, material, true_ub, true_material, materials)[has_truth]
    n = int(has_truth.sum())
    return {"map_points_with_truth": n, "map_points_not_indexed": int((best[has_truth] < 0).sum()),
            "map_fraction_within_1deg_of_truth": share_within(np.nan_to_num(angle, nan=np.inf), 1.0, n)}


def strain_metrics(results: StoreArrays, truth: StoreArrays, opts) -> dict:
    materials = _materials(results)
    ub = _values(results, "refined_orientation")
    ny, nx, n_slots = ub.shape[:3]
    status = _values(results, "strain_status", np.int64)
    sample = _values(results, "strain_sample")
    gmat = _values(results, "grain_material", np.int64)
    t_ub = _values(truth, "orientation_matrix")
    t_eps = _values(truth, "deviatoric_strain")
    t_gid = _values(truth, "grain_id", np.int64)
    errors, orientation_errors = [], []
    for y in range(ny):
        for x in range(nx):
            truth_slots = np.flatnonzero(t_gid[y, x] >= 0)
            for g in np.flatnonzero(status[y, x] == 0):
                material = materials[gmat[y, x, g]]
                if not len(truth_slots):
                    continue
                mis = reduce_misorientation(t_ub[y, x, truth_slots], ub[y, x, g], material)
                best = int(np.argmin(mis))
                if mis[best] > 1.0:
                    continue
                t = truth_slots[best]
                truth_sample = strain_crystal_to_sample(t_eps[y, x, t], t_ub[y, x, t], material.lattice_parameters)
                errors.append(sample[y, x, g] - truth_sample)
                orientation_errors.append(mis[best])
    errors = np.asarray(errors).reshape(-1, 3, 3)
    component = np.abs(errors[:, np.triu_indices(3)[0], np.triu_indices(3)[1]]).ravel()
    summary = {
        "grains_refined": int((status == 0).sum()),
        "grains_compared": len(errors),
        "grains_too_few_pairs": int((status == 1).sum()),
        "grains_ill_conditioned": int((status == 2).sum()),
        "strain_error_median": percentile(component, 50),
        "strain_error_p95": percentile(component, 95),
        "strain_error_rms": float(np.sqrt(np.mean(component**2))) if len(component) else float("nan"),
        "orientation_error_median_deg": percentile(np.asarray(orientation_errors), 50),
        "orientation_error_p95_deg": percentile(np.asarray(orientation_errors), 95),
    }
    return {"summary": summary, "notes": [
        "strain error: |Δε| per independent component of the deviatoric strain in the sample frame; "
        "each refined grain compared with the truth grain of the same point within 1°"]}


register_metric(Metric("descriptors", ("spot_col", "spot_row", "spot_good", "peak_col", "peak_row"),
                       ("spot_col", "spot_row", "spot_quality", "spot_y", "spot_x"), descriptor_metrics,
                       "refined spot positions and good flags vs true positions"))
register_metric(Metric("indexing", ("orientation_matrix", "grain_material", "peak_grain", "hkl", "peak_col", "peak_row"),
                       ("orientation_matrix", "grain_material", "spot_h", "spot_k", "spot_l", "spot_grain",
                        "grain_id", "spot_y", "spot_x", "spot_col", "spot_row"),
                       indexing_metrics, "grains found/missed/spurious, misorientation, hkl accuracy",
                       optional_results=("variant_ambiguous", "matching_rate", "peak_intensity", *PROCESSED_VARIABLES),
                       optional_truth=("grain_map",)))
register_metric(Metric("strain", ("refined_orientation", "strain_sample", "strain_status", "grain_material"),
                       ("orientation_matrix", "deviatoric_strain", "grain_id"), strain_metrics,
                       "deviatoric strain and orientation errors vs truth"))
