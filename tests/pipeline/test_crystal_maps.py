"""Our orientation convention (q_lab = UB·B0·hkl, sample frame = lab tilted 40°) → orix, checked
against orix's own conversions: Bunge Euler angles, Miller plane normals, IPF colours for known
orientations along x, y, z; the CrystalMap of a store."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from orix.plot import IPFColorKeyTSL
from orix.quaternion import Orientation
from orix.vector import Miller, Vector3d
from scipy.spatial.transform import Rotation as R

import laueflow
import laueflow.plot as lp
import results_factory as rf
from laueflow.physics.materials import get_material
from laueflow.physics.orientations import euler_to_matrix, matrix_to_euler, rotation_about_axis
from laueflow.physics.strain import sample_rotation
from laueflow.pipeline.crystal_maps import euler_angles, orix_symmetry, to_crystal_map, to_orientations

CU, GAN = get_material("Cu"), get_material("GaN")
KNOWN = {"identity": np.eye(3), "90 about z": rotation_about_axis([0, 0, 1], 90.0),
         "random": euler_to_matrix(31.0, 47.0, 112.0)}
AXES = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}


@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.parametrize("axis", AXES)
def test_ipf_colours_equal_orix_from_bunge_angles(name, axis):
    """Lab frame: our UB's Bunge angles (scipy ZXZ, as the store's euler_angles) read by orix."""
    ub = KNOWN[name]
    euler = np.deg2rad(matrix_to_euler(ub))  # the store's euler_angles (scipy ZXZ of UB)
    reference = Orientation.from_euler(euler, symmetry=orix_symmetry(CU))
    key = IPFColorKeyTSL(orix_symmetry(CU), direction=Vector3d(AXES[axis]))
    ours = key.orientation2color(to_orientations(ub, CU, "lab"))
    np.testing.assert_allclose(ours, key.orientation2color(reference), atol=1e-12)
    # sample frame: the sample axis expressed in the lab (columns of P) is the lab direction to use
    lab_direction = sample_rotation() @ np.array(AXES[axis], float)
    lab_key = IPFColorKeyTSL(orix_symmetry(CU), direction=Vector3d(lab_direction))
    np.testing.assert_allclose(IPFColorKeyTSL(orix_symmetry(CU), direction=Vector3d(AXES[axis])).orientation2color(
        to_orientations(ub, CU, "sample")), lab_key.orientation2color(reference), atol=1e-9)


def test_known_colours_of_the_cubic_key():
    """Identity (lab frame): every lab axis is a <100> → red; [111] along z → blue; [101] → green."""
    key = IPFColorKeyTSL(orix_symmetry(CU), direction=Vector3d.zvector())
    np.testing.assert_allclose(key.orientation2color(to_orientations(np.eye(3), CU, "lab")), [[1, 0, 0]], atol=1e-9)
    to_z = {(1, 1, 1): [0, 0, 1], (1, 0, 1): [0, 1, 0]}
    for hkl, colour in to_z.items():
        u, _ = R.align_vectors([[0, 0, 1]], [hkl])  # crystal direction hkl → lab z
        rgb = key.orientation2color(to_orientations(u.as_matrix(), CU, "lab"))[0]
        np.testing.assert_allclose(rgb / rgb.max(), colour, atol=0.02)  # orix's key: (0, 0.009, 1) at [111]


@pytest.mark.parametrize("hkl", [(0, 0, 1), (1, 0, 0), (1, 1, 0), (1, 0, 2)])
def test_hexagonal_frame_matches_orix_miller_planes(hkl):
    """GaN: put the plane normal B0·hkl (our frame, by definition of UB) along lab z; its IPF-Z
    colour must be orix's colour of the Miller plane (hkl) in orix's own crystal frame."""
    normal = GAN.b_matrix @ np.array(hkl, float)
    u, _ = R.align_vectors([[0, 0, 1]], [normal])
    o = to_orientations(u.as_matrix(), GAN, "lab")
    key = IPFColorKeyTSL(o.symmetry, direction=Vector3d.zvector())
    from laueflow.pipeline.crystal_maps import orix_phase

    expected = key.direction_color_key.direction2color(Miller(hkl=hkl, phase=orix_phase(GAN)))
    np.testing.assert_allclose(key.orientation2color(o), expected, atol=1e-6)


def test_ipf_colors_of_a_store_and_nan_where_not_indexed(results_store):
    path, _ = results_store
    ds = laueflow.open_results(path)
    rgb = lp.ipf_colors(ds, "z", frame="lab")
    assert np.isnan(rgb[rf.NOT_INDEXED]).all() and np.isnan(rgb[rf.INVALID]).all()
    np.testing.assert_allclose(rgb[1, 0], [1, 0, 0], atol=1e-9)  # identity: [001] ∥ z, red
    assert np.isfinite(rgb[1:, 4]).all()  # GaN points: coloured with GaN's (6/mmm) key


def test_crystal_map_and_euler_angles(results_store):
    path, _ = results_store
    best = laueflow.best_grain(laueflow.open_results(path))
    xmap = to_crystal_map(best, frame="lab")
    assert xmap.shape == (rf.NY, rf.NX) and xmap.scan_unit == "um"
    assert [xmap.phases[i].name for i in (0, 1)] == ["Cu", "GaN"]  # ids = the store's material indices
    assert (xmap.phase_id == -1).sum() == 3
    np.testing.assert_allclose(np.unique(xmap.x), np.arange(rf.NX) * rf.STEP_UM[1])
    e = euler_angles(best, "lab")
    reference = Orientation.from_euler(np.deg2rad(e[2, 1]))
    assert np.rad2deg(reference.angle_with(Orientation.from_euler(np.deg2rad(matrix_to_euler(rf.orientation_of(2, 1)))))) < 1e-9
    with pytest.raises(ValueError, match="several grains"):
        to_crystal_map(laueflow.open_results(path))
