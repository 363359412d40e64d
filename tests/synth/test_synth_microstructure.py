"""Grain maps, footprint overlap, orientation and strain fields of laueflow.synth.microstructure."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from laueflow.physics.strain import deviatoric_strain_crystal, ub_from_deviatoric_strain, von_mises_strain
from laueflow.synth.microstructure import TWIN, build_microstructure, twin_rotation

CU = (3.6149, 3.6149, 3.6149, 90.0, 90.0, 90.0)


def _micro(seed=0, **kw):
    return build_microstructure((12, 14), 1.0, 8, np.random.default_rng(seed), [CU], **kw)


def test_boundary_points_see_two_grains():
    m = _micro()
    top = m.grain_id[..., :]
    n_grains = (top >= 0).sum(axis=-1)
    assert np.allclose(m.grain_weight.sum(axis=-1), 1.0)
    pairs = 0
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        differ = m.grain_map[a] != m.grain_map[b]
        pairs += differ.sum()
        assert ((n_grains[a] >= 2) | (n_grains[b] >= 2))[differ].all()
    assert pairs > 0
    # deep inside a grain there is a single grain of weight 1
    assert (n_grains == 1).any()
    single = n_grains == 1
    assert np.allclose(m.grain_weight[single][:, 0], 1.0)


@pytest.mark.parametrize("magnitude", [1e-3, 3e-3])
def test_strain_field_magnitude(magnitude):
    m = _micro(strain_magnitude=magnitude)
    valid = m.grain_id >= 0
    eps = m.deviatoric_strain[valid]
    assert np.allclose(eps, eps.swapaxes(1, 2))
    assert np.allclose(np.trace(eps, axis1=1, axis2=2), 0, atol=1e-15)
    vm = von_mises_strain(eps)
    assert vm.max() <= magnitude * (1 + 1e-9)
    assert vm.min() >= 0.4 * magnitude * (1 - 1e-9)
    assert np.median(vm) > 0.55 * magnitude
    # the strain is really in UB: recovered by the physics module
    ub = m.orientation_matrix[valid]
    for i in range(0, len(ub), max(1, len(ub) // 7)):
        assert np.allclose(deviatoric_strain_crystal(ub[i], CU), eps[i], rtol=0, atol=1e-9)
        assert np.allclose(ub_from_deviatoric_strain(m.rotation[valid][i], eps[i], CU), ub[i])


def test_orientation_gradient_and_determinism():
    a, b, c = _micro(3), _micro(3), _micro(4)
    assert np.array_equal(a.grain_id, b.grain_id)
    assert np.array_equal(a.orientation_matrix, b.orientation_matrix, equal_nan=True)
    assert not np.array_equal(a.grain_map, c.grain_map)
    # inside one grain, neighbouring points differ by ~gradient × step
    m = _micro(orientation_gradient_deg_per_um=0.1, strain_magnitude=0)
    g = m.grain_map
    same = (g[:, 1:] == g[:, :-1]) & (m.grain_id[:, 1:, 1] < 0) & (m.grain_id[:, :-1, 1] < 0)
    r1 = m.rotation[:, 1:, 0][same]
    r0 = m.rotation[:, :-1, 0][same]
    angle = np.rad2deg(Rotation.from_matrix(r1 @ r0.swapaxes(1, 2)).magnitude())
    assert np.allclose(angle, 0.1, rtol=0.01)


def test_twins_subgrains_deep_substrate():
    si = (5.431, 5.431, 5.431, 90, 90, 90)
    m = build_microstructure((10, 10), 1.0, 6, np.random.default_rng(1), [CU, si], twin_fraction=1.0,
                             subgrain_fraction=1.0, deep_grains=3, deep_weight=0.1, substrate=True)
    d = m.domains
    twins = np.flatnonzero(d.kind == TWIN)
    assert len(twins) == 6
    for t in twins:
        rel = d.rotation[d.parent[t]].T @ d.rotation[t]
        assert np.allclose(rel, twin_rotation(CU))
        assert np.isclose(np.rad2deg(Rotation.from_matrix(rel).magnitude()), 60.0)
    # the substrate is in the last slot everywhere, deep grain just before it
    assert (m.grain_id[..., -1] == len(d) - 1).all()
    assert (m.grain_material[..., -1] == 1).all()
    assert np.allclose(m.grain_weight[..., -2], 0.1)
    assert (d.kind[m.grain_id[..., -2]] == 3).all()


def test_fine_twins_alternate_with_the_parent_across_the_largest_grains():
    m = build_microstructure((20, 20), 1.0, 3, np.random.default_rng(4), [CU], fine_twin_grains=2,
                             fine_twin_period_um=4.0)
    d = m.domains
    twins = np.flatnonzero(d.kind == TWIN)
    assert len(twins) == 2
    for t in twins:
        g = d.parent[t]
        assert np.allclose(d.rotation[g].T @ d.rotation[t], twin_rotation(CU))
        in_grain = np.isin(m.grain_map, [g, t])
        twin_share = (m.grain_map[in_grain] == t).mean()
        assert 0.3 < twin_share < 0.7  # half of the grain, in lamellae
        # lamellae 2 µm wide: between neighbouring points of the grain, the dominant domain changes often
        pairs = [(a, b) for a, b in ((m.grain_map[:, :-1], m.grain_map[:, 1:]), (m.grain_map[:-1], m.grain_map[1:]))]
        both = np.concatenate([(np.isin(a, [g, t]) & np.isin(b, [g, t])).ravel() for a, b in pairs])
        differ = np.concatenate([(a != b).ravel() for a, b in pairs])
        assert 0.15 < differ[both].mean() < 0.6
    untouched = build_microstructure((20, 20), 1.0, 3, np.random.default_rng(4), [CU])
    assert not (untouched.domains.kind == TWIN).any()


def test_dauphine_twins_are_60_degrees_about_c():
    quartz = (4.917, 4.917, 5.410, 90, 90, 120)
    m = build_microstructure((8, 8), 1.0, 4, np.random.default_rng(2), [quartz], twin_fraction=1.0,
                             twin_law="dauphine")
    d = m.domains
    twins = np.flatnonzero(d.kind == TWIN)
    assert len(twins) == 4
    for t in twins:
        rel = d.rotation[d.parent[t]].T @ d.rotation[t]
        rotvec = Rotation.from_matrix(rel).as_rotvec()
        assert np.isclose(np.rad2deg(np.linalg.norm(rotvec)), 60.0)
        assert np.allclose(np.abs(rotvec / np.linalg.norm(rotvec)), [0, 0, 1], atol=1e-9)  # B0: z ∥ c
    with pytest.raises(ValueError, match="twin_law must be one of"):
        build_microstructure((2, 2), 1.0, 1, np.random.default_rng(2), [quartz], twin_law="brazil")
