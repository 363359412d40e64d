"""Each map of laueflow.plot on a store of known contents: the figure's artists, the values and
colour ranges drawn, grey (masked) exactly where nothing was indexed, legends naming statuses."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.image import AxesImage

import laueflow
import laueflow.plot as lp
import results_factory as rf
from laueflow.pipeline.results import ResultsError

MISSING = {rf.INVALID, rf.NO_PEAKS, rf.NOT_INDEXED}


@pytest.fixture(scope="module")
def ds(results_store):
    return laueflow.open_results(results_store[0])


def _image(fig, index=0) -> AxesImage:
    return [im for ax in fig.axes for im in ax.images][index]


def _masked_points(image) -> set:
    mask = np.ma.getmaskarray(image.get_array())
    return {tuple(int(v) for v in p) for p in np.argwhere(mask)}


def test_status_map_names_each_status_with_its_count(ds):
    fig = lp.status_map(ds)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["0 ok (17)", "1 invalid_input (1)", "2 no_peaks (1)", "3 not_indexed (1)"]
    assert _image(fig).get_array().shape == (rf.NY, rf.NX)
    assert fig.axes[0].get_xlabel() == "x (µm)" and fig.axes[0].get_ylabel() == "y (µm)"
    np.testing.assert_allclose(_image(fig).get_extent(), [-0.25, 2.25, 7.0, -1.0])  # µm, pixel edges


def test_matching_rate_map(ds):
    fig = lp.matching_rate_map(ds)
    image = _image(fig)
    assert image.get_clim() == (0, 100)
    assert _masked_points(image) == MISSING
    np.testing.assert_allclose(image.get_array()[:, 3], 95.0)  # the best grain of column 3 is slot 1
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "not indexed"
    assert any(ax.get_ylabel() == "matching rate (%)" for ax in fig.axes)  # the colour bar
    first = _image(lp.matching_rate_map(ds, grain=0))
    np.testing.assert_allclose(first.get_array()[:, 3].filled(np.nan), [50, 60, 70, 80])
    # a Dataset whose best grain was chosen once (laueflow report does so for all its maps): the same map
    chosen = laueflow.best_grain(ds)
    again = lp.matching_rate_map(chosen)
    np.testing.assert_array_equal(_image(again).get_array().filled(np.nan), image.get_array().filled(np.nan))
    assert again.axes[0].get_title() == fig.axes[0].get_title() and "best grain" in fig.axes[0].get_title()
    assert "best grain" not in lp.peak_count_map(chosen).axes[0].get_title()


def test_strain_and_von_mises_maps(ds):
    fig = lp.strain_map(ds, "xx", frame="sample", grain=0)
    image = _image(fig)
    expected = np.array([[1e3 * 1e-3 * (x - 2) for x in range(rf.NX)]] * rf.NY)
    values = image.get_array().filled(np.nan)
    ok = ~np.isnan(values)
    np.testing.assert_allclose(values[ok], expected[ok])
    low, high = image.get_clim()
    assert low == -high and 1.9 <= high <= 2.0  # ± 99th percentile of |ε_xx| (10⁻³)
    assert _masked_points(image) == MISSING
    vm = _image(lp.von_mises_map(ds))
    assert vm.get_clim()[0] == 0 and np.nanmax(vm.get_array().filled(np.nan)) == pytest.approx(1e3 * np.sqrt(2 / 3 * (6e-6 + 2 * 0.6e-3 ** 2)))  # x=4, y=3
    with pytest.raises(ValueError, match="component"):
        lp.strain_map(ds, "xw")
    with pytest.raises(ResultsError, match="stress_sample"):
        lp.strain_map(ds, quantity="stress")


def test_peak_count_map_greys_the_unprocessed_image_only(ds):
    image = _image(lp.peak_count_map(ds))
    assert _masked_points(image) == {rf.INVALID}
    assert image.get_array()[rf.NO_PEAKS] == 0


def test_ipf_map(ds):
    fig = lp.ipf_map(ds, "z", frame="lab")
    shown = _image(fig).get_array()
    rgb = lp.ipf_colors(ds, "z", frame="lab")
    ok = np.isfinite(rgb).all(-1)
    np.testing.assert_allclose(shown[ok], rgb[ok])
    np.testing.assert_allclose(shown[~ok], np.tile(matplotlib.colors.to_rgb(lp._base.NOT_INDEXED), (3, 1)))
    assert {tuple(p) for p in np.argwhere(~ok)} == MISSING
    keys = [ax.get_title() for ax in fig.axes[1:]]
    assert keys == ["Cu: IPF-Z key", "GaN: IPF-Z key"] and all(ax.images for ax in fig.axes[1:])
    assert (shown >= 0).all() and (shown <= 1).all()


def test_indexing_labeler_map(ds):
    fig = lp.ipf_map(ds, "z", frame="lab", source="delegates")
    shown = _image(fig).get_array()
    np.testing.assert_allclose(shown[1, 0], [1, 0, 0], atol=1e-9)  # delegate of cluster 0: identity, [001] ∥ z
    np.testing.assert_allclose(shown[rf.INVALID], matplotlib.colors.to_rgb(lp._base.NOT_INDEXED))
    np.testing.assert_allclose(shown[1, 3], shown[1, 4])  # cluster 1 shares its delegate's colour
    assert "indexing labeler" in fig.axes[0].get_title()


def test_the_indexing_labeler_map_marks_points_of_inhomogeneous_clusters(ds):
    status = np.zeros(ds.sizes["y"] * ds.sizes["x"], np.int8).reshape(ds.sizes["y"], ds.sizes["x"])
    status[1, 3] = status[2, 4] = 4
    marked = ds.assign(delegate_map_status=(("y", "x"), status))
    ax = lp.ipf_map(marked, "z", frame="lab", source="delegates").axes[0]
    (dots,) = ax.lines
    x0, x1, y1, y0 = lp._base.extent(ds)
    step_x, step_y = (x1 - x0) / ds.sizes["x"], (y1 - y0) / ds.sizes["y"]
    np.testing.assert_allclose(dots.get_xdata(), x0 + (np.array([3, 4]) + 0.5) * step_x)
    np.testing.assert_allclose(dots.get_ydata(), y0 + (np.array([1, 2]) + 0.5) * step_y)
    assert any("nearest indexed point" in t.get_text() for t in ax.get_legend().get_texts())
    assert not lp.ipf_map(ds, "z", frame="lab", source="delegates").axes[0].lines  # no status 4: no dots


def test_segmentation_maps(ds):
    clusters = _image(lp.cluster_map(ds))
    assert _masked_points(clusters) == {rf.INVALID}
    assert set(np.unique(clusters.get_array().compressed())) == {0, 1}
    rgb = _image(lp.rgb_map(ds, "pca_labeler_rgb")).get_array()
    np.testing.assert_allclose(rgb[0, 0], [0.9, 0.2, 0.1], atol=1e-6)
    fig = lp.segmentation_scores(ds)
    silhouette = fig.axes[0].lines[0]
    np.testing.assert_allclose(silhouette.get_xdata(), [2, 3, 4, 5, 6])
    assert "suggested K = 2" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(fig.axes[0].get_lines()) == 2  # the curve and the K: no tolerance recorded, no level drawn


def test_segmentation_scores_show_the_silhouette_tolerance_the_run_recorded(ds):
    recorded = ds.copy()
    recorded.attrs = {**ds.attrs, "reduce_info": {"segmentation": {"silhouette_tolerance": 0.05}}}
    ax = lp.segmentation_scores(recorded).axes[0]
    best = np.nanmax(ds["silhouette_score"].values)
    levels = [line.get_ydata()[0] for line in ax.get_lines()[1:] if line.get_linestyle() == ":"]
    np.testing.assert_allclose(levels, [best - 0.05])
    assert "highest − 0.05 (the fewest K above it)" in [t.get_text() for t in ax.get_legend().get_texts()]
    group = ds.copy()
    group.attrs = {**ds.attrs, "info": {"silhouette_tolerance": 0.0}}  # 0: no level drawn
    assert not [line for line in lp.segmentation_scores(group).axes[0].get_lines() if line.get_linestyle() == ":"]


def test_pole_figure_and_histograms(ds):
    fig = lp.pole_figure(ds, (1, 0, 0), material="Cu")
    assert "(14 points)" in fig.axes[0].get_title()
    assert fig.axes[0].collections  # the poles
    with pytest.raises(ResultsError, match="not in this store"):
        lp.pole_figure(ds, material="W")
    assert len(lp.strain_histograms(ds).axes) == 4
    descriptors = lp.descriptor_histograms(ds)
    assert [ax.get_xlabel() for ax in descriptors.axes] == ["similarity to a 2-D Gaussian (1)", "peak height (counts)"]
    counts = sum(p.get_height() for p in descriptors.axes[0].patches)
    assert counts == 17 * rf.PEAKS + 1 * rf.PEAKS  # every peak of the processed images with peaks


def test_image_view_colours_spots_by_grain_and_labels_hkl(ds):
    image = np.zeros((48, 64))
    fig = lp.image_view(ds, 1, 2, image=image)
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # not indexed, grain 0, grain 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["not indexed (1)", "grain 0 (2)", "grain 1 (3)"]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(" ".join([str(i + 1)] * 3) for i in (0, 1, 2, 3, 5))
    with pytest.raises(ResultsError, match="not reachable"):
        lp.image_view(ds, 1, 2)  # no scan store to read the image from


def test_maps_refuse_a_dataset_without_positions(results_store):
    import xarray as xr

    with pytest.raises(ResultsError, match="open_results"):
        lp.status_map(xr.open_zarr(results_store[0]))


@pytest.mark.parametrize("laue, lattice, space_group, corners", [
    ("m-3m", (3.6, 3.6, 3.6, 90, 90, 90), 225, {"[001]": [0, 0, 1], "[101]": [1, 0, 1], "[111]": [1, 1, 1]}),
    ("6/mmm", (3.189, 3.189, 5.185, 90, 90, 120), 186, {"[0001]": [0, 0, 0, 1], "[2-1-10]": [2, -1, -1, 0],
                                                       "[10-10]": [1, 0, -1, 0]}),
])
def test_ipf_key_corners_carry_orix_colours(laue, lattice, space_group, corners):
    """The drawn key: corners labelled with their lattice directions, coloured as orix colours them."""
    from orix.plot import DirectionColorKeyTSL
    from orix.vector import Miller

    from laueflow.physics.materials import Material
    from laueflow.pipeline.crystal_maps import orix_phase, orix_symmetry
    from laueflow.plot.orientations import _key_grid

    image, (x0, x1, y0, y1), vertices = _key_grid(laue, lattice)
    material = Material("m", lattice, space_group)
    key = DirectionColorKeyTSL(orix_symmetry(material).laue)
    assert {label for label, _, _ in vertices} == set(corners)
    ny, nx = image.shape[:2]
    for label, px, py in vertices:
        row = min(ny - 1, max(0, int(round((py - y0) / (y1 - y0 + 1e-12) * (ny - 1))))) if y1 > y0 else 0
        col = min(nx - 1, max(0, int(round((px - x0) / (x1 - x0) * (nx - 1)))))
        window = image[max(0, row - 3):row + 4, max(0, col - 3):col + 4]
        drawn = window[window[..., 3] > 0][:, :3]
        uvw = corners[label]
        miller = Miller(UVTW=uvw, phase=orix_phase(material)) if len(uvw) == 4 else Miller(uvw=uvw, phase=orix_phase(material))
        expected = key.direction2color(miller)[0]
        assert np.abs(drawn - expected).max(axis=1).min() < 0.05, (label, drawn.mean(0), expected)


def test_tensor_maps_draw_six_components(ds):
    fig = lp.tensor_maps(ds, quantity="strain", frame="lab", grain=0)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == list(lp.STRAIN_COMPONENTS)
    xy = [ax for ax in fig.axes if ax.get_title() == "xy"][0].images[0].get_array().filled(0)
    np.testing.assert_allclose(xy[:, 0], [0, 0.2, 0.4, 0.0])  # 0.2e-3 · y (10⁻³); (3, 0): no peaks, masked


def test_maps_draw_into_given_axes(ds):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    assert lp.ipf_map(ds, "x", ax=left) is fig and lp.strain_map(ds, "yy", ax=right) is fig
    assert [a.get_title() for a in left.child_axes] == ["Cu: IPF-X key", "GaN: IPF-X key"]  # keys as insets
    assert right.images[0].get_array().shape == (rf.NY, rf.NX)


def test_phase_group_map(ds):
    groups = np.where(ds["cluster_label"].values >= 0, 1 - ds["cluster_label"].values, -1).astype(np.int8)
    shown = _image(lp.phase_group_map(ds.assign(phase_group=(("y", "x"), groups))))
    assert _masked_points(shown) == {rf.INVALID}
    np.testing.assert_array_equal(shown.get_array().compressed(), groups[groups >= 0])
    with pytest.raises(ResultsError, match="no 'phase_group' \\(no phase_groups stage in the run"):
        lp.phase_group_map(ds)  # the store has a segmentation: the message names the missing stage
    with pytest.raises(ResultsError, match="no 'cluster_label' \\(no segmentation stage in the run"):
        lp.cluster_map(ds.drop_vars("cluster_label"))
