"""select_delegates and delegate_map on hand-made arrays (a real in-process Dask client)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from laueflow.physics.materials import get_material
from laueflow.physics.symmetry import reduce_misorientation, rotation_operators
from laueflow.stages.delegates import (delegate_map, merge_check_points, pick_check_points,
                                       prepare_delegate_map, select_delegates)
from reduce_capture import Capture, in_process_client

NY, NX = 4, 6


@pytest.fixture(scope="module")
def client():
    with in_process_client() as c:
        yield c


def _labels():
    labels = np.where(np.arange(NX)[None, :] < 3, 0, 1).repeat(NY, axis=0).astype(np.int32)
    labels[0, 0] = -1  # not segmented
    labels[3, 5] = 2  # a one-point cluster
    return labels


DELEGATE_Y = np.array([1, 2, 3, -1], np.int32)
DELEGATE_X = np.array([1, 4, 5, -1], np.int32)


@pytest.mark.parametrize("chunks", [(1, 6), (2, 3), (4, 6)])
def test_select_delegates_picks_the_delegate_and_check_points_of_each_cluster(client, chunks):
    labels = _labels()
    out = Capture()
    info = select_delegates(da.from_array(labels, chunks=chunks), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X),
                            client=client, writer=out, check_points_per_cluster=2, seed=7)
    role = out.written["point_role"]
    np.testing.assert_array_equal(out.written["selected_points"], role > 0)
    for k in range(3):
        assert role[DELEGATE_Y[k], DELEGATE_X[k]] == 1
        checks = (role == 2) & (labels == k)
        assert checks.sum() == min(2, (labels == k).sum() - 1)  # the one-point cluster has none
    assert ((role > 0) & (labels < 0)).sum() == 0 and (role == 2).sum() == 4
    assert info["delegates"] == 3 and info["check_points"] == 4
    if chunks == (1, 6):
        test_select_delegates_picks_the_delegate_and_check_points_of_each_cluster.reference = role
    else:  # the same points whatever the chunking
        np.testing.assert_array_equal(role, test_select_delegates_picks_the_delegate_and_check_points_of_each_cluster.reference)


def test_check_points_are_the_smallest_keys_merged_over_blocks():
    labels = np.array([0, 0, 0, 1, 1, -1])
    flat = np.arange(6)
    whole = merge_check_points(pick_check_points(labels, flat, slots=2, n_check=2, seed=1, exclude=np.array([0])), 2)
    halves = np.stack([pick_check_points(labels[i:i + 3], flat[i:i + 3], slots=2, n_check=2, seed=1,
                                         exclude=np.array([0])) for i in (0, 3)])
    np.testing.assert_array_equal(merge_check_points(halves, 2), whole)
    assert sorted(whole[0]) == [1, 2] and sorted(whole[1]) == [3, 4]


def test_select_delegates_only_delegates(client):
    out = Capture()
    select_delegates(da.from_array(_labels(), chunks=(2, 3)), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X),
                     client=client, writer=out, check_points_per_cluster=0)
    assert (out.written["point_role"] == 1).sum() == 3 and (out.written["point_role"] == 2).sum() == 0


def _rot(axis, deg):
    return Rotation.from_rotvec(np.deg2rad(deg) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()


def _scene():
    """Cluster 0 homogeneous (r0), cluster 1 with a check point 10° off (inhomogeneous),
    cluster 2 a lone unindexed delegate: labels, orientation, material, rate, role, r0, r1."""
    labels = _labels()
    r0 = _rot([1, 2, 3], 40)
    r1 = _rot([3, -1, 2], 70)
    orientation = np.full((NY, NX, 2, 3, 3), np.nan)
    material = np.full((NY, NX, 2), -1, np.int16)
    rate = np.full((NY, NX, 2), np.nan, np.float32)
    role = np.zeros((NY, NX), np.int8)
    # cluster 0: the delegate's best grain (no peak heights given: the highest matching rate) is its second one, r0
    orientation[1, 1] = [_rot([0, 0, 1], 25) @ r0, r0]
    material[1, 1], rate[1, 1] = 0, [30.0, 80.0]
    # its check points: one 0.3° off and described by a symmetry-equivalent matrix, one that
    # shows a neighbour's grain first and r0 second (a boundary point)
    cubic = rotation_operators(get_material("Cu"))[5]
    orientation[2, 0, 0] = _rot([1, 0, 0], 0.3) @ r0 @ cubic
    material[2, 0, 0], rate[2, 0, 0] = 0, 60.0
    orientation[3, 2] = [r1, _rot([0, 1, 0], 0.2) @ r0]
    material[3, 2], rate[3, 2] = 0, [70.0, 40.0]
    role[1, 1], role[2, 0], role[3, 2] = 1, 2, 2
    # cluster 1: a check point 10° from the delegate
    orientation[2, 4, 0], material[2, 4, 0], rate[2, 4, 0] = r1, 0, 90.0
    orientation[0, 3, 0], material[0, 3, 0], rate[0, 3, 0] = _rot([0, 1, 1], 10) @ r1, 0, 90.0
    orientation[1, 5, 0], material[1, 5, 0], rate[1, 5, 0] = r1, 0, 90.0
    role[2, 4], role[0, 3], role[1, 5] = 1, 2, 2
    # cluster 2: its only point, the delegate, not indexed
    role[3, 5] = 1
    return labels, orientation, material, rate, role, r0, r1


def _lazy(a):
    return da.from_array(a, chunks=(2, 3, *a.shape[2:]))


def test_delegate_map_homogeneous_inhomogeneous_and_unindexed_clusters(client):
    cu = get_material("Cu")
    labels, orientation, material, rate, role, r0, r1 = _scene()
    lazy = _lazy
    out = Capture()
    params = prepare_delegate_map({"max_misorientation_deg": 1.0}, {"materials": ["Cu"]})
    info = delegate_map(lazy(labels), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X), lazy(orientation),
                        lazy(material), lazy(rate), lazy(role), client=client, writer=out, **params)
    w = out.written
    status = w["delegate_map_status"]
    assert status[0, 0] == 1 and (status[labels == 0] == 0).all()
    assert (status[labels == 1] == 3).all() and status[3, 5] == 2
    np.testing.assert_array_equal(w["delegate_orientation"][labels == 0], np.broadcast_to(r0, ((labels == 0).sum(), 3, 3)))
    assert np.isnan(w["delegate_orientation"][labels != 0]).all()
    assert (w["delegate_material"][labels == 0] == 0).all() and (w["delegate_material"][labels != 0] == -1).all()
    mis = w["cluster_check_misorientation_deg"]
    assert mis[0] == pytest.approx(0.3, abs=1e-6) and mis[1] == pytest.approx(10.0, abs=1e-6)
    assert np.isnan(mis[2:]).all()
    np.testing.assert_array_equal(w["cluster_homogeneous"], [True, False, False, False])
    np.testing.assert_array_equal(w["cluster_checked_points"], [2, 2, 0, 0])
    assert info["inhomogeneous"] == [1] and info["delegate_not_indexed"] == [2]
    assert info["points_unmapped"] == (labels == 1).sum() + 1
    assert any("cluster 1 is not homogeneous" in line and f"its {(labels == 1).sum()} points" in line
               for line in info["log"])
    # the symmetry-equivalent matrix really is ~120° apart before the reduction
    assert np.rad2deg(np.arccos((np.trace(r0.T @ orientation[2, 0, 0]) - 1) / 2)) > 5
    assert reduce_misorientation(orientation[2, 0, 0], r0, cu) == pytest.approx(0.3, abs=1e-6)


def test_inhomogeneous_clusters_take_the_nearest_indexed_point_when_asked(client):
    labels, orientation, material, rate, role, r0, r1 = _scene()
    far = orientation[0, 3, 0].copy()  # cluster 1's check point 10° from its delegate
    # principal components: cluster 1's column 3 lies next to that check point, columns 4–5 next to
    # the delegate (2, 4) and the agreeing check point (1, 5)
    pcs = np.zeros((NY, NX, 3), np.float32)
    pcs[:, 3] = [5.0, 0.0, 0.0]
    pcs[:, 4:] = [0.0, 5.0, 0.0]
    pcs[1, 5] = [0.0, 5.5, 0.0]
    pcs[3, 3] = [3.0, 2.0, 0.0]  # nearer the check point (distance² 8 against 18)
    pcs[0, 0] = np.nan  # not segmented
    out = Capture()
    params = prepare_delegate_map({"max_misorientation_deg": 1.0, "inhomogeneous": "nearest_indexed"},
                                  {"materials": ["Cu"]})
    info = delegate_map(_lazy(labels), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X), _lazy(orientation),
                        _lazy(material), _lazy(rate), _lazy(role),
                        principal_components=da.from_array(pcs, chunks=(1, 6, 2)),  # not the labels' chunks
                        client=client, writer=out, **params)
    w = out.written
    status, ub = w["delegate_map_status"], w["delegate_orientation"]
    one = labels == 1
    assert (status[one] == 4).all() and (status[labels == 0] == 0).all() and status[3, 5] == 2 and status[0, 0] == 1
    column3 = one & (np.arange(NX) == 3)[None, :]
    np.testing.assert_allclose(ub[column3], np.broadcast_to(far, (column3.sum(), 3, 3)))
    np.testing.assert_allclose(ub[one & ~column3], np.broadcast_to(r1, ((one & ~column3).sum(), 3, 3)))
    assert (w["delegate_material"][one] == 0).all() and np.isnan(ub[labels == 2]).all()
    np.testing.assert_array_equal(w["cluster_homogeneous"], [True, False, False, False])  # still reported
    assert info["inhomogeneous"] == [1] and info["points_nearest_indexed"] == one.sum()
    assert info["points_unmapped"] == 1
    assert any("cluster 1 is not homogeneous" in line and "delegate_map_status 4" in line for line in info["log"])
    with pytest.raises(ValueError, match="needs the segmentation's principal_components"):
        delegate_map(_lazy(labels), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X), _lazy(orientation),
                     _lazy(material), _lazy(rate), _lazy(role), client=client, writer=Capture(), **params)


def test_delegate_map_refuses_an_unknown_inhomogeneous_mode():
    from laueflow.stages.delegates import check_map_params

    with pytest.raises(ValueError, match="inhomogeneous must be one of report, nearest_indexed"):
        check_map_params({"max_misorientation_deg": 1.0, "inhomogeneous": "guess"})


def test_delegate_map_without_check_points_uses_the_delegates_only(client):
    labels = _labels()
    orientation = np.full((NY, NX, 1, 3, 3), np.nan)
    material = np.full((NY, NX, 1), -1, np.int16)
    r = _rot([1, 1, 0], 33)
    for k in range(2):
        orientation[DELEGATE_Y[k], DELEGATE_X[k], 0], material[DELEGATE_Y[k], DELEGATE_X[k], 0] = r, 0
    out = Capture()
    delegate_map(da.from_array(labels, chunks=(1, 6)), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X),
                 da.from_array(orientation, chunks=(1, 6, 1, 3, 3)), da.from_array(material, chunks=(1, 6, 1)),
                 client=client, writer=out, materials=["Cu"])
    status = out.written["delegate_map_status"]
    assert (status[(labels == 0) | (labels == 1)] == 0).all() and status[3, 5] == 2
    assert (out.written["cluster_checked_points"] == 0).all()
    np.testing.assert_array_equal(out.written["cluster_homogeneous"], [True, True, False, False])


def test_delegate_map_needs_the_scan_materials():
    with pytest.raises(ValueError, match="needs the scan's materials"):
        prepare_delegate_map({"max_misorientation_deg": 1.0}, {"materials": []})


def test_the_delegate_grain_is_the_brightest_when_two_twin_variants_match_equally(client):
    """At a point in fine twin lamellae both variants are indexed at a 100 % matching rate; the
    one filling most of the beam has the bright spots and is the cluster's orientation (measured
    on a fine-twins scan: the first-listed grain was the minority variant, 60° off)."""
    labels = _labels()
    parent = _rot([1, 2, 3], 25)
    twin = _rot([1, 1, 1], 60) @ parent  # Σ3: 60° about <111>
    orientation = np.full((NY, NX, 2, 3, 3), np.nan)
    material = np.full((NY, NX, 2), -1, np.int16)
    rate = np.full((NY, NX, 2), np.nan)
    peak_grain = np.full((NY, NX, 6), -1, np.int16)
    height = np.full((NY, NX, 6), np.nan, np.float32)
    for k, (minor_first) in enumerate((True, False)):
        y, x = DELEGATE_Y[k], DELEGATE_X[k]
        # the twin (30 % of the beam) is listed first in cluster 0, second in cluster 1
        grains = (twin, parent) if minor_first else (parent, twin)
        orientation[y, x] = grains
        material[y, x], rate[y, x] = 0, 100.0
        bright = 1 if minor_first else 0
        peak_grain[y, x] = [0, 0, 0, 1, 1, 1]
        height[y, x] = np.where(np.arange(6) // 3 == bright, 1700.0, 570.0)
    out = Capture()
    delegate_map(da.from_array(labels, chunks=(2, 3)), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X),
                 da.from_array(orientation, chunks=(2, 3, 2, 3, 3)), da.from_array(material, chunks=(2, 3, 2)),
                 da.from_array(rate, chunks=(2, 3, 2)), peak_grain=da.from_array(peak_grain, chunks=(2, 3, 6)),
                 peak_intensity=da.from_array(height, chunks=(2, 3, 6)), client=client, writer=out,
                 materials=["Cu"])
    for k in range(2):
        got = out.written["delegate_orientation"][labels == k]
        np.testing.assert_allclose(got, np.broadcast_to(parent, got.shape), atol=1e-12)
    # without the peak heights the tie keeps the first listed grain: the twin in cluster 0
    out = Capture()
    delegate_map(da.from_array(labels, chunks=(2, 3)), da.from_array(DELEGATE_Y), da.from_array(DELEGATE_X),
                 da.from_array(orientation, chunks=(2, 3, 2, 3, 3)), da.from_array(material, chunks=(2, 3, 2)),
                 da.from_array(rate, chunks=(2, 3, 2)), client=client, writer=out, materials=["Cu"])
    got = out.written["delegate_orientation"][labels == 0]
    np.testing.assert_allclose(got, np.broadcast_to(twin, got.shape), atol=1e-12)

