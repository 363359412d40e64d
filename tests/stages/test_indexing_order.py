"""Issue #12: spots given in an arbitrary order (no intensities) must not lose grains.

Only the first ``n_predict`` spots get a class prediction at first; when grains remain
unexplained, the next blocks get predictions and may seed pairs (``n_seed_spots``). Real
simulations and the tiny Cu model (tests/tiny_models.py), no mocks.
"""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.pipeline.indexers import get_indexer
from laueflow.stages.indexing.evaluate import evaluate_indexing
from laueflow.stages.indexing.stage import index_peaks, index_stage
from laueflow.stages.indexing.training_data import simulate_patterns
from tiny_models import TINY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return get_indexer(["Cu"], DEFAULT_CALIBRATION, TINY, cache_dir=tmp_path_factory.mktemp("indexers"),
                       verbose=False, threads=1)


def _grain_by_grain(ps):
    """The spots of each pattern in 'file order': all of grain 0, then all of grain 1 (each in
    intensity order) — the second grain's spots all come after the first n_predict."""
    tth, chi, hkl, grain = (np.full_like(a, f) for a, f in ((ps.two_theta, np.nan), (ps.chi, np.nan),
                                                             (ps.hkl, 0), (ps.spot_grain, -1)))
    for i in range(len(ps)):
        idx = np.flatnonzero(ps.spot_grain[i] >= 0)
        idx = idx[np.argsort(ps.spot_grain[i, idx], kind="stable")]
        k = len(idx)
        tth[i, :k], chi[i, :k], hkl[i, :k], grain[i, :k] = (ps.two_theta[i, idx], ps.chi[i, idx],
                                                           ps.hkl[i, idx], ps.spot_grain[i, idx])
    return tth, chi, hkl, grain


def test_grain_after_n_predict_is_found(tiny):
    ps = simulate_patterns(tiny.materials, DEFAULT_CALIBRATION, np.full((3, 1), 2), seed=1212, mode="none")
    tth, chi, hkl, grain = _grain_by_grain(ps)
    n_predict = 30  # a Cu grain has ≈ 40 spots here: all of the first 30 are grain 0's
    first = np.array([np.sum(grain[i] == 0) for i in range(len(ps))])
    assert (first >= n_predict).all()  # grain 1 has no spot among the first n_predict
    m = np.isfinite(tth).sum(axis=1)

    # before (only the first n_predict spots may seed): the second grain is missed
    before = index_peaks(tth, chi, None, indexer=tiny, max_grains=2, n_predict=n_predict,
                         continue_unexplained=2.0)
    ev = evaluate_indexing(before, ps.ub, ps.grain_material, tiny.materials, truth_hkl=hkl, truth_grain=grain)
    assert ev["found_precise"] == 3 and ev["missed"] == 3 and (before["grain_count"] == 1).all()
    np.testing.assert_array_equal(before["n_seed_spots"], n_predict)

    # after: the next block seeds the second grain; every grain within 0.1°, every hkl right
    after = index_peaks(tth, chi, None, indexer=tiny, max_grains=2, n_predict=n_predict)
    ev = evaluate_indexing(after, ps.ub, ps.grain_material, tiny.materials, truth_hkl=hkl, truth_grain=grain)
    assert ev["found_precise"] == 6 and ev["spurious"] == 0 and ev["hkl_accuracy"] == 1.0
    assert (after["grain_count"] == 2).all()
    seeds = after["n_seed_spots"]
    assert (seeds > n_predict).all() and (seeds <= m).all()
    # blocks of n_predict spots (the last one may be shorter), none after the second grain was found
    assert all(s % n_predict == 0 or s == mi for s, mi in zip(seeds, m))
    assert (seeds < first + 2 * n_predict).all()


def test_intensity_order_unchanged_and_seed_count(tiny):
    """Lists that index fully from the first n_predict spots: identical outputs, no extra block."""
    ps = simulate_patterns(tiny.materials, DEFAULT_CALIBRATION, np.full((4, 1), 2), seed=1213, mode="all")
    new = index_peaks(ps.two_theta, ps.chi, ps.intensity, indexer=tiny, max_grains=2)
    old = index_peaks(ps.two_theta, ps.chi, ps.intensity, indexer=tiny, max_grains=2, continue_unexplained=2.0)
    assert (new["grain_count"] == 2).all()
    for key in old:
        np.testing.assert_array_equal(new[key], old[key], err_msg=key)
    np.testing.assert_array_equal(new["n_seed_spots"], 50)
    # max_grains reached with many unexplained spots (3 grains, max 1): no further search block, but
    # the slot is searched once more with every spot as a possible seed (replace_weakest): the
    # grain kept is a true one
    ps3 = simulate_patterns(tiny.materials, DEFAULT_CALIBRATION, np.full((2, 1), 3), seed=1214, mode="none")
    one = index_peaks(ps3.two_theta, ps3.chi, None, indexer=tiny, max_grains=1)
    assert (one["grain_count"] == 1).all()
    np.testing.assert_array_equal(one["n_seed_spots"], np.isfinite(ps3.two_theta).sum(axis=1))
    ev = evaluate_indexing(one, ps3.ub, ps3.grain_material, tiny.materials)
    assert ev["found_precise"] == 2 and ev["spurious"] == 0


def test_index_stage_drops_undeclared_seed_count(tiny):
    ps = simulate_patterns(tiny.materials, DEFAULT_CALIBRATION, np.ones((1, 1), int), seed=1215, mode="none")
    out = index_stage(ps.two_theta, ps.chi, ps.intensity, model=tiny, max_grains=2)
    from laueflow.stages.indexing import STAGE

    declared = {v.name for v in STAGE.outputs}
    assert ("n_seed_spots" in out) == ("n_seed_spots" in declared)
    assert set(out) == {v.name for v in STAGE.outputs if v.per_point}
