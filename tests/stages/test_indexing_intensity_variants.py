"""Issue #12: variants that put every spot at the same place (quartz's Dauphiné twin) are told
apart by the measured intensities, or flagged ``variant_ambiguous`` when there are none.

Real simulations (``simulate_spots``), the library's quartz, a tiny quartz model trained here; no
mocks. Measured intensities are the simulated ones distorted (power 0.8, log-normal noise σ 0.5),
so the test does not hand the decision its own model.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from laueflow.physics.geometry import DEFAULT_CALIBRATION, angles_to_qhat
from laueflow.physics.materials import get_material
from laueflow.physics.simulate import simulate_spots
from laueflow.physics.symmetry import reduce_misorientation
from laueflow.pipeline.indexers import get_indexer
from laueflow.stages.indexing.intensity_variants import (intensity_log_likelihood, position_equivalent_variants,
                                                          settle_by_intensity)
from laueflow.stages.indexing.matching import match_one
from laueflow.stages.indexing.orientation import GrainResult, IndexingParams
from laueflow.stages.indexing.stage import index_peaks
from tiny_models import TINY

BAND = (5.0, 23.0)
QUARTZ = get_material("quartz")


def _measured(intensity, seed):
    """Simulated intensities as a detector would not give them back: power 0.8, log-normal noise."""
    return intensity ** 0.8 * np.exp(np.random.default_rng(seed).normal(0, 0.5, intensity.shape))


def test_quartz_dauphine_twin_puts_every_spot_at_the_same_place():
    v = position_equivalent_variants(QUARTZ)
    assert len(v) == 1 and len(position_equivalent_variants(get_material("Cu"))) == 0
    u = Rotation.random(random_state=3).as_matrix()
    assert float(reduce_misorientation(u, u @ v[0], QUARTZ)) == pytest.approx(60.0, abs=1e-6)
    assert np.allclose(np.abs(v[0] @ [0, 0, 1.0]), [0, 0, 1], atol=1e-9)  # about c (B0: z ∥ c)
    a, b = simulate_spots(QUARTZ, u, DEFAULT_CALIBRATION, BAND), simulate_spots(QUARTZ, u @ v[0], DEFAULT_CALIBRATION, BAND)
    pa, pb = np.lexsort((a.row, a.col)), np.lexsort((b.row, b.col))
    assert len(a) == len(b) > 100
    assert np.allclose(a.col[pa], b.col[pb], atol=1e-6) and np.allclose(a.row[pa], b.row[pb], atol=1e-6)
    ratio = a.intensity[pa] / b.intensity[pb]  # same places, other structure factors
    assert np.percentile(ratio, 90) / np.percentile(ratio, 10) > 3


def test_log_likelihood_prefers_the_prediction_the_intensities_follow():
    rng = np.random.default_rng(0)
    right, wrong = rng.lognormal(0, 2, 200), rng.lognormal(0, 2, 200)
    measured = 37.0 * right * rng.lognormal(0, 0.3, 200)  # any scale
    ll = intensity_log_likelihood(measured, np.stack([wrong, right]))
    assert ll[1] - ll[0] > 100


def _grain(material, ub, q):
    idx, hkl, res, n_th = match_one(material, ub, q, DEFAULT_CALIBRATION, BAND, 0.5)
    return GrainResult(0, ub, 100.0 * len(idx) / n_th, len(idx), float(res.mean()), idx, hkl, res)


class _Geometry:  # settle_by_intensity reads only .materials
    def __init__(self, materials):
        self.materials = materials


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intensities_replace_the_wrong_variant_and_keep_the_right_one(seed):
    u = Rotation.random(random_state=seed).as_matrix()
    twin = u @ position_equivalent_variants(QUARTZ)[0]
    s = simulate_spots(QUARTZ, u, DEFAULT_CALIBRATION, BAND)
    q, measured = angles_to_qhat(s.two_theta, s.chi), _measured(s.intensity, seed)
    geom, p = _Geometry([QUARTZ]), IndexingParams()
    wrong = _grain(QUARTZ, twin, q)
    got = settle_by_intensity([wrong], q, measured, geom, DEFAULT_CALIBRATION, BAND, p)[0]
    assert float(reduce_misorientation(got.ub, u, QUARTZ)) < 1e-4 and not got.ambiguous
    assert got.n_matched == wrong.n_matched and set(got.spot_index) == set(wrong.spot_index)
    right = _grain(QUARTZ, u, q)
    kept = settle_by_intensity([right], q, measured, geom, DEFAULT_CALIBRATION, BAND, p)[0]
    assert kept.ub is right.ub and not kept.ambiguous
    # no intensities: nothing can decide; the grain is kept as found and flagged
    blind = settle_by_intensity([wrong], q, None, geom, DEFAULT_CALIBRATION, BAND, p)[0]
    assert blind.ub is wrong.ub and blind.ambiguous


@pytest.mark.parametrize("fraction", [0.6, 0.35])
def test_a_grain_and_its_variant_in_one_beam_are_both_reported(fraction):
    """Both in the beam (a Dauphiné twin boundary): the spots are the same, each intensity is the
    beam-weighted sum of the two variants'; the mixture fits better than either alone."""
    u = Rotation.random(random_state=21).as_matrix()
    twin = u @ position_equivalent_variants(QUARTZ)[0]
    a, b = simulate_spots(QUARTZ, u, DEFAULT_CALIBRATION, BAND), simulate_spots(QUARTZ, twin, DEFAULT_CALIBRATION, BAND)
    pa, pb = np.lexsort((a.row, a.col)), np.lexsort((b.row, b.col))
    mixed = fraction * a.intensity[pa] + (1 - fraction) * b.intensity[pb]
    q, measured = angles_to_qhat(a.two_theta[pa], a.chi[pa]), _measured(mixed, 8)
    p = IndexingParams(max_grains=3)
    got = settle_by_intensity([_grain(QUARTZ, u, q)], q, measured, _Geometry([QUARTZ]), DEFAULT_CALIBRATION, BAND, p)
    assert len(got) == 2 and not any(g.ambiguous for g in got)
    major, minor = (u, twin) if fraction >= 0.5 else (twin, u)  # the larger beam fraction first
    assert float(reduce_misorientation(got[0].ub, major, QUARTZ)) < 1e-4
    assert float(reduce_misorientation(got[1].ub, minor, QUARTZ)) < 1e-4
    # the caps hold: one grain allowed → the major one only
    capped = settle_by_intensity([_grain(QUARTZ, u, q)], q, measured, _Geometry([QUARTZ]), DEFAULT_CALIBRATION, BAND,
                                 IndexingParams(max_grains=1))
    assert len(capped) == 1 and float(reduce_misorientation(capped[0].ub, major, QUARTZ)) < 1e-4


def test_one_variant_alone_gets_no_partner():
    u = Rotation.random(random_state=22).as_matrix()
    s = simulate_spots(QUARTZ, u, DEFAULT_CALIBRATION, BAND)
    q = angles_to_qhat(s.two_theta, s.chi)
    for seed in range(5):
        got = settle_by_intensity([_grain(QUARTZ, u, q)], q, _measured(s.intensity, 30 + seed), _Geometry([QUARTZ]),
                                  DEFAULT_CALIBRATION, BAND, IndexingParams(max_grains=3))
        assert len(got) == 1 and float(reduce_misorientation(got[0].ub, u, QUARTZ)) < 1e-4


def test_materials_without_such_variants_are_left_alone():
    cu = get_material("Cu")
    u = Rotation.random(random_state=5).as_matrix()
    s = simulate_spots(cu, u, DEFAULT_CALIBRATION, BAND)
    q = angles_to_qhat(s.two_theta, s.chi)
    g = _grain(cu, u, q)
    got = settle_by_intensity([g], q, None, _Geometry([cu]), DEFAULT_CALIBRATION, BAND, IndexingParams())[0]
    assert got is g and not got.ambiguous


@pytest.fixture(scope="module")
def quartz_model(tmp_path_factory):
    return get_indexer(["quartz"], DEFAULT_CALIBRATION, replace(TINY, max_grains=(1,)),
                       cache_dir=tmp_path_factory.mktemp("indexers"), verbose=False, threads=1)


def test_index_peaks_decides_dauphine_twins_by_intensity_and_flags_them_without(quartz_model):
    n = 12
    us = Rotation.random(n, random_state=11).as_matrix()
    s = simulate_spots(QUARTZ, us, DEFAULT_CALIBRATION, quartz_model.config.energy_band_kev)
    width = np.bincount(s.pattern, minlength=n).max()
    tth, chi, inten = (np.full((n, width), np.nan) for _ in range(3))
    rng = np.random.default_rng(4)
    for i in range(n):
        sel = np.flatnonzero(s.pattern == i)
        sel = sel[rng.permutation(len(sel))]  # shuffled: the order says nothing
        tth[i, :len(sel)], chi[i, :len(sel)] = s.two_theta[sel], s.chi[sel]
        inten[i, :len(sel)] = _measured(s.intensity[sel], i)
    twin = position_equivalent_variants(QUARTZ)[0]

    out = index_peaks(tth, chi, inten, indexer=quartz_model, max_grains=1)
    mis = [float(reduce_misorientation(out["orientation_matrix"][i, 0], us[i], QUARTZ)) for i in range(n)]
    assert max(mis) < 0.1 and out["variant_ambiguous"][:, 0].sum() == 0

    blind = index_peaks(tth, chi, None, indexer=quartz_model, max_grains=1)
    assert (blind["variant_ambiguous"][:, 0] == 1).all()  # no intensities: every grain flagged
    for i in range(n):  # … and each one is the grain or its Dauphiné twin (positions allow no more)
        ub = blind["orientation_matrix"][i, 0]
        assert min(float(reduce_misorientation(ub, us[i], QUARTZ)),
                   float(reduce_misorientation(ub, us[i] @ twin, QUARTZ))) < 0.1
