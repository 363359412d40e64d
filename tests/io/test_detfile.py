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
