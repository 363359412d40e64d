import itertools

import numpy as np
import pytest

from laueflow.io.materials_file import load_materials_file
from laueflow.physics.lattice import angle_between_normals, b_matrix, d_spacing
from laueflow.physics.materials import Material, get_material, list_materials
from laueflow.physics.orientations import euler_to_matrix, matrix_to_euler, random_orientations, rotation_about_axis
from laueflow.physics.symmetry import hkl_family, hkl_operators, reduce_misorientation, rotation_operators

LIBRARY = ["Cu", "Al", "Ni", "W", "alpha-Fe", "Si", "Ge", "GaN", "ZnO", "Ti", "Sn", "Al2O3", "ZrO2", "UO2"]


def test_b0_matches_lauetools(strain_cases, simulated_spots_cases):
    for case in strain_cases + simulated_spots_cases:
        assert np.abs(b_matrix(case["lattice_params"]) - np.array(case["B0"])).max() < 1e-14


def test_metric_quantities():
    assert d_spacing([1, 1, 1], (3.6, 3.6, 3.6, 90, 90, 90)) == pytest.approx(3.6 / np.sqrt(3))
    assert angle_between_normals([1, 0, 0], [1, 1, 0], (4, 4, 4, 90, 90, 90)) == pytest.approx(45)
    # hexagonal: (100) and (010) normals are 60° apart
    assert angle_between_normals([1, 0, 0], [0, 1, 0], (3.2, 3.2, 5.2, 90, 90, 120)) == pytest.approx(60)


def test_library_has_every_material_with_a_source():
    assert set(LIBRARY) <= set(list_materials())
    for name in LIBRARY:
        material = get_material(name)
        assert material.source, name
        assert material.lauetools_extinction, name


@pytest.mark.parametrize("rule", ["space_group", "lauetools"])
def test_issue_extinction_examples(rule):
    def allowed(name, hkl):
        return bool(get_material(name, rule).allowed(hkl))

    assert not allowed("Cu", [1, 0, 0]) and allowed("Cu", [1, 1, 1]) and allowed("Cu", [2, 0, 0])
    assert not allowed("Si", [2, 0, 0]) and allowed("Si", [1, 1, 1]) and allowed("Si", [2, 2, 0])
    assert not allowed("Si", [2, 2, 2]) and not allowed("Ge", [6, 0, 0]) and allowed("Si", [4, 0, 0])
    assert not allowed("W", [1, 0, 0]) and allowed("W", [1, 1, 0])
    for l in range(1, 9):
        assert allowed("GaN", [0, 0, l]) == (l % 2 == 0)
    assert not allowed("Cu", [0, 0, 0])


def test_space_group_rule_for_any_group():
    # P1: everything but 000; I-centred: h+k+l even; F-centred: unmixed parity
    hkl = np.array(list(itertools.product(range(-3, 4), repeat=3)))
    p1 = Material("P1", (3, 4, 5, 80, 85, 95), 1)
    assert p1.allowed(hkl).sum() == len(hkl) - 1
    body = Material("I", (3, 3, 3, 90, 90, 90), 229)
    assert np.array_equal(body.allowed(hkl), (hkl.sum(1) % 2 == 0) & hkl.any(1))
    with pytest.raises(ValueError, match="space group"):
        Material("bad", (3, 3, 3, 90, 90, 90), "X 99 z")


def test_structure_factor_zeros_and_values():
    si = get_material("Si")
    f2 = si.structure_factor_squared([[1, 1, 1], [2, 2, 2], [2, 2, 0]])
    assert f2[1] < 1e-6 * f2[0] and f2[2] > 0.1 * f2[0]
    cu = get_material("Cu")
    # fcc: F(000) = 4 f(0) = 4 Z
    assert cu.structure_factor_squared([[0, 0, 0]])[0] == pytest.approx((4 * 29) ** 2, rel=0.01)


def test_lauetools_and_space_group_rules_agree_for_cubic_library_materials():
    hkl = np.array(list(itertools.product(range(-6, 7), repeat=3)))
    for name in ["Cu", "Al", "Ni", "W", "alpha-Fe", "Si", "Ge", "UO2"]:
        m = get_material(name)
        assert np.array_equal(m.allowed(hkl), m.with_rule("lauetools").allowed(hkl)), name
    # documented differences (docs/materials.md): wurtzite structure-factor zeros, Sn's site zeros
    gan = get_material("GaN")
    assert not gan.allowed([3, 0, -1]) and gan.with_rule("lauetools").allowed([3, 0, -1])
    sn = get_material("Sn")
    assert not sn.allowed([1, -1, 0]) and not sn.with_rule("lauetools").allowed([1, -1, 0])  # SG141: the glide
    assert not sn.allowed([-6, -4, -6]) and sn.with_rule("lauetools").allowed([-6, -4, -6])  # F = 0 (sites)


def test_user_defined_material_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "NaCl:\n  lattice: [5.64, 5.64, 5.64, 90, 90, 90]\n  space_group: 225\n"
        "  atoms: [[Na, 0, 0, 0], [Cl, 0.5, 0.5, 0.5]]\n  source: test\n"
    )
    nacl = load_materials_file(path)["NaCl"]
    f2 = nacl.structure_factor_squared([[1, 1, 1], [2, 0, 0]])
    assert f2[0] < f2[1]  # (f_Na − f_Cl)² < (f_Na + f_Cl)²
    assert nacl.allowed([1, 1, 1]) and not nacl.allowed([1, 1, 0])
    with pytest.raises(ValueError, match="unknown material"):
        get_material("Unobtainium")
    with pytest.raises(ValueError, match="lattice_parameters"):
        Material("x", (3, 3), 1)


def test_laue_group_sizes():
    sizes = {"Cu": 48, "GaN": 24, "Ti": 24, "Al2O3": 12, "ZrO2": 4, "Sn": 16}
    for name, n in sizes.items():
        material = get_material(name)
        assert len(hkl_operators(material)) == n
        assert len(rotation_operators(material)) == n // 2
    assert len(hkl_family([1, 0, 0], get_material("Cu"))) == 6
    assert len(hkl_family([1, 1, 1], get_material("Cu"))) == 8
    assert len(hkl_family([0, 0, 1], get_material("GaN"))) == 2


def test_symmetry_operators_preserve_the_lattice():
    for name in LIBRARY:
        m = get_material(name)
        rotations = rotation_operators(m)
        assert np.allclose(rotations @ np.swapaxes(rotations, 1, 2), np.eye(3), atol=1e-12), name


def test_misorientation_with_symmetry():
    cu = get_material("Cu")
    u = random_orientations(5, seed=3)
    ops = rotation_operators(cu)
    assert np.allclose(reduce_misorientation(u, u @ ops[7], cu), 0, atol=1e-6)
    twin = u @ rotation_about_axis([1, 1, 1], 60)
    assert np.allclose(reduce_misorientation(u, twin, cu), 60)
    small = u @ rotation_about_axis([0.3, -0.2, 0.9], 0.05)
    assert np.allclose(reduce_misorientation(u, small, cu), 0.05, atol=1e-6)


def test_euler_round_trip_and_uniform_sampling():
    u = random_orientations(2000, seed=0)
    assert np.allclose(euler_to_matrix(*matrix_to_euler(u).T), u)
    assert np.allclose(np.linalg.det(u), 1)
    # uniform on SO(3): mean of each matrix entry ≈ 0
    assert np.abs(u.mean(axis=0)).max() < 0.05
    assert np.array_equal(random_orientations(3, seed=1), random_orientations(3, seed=1))
