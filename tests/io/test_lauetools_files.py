import numpy as np

from laueflow.io.lauetools_files import read_cor, read_fit, write_cor, write_dat, write_fit
from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations
from laueflow.physics.strain import deviatoric_strain_crystal, ub_from_deviatoric_strain


def test_cor_round_trip_uses_lauetools_pixels(tmp_path):
    col, row = np.array([100.0, 1500.25, np.nan]), np.array([200.0, 900.5, 3.0])
    path = write_cor(tmp_path / "p.cor", col, row, np.array([5.0, 7.0, 1.0]), CAL)
    text = path.read_text()
    assert text.splitlines()[0] == "2theta chi X Y I"
    assert "101.00000 201.00000" in text and "# xcen : 977.81" in text
    columns, calib = read_cor(path)
    assert np.allclose(columns["col"], col[:2], atol=1e-5) and float(calib["dd"]) == CAL.distance_mm


def test_dat_is_sorted_by_intensity(tmp_path):
    path = write_dat(tmp_path / "p.dat", [10, 20], [30, 40], [5.0, 50.0], [1000.0, 1001.0])
    rows = path.read_text().splitlines()
    assert rows[0].startswith("peak_X peak_Y peak_Itot peak_Isub")
    assert rows[1].startswith("21.00 41.00 1051.00 50.00")


def test_fit_file_contains_refined_grain(tmp_path):
    cu = get_material("Cu")
    eps = np.diag([1e-3, -4e-4, -6e-4])
    ub = ub_from_deviatoric_strain(random_orientations(1, seed=3)[0], eps, cu.lattice_parameters)
    spots = simulate_spots(cu, ub, CAL)
    path = write_fit(tmp_path / "g.fit", ub=ub, material=cu, calibration=CAL, hkl=spots.hkl,
                     obs_col=spots.col, obs_row=spots.row, intensity=spots.intensity, source="scan_0001.cor")
    fit = read_fit(path)
    assert len(fit["spots"]["h"]) == len(spots)
    assert np.allclose(fit["spots"]["energy(keV)"], spots.energy_kev, atol=1e-6)
    assert np.allclose(fit["spots"]["Xtheo"], spots.col + 1, atol=1e-6)
    assert np.abs(fit["spots"]["pixDev"]).max() < 1e-6
    block = fit["deviatoric strain in direct crystal frame (10-3 unit)"]
    assert np.allclose(block, deviatoric_strain_crystal(ub, cu.lattice_parameters) * 1e3, atol=1e-3)
    assert np.allclose(fit["UB matrix in q= (UB) B0 G*"], ub, atol=1e-8)
