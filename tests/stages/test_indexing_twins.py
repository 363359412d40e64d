"""Issue #12: Σ3-twin impostors are rejected, real twins and their parents are both kept.

Real simulations (``simulate_spots``) and the tiny Cu model (tests/tiny_models.py), no mocks.
A list holds every spot of its patterns once (coincident spots of a parent and its twin merged,
as a peak search would), shuffled, no intensities.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from laueflow.physics.geometry import DEFAULT_CALIBRATION, angles_to_qhat
from laueflow.physics.simulate import simulate_spots
from laueflow.physics.symmetry import reduce_misorientation
from laueflow.pipeline.indexers import get_indexer
from laueflow.stages.indexing.orientation import IndexingParams, best_variant, settle_variant
from laueflow.stages.indexing.pseudosymmetry import pseudo_symmetry_variants
from laueflow.stages.indexing.stage import index_peaks
from laueflow.synth.microstructure import twin_rotation
from tiny_models import TINY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return get_indexer(["Cu"], DEFAULT_CALIBRATION, TINY, cache_dir=tmp_path_factory.mktemp("indexers"),
                       verbose=False, threads=1)


def _list(material, ubs, seed):
    """(two_theta, chi) of the patterns of ``ubs`` on one list: spots within 0.02° merged, shuffled."""
    s = simulate_spots(material, np.asarray(ubs), DEFAULT_CALIBRATION, (5.0, 22.0))
    q = angles_to_qhat(s.two_theta, s.chi)
    dup = np.tril(q @ q.T > np.cos(np.deg2rad(0.02)), -1).any(axis=1)
    keep = np.flatnonzero(~dup)
    keep = keep[np.random.default_rng(seed).permutation(len(keep))]
    return s.two_theta[keep][None], s.chi[keep][None]


def _misorientations(out, truth, material):
    """Per truth UB, the smallest misorientation (deg) to an indexed grain; and the grain count."""
    found = out["orientation_matrix"][0, : out["grain_count"][0]]
    return [min(float(reduce_misorientation(t, f, material)) for f in found) for t in truth], int(out["grain_count"][0])


def _random_u(seed):
    return Rotation.random(random_state=seed).as_matrix()


def test_cubic_variants_are_the_sigma3_twins(tiny):
    cu = tiny.materials[0]
    v = pseudo_symmetry_variants(cu)
    u = _random_u(1)
    sigma3 = [float(reduce_misorientation(u, u @ r, cu)) for r in v]
    assert sum(abs(a - 60.0) < 0.01 for a in sigma3) == 4  # one per <111> axis
    # each Σ3 variant is a 60° <111> twin of u: the four twins of the synth module, in some order
    twin = u @ twin_rotation(cu.lattice_parameters)
    assert min(float(reduce_misorientation(twin, u @ r, cu)) for r in v) < 0.01


def test_sigma3_impostor_resolved_to_the_true_grain(tiny):
    """A candidate at the Σ3-twin orientation of the only grain matches ~40 % of its spots; its
    variants include the true grain, which explains them all."""
    cu = tiny.materials[0]
    u = _random_u(2)
    tth, chi = _list(cu, [u], seed=3)
    q = angles_to_qhat(tth[0], chi[0])
    impostor = u @ twin_rotation(cu.lattice_parameters, direction=(1, -1, 1))
    assert float(reduce_misorientation(impostor, u, cu)) > 59
    best = best_variant(cu, impostor, q, DEFAULT_CALIBRATION, tiny.config.energy_band_kev, IndexingParams(),
                        np.zeros(len(q), bool))
    assert float(reduce_misorientation(best, u, cu)) < 1e-3  # the true grain (arccos rounding)
    out = index_peaks(tth, chi, None, indexer=tiny, max_grains=3)
    mis, count = _misorientations(out, [u], cu)
    assert count == 1 and mis[0] < 0.1


def test_sigma9_candidate_settles_on_the_true_grain(tiny):
    """A chance candidate two Σ3 steps from the only grain (Σ9): one variant comparison reaches only
    the grain's Σ3 twin; taken to a fixed point it reaches the grain itself."""
    cu = tiny.materials[0]
    u = _random_u(12)
    tth, chi = _list(cu, [u], seed=13)
    q = angles_to_qhat(tth[0], chi[0])
    sigma9 = u @ twin_rotation(cu.lattice_parameters, direction=(1, 1, 1)) \
        @ twin_rotation(cu.lattice_parameters, direction=(1, -1, 1))
    assert 35 < float(reduce_misorientation(sigma9, u, cu)) < 60 - 1  # Σ9: 38.9° about <110>
    args = (cu, sigma9, q, DEFAULT_CALIBRATION, tiny.config.energy_band_kev, IndexingParams(), np.zeros(len(q), bool))
    one_step = best_variant(*args)
    assert float(reduce_misorientation(one_step, u, cu)) > 59  # the twin, not the grain
    assert float(reduce_misorientation(settle_variant(*args), u, cu)) < 1e-3


def test_real_twin_and_parent_are_both_kept(tiny):
    """Parent and Σ3 twin share ~40 % of their spots: both found (the fixed 0.3 overlap cap
    rejects the second)."""
    cu = tiny.materials[0]
    for seed in (4, 5):
        u = _random_u(seed)
        twin = u @ twin_rotation(cu.lattice_parameters)
        tth, chi = _list(cu, [u, twin], seed=seed)
        out = index_peaks(tth, chi, None, indexer=tiny, max_grains=3)
        mis, count = _misorientations(out, [u, twin], cu)
        assert count == 2 and max(mis) < 0.1
        old = index_peaks(tth, chi, None, indexer=tiny, max_grains=3, pseudo_symmetry=False, max_overlap=0.3)
        assert old["grain_count"][0] < 2 or max(_misorientations(old, [u, twin], cu)[0]) > 0.1


def test_boundary_point_with_three_patterns(tiny):
    """A point on a twin boundary next to another grain: parent, twin and a neighbour, plus a 1°
    sub-grain of the neighbour: all four found, nothing else."""
    cu = tiny.materials[0]
    u = _random_u(6)
    twin = u @ twin_rotation(cu.lattice_parameters, direction=(-1, 1, 1))
    other = _random_u(7)
    sub = Rotation.from_rotvec(np.deg2rad(1.0) * np.array([0.6, 0.0, 0.8])).as_matrix() @ other
    truth = [u, twin, other, sub]
    tth, chi = _list(cu, truth, seed=8)
    out = index_peaks(tth, chi, None, indexer=tiny, max_grains=5)
    mis, count = _misorientations(out, truth, cu)
    assert count == 4 and max(mis) < 0.1


def test_gan_si_epitaxial_relation_is_a_cross_material_variant():
    """Wurtzite GaN and diamond Si share their close-packed directions: an orientation of one has
    variants of the other (GaN [0001] ∥ Si <111>, one per <111> axis)."""
    from laueflow.physics.materials import get_material
    from laueflow.stages.indexing.pseudosymmetry import cross_material_variants

    gan, si = get_material("GaN"), get_material("Si")
    v = cross_material_variants(gan, si)  # Si orientation → GaN orientations
    assert len(v) == 4
    c = gan.b_matrix @ np.array([0.0, 0, 1])
    for r in v:  # the GaN c axis lands on a Si <111>
        d = r @ (c / np.linalg.norm(c))
        assert np.allclose(np.sort(np.abs(d)), 1 / np.sqrt(3), atol=2e-3)
    assert len(cross_material_variants(si, gan)) >= 1
    assert len(cross_material_variants(gan, gan)) == 0


def test_si_impostor_of_a_gan_grain_becomes_the_gan_grain():
    """Issue #12 (bench 1 Si + 3 GaN, list 483 of seed 7103): a Si orientation in the epitaxial
    relation to a GaN grain explains ~50 % of its spots (27 % within 0.2°: it passes the
    confirmation) and took the grain cap's last slot. The acceptance compares it with its GaN
    variants and accepts the GaN grain instead; the Si impostor is not accepted."""
    from laueflow.physics.materials import get_material
    from laueflow.stages.indexing.classes import build_class_table
    from laueflow.stages.indexing.matching import score_candidates
    from laueflow.stages.indexing.orientation import ClassGeometry, _cross_material

    gan, si = get_material("GaN"), get_material("Si")
    band = (5.0, 23.0)
    # list 483's missed GaN grain and the Si impostor accepted in its place (refined on its spots)
    u_gan = np.array([[-0.5886564312937308, 0.1130937752223394, 0.8004332601175993],
                      [0.07386000070782742, 0.9935483032894197, -0.0860608466502348],
                      [-0.8050020535327652, 0.008459730295610236, -0.5932117048502639]])
    u_si = np.array([[0.7828064060942356, 0.6219984309205936, -0.018223131183921222],
                     [0.6222136979238748, -0.782782960673597, 0.010047417328614907],
                     [-0.008015278767690627, -0.01920386449124113, -0.999783460002654]])
    s = simulate_spots(gan, u_gan[None], DEFAULT_CALIBRATION, band)
    rng = np.random.default_rng(0)  # ~0.2 px of noise
    n = len(s.two_theta)
    q = angles_to_qhat(s.two_theta + rng.normal(0, 0.01, n), s.chi + rng.normal(0, 0.01, n))
    p = IndexingParams()
    claimed = np.zeros(len(q), bool)
    sc = score_candidates(si, u_si, q, DEFAULT_CALIBRATION, band, p.confirm_tolerance_deg, claimed)
    assert sc.free_rate[0] >= p.mr_min and sc.n_new[0] >= p.min_matched  # the trap: it would pass
    geom = ClassGeometry(build_class_table([gan, si], (2, 2)), [gan, si])
    runners: list = []
    mat, ub = _cross_material(1, u_si, q, DEFAULT_CALIBRATION, band, p, claimed, geom, [], np.zeros(2, bool), runners)
    assert mat == 0
    assert float(reduce_misorientation(u_gan, ub, gan)) < 0.05
    # GaN at its cap: the Si candidate stays (and is judged by the confirmation as before)
    mat, _ = _cross_material(1, u_si, q, DEFAULT_CALIBRATION, band, p, claimed, geom, [], np.array([True, False]), [])
    assert mat == 1


def test_q_solid_angle_is_the_fraction_of_random_directions_that_reach_the_detector():
    from laueflow.physics.geometry import angles_to_pixel, in_frame, qhat_to_angles
    from laueflow.stages.indexing.matching import q_solid_angle_sr

    q = np.random.default_rng(3).normal(size=(400_000, 3))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    tth, chi = qhat_to_angles(q)
    col, row = angles_to_pixel(tth, chi, DEFAULT_CALIBRATION)
    # q̂ and −q̂ reach the same pixel; a reflection's q̂ has 2θ > 0: count that side only
    inside = np.isfinite(col) & np.isfinite(row) & (tth > 0)
    inside[inside] = in_frame(col[inside], row[inside], DEFAULT_CALIBRATION)
    monte_carlo = 4 * np.pi * inside.mean()
    assert q_solid_angle_sr(DEFAULT_CALIBRATION) == pytest.approx(monte_carlo, rel=0.02)


def test_chance_matches_predict_random_coincidences_and_a_true_grain_is_significant():
    """Against a crowded list (one Cu grain + 400 random peaks), random orientations match as
    many spots as ``chance_matches`` expects; the true grain is significant, random orientations
    that pass the fixed thresholds by chance are not."""
    from laueflow.physics.geometry import pixel_to_angles
    from laueflow.physics.materials import get_material
    from laueflow.stages.indexing.matching import score_candidates
    from laueflow.stages.indexing.orientation import _passes, _significant

    cu, rng = get_material("Cu"), np.random.default_rng(5)
    truth = _random_u(11)
    s = simulate_spots(cu, truth[None] @ cu.b_matrix[None], DEFAULT_CALIBRATION, (5.0, 22.0))
    rows, cols = DEFAULT_CALIBRATION.frame_shape
    noise = pixel_to_angles(rng.uniform(0, cols, 400), rng.uniform(0, rows, 400), DEFAULT_CALIBRATION)
    q = angles_to_qhat(np.concatenate([s.two_theta, noise[0]]), np.concatenate([s.chi, noise[1]]))
    ubs = np.stack([_random_u(100 + i) @ cu.b_matrix for i in range(300)])
    sc = score_candidates(cu, ubs, q, DEFAULT_CALIBRATION, (5.0, 22.0), 0.5)
    assert sc.n_new.mean() == pytest.approx(sc.chance_matches.mean(), rel=0.15)
    params = IndexingParams(min_matched=8)
    lucky = (sc.n_new >= params.min_matched) & (sc.mean_residual_deg <= params.max_residual_deg)
    assert lucky.sum() >= 5  # the fixed thresholds alone would let chance through
    assert not _significant(sc, params)[lucky].any() and not _passes(sc, params).any()
    true = score_candidates(cu, truth[None] @ cu.b_matrix[None], q, DEFAULT_CALIBRATION, (5.0, 22.0), 0.5)
    assert _passes(true, params)[0] and true.n_new[0] >= 0.95 * len(s)
    assert _significant(sc, IndexingParams(chance_alpha=0.0)).all()  # 0 disables


def _grain(material, ub, q, band):
    from laueflow.stages.indexing.matching import match_one
    from laueflow.stages.indexing.orientation import GrainResult

    idx, hkl, res, n_th = match_one(material, ub, q, DEFAULT_CALIBRATION, band, 0.5)
    return GrainResult(0, np.asarray(ub, float), 100.0 * len(idx) / n_th, len(idx), float(res.mean()), idx, hkl, res)


def test_weakest_grain_at_the_cap_is_replaced_by_a_better_one(tiny):
    """Two Cu grains, max_grains 2: a Σ3-twin impostor of the second grain took its slot (≈ 40 % of
    its spots); the search stopped at the cap with the rest of the second grain's spots unexplained.
    The set judged again: the impostor (fewest own spots) is set aside and its slot searched on the
    spots the first grain leaves — the true second grain explains more and replaces it. With the
    true grains, nothing changes."""
    from laueflow.stages.indexing.orientation import replace_weakest
    from laueflow.stages.indexing.stage import _geometry

    cu, band = tiny.materials[0], tuple(tiny.config.energy_band_kev)
    u1, u2 = _random_u(11), _random_u(12)
    tth, chi = _list(cu, [u1, u2], seed=13)
    q = angles_to_qhat(tth[0], chi[0])
    cls, conf = tiny.predict(tth, chi, n_centres=tth.shape[1])
    impostor = u2 @ twin_rotation(cu.lattice_parameters, direction=(1, 1, -1))
    params = IndexingParams(max_grains=2)
    grains = [_grain(cu, u1, q, band), _grain(cu, impostor, q, band)]
    assert len(q) - len(np.union1d(grains[0].spot_index, grains[1].spot_index)) >= params.min_matched
    swapped = replace_weakest(grains, q, cls[0], conf[0], _geometry(tiny), DEFAULT_CALIBRATION, band, params)
    assert len(swapped) == 2 and swapped[0] is grains[0]
    assert float(reduce_misorientation(swapped[1].ub, u2, cu)) < 0.1
    assert swapped[1].n_matched > grains[1].n_matched
    true_pair = [grains[0], _grain(cu, u2, q, band)]
    kept = replace_weakest(true_pair, q, cls[0], conf[0], _geometry(tiny), DEFAULT_CALIBRATION, band, params)
    assert [g is t for g, t in zip(kept, true_pair)] == [True, True]
