"""phase_groups (index-free phase labeler) on hand-made arrays with real simulated peak lists
(a real in-process Dask client)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from laueflow.kernels.phase_groups import spot_descriptors
from laueflow.stages.base import get_stage
from laueflow.stages.phase_groups import check_params, phase_groups, prepare_phase_groups
from peak_lists import simulated_peak_lists as _lists
from reduce_capture import Capture, in_process_client


@pytest.fixture(scope="module")
def client():
    with in_process_client() as c:
        yield c


def test_clusters_are_grouped_by_their_selected_points_peak_lists(client):
    ny, nx, width = 4, 6, 200
    labels = np.array([[-1, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2, 2, 0, 1, 1, 1], [2, 2, 2, 1, 1, 3]], np.int32)
    role = np.zeros((ny, nx), np.int8)
    cu, si = _lists("Cu", 3, 4, width), _lists("Si", 6, 5, width)
    tth, chi = np.full((ny, nx, width), np.nan), np.full((ny, nx, width), np.nan)
    # both checks of cluster 0 (Cu) are boundary points that also see a Si grain (Cu + Si spots),
    # so the median of its 3 points is Si-like: its least mixed point (fewest spots) decides
    mix = tuple(np.concatenate([cu[j][:, :60], si[j][:3, :140]], axis=1) for j in (0, 1))
    # cluster 0 (Cu): delegate + 2 checks; cluster 1 (Si): delegate + 1 check; cluster 2 (Si): delegate
    # + 2 checks, one a Si + Cu boundary point; cluster 3: no peaks
    for (y, x), (source, i) in {(1, 1): (cu, 0), (0, 2): (mix, 1), (2, 2): (mix, 2), (1, 4): (si, 0), (3, 4): (si, 1),
                                (3, 0): (si, 2), (2, 1): (si, 3), (3, 2): (mix, 0), (3, 5): (None, 0)}.items():
        role[y, x] = 2
        if source is not None:
            tth[y, x], chi[y, x] = source[0][i], source[1][i]
    role[[1, 1, 3, 3], [1, 4, 0, 5]] = 1  # the delegates
    writer = Capture()
    inputs = dict(cluster_label=da.from_array(labels, chunks=(2, 3)),
                  delegate_y=da.from_array(np.array([1, 1, 3, 3, -1]), chunks=5),
                  delegate_x=da.from_array(np.array([1, 4, 0, 5, -1]), chunks=5),
                  peak_two_theta=da.from_array(tth, chunks=(2, 3, width)), peak_chi=da.from_array(chi, chunks=(2, 3, width)))
    record = phase_groups(**inputs, point_role=da.from_array(role, chunks=(2, 3)), client=client, writer=writer,
                          phases=2)
    w = writer.written
    assert w["cluster_phase_group"].tolist() == [0, 1, 1, -1, -1]  # Cu fewer spots: group 0; slot 4 unused
    expected = np.where(labels >= 0, np.array([0, 1, 1, -1, -1])[np.maximum(labels, 0)], -1)
    np.testing.assert_array_equal(w["phase_group"], expected)
    assert w["phase_group"].dtype == np.int8
    assert 30 < w["cluster_spot_count"][0] < 50 and 90 < w["cluster_spot_count"][1] < 130
    assert np.isnan(w["cluster_spot_count"][3])
    assert record["clusters_grouped"] == 3 and record["points_described"] == 9
    # the median of cluster 0's points would have been a Si count
    count, _ = spot_descriptors(tth[[1, 0, 2], [1, 2, 2]], chi[[1, 0, 2], [1, 2, 2]])
    assert np.median(count) > 90
    assert any("clusters [3] have no selected point" in line for line in record["log"])

    # without select_delegates (peaks on every point): the delegates' peak lists alone
    alone = Capture()
    record = phase_groups(**inputs, client=client, writer=alone, phases=2)
    assert record["points_described"] == 4
    assert alone.written["cluster_phase_group"].tolist() == [0, 1, 1, -1, -1]


def test_phases_auto_is_the_number_of_scan_materials_and_bad_params_are_refused():
    assert prepare_phase_groups({"phases": "auto", "bin_deg": 3.0}, {"materials": ["Cu", "Si"]})["phases"] == 2
    assert prepare_phase_groups({"phases": 3, "bin_deg": 3.0}, {})["phases"] == 3
    with pytest.raises(ValueError, match="needs the scan's materials"):
        prepare_phase_groups({"phases": "auto", "bin_deg": 3.0}, {"materials": []})
    for bad in ({"phases": 0, "bin_deg": 3.0}, {"phases": "two", "bin_deg": 3.0}, {"phases": 2, "bin_deg": 0}):
        with pytest.raises(ValueError):
            check_params(bad)
    spec = get_stage("phase_groups")
    assert spec.kind == "reduce" and {"peak_two_theta", "peak_chi"} <= set(spec.inputs)
    assert set(spec.optional_inputs) == {"point_role"}
