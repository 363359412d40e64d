"""A small results store with known contents, in the layout of `laueflow run` (docs/results-schema.md):
4 × 5 points, two materials (Cu, GaN), known orientations, strains, statuses, peaks and a
segmentation — written in well under a second, for the tests of open_results, the maps, the
report and the exports (which need exact expected values, not a pipeline run)."""
from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from laueflow.physics.materials import get_materials
from laueflow.physics.orientations import euler_to_matrix, matrix_to_euler, rotation_about_axis

NY, NX, GRAINS, PEAKS = 4, 5, 2, 6
STEP_UM = (2.0, 0.5)
STATUS_CODES = {"0": "ok", "1": "invalid_input", "2": "no_peaks", "3": "not_indexed", "4": "peaks_truncated"}
INVALID, NO_PEAKS, NOT_INDEXED = (0, 4), (3, 0), (3, 1)
#: orientations by column band: identity, 90° about z, a random one (Cu), GaN (c ∥ lab z) in column 4
RANDOM_EULER = (31.0, 47.0, 112.0)


def orientation_of(y: int, x: int) -> np.ndarray:
    if x == 0:
        return np.eye(3)
    if x == 1:
        return rotation_about_axis([0, 0, 1], 90.0)
    if x in (2, 3):
        return euler_to_matrix(*RANDOM_EULER)
    return rotation_about_axis([1, 1, 0], 20.0)


def expected_material(y: int, x: int) -> int:
    return 1 if x == 4 else 0


def _euler(ub):
    out = np.full(ub.shape[:-1], np.nan)
    ok = np.isfinite(ub).all(axis=(-1, -2))
    out[ok] = matrix_to_euler(ub[ok])
    return out


def build(path, *, attrs_update=None, drop_attrs=()) -> xr.Dataset:
    """Write the store to ``path`` and return the Dataset written."""
    materials = get_materials(["Cu", "GaN"])
    status = np.zeros((NY, NX), np.int8)
    for (y, x), code in ((INVALID, 1), (NO_PEAKS, 2), (NOT_INDEXED, 3)):
        status[y, x] = code
    indexed = status == 0
    ub = np.full((NY, NX, GRAINS, 3, 3), np.nan)
    material = np.full((NY, NX, GRAINS), -1, np.int16)
    rate = np.full((NY, NX, GRAINS), np.nan, np.float32)
    strain = np.full((NY, NX, GRAINS, 3, 3), np.nan)
    for y in range(NY):
        for x in range(NX):
            if not indexed[y, x]:
                continue
            ub[y, x, 0] = orientation_of(y, x)
            material[y, x, 0] = expected_material(y, x)
            rate[y, x, 0] = 50.0 + 10 * y
            eps = np.zeros((3, 3))
            eps[0, 0], eps[1, 1], eps[2, 2] = 1e-3 * (x - 2), -0.5e-3 * (x - 2), -0.5e-3 * (x - 2)
            eps[0, 1] = eps[1, 0] = 0.2e-3 * y
            strain[y, x, 0] = eps
            if x == 3:  # a second grain, better matched and brighter: the best grain of this column
                ub[y, x, 1] = rotation_about_axis([0, 1, 0], 30.0)
                material[y, x, 1] = 0
                rate[y, x, 1] = 95.0
                strain[y, x, 1] = np.diag([2e-3, -1e-3, -1e-3])
    von_mises = np.sqrt(2 / 3 * np.einsum("...ij,...ij", strain, strain))
    grain_count = np.isfinite(rate).sum(-1).astype(np.int16)
    peak_count = np.where(status == 1, -1, np.where(status == 2, 0, PEAKS)).astype(np.int32)
    rng = np.random.default_rng(0)
    peak_col = np.full((NY, NX, PEAKS), np.nan, np.float32)
    peak_row = np.full((NY, NX, PEAKS), np.nan, np.float32)
    has_peaks = peak_count > 0
    peak_col[has_peaks] = rng.uniform(5, 59, (has_peaks.sum(), PEAKS))
    peak_row[has_peaks] = rng.uniform(5, 43, (has_peaks.sum(), PEAKS))
    intensity = np.where(np.isfinite(peak_col), rng.uniform(10, 1000, peak_col.shape), np.nan).astype(np.float32)
    peak_grain = np.where(np.isfinite(peak_col) & indexed[..., None], np.arange(PEAKS) % 2 - (np.arange(PEAKS) == 4),
                          -1).astype(np.int16)
    intensity[:, 3][peak_grain[:, 3] == 1] += 1000.0  # column 3: the second grain is also the brightest
    hkl = np.where(peak_grain[..., None] >= 0, np.array([1, 1, 1]) * (np.arange(PEAKS)[:, None] + 1), 0).astype(np.int32)
    labels = np.where(status == 1, -1, (np.arange(NX) >= 3).astype(int)[None, :].repeat(NY, 0)).astype(np.int32)
    rgb = np.where(labels[..., None] >= 0, np.where(labels[..., None] == 0, [0.9, 0.2, 0.1], [0.1, 0.3, 0.9]),
                   np.nan).astype(np.float32)
    k = np.arange(1, 7, dtype=np.int32)
    grain_dims, tensor_dims = ("y", "x", "grain"), ("y", "x", "grain", "i3", "j3")
    data = {
        "status": (("y", "x"), status, {"units": "1", "fill_value": 1}),
        "peak_count": (("y", "x"), peak_count, {"units": "1", "fill_value": -1}),
        "grain_count": (("y", "x"), grain_count, {"units": "1", "fill_value": 0}),
        "grain_material": (grain_dims, material, {"units": "1", "fill_value": -1}),
        "orientation_matrix": (tensor_dims, ub, {"units": "1"}),
        "euler_angles": (("y", "x", "grain", "i3"), _euler(ub), {"units": "deg"}),
        "matching_rate": (grain_dims, rate, {"units": "%"}),
        "matched_spots": (grain_dims, np.where(np.isfinite(rate), 20, 0).astype(np.int32), {"units": "1", "fill_value": 0}),
        "mean_residual_deg": (grain_dims, np.where(np.isfinite(rate), 0.05, np.nan).astype(np.float32), {"units": "deg"}),
        "strain_sample": (tensor_dims, strain, {"units": "1"}),
        "strain_lab": (tensor_dims, strain, {"units": "1"}),
        "von_mises_strain": (grain_dims, von_mises, {"units": "1"}),
        "strain_rms_px": (grain_dims, np.where(np.isfinite(rate), 0.2, np.nan).astype(np.float32), {"units": "px"}),
        "peak_col": (("y", "x", "peak"), peak_col, {"units": "px"}),
        "peak_row": (("y", "x", "peak"), peak_row, {"units": "px"}),
        "peak_intensity": (("y", "x", "peak"), intensity, {"units": "counts"}),
        "spot_similarity": (("y", "x", "peak"), np.where(np.isfinite(peak_col), 0.9, np.nan).astype(np.float32), {"units": "1"}),
        "peak_grain": (("y", "x", "peak"), peak_grain, {"units": "1", "fill_value": -1}),
        "hkl": (("y", "x", "peak", "i3"), hkl, {"units": "1", "fill_value": 0}),
        "cluster_label": (("y", "x"), labels, {"units": "1", "fill_value": -1}),
        "pca_labeler_rgb": (("y", "x", "rgb"), rgb, {"units": "1"}),
        "direct_rgb": (("y", "x", "rgb"), rgb, {"units": "1"}),
        "score_k": (("k",), k, {"units": "1"}),
        "silhouette_score": (("k",), np.array([np.nan, 0.8, 0.6, 0.5, 0.4, 0.3]), {"units": "1"}),
        "calinski_harabasz_score": (("k",), np.array([np.nan, 90, 70, 60, 50, 45.0]), {"units": "1"}),
        "suggested_k": ((), np.int32(2), {"units": "1"}),
        # indexing labeler: each cluster's delegate orientation (cluster 0: identity Cu, 1: GaN of column 4)
        "delegate_orientation": (("y", "x", "i3", "j3"), np.where(
            (labels >= 0)[..., None, None], np.where((labels == 0)[..., None, None], np.eye(3), orientation_of(1, 4)),
            np.nan), {"units": "1"}),
        "delegate_material": (("y", "x"), np.where(labels >= 0, labels, -1).astype(np.int16), {"units": "1", "fill_value": -1}),
    }
    attrs = {"laueflow_results": True, "status_codes": STATUS_CODES, "materials": ["Cu", "GaN"],
             "material_definitions": [m.to_dict() for m in materials], "step_um": list(STEP_UM),
             "stage_timings_s": {"read": 0.5, "peaks": 1.25, "index": 2.5},
             "laueflow_provenance": {"models": {"index.model": "ab" * 32}}, "complete": True,
             "laueflow_version": "test", "scan_store": ""}
    attrs.update(attrs_update or {})
    for name in drop_attrs:
        attrs.pop(name, None)
    coords = {"y": ("y", np.arange(NY) * STEP_UM[0], {"units": "um"}),
              "x": ("x", np.arange(NX) * STEP_UM[1], {"units": "um"})}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    encoding = {name: {"fill_value": var.attrs["fill_value"]} for name, var in ds.data_vars.items()
                if "fill_value" in var.attrs}
    with warnings.catch_warnings():  # consolidated like `laueflow run`'s stores; zarr warns that v3 lacks it
        warnings.simplefilter("ignore", UserWarning)
        ds.to_zarr(path, mode="w", consolidated=True, encoding=encoding)
    return ds
