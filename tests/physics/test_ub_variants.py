"""Symmetry-equivalent UB variants: operators per crystal system, choice of a variant, and the
consistent transformation of hkl (same q), crystal-frame strain and orientation."""
import itertools

import numpy as np
import pytest

from laueflow.physics import DEFAULT_CALIBRATION as CAL, Material, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations
from laueflow.physics.strain import (
    deformation_gradient,
    deviatoric_strain_crystal,
    polar_rotation,
    sample_rotation,
    strain_crystal_to_lab,
    strain_crystal_to_sample,
    ub_from_deviatoric_strain,
)
from laueflow.physics.ub_variants import UB_VARIANTS, UBVariant, choose_ub_variant, proper_rotations, ub_variants

LIBRARY = {"Cu": 24, "GaN": 12, "Sn": 8, "Al2O3": 6, "ZrO2": 2}  # cubic, hexagonal, tetragonal, trigonal, monoclinic
EXTRA = {  # systems without a library material
    "orthorhombic": (Material("ortho", (4.1, 5.3, 6.7, 90, 90, 90), "P n m a"), 4),
    "triclinic": (Material("tri", (5.0, 6.0, 7.0, 80, 85, 95), "P -1"), 1),
}
CHOSEN = [v for v in UB_VARIANTS if v != "laueflow"]


def _angle(rotation):
    return np.rad2deg(np.arccos(np.clip((np.trace(rotation, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def _strained_ub(material, seed, scale=1e-3):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, scale, (3, 3))
    e = (e + e.T) / 2
    e -= np.trace(e) / 3 * np.eye(3)
    return ub_from_deviatoric_strain(random_orientations(1, seed=seed)[0], e, material.lattice_parameters)


def _materials():
    return [(get_material(n), k) for n, k in LIBRARY.items()] + list(EXTRA.values())


@pytest.mark.parametrize("material, count", _materials(), ids=list(LIBRARY) + list(EXTRA))
def test_proper_rotations_of_each_crystal_system(material, count):
    ops, rotations = proper_rotations(material)
    assert len(ops) == count and ops.dtype.kind == "i"
    assert np.array_equal(ops[0], np.eye(3))
    assert np.all(np.rint(np.linalg.det(ops)) == 1)
    # Cartesian forms are orthogonal rotations (also for hexagonal / trigonal cells, where M is not)
    assert np.abs(rotations @ np.swapaxes(rotations, 1, 2) - np.eye(3)).max() < 1e-14
    assert np.abs(np.linalg.det(rotations) - 1).max() < 1e-14
    # a group: closed under products, and it maps allowed reflections onto allowed ones
    keys = {tuple(m.ravel()) for m in ops}
    assert all(tuple((a @ b).ravel()) in keys for a, b in itertools.product(ops, ops))
    hkl = np.array(list(itertools.product(range(-4, 5), repeat=3)))
    allowed = material.allowed(hkl)
    for m in ops:
        assert np.array_equal(material.allowed(hkl @ m.T), allowed)


def test_hexagonal_six_fold_is_not_orthogonal_on_hkl():
    ops, rotations = proper_rotations(get_material("GaN"))
    six_fold = [m for m, r in zip(ops, rotations) if abs(_angle(r) - 60) < 1e-9 and abs(r[2, 2] - 1) < 1e-12]
    assert len(six_fold) == 2
    assert not np.allclose(six_fold[0] @ six_fold[0].T, np.eye(3))


@pytest.mark.parametrize("name", list(LIBRARY))
@pytest.mark.parametrize("variant", CHOSEN)
def test_equivalent_ubs_give_the_same_variant(name, variant):
    material = get_material(name)
    ops, rotations = proper_rotations(material)
    rng = np.random.default_rng(5)
    for seed in range(6):
        ub = _strained_ub(material, seed)
        reference = random_orientations(1, seed=100 + seed)[0]
        other = ub @ rotations[rng.integers(len(rotations))]
        a = choose_ub_variant(ub, material, variant, reference)
        b = choose_ub_variant(other, material, variant, reference)
        assert np.abs(a.ub - b.ub).max() < 1e-12, (name, variant, seed)
        # the chosen variant is a fixed point: choosing again changes nothing
        again = choose_ub_variant(a.ub, material, variant, reference)
        assert np.array_equal(again.operator, np.eye(3)) and np.abs(again.ub - a.ub).max() < 1e-15


@pytest.mark.parametrize("name", list(LIBRARY))
def test_closest_variants_minimise_their_angle(name):
    material = get_material(name)
    for seed in range(5):
        ub = _strained_ub(material, seed)
        reference = random_orientations(1, seed=50 + seed)[0]
        rotations = polar_rotation(ub_variants(ub, material))
        for variant, target in [("identity", np.eye(3)), ("sample", sample_rotation()), ("reference", reference)]:
            chosen = choose_ub_variant(ub, material, variant, reference)
            best = _angle(np.swapaxes(target, -1, -2) @ rotations).min()
            assert _angle(target.T @ polar_rotation(chosen.ub)) == pytest.approx(best, abs=1e-9)
    assert np.array_equal(choose_ub_variant(ub, material, "laueflow").ub, ub)


def _lauetools_rule_by_columns(ub):
    """LaueTools' choice for cubic crystals, restated: of the six vectors ±columns of UB, the one
    with the largest z is the new third column; of the four left, the one with the largest x is
    the new first column; the middle column is the remaining ± vector making a right-handed set."""
    six = np.concatenate([ub, -ub], axis=1)
    ic = int(np.argmax(six[2]))
    rest = [j for j in range(6) if j % 3 != ic % 3]
    ia = rest[int(np.argmax(six[0, rest]))]
    b = [j for j in rest if j % 3 != ia % 3]
    cross = np.cross(six[:, ic], six[:, ia])
    ib = b[0] if cross @ six[:, b[0]] > 0 else b[1]
    return six[:, [ia, ib, ic]]


def test_lauetools_variant_is_lauetools_rule_for_cubic():
    cu = get_material("Cu")
    differs = 0
    for seed in range(300):
        ub = _strained_ub(cu, seed)
        chosen = choose_ub_variant(ub, cu, "lauetools")
        assert np.abs(chosen.ub - _lauetools_rule_by_columns(ub)).max() < 1e-15, seed
        differs += not np.allclose(chosen.ub, choose_ub_variant(ub, cu, "identity").ub)
    assert 0 < differs < 60  # 'identity' (smallest rotation) is another rule: they differ for ~8 % of grains


@pytest.mark.parametrize("name", list(LIBRARY))
def test_spot_set_hkl_and_q_are_consistent(name):
    material = get_material(name)
    ops, rotations = proper_rotations(material)
    b0 = material.b_matrix
    ub = _strained_ub(material, 11)
    hkl = np.array(list(itertools.product(range(-5, 6), repeat=3)))
    hkl = hkl[material.allowed(hkl) & np.any(hkl != 0, axis=1)]
    for k in range(len(ops)):
        other = ub @ rotations[k]
        for variant in CHOSEN:
            chosen = choose_ub_variant(other, material, variant, ub)
            new_hkl = chosen.hkl(hkl)
            # q = UB·B0·h unchanged for every reflection, and the allowed set maps onto itself
            assert np.abs(new_hkl @ (chosen.ub @ b0).T - hkl @ (other @ b0).T).max() < 1e-13
            assert material.allowed(new_hkl).all() and new_hkl.dtype.kind == "i"
    # the simulated pattern is the same spot set, each spot with transformed hkl
    other = ub @ rotations[-1]
    chosen = choose_ub_variant(other, material, "identity")
    before, after = simulate_spots(material, other, CAL), simulate_spots(material, chosen.ub, CAL)
    assert len(before) == len(after) > 10
    order_b, order_a = np.lexsort((before.row, before.col)), np.lexsort((after.row, after.col))
    assert np.abs(before.col[order_b] - after.col[order_a]).max() < 1e-8
    assert np.abs(before.energy_kev[order_b] - after.energy_kev[order_a]).max() < 1e-10
    assert np.array_equal(chosen.hkl(before.hkl[order_b]), after.hkl[order_a])


@pytest.mark.parametrize("name", list(LIBRARY))
def test_strain_transforms_with_the_variant(name):
    material = get_material(name)
    latt = material.lattice_parameters
    ops, rotations = proper_rotations(material)
    worst = {1e-3: 0.0, 1e-4: 0.0}
    for scale in worst:
        ub = _strained_ub(material, 21, scale)
        crystal = deviatoric_strain_crystal(ub, latt)
        sample = strain_crystal_to_sample(crystal, ub, latt)
        lab = strain_crystal_to_lab(crystal, ub, latt)
        f = deformation_gradient(ub, latt)
        for op, rotation in zip(ops, rotations):
            moved = UBVariant(name="test", ub=ub @ rotation, operator=op, rotation=rotation, material=material)
            s_d = moved.direct_rotation
            assert np.abs(s_d @ s_d.T - np.eye(3)).max() < 1e-14
            # exact: the metric FᵀF (Green–Lagrange strain) in the direct crystal frame
            f2 = deformation_gradient(moved.ub, latt)
            assert np.abs(f2.T @ f2 - s_d.T @ (f.T @ f) @ s_d).max() < 1e-14
            # rotated exactly, the crystal tensor gives the same sample- and lab-frame strain
            rotated = moved.strain_crystal(crystal)
            assert np.abs(strain_crystal_to_sample(rotated, moved.ub, latt) - sample).max() < 1e-15
            assert np.abs(strain_crystal_to_lab(rotated, moved.ub, latt) - lab).max() < 1e-15
            # LaueTools' definition (upper-triangular F) recomputed from UB·S: equal to first order
            recomputed = deviatoric_strain_crystal(moved.ub, latt)
            bound = 5 * np.abs(crystal).max() ** 2  # measured: ≤ 4·max|ε_ij|² over 200 random grains
            assert np.abs(recomputed - rotated).max() <= bound
            assert np.abs(strain_crystal_to_sample(recomputed, moved.ub, latt) - sample).max() <= bound
            worst[scale] = max(worst[scale], np.abs(recomputed - rotated).max())
    if name != "ZrO2":  # (the monoclinic 2-fold keeps F upper-triangular: exact)
        assert worst[1e-4] < worst[1e-3] / 30  # second order: ~100× smaller for 10× smaller strain
    else:
        assert worst[1e-3] < 1e-14


def test_bad_variant_and_reference():
    cu = get_material("Cu")
    ub = random_orientations(1, seed=1)[0]
    with pytest.raises(ValueError, match="unknown UB variant 'closest'; choose one of laueflow, identity"):
        choose_ub_variant(ub, cu, "closest")
    with pytest.raises(ValueError, match="needs a reference UB"):
        choose_ub_variant(ub, cu, "reference")
    with pytest.raises(ValueError, match="det = -1"):
        choose_ub_variant(ub, cu, "reference", -np.eye(3))
    with pytest.raises(ValueError, match="3×3"):
        choose_ub_variant(ub, cu, "reference", np.eye(2))
