import numpy as np
import pytest

from reference_data import calibration_from_block
from laueflow.physics.geometry import DEFAULT_CALIBRATION
from laueflow.physics.materials import Material, get_material
from laueflow.physics.orientations import random_orientations
from laueflow.physics.simulate import simulate_spots
from laueflow.physics.strain import ub_from_deviatoric_strain


def lauetools_material(case):
    return Material(case["material"], case["lattice_params"], case["space_group"],
                    lauetools_extinction=case["extinction_code"], extinction_rule="lauetools")


def test_reference_spot_lists(simulated_spots_cases):
    assert len(simulated_spots_cases) == 11
    for case in simulated_spots_cases:
        cal = calibration_from_block(case["calibration"])
        spots = simulate_spots(lauetools_material(case), np.array(case["UB"]), cal, case["energy_band_keV"])
        ref = case["spots"]
        ref_rows = {
            (h, k, l): (x, y, e)
            for h, k, l, x, y, e, inside, margin in zip(
                ref["h"], ref["k"], ref["l"], ref["X"], ref["Y"], ref["energy_keV"], ref["in_frame"], ref["edge_margin_px"])
            if inside and margin >= 1
        }
        margin_ok = (
            (spots.col >= 0.5) & (spots.row >= 0.5)
            & (spots.col <= cal.n_cols - 1.5) & (spots.row <= cal.n_rows - 1.5)
        )
        mine = {tuple(hkl): (c + 1, r + 1, e) for hkl, c, r, e in zip(spots.hkl[margin_ok], spots.col[margin_ok], spots.row[margin_ok], spots.energy_kev[margin_ok])}
        assert set(mine) == set(ref_rows), case["case_id"]
        for hkl, (x, y, e) in ref_rows.items():
            assert abs(mine[hkl][0] - x) < 0.01 and abs(mine[hkl][1] - y) < 0.01, (case["case_id"], hkl)
            assert abs(mine[hkl][2] - e) < 1e-9


def test_harmonics_are_merged_to_lowest_order_in_band(simulated_spots_cases):
    case = next(c for c in simulated_spots_cases if c["case_id"] == "Cu_2")
    spots = simulate_spots(lauetools_material(case), np.array(case["UB"]), calibration_from_block(case["calibration"]))
    directions = spots.hkl / np.gcd.reduce(np.abs(spots.hkl), axis=1)[:, None]
    assert len(np.unique(directions, axis=0)) == len(spots)  # one spot per direction
    assert (2, -2, -2) in set(map(tuple, spots.hkl))  # its 1 -1 -1 is below 5 keV


def test_batched_equals_one_by_one():
    cu = get_material("Cu")
    u = random_orientations(20, seed=2)
    batched = simulate_spots(cu, u, DEFAULT_CALIBRATION, batch_size=7)
    for i in range(20):
        one = simulate_spots(cu, u[i], DEFAULT_CALIBRATION)
        mine = batched.for_pattern(i)
        assert np.array_equal(mine.hkl, one.hkl)
        assert np.allclose(mine.col, one.col) and np.allclose(mine.intensity, one.intensity)
    assert batched.counts(20).min() > 10


def test_strained_reference_case(simulated_spots_cases):
    case = next(c for c in simulated_spots_cases if c["strain"])
    ub = np.array(case["UB"])
    assert not np.allclose(ub @ ub.T, np.eye(3), atol=1e-6)  # really strained
    spots = simulate_spots(lauetools_material(case), ub, calibration_from_block(case["calibration"]))
    assert len(spots) >= case["n_spots_in_frame"] - 2


def test_strain_moves_spots_a_little():
    cu = get_material("Cu")
    u = random_orientations(1, seed=5)[0]
    eps = np.diag([1e-3, -5e-4, -5e-4])
    strained = simulate_spots(cu, ub_from_deviatoric_strain(u, eps, cu.lattice_parameters), DEFAULT_CALIBRATION)
    plain = simulate_spots(cu, u, DEFAULT_CALIBRATION)
    common, i, j = np.intersect1d(plain.h * 10000 + plain.k * 100 + plain.l, strained.h * 10000 + strained.k * 100 + strained.l, return_indices=True)
    shift = np.hypot(plain.col[i] - strained.col[j], plain.row[i] - strained.row[j])
    assert 0.01 < shift.max() < 5


def test_intensity_model_uses_structure_factor():
    si = get_material("Si")
    spots = simulate_spots(si, random_orientations(50, seed=1), DEFAULT_CALIBRATION)
    assert np.all(spots.intensity > 0)
    assert not np.any(np.all(spots.hkl % 4 == 2, axis=1) & (spots.hkl.sum(1) % 4 == 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="orientation_matrices"):
        simulate_spots(get_material("Cu"), np.eye(4), DEFAULT_CALIBRATION)
    with pytest.raises(ValueError, match="energy_band"):
        simulate_spots(get_material("Cu"), np.eye(3), DEFAULT_CALIBRATION, (23, 5))


def test_lauetools_preset_gives_lauetools_spot_lists(simulated_spots_cases):
    """`get_material("Cu@lauetools")`: LaueTools' lattice and code, so the spot list (hkl, pixels,
    energies) equals LaueTools' own for every reference case — without spelling the lattice."""
    for case in simulated_spots_cases:
        preset = get_material(f"{case['material']}@lauetools")
        assert preset.name == f"{case['material']}@lauetools" and preset.extinction_rule == "lauetools"
        assert list(preset.lattice_parameters) == case["lattice_params"], case["case_id"]
        assert preset.lauetools_extinction == case["extinction_code"]
        cal = calibration_from_block(case["calibration"])
        mine = simulate_spots(preset, np.array(case["UB"]), cal, case["energy_band_keV"])
        ref = simulate_spots(lauetools_material(case), np.array(case["UB"]), cal, case["energy_band_keV"])
        assert np.array_equal(mine.hkl, ref.hkl) and np.allclose(mine.energy_kev, ref.energy_kev, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no LaueTools preset for 'Unobtainium'"):
        get_material("Unobtainium@lauetools")
