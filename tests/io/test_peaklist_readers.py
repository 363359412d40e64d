"""Peak-list readers: LaueTools' own .dat/.cor layouts (IOLaueTools writefile_Peaklist /
writefile_cor: a line of column names, rows, '#' footer with '# key : value' calibration lines),
files without names or intensities, the header calibration, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.io.lauetools_files import (header_calibration, read_cor, read_dat, read_fit, read_peaklist,
                                         write_cor, write_dat, write_fit)
from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations

#: a .cor as LaueTools' writefile_cor writes it (extra spot-property columns, calibration footer)
LAUETOOLS_COR = """\
2theta chi X Y I data_sat peak_fwaxmaj
73.312345   -10.543210   1020.450000   530.250000   1500.000   0   1.250000
95.001000   12.000100   812.000000   1410.000000   900.500   1   2.000000
# File created at Tue Feb 22 10:00:00 2022 with IOLaueTools.py
# From: img_0001.dat
# Calibration parameters
# dd     :   79.612
# xcen     :   977.81
# ycen     :   932.17
# xbet     :   0.477
# xgam     :   0.447
# pixelsize     :   0.0734
# xpixelsize     :   0.0734
# ypixelsize     :   0.0734
# CCDLabel     :   sCMOS
# framedim     :   [2018.0, 2016.0]
# detectordiameter     :   148.1
# kf_direction     :   Z>0
"""


def test_lauetools_cor_layout_with_extra_columns_and_calibration(tmp_path):
    path = tmp_path / "img_0001.cor"
    path.write_text(LAUETOOLS_COR)
    columns, header = read_cor(path)
    np.testing.assert_allclose(columns["2theta"], [73.312345, 95.001])
    np.testing.assert_allclose(columns["col"], [1019.45, 811.0])  # X − 1
    np.testing.assert_allclose(columns["intensity"], [1500.0, 900.5])
    np.testing.assert_array_equal(columns["data_sat"], [0, 1])
    cal = header_calibration(header, path)
    assert cal == CAL and cal.frame_shape == (2018, 2016)
    peaks = read_peaklist(path)
    assert peaks.kind == "cor" and peaks.n_peaks == 2 and peaks.calibration == CAL


@pytest.mark.parametrize("text, pixels, intensity", [
    ("2theta chi I\n70.0 5.0 10\n80.0 -3.0 20\n", False, [10, 20]),   # LaueTools' 3-column .cor
    ("70.0 5.0 10\n80.0 -3.0 20\n", False, [10, 20]),                 # no name line: by count
    ("70.0 5.0 101 201\n80.0 -3.0 301 401\n", True, None),            # 2theta chi X Y, no intensity
    ("70.0 5.0\n80.0 -3.0\n", False, None),
])
def test_cor_without_pixels_or_intensities(tmp_path, text, pixels, intensity):
    path = tmp_path / "p.cor"
    path.write_text(text + "# dd : 79.612\n")
    columns, _ = read_cor(path)
    np.testing.assert_allclose(columns["chi"], [5.0, -3.0])
    assert ("col" in columns) is pixels
    if pixels:
        np.testing.assert_allclose(columns["row"], [200.0, 400.0])
    assert (columns.get("intensity") is None) is (intensity is None)
    if intensity:
        np.testing.assert_allclose(columns["intensity"], intensity)
    with pytest.raises(ValueError, match="lacks xcen, ycen, xbet, xgam, pixelsize"):
        read_peaklist(path)  # a partial calibration in the header is named, never guessed


def test_cor_unindexed_layout(tmp_path):
    path = tmp_path / "u.cor"
    path.write_text("# Unindexed and unrefined spots\n# a\n# b\n0 55.5 70.0 5.0 101 201\n3 44.4 80.0 -3.0 301 401\n")
    columns, header = read_cor(path)
    np.testing.assert_allclose(columns["intensity"], [55.5, 44.4])
    np.testing.assert_allclose(columns["2theta"], [70.0, 80.0])
    np.testing.assert_allclose(columns["col"], [100.0, 300.0])
    assert header_calibration(header) is None


def test_dat_layouts(tmp_path):
    # laueflow's (LaueTools' 11-column layout): intensity = peak_Isub
    path = write_dat(tmp_path / "a.dat", [10, 20], [30, 40], [5.0, 50.0], [1000.0, 1001.0])
    c = read_dat(path)
    np.testing.assert_allclose(c["col"], [20, 10])
    np.testing.assert_allclose(c["intensity"], [50, 5])
    # LaueTools' single-peak file: a blank line after the names
    one = tmp_path / "one.dat"
    one.write_text(path.read_text().splitlines()[0] + "\n\n11.00 31.00 1005.00 5.00 1.00 1.00 0.000 0.00 0.00 "
                   "1000.00 0\n# File created at x with IOLaueTools.py\n# Comments: nb of peaks 1\n")
    assert read_dat(one)["col"].tolist() == [10.0]
    # no name line: 10 columns (older LaueTools), 3 (X Y I), 2 (X Y: no intensities)
    ten = tmp_path / "ten.dat"
    ten.write_text("101.5 201.5 77.0 1 1 0 0 0 10 90\n")
    assert read_dat(ten)["intensity"].tolist() == [77.0] and read_dat(ten)["row"].tolist() == [200.5]
    three = tmp_path / "three.dat"
    three.write_text("101 201 5\n102 202 6\n")
    assert read_dat(three)["intensity"].tolist() == [5.0, 6.0]
    two = tmp_path / "two.dat"
    two.write_text("peak_X peak_Y\n101 201\n102 202\n")
    c = read_dat(two)
    assert "intensity" not in c and c["col"].tolist() == [100.0, 101.0]
    p = read_peaklist(two)
    assert p.kind == "dat" and p.intensity is None and p.two_theta is None and p.n_peaks == 2
    # a peak list of no peaks (LaueTools writes one for a blank image) is read, empty
    none = tmp_path / "none.dat"
    none.write_text(path.read_text().splitlines()[0] + "\n# File created at x\n# Comments: nb of peaks 0\n")
    assert read_peaklist(none).n_peaks == 0 and read_dat(none)["intensity"].shape == (0,)


@pytest.mark.parametrize("name, text, message", [
    ("bad.dat", "peak_X peak_Y\n1.0 abc\n", r"line 2: not a row of numbers"),
    ("empty.dat", "# nothing\n", "no peaks and no line of column names"),
    ("ragged.dat", "1 2 3\n1 2\n", "different numbers of columns"),
    ("names.cor", "2theta chi X\n1 2\n", r"3 column names \(2theta chi X\) for 2 columns"),
    ("seven.dat", "1 2 3 4 5 6 7\n", "7 columns and no line of column names"),
    ("nochi.cor", "a b\n1 2\n", "no 2theta and chi columns"),
    ("frame.cor", "70 5\n# dd : 1\n# xcen : 1\n# ycen : 1\n# xbet : 0\n# xgam : 0\n# pixelsize : 0.1\n"
                  "# framedim : (2018)\n", "framedim"),
    ("image.tif", "1 2\n", "not a peak list"),
])
def test_reader_errors_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_peaklist(path)
    assert str(path) in str(err.value)


def test_cor_round_trip_and_orientation_only_fit(tmp_path):
    cu = get_material("Cu")
    ub = random_orientations(1, seed=5)[0]
    spots = simulate_spots(cu, ub, CAL)
    cor = write_cor(tmp_path / "s.cor", spots.col, spots.row, spots.intensity, CAL)
    peaks = read_peaklist(cor)
    assert peaks.calibration == CAL
    np.testing.assert_allclose(peaks.two_theta, spots.two_theta, atol=1e-5)
    fit = write_fit(tmp_path / "g.fit", ub=ub, material=cu, calibration=CAL, hkl=spots.hkl, obs_col=spots.col,
                    obs_row=spots.row, strain=False)
    text = fit.read_text()
    assert text.startswith("#Orientation Refinement from experimental file")
    assert "deviatoric strain" not in text and "new lattice parameters" not in text
    assert np.allclose(read_fit(fit)["UB matrix in q= (UB) B0 G*"], ub, atol=1e-8)
