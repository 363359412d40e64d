"""The segmentation metric of ``laueflow evaluate``: ARI against the domain, twin-variant,
parent-grain and phase maps of a hand-made truth."""
import numpy as np
import pytest

from laueflow.stages.evaluation.metrics import METRICS, StoreArrays
from laueflow.stages.evaluation.segmentation import orientation_groups, parent_groups, segmentation_metrics
from laueflow.synth.microstructure import twin_rotation
from laueflow.physics.materials import get_materials

CU, SI = get_materials(["Cu", "Si"])


def _truth():
    """10 × 12 points: grain 0 (Cu) with two lamellae of one Σ3 twin variant (domains 1, 2), a
    sub-grain of grain 0 tilted 1° (domain 3) and a Si grain (domain 4)."""
    grain_map = np.zeros((10, 12), np.int32)
    grain_map[:, 3:5] = 1
    grain_map[:, 7:8] = 2
    grain_map[6:, :3] = 3
    grain_map[:, 9:] = 4
    u0 = np.eye(3)
    twin = twin_rotation(CU.lattice_parameters) @ u0
    tilt = np.array([[1, 0, 0], [0, np.cos(0.01745), -np.sin(0.01745)], [0, np.sin(0.01745), np.cos(0.01745)]])
    base = np.stack([u0, twin, twin, tilt @ u0, u0])
    arrays = {"grain_map": grain_map, "grain_phase": np.array([0, 0, 0, 0, 1], np.int16),
              "grain_parent": np.array([-1, 0, 0, 0, -1], np.int32), "grain_base_orientation": base}
    return StoreArrays(arrays, {"materials": ["Cu", "Si"]})


def _results(labels, **extra):
    return StoreArrays({"cluster_label": labels, **extra})


def test_groups_of_domains():
    truth = _truth()
    np.testing.assert_array_equal(orientation_groups(truth["grain_base_orientation"], truth["grain_phase"],
                                                     [CU, SI]), [0, 1, 1, 2, 3])
    np.testing.assert_array_equal(parent_groups([-1, 0, 1, -1]), [0, 0, 0, 3])


@pytest.mark.parametrize("merge, best", [((), "domain"), (((1, 2),), "orientation"), (((0, 1, 2, 3),), "parent")])
def test_ari_is_one_against_the_map_the_labels_follow(merge, best):
    truth = _truth()
    labels = truth["grain_map"].astype(np.int64) * 10 + 3  # any label values
    for group in merge:
        for d in group[1:]:
            labels[truth["grain_map"] == d] = group[0] * 10 + 3
    summary = segmentation_metrics(_results(labels), truth, {})["summary"]
    assert summary[f"ari_{best}_map"] == 1.0
    others = [k for k in ("ari_domain_map", "ari_orientation_map", "ari_parent_map") if k != f"ari_{best}_map"]
    assert all(summary[k] < 1.0 for k in others if not (best == "orientation" and k == "ari_parent_map"))
    assert (summary["ari_phase_map"] == 1.0) == (best == "parent")  # parent grains here: one per phase
    assert summary["points_compared"] == 120 and summary["true_domains"] == 5


def test_unprocessed_points_are_left_out_and_delegates_checked():
    truth = _truth()
    labels = truth["grain_map"].astype(np.int64).copy()
    labels[0, :] = -1  # not processed
    labels[1, 0] = 4  # one wrong point in cluster 4
    report = segmentation_metrics(_results(labels, delegate_y=np.array([5, 5, 5, 8, 1]),
                                           delegate_x=np.array([0, 3, 7, 0, 0])), truth, {})
    assert report["summary"]["points_compared"] == 108
    assert 0.9 < report["summary"]["ari_domain_map"] < 1.0
    assert report["summary"]["delegates_in_majority_domain"] == "4/5"  # cluster 4's delegate is the stray point
    assert [row["majority_domain"] for row in report["tables"]["delegates"]] == [0, 1, 2, 3, 4]


def test_registered_after_the_stage_metrics():
    names = [m.name for m in METRICS]
    assert names.index("segmentation") > names.index("strain")
