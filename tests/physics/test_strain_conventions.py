import numpy as np
import pytest

from laueflow.physics.strain import (
    deviatoric_strain_crystal,
    lattice_parameters_from_ub,
    polar_rotation,
    strain_crystal_to_lab,
    strain_crystal_to_sample,
    ub_from_deviatoric_strain,
    von_mises_strain,
)
from laueflow.physics.orientations import random_orientations


def test_reproduces_lauetools_strain_cases(strain_cases):
    assert len(strain_cases) == 10
    for case in strain_cases:
        ub, latt, ref = np.array(case["UB"]), case["lattice_params"], case["LaueTools_output"]
        crystal = deviatoric_strain_crystal(ub, latt)
        assert np.abs(crystal - ref["devstrain_crystal"]).max() <= 1e-9, case["case_id"]
        assert np.abs(strain_crystal_to_sample(crystal, ub, latt) - ref["devstrain_sample"]).max() <= 1e-9
        assert np.abs(strain_crystal_to_lab(crystal, ub, latt) - ref["devstrain_LT_lab"]).max() <= 1e-9
        assert von_mises_strain(crystal) == pytest.approx(ref["equivalent_strain_von_Mises"], abs=1e-9)
        assert np.abs(lattice_parameters_from_ub(ub, latt) - ref["lattice_params_rescaled_a"]).max() <= 1e-9
        assert np.abs(polar_rotation(ub) - ref["pure_rotation_part_of_UB"]).max() <= 1e-9


@pytest.mark.parametrize("latt", [(3.6, 3.6, 3.6, 90, 90, 90), (3.189, 3.189, 5.185, 90, 90, 120), (5.1505, 5.2116, 5.3173, 90, 99.23, 90)])
def test_ub_from_strain_round_trip(latt, rng):
    u = random_orientations(1, seed=7)[0]
    e = rng.normal(0, 1e-3, (3, 3))
    e = (e + e.T) / 2
    e -= np.trace(e) / 3 * np.eye(3)
    ub = ub_from_deviatoric_strain(u, e, latt)
    assert np.abs(deviatoric_strain_crystal(ub, latt) - e).max() < 1e-14
    assert np.allclose(ub_from_deviatoric_strain(u, np.zeros((3, 3)), latt), u)
    # the hydrostatic part is invisible: adding it changes only the scale of UB
    iso = ub_from_deviatoric_strain(u, e + 1e-3 * np.eye(3), latt)
    assert np.abs(deviatoric_strain_crystal(iso, latt) - e).max() < 1e-12
