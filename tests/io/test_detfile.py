import numpy as np
import pytest

from laueflow.io.detfile import read_det, write_det
from laueflow.physics.geometry import DEFAULT_CALIBRATION, Calibration, calibration_from_lauetools

LAUETOOLS_EXAMPLE = """81.25000, 1011.5000, 948.2500, 0.3120000, -0.2150000, 0.07340000, 2018, 2016
Sample-Detector distance(IM), xO, yO, angle1, angle2, pixelsize, dim1, dim2
Calibration done with Ge at <date> with LaueToolsGUI.py
Experimental Data file: ge_calib_0001.dat
Orientation Matrix:
[[0.1234567,0.6543210,-0.7456789],[-0.9876543,0.1471472,0.0529630],[0.0987654,0.7412589,0.6639999]]
# Material : Ge
# dd : 81.251
# xcen : 1011.5
# ycen : 948.25
# xbet : 0.312
# xgam : -0.215
# pixelsize : 0.0734
# xpixelsize : 0.0734
# ypixelsize : 0.0734
# CCDLabel : sCMOS
# framedim : (2018, 2016)
# detectordiameter : 162.93332
# kf_direction : Z>0
"""


def test_read_lauetools_example(tmp_path):
    path = tmp_path / "calib.det"
    path.write_text(LAUETOOLS_EXAMPLE)
    cal = read_det(path)
    # the '# key : value' lines take precedence over line 1
    assert cal.distance_mm == 81.251
    assert (cal.xcen_px, cal.ycen_px, cal.xbet_deg, cal.xgam_deg) == (1011.5, 948.25, 0.312, -0.215)
    assert cal.pixel_size_mm == 0.0734 and cal.frame_shape == (2018, 2016) and cal.detector_name == "sCMOS"
    assert np.allclose(cal.extra["calibrant_ub"][0], [0.1234567, 0.6543210, -0.7456789])
    assert cal.extra["calibrant_material"] == "Ge"


def test_read_old_file_with_first_line_only(tmp_path):
    path = tmp_path / "old.det"
    path.write_text("70.0, 1024.0, 1024.0, 0.0, 0.0, 0.079142, 2048, 2048\n")
    cal = read_det(path)
    assert cal.parameters == [70.0, 1024.0, 1024.0, 0.0, 0.0] and cal.frame_shape == (2048, 2048)


def test_write_read_round_trip(tmp_path):
    cal = Calibration(74.35, 1012.6, 1125.9, 2.85, -1.95, 0.075, (2162, 2068), "EIGER_4MCdTe")
    path = write_det(tmp_path / "c.det", cal, material="Si", ub=np.eye(3))
    assert read_det(path) == cal
    assert read_det(write_det(tmp_path / "d.det", DEFAULT_CALIBRATION)) == DEFAULT_CALIBRATION


def test_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_det(tmp_path / "missing.det")
    bad = tmp_path / "bad.det"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="line 1"):
        read_det(bad)


def test_calibration_from_lauetools_numbers():
    cal = calibration_from_lauetools([70.0, 1024.0, 1024.0, 0.0, 0.0, 0.079142], {"dd": "70.5"})
    assert cal.parameters == [70.5, 1024.0, 1024.0, 0.0, 0.0]
    assert cal.frame_shape == (2018, 2016) and cal.detector_name == "sCMOS"
    with pytest.raises(ValueError, match="pixelsize"):
        calibration_from_lauetools([70.0, 1024.0])


GOOD_LINE1 = "70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 2016.0"


def _det(tmp_path, line1, *comments):
    """A .det file: ``line1``, LaueTools' line 2, then ``comments`` from line 3 on."""
    path = tmp_path / "calib.det"
    line2 = "Sample-Detector distance(IM), xO, yO, angle1, angle2, pixelsize, dim1, dim2"
    path.write_text("\n".join([line1, line2, *comments]) + "\n")
    return path


def test_lauetools_line1_with_float_frame_size(tmp_path):
    cal = read_det(_det(tmp_path, GOOD_LINE1))
    assert cal.parameters == [70.0, 1024.5, 1020.3, 0.5, 0.3]
    assert cal.pixel_size_mm == 0.0734 and cal.frame_shape == (2018, 2016)
    assert read_det(_det(tmp_path, GOOD_LINE1.replace(",", " "))) == cal  # whitespace-separated
    assert read_det(_det(tmp_path, GOOD_LINE1 + ",")) == cal  # a trailing comma (LaueTools reads it too)


@pytest.mark.parametrize("line1, token, name", [
    ("70.0, 1024.5, nan, 0.5, 0.3, 0.0734, 2018.0, 2016.0", "nan", "ycen"),
    ("70.0, 1024.5, 1020.3, abc, 0.3, 0.0734, 2018.0, 2016.0", "abc", "xbet"),
    ("70.0, 1024.5, , 0.5, 0.3, 0.0734, 2018.0, 2016.0", "''", "ycen"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, inf, 2018.0, 2016.0", "inf", "pixelsize"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 2_016", "2_016", "dim2"),
])
def test_line1_non_number_is_refused_not_shifted(tmp_path, line1, token, name):
    path = _det(tmp_path, line1)
    with pytest.raises(ValueError) as err:
        read_det(path)
    message = str(err.value)
    assert str(path) in message and "line 1" in message and token in message and name in message


@pytest.mark.parametrize("line1, expected", [
    ("70.0, 1024.5, 1020.3, 0.5, 0.3", "5 values"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0", "7 values"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 2016.0, 1.0", "9 values"),
    ("0.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 2016.0", "dd"),
    ("-70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 2016.0", "dd"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0, 2018.0, 2016.0", "pixelsize"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.5, 2016.0", "dim1"),
    ("70.0, 1024.5, 1020.3, 0.5, 0.3, 0.0734, 2018.0, 0", "dim2"),
])
def test_line1_wrong_count_or_impossible_value(tmp_path, line1, expected):
    path = _det(tmp_path, line1)
    with pytest.raises(ValueError, match="line 1") as err:
        read_det(path)
    assert str(path) in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("comment, key", [
    ("# dd : abc", "dd"), ("# xcen : nan", "xcen"), ("# ycen :", "ycen"), ("# xbet : 0.5 deg", "xbet"),
    ("# xgam : 1,5", "xgam"), ("# dd : -70", "dd"),
])
def test_bad_override_line_is_refused(tmp_path, comment, key):
    path = _det(tmp_path, GOOD_LINE1, "# Material : Ge", comment)
    with pytest.raises(ValueError, match="line 4") as err:
        read_det(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_write_det_with_numpy_numbers_reads_back(tmp_path):
    # numpy 2 repr is 'np.float64(70.5)': the file must still hold plain numbers
    cal = Calibration(*map(np.float64, (70.5, 1024.25, 1020.5, 0.5, -0.25, 0.0734)), (np.int64(2018), 2016))
    path = write_det(tmp_path / "np.det", cal)
    assert "np." not in path.read_text()
    assert read_det(path) == cal
