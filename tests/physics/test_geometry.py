import numpy as np
import pytest

from reference_data import calibration_from_block
from laueflow.physics.geometry import (
    DEFAULT_CALIBRATION,
    Calibration,
    angles_to_pixel,
    angles_to_qhat,
    angular_distance,
    in_frame,
    pixel_to_angles,
    qhat_to_angles,
)


def test_pixel_to_angles_matches_lauetools(geometry_vectors):
    for block in geometry_vectors["calibrations"]:
        cal = calibration_from_block(block)
        ref = block["pixel_to_angles"]
        # LaueTools X, Y = 0-based col, row + 1
        col = np.array(ref["X"]) - 1
        row = np.array(ref["Y"]) - 1
        two_theta, chi = pixel_to_angles(col, row, cal)
        assert np.abs(two_theta - ref["twotheta_deg"]).max() <= 1e-8
        assert np.abs(chi - ref["chi_deg"]).max() <= 1e-8
        assert np.abs(angles_to_qhat(two_theta, chi) - np.array(ref["qhat_LT"])).max() <= 1e-12


def test_angles_to_pixel_matches_lauetools(geometry_vectors):
    for block in geometry_vectors["calibrations"]:
        cal = calibration_from_block(block)
        ref = block["angles_to_pixel"]
        col, row = angles_to_pixel(np.array(ref["twotheta_deg"]), np.array(ref["chi_deg"]), cal)
        assert np.abs(col + 1 - np.array(ref["X"])).max() <= 1e-6
        assert np.abs(row + 1 - np.array(ref["Y"])).max() <= 1e-6


def test_frame_corners_and_centre(geometry_vectors):
    for block in geometry_vectors["calibrations"]:
        cal = calibration_from_block(block)
        ref = block["frame_corners_and_center"]
        two_theta, chi = pixel_to_angles(np.array(ref["X"]) - 1, np.array(ref["Y"]) - 1, cal)
        assert np.allclose(two_theta, ref["twotheta_deg"], atol=1e-8)
        assert np.allclose(chi, ref["chi_deg"], atol=1e-8)


def test_normal_foot_point_is_at_90_minus_beta():
    cal = DEFAULT_CALIBRATION
    two_theta, chi = pixel_to_angles(cal.xcen_px - 1, cal.ycen_px - 1, cal)
    assert two_theta == pytest.approx(90 - cal.xbet_deg, abs=1e-10)
    assert chi == pytest.approx(0, abs=1e-10)


def test_round_trip_pixel_angles_pixel(rng):
    cal = Calibration(74.35, 1012.6, 1125.9, 2.85, -1.95, 0.075, (2162, 2068))
    col = rng.uniform(-0.5, cal.n_cols - 0.5, 1000)
    row = rng.uniform(-0.5, cal.n_rows - 0.5, 1000)
    back_col, back_row = angles_to_pixel(*pixel_to_angles(col, row, cal), cal)
    assert np.abs(back_col - col).max() < 1e-9 and np.abs(back_row - row).max() < 1e-9
    q = angles_to_qhat(*pixel_to_angles(col, row, cal))
    assert np.allclose(np.linalg.norm(q, axis=-1), 1)
    assert np.allclose(np.stack(qhat_to_angles(q)), np.stack(pixel_to_angles(col, row, cal)))


def test_angular_distance_hand_computed():
    # two spots at the same chi: the angle between normals is half the 2θ difference
    assert angular_distance(90.0, 0.0, 60.0, 0.0) == pytest.approx(15.0)
    # θ = 45° both, chi differing by 90°: cos Δ = sin²45 = 0.5 → 60°
    assert angular_distance(90.0, 0.0, 90.0, 90.0) == pytest.approx(60.0)
    # agrees with the dot product of q̂
    q1, q2 = angles_to_qhat(100.0, 12.0), angles_to_qhat(70.0, -25.0)
    assert angular_distance(100.0, 12.0, 70.0, -25.0) == pytest.approx(np.degrees(np.arccos(q1 @ q2)))


def test_in_frame_uses_pixel_edges():
    cal = DEFAULT_CALIBRATION
    assert in_frame(np.array([-0.5, -0.51, cal.n_cols - 0.5]), np.array([0, 0, 0]), cal).tolist() == [True, False, True]
    assert not in_frame(np.array([0.5]), np.array([0.0]), cal, margin_px=1.0)[0]


def test_calibration_validation_and_dict_round_trip():
    with pytest.raises(ValueError, match="distance_mm"):
        Calibration(0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="frame_shape"):
        Calibration(70, 1, 1, 0, 0, frame_shape=(10,))
    assert Calibration.from_dict(DEFAULT_CALIBRATION.to_dict()) == DEFAULT_CALIBRATION
