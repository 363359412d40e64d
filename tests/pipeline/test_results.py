"""open_results: statuses and materials named from the store's own attributes (never guessed),
positions in µm, best grain / grain k / material m selections — on a store of known contents."""
from __future__ import annotations

import numpy as np
import pytest

import laueflow
import results_factory as rf
from laueflow.pipeline.results import ResultsError


def test_statuses_are_decoded_and_the_codes_kept(results_store):
    path, written = results_store
    ds = laueflow.open_results(path)
    assert ds["status"].dtype == np.int8
    np.testing.assert_array_equal(ds["status"].values, written["status"].values)
    names = ds["status_name"].values
    assert names[rf.INVALID] == "invalid_input" and names[rf.NO_PEAKS] == "no_peaks"
    assert names[rf.NOT_INDEXED] == "not_indexed" and (names == "ok").sum() == rf.NY * rf.NX - 3
    assert ds["status"].attrs["flag_values"] == [0, 1, 2, 3, 4]
    assert ds["status"].attrs["flag_meanings"].split()[3] == "not_indexed"


def test_materials_and_positions(results_store):
    path, _ = results_store
    ds = laueflow.open_results(path)
    assert list(ds["material"].values) == ["Cu", "GaN"]
    assert ds["grain_material_name"].values[1, 4, 0] == "GaN" and ds["grain_material_name"].values[1, 0, 0] == "Cu"
    assert ds["grain_material_name"].values[1, 0, 1] == ""  # empty slot
    np.testing.assert_allclose(ds["y_um"].values, np.arange(rf.NY) * rf.STEP_UM[0])
    np.testing.assert_allclose(ds["x_um"].values, np.arange(rf.NX) * rf.STEP_UM[1])
    assert ds["x_um"].attrs["units"] == "um"


def test_positions_from_the_step_when_coordinates_are_indices(tmp_path):
    path = tmp_path / "r.zarr"
    written = rf.build(path)
    with pytest.warns(UserWarning):  # zarr: consolidated metadata is not in the v3 spec
        written.assign_coords(y=np.arange(rf.NY), x=np.arange(rf.NX)).to_zarr(tmp_path / "idx.zarr", consolidated=True)
    ds = laueflow.open_results(tmp_path / "idx.zarr")
    np.testing.assert_allclose(ds["x_um"].values, np.arange(rf.NX) * 0.5)


@pytest.mark.parametrize("change, message", [
    ({"drop_attrs": ("materials",)}, "no `materials` attribute"),
    ({"attrs_update": {"materials": ["GaN", "Cu"]}}, "disagree with its `material_definitions`"),
    ({"drop_attrs": ("status_codes",)}, "no `status_codes`"),
    ({"drop_attrs": ("laueflow_results",)}, "not a results store"),
])
def test_refuses_a_store_whose_attributes_are_missing_or_inconsistent(tmp_path, change, message):
    path = tmp_path / "bad.zarr"
    rf.build(path, **change)
    with pytest.raises(ResultsError, match=message):
        laueflow.open_results(path)


def test_best_grain_grain_and_material(results_store):
    path, written = results_store
    ds = laueflow.open_results(path)
    best = laueflow.best_grain(ds)
    assert "grain" not in best["orientation_matrix"].dims
    assert (best["grain_index"].values[:, 3] == 1).all()  # the better-matched second grain
    assert best["grain_index"].values[rf.NOT_INDEXED] == -1 and best["grain_index"].values[1, 0] == 0
    np.testing.assert_allclose(best["matching_rate"].values[:, 3], 95.0)
    assert np.isnan(best["matching_rate"].values[rf.NOT_INDEXED])
    np.testing.assert_allclose(best["orientation_matrix"].values[2, 1], rf.orientation_of(2, 1))
    second = laueflow.grain(ds, 1)
    assert np.isfinite(second["matching_rate"].values).sum() == rf.NY
    with pytest.raises(ResultsError, match="2 grain slots"):
        laueflow.grain(ds, 2)
    gan = laueflow.material(ds, "GaN")
    assert np.isfinite(gan["matching_rate"].values).sum() == 3  # column 4, rows 1-3
    assert (gan["grain_material"].values[..., 0][:, :4] == -1).all()
    with pytest.raises(ResultsError, match="not in this store"):
        laueflow.material(ds, "Al")
    best_gan = laueflow.best_grain(gan)
    assert np.isfinite(best_gan["matching_rate"].values).sum() == 3
    with pytest.raises(ResultsError, match="select the material first"):
        laueflow.material(best, "GaN")



def test_best_grain_is_the_brightest_and_the_matching_rate_only_breaks_ties(results_store, tmp_path):
    """Two twin variants at 100 %: the one with the bright spots fills the beam and is the best
    grain (the delegate map's rule); by='matching_rate' keeps the first listed one."""
    import dask.array as da

    path, _ = results_store
    ds = laueflow.open_results(path).load()
    rate = ds["matching_rate"].values.copy()
    rate[:, 3] = 100.0  # both grains of column 3 match equally
    height = ds["peak_intensity"].values.copy()
    height[2, 3][ds["peak_grain"].values[2, 3] == 0] = 5000.0  # at (2, 3) the first grain is the bright one
    ds = ds.assign(matching_rate=(ds["matching_rate"].dims, rate), peak_intensity=(ds["peak_intensity"].dims, height))
    lazy = ds.chunk({"y": 2, "x": 2, "peak": 3})  # blocks across points and peaks, as a store may have
    assert isinstance(lazy["peak_grain"].data, da.Array)
    for data in (ds, lazy):
        best = laueflow.best_grain(data)
        assert best["grain_index"].values[2, 3] == 0 and (best["grain_index"].values[[0, 1, 3], 3] == 1).all()
        np.testing.assert_allclose(best["orientation_matrix"].values[2, 3], rf.orientation_of(2, 3))
    assert (laueflow.best_grain(ds, by="matching_rate")["grain_index"].values[:, 3] == 0).all()
    with pytest.raises(ResultsError, match="by='matching_rate'"):
        laueflow.best_grain(ds.drop_vars("peak_grain"))
    with pytest.raises(ResultsError, match="no grain variable 'status'"):
        laueflow.best_grain(ds, by="status")

def test_a_segmentation_group_opens_over_the_root_coordinates(tmp_path):
    import warnings

    import xarray as xr

    path = tmp_path / "seg.zarr"
    rf.build(path)
    labels = np.arange(rf.NY * rf.NX, dtype=np.int32).reshape(rf.NY, rf.NX) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated metadata is not in the v3 spec
        xr.Dataset({"cluster_label": (("y", "x"), labels)}).to_zarr(path, group="segmentations/k3", mode="w")
    ds = laueflow.open_results(path, group="segmentations/k3")
    np.testing.assert_array_equal(ds["cluster_label"].values, labels)  # the group's, not the root's
    assert "x_um" in ds.coords and ds["status_name"].values[rf.INVALID] == "invalid_input"


def test_best_grain_marks_what_it_selected_and_leaves_the_dataset_alone(results_store):
    path, _ = results_store
    ds = laueflow.open_results(path)
    best = laueflow.best_grain(ds)
    assert best["matching_rate"].attrs["selected_grain"] == "best" and best["matching_rate"].attrs["units"] == "%"
    assert "selected_grain" not in best["peak_count"].attrs  # not a grain variable
    assert "selected_grain" not in ds["matching_rate"].attrs  # the input is not changed
    assert "selected_grain" not in laueflow.grain(ds, 1)["matching_rate"].attrs
