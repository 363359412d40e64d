"""Strain refinement bars of issue #6 (accuracy with fixed seeds; timings live in benchmarks/)."""
import numpy as np
import pytest

from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.geometry import pixel_to_angles
from laueflow.physics.orientations import random_orientations, rotation_about_axis
from laueflow.physics.strain import deviatoric_strain_crystal, ub_from_deviatoric_strain
from laueflow.physics.symmetry import reduce_misorientation
from laueflow.stages.strain import refine_grains, refine_strain, stiffness_matrix, deviatoric_stress, strain_outputs
from laueflow.stages.strain.model import apply_step, parameter_jacobian, predict_pixels


def random_strains(rng, n, scale=1e-3):
    e = rng.normal(0, scale, (n, 3, 3))
    e = (e + np.swapaxes(e, 1, 2)) / 2
    return e - np.trace(e, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)


def make_grains(name, n, seed, scale=1e-3):
    rng = np.random.default_rng(seed)
    material = get_material(name)
    u = random_orientations(n, seed=seed)
    eps = random_strains(rng, n, scale)
    ub = np.stack([ub_from_deviatoric_strain(u[i], eps[i], material.lattice_parameters) for i in range(n)])
    return material, u, eps, ub


def observed(spots, n_images, noise_px, rng, keep=None):
    """Padded observed peak arrays from simulated spots (one image per pattern)."""
    counts = spots.counts(n_images)
    size = max(int(counts.max()), 1)
    arrays = {k: np.full((n_images, size), np.nan) for k in ("tth", "chi", "col", "row")}
    for i in range(n_images):
        s = spots.for_pattern(i)
        if keep is not None:
            s = s.select(keep(i, s))
        col = s.col + rng.normal(0, noise_px, len(s))
        row = s.row + rng.normal(0, noise_px, len(s))
        tth, chi = pixel_to_angles(col, row, CAL)
        for key, values in zip(("tth", "chi", "col", "row"), (tth, chi, col, row)):
            arrays[key][i, : len(s)] = values
    return arrays


def start_orientations(u, rng, angle_deg=0.1):
    return np.stack([ui @ rotation_about_axis(rng.normal(size=3), angle_deg) for ui in u])


def refine(material, ub_start, obs, **kw):
    n = len(ub_start)
    return refine_grains(ub_start, np.arange(n), np.zeros(n, int), [material], obs["tth"], obs["chi"], obs["col"], obs["row"], CAL, **kw)


def test_jacobian_matches_finite_differences():
    material, u, _, ub = make_grains("GaN", 3, 1)
    spots = simulate_spots(material, ub, CAL)
    hkl = np.stack([spots.for_pattern(i).hkl[:15] for i in range(3)]).astype(float)
    b0 = np.repeat(material.b_matrix[None], 3, axis=0)
    _, _, jac = parameter_jacobian(ub, b0, hkl, CAL)
    step = 1e-7
    for k in range(8):
        delta = np.zeros((3, 8))
        delta[:, k] = step
        plus = predict_pixels(np.einsum("gij,gsj->gsi", apply_step(ub, delta) @ b0, hkl), CAL)
        minus = predict_pixels(np.einsum("gij,gsj->gsi", apply_step(ub, -delta) @ b0, hkl), CAL)
        numeric = (np.stack(plus, -1) - np.stack(minus, -1)) / (2 * step)
        assert np.allclose(jac[..., k], numeric, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["Cu", "Si", "W", "GaN", "Ti"])
def test_noise_free_recovers_strain_exactly(name):
    rng = np.random.default_rng(1)
    material, u, eps, ub = make_grains(name, 12, 2)
    obs = observed(simulate_spots(material, ub, CAL), 12, 0.0, rng)
    result = refine(material, start_orientations(u, rng), obs)
    assert np.all(result.status == 0)
    error = deviatoric_strain_crystal(result.ub, material.lattice_parameters) - eps
    assert np.abs(error).max() <= 1e-7
    assert np.all(reduce_misorientation(result.ub, ub, material) < 1e-4)
    assert np.all(result.rms_px < 1e-6)


@pytest.mark.parametrize("name", ["Cu", "Si", "W", "GaN", "Ti"])
def test_noisy_positions_meet_the_bars(name):
    rng = np.random.default_rng(3)
    n = 40
    material, u, eps, ub = make_grains(name, n, 4)
    obs = observed(simulate_spots(material, ub, CAL), n, 0.1, rng)
    result = refine(material, start_orientations(u, rng), obs)
    ok = result.status == 0
    assert ok.mean() >= 0.95
    error = deviatoric_strain_crystal(result.ub, material.lattice_parameters) - eps
    component_rms = lambda sel: np.sqrt(np.mean(error[sel] ** 2))  # noqa: E731
    ge20, ge50 = ok & (result.n_pairs >= 20), ok & (result.n_pairs >= 50)
    assert ge20.sum() >= 0.9 * n  # the ≥ 20-pair bar is checked on (nearly) every grain, never on none
    assert component_rms(ge20) <= 1e-4
    # Cu (fcc: few reflections in the band) has no grain with ≥ 50 pairs here; the others have many
    assert ge50.sum() == 0 if name == "Cu" else ge50.sum() >= 20, ge50.sum()
    if name != "Cu":
        assert component_rms(ge50) <= 5e-5
    misorientation = reduce_misorientation(result.ub[ge20], ub[ge20], material)
    assert np.sqrt(np.mean(misorientation**2)) <= 0.005
    assert np.median(result.rms_px[ok]) == pytest.approx(0.1 * np.sqrt(2), rel=0.3)


def test_multi_grain_image_as_good_as_alone():
    rng = np.random.default_rng(5)
    material, u, eps, ub = make_grains("Cu", 3, 6)
    spots = simulate_spots(material, ub, CAL)
    q = [spots.for_pattern(i) for i in range(3)]
    from laueflow.physics.geometry import angular_distance

    # keep only spots ≥ 1° from every spot of the other grains (the bar's condition)
    isolated = []
    for i in range(3):
        others = [q[j] for j in range(3) if j != i]
        d = np.min([angular_distance(q[i].two_theta[:, None], q[i].chi[:, None], o.two_theta[None], o.chi[None]).min(axis=1) for o in others], axis=0)
        isolated.append(q[i].select(d >= 1.0))
    noisy = []
    for s in isolated:
        col, row = s.col + rng.normal(0, 0.1, len(s)), s.row + rng.normal(0, 0.1, len(s))
        noisy.append((col, row))
    # one image with all three grains' spots
    col = np.concatenate([c for c, _ in noisy])[None]
    row = np.concatenate([r for _, r in noisy])[None]
    tth, chi = pixel_to_angles(col, row, CAL)
    start = start_orientations(u, rng)
    together = refine_grains(start, np.zeros(3, int), np.zeros(3, int), [material], tth, chi, col, row, CAL)
    for i in range(3):
        c, r = noisy[i][0][None], noisy[i][1][None]
        t, ch = pixel_to_angles(c, r, CAL)
        alone = refine_grains(start[i : i + 1], [0], [0], [material], t, ch, c, r, CAL)
        assert together.status[i] == 0 and alone.status[0] == 0
        assert together.n_pairs[i] == alone.n_pairs[0]
        assert np.abs(together.ub[i] - alone.ub[0]).max() < 1e-9


def test_outliers_do_not_spoil_the_fit():
    rng = np.random.default_rng(7)
    material, u, eps, ub = make_grains("Si", 10, 8)
    obs = observed(simulate_spots(material, ub, CAL), 10, 0.05, rng)
    # push 10 % of the peaks 1–1.5 px away (still inside the last matching tolerance)
    bad = rng.random(obs["col"].shape) < 0.1
    obs["col"] = np.where(bad, obs["col"] + rng.choice([-1, 1], bad.shape) * rng.uniform(1, 1.5, bad.shape), obs["col"])
    obs["tth"], obs["chi"] = pixel_to_angles(obs["col"], obs["row"], CAL)
    robust = refine(material, start_orientations(u, rng), obs)
    plain = refine(material, start_orientations(u, rng), obs, huber_px=None)
    err = lambda r: np.sqrt(np.mean((deviatoric_strain_crystal(r.ub, material.lattice_parameters) - eps) ** 2))  # noqa: E731
    assert err(robust) < err(plain)
    assert err(robust) < 5e-5


def test_too_few_spots_gives_a_status():
    rng = np.random.default_rng(9)
    material, u, eps, ub = make_grains("Cu", 2, 10)
    obs = observed(simulate_spots(material, ub, CAL), 2, 0.0, rng, keep=lambda i, s: np.arange(len(s)) < 6)
    result = refine(material, start_orientations(u, rng), obs)
    assert np.all(result.status == 1)
    assert np.all(result.n_pairs < 8)


def test_collinear_spots_are_flagged_ill_conditioned():
    material = get_material("Si")
    rng = np.random.default_rng(11)
    for seed in range(200):
        u = random_orientations(1, seed=seed)
        spots = simulate_spots(material, u, CAL)
        zone = spots.hkl[:, 2] == 0  # all q in one plane: the zone [001]
        if zone.sum() >= 10:
            break
    else:
        pytest.fail("no orientation with a populated [001] zone")
    obs = observed(spots, 1, 0.0, rng, keep=lambda i, s: s.hkl[:, 2] == 0)
    result = refine(material, u, obs)
    assert result.status[0] == 2


def test_grain_at_the_detector_edge():
    material = get_material("W")
    rng = np.random.default_rng(12)
    eps = random_strains(rng, 1)[0]
    for seed in range(500):
        u = random_orientations(1, seed=1000 + seed)[0]
        ub = ub_from_deviatoric_strain(u, eps, material.lattice_parameters)
        spots = simulate_spots(material, ub, CAL)
        margin = np.minimum.reduce([spots.col + 0.5, spots.row + 0.5, CAL.n_cols - 0.5 - spots.col, CAL.n_rows - 0.5 - spots.row])
        # (W in the default geometry always has 43–59 spots: a "10–30 spots" condition never held,
        # and the test used to run on whatever the last seed gave)
        if (margin < 3).sum() >= 3:
            break
    else:
        pytest.fail("no orientation with ≥ 3 spots within 3 px of the detector edge")
    obs = observed(spots, 1, 0.0, rng)
    result = refine(material, start_orientations(u[None], rng), obs)
    assert result.status[0] == 0
    assert result.n_pairs[0] == len(spots)  # the edge spots are paired too
    assert np.abs(deviatoric_strain_crystal(result.ub, material.lattice_parameters)[0] - eps).max() <= 1e-7


def test_pipeline_entry_point_padded_arrays():
    rng = np.random.default_rng(13)
    material, u, eps, ub = make_grains("GaN", 4, 14)
    obs = observed(simulate_spots(material, ub, CAL), 4, 0.0, rng)
    start = np.full((4, 2, 3, 3), np.nan)
    start[:, 0] = start_orientations(u, rng)
    materials = np.full((4, 2), -1)
    materials[:, 0] = 0
    out = refine_strain(obs["tth"], obs["chi"], obs["col"], obs["row"], start, materials, [material], CAL)
    assert out["strain_status"].tolist() == [[0, 4]] * 4
    assert np.abs(out["strain_crystal"][:, 0] - eps).max() <= 1e-7
    assert np.isnan(out["strain_crystal"][:, 1]).all()
    assert np.all(out["strain_n_pairs"][:, 0] == (out["peak_grain_refined"] == 0).sum(axis=1))
    assert np.isfinite(out["stress_sample"][:, 0]).all()
    trace = np.trace(out["strain_sample"][:, 0], axis1=1, axis2=2)
    assert np.allclose(trace, 0, atol=1e-12)


def test_stress_from_elastic_constants():
    cu = get_material("Cu")
    c = stiffness_matrix(cu)
    eps = np.diag([1e-3, -5e-4, -5e-4])
    # σ11 − σ22 = (C11 − C12)(ε11 − ε22) for cubic
    sigma = deviatoric_stress(eps, c)
    assert sigma[0, 0] - sigma[1, 1] == pytest.approx((168.4 - 121.4) * 1.5e-3)
    shear = np.zeros((3, 3))
    shear[0, 1] = shear[1, 0] = 1e-3
    assert deviatoric_stress(shear, c)[0, 1] == pytest.approx(2 * 75.4e-3)
    assert stiffness_matrix(get_material("Sn")) is None
    out = strain_outputs(np.eye(3)[None], get_material("GaN"))
    assert np.allclose(out["strain_crystal"], 0, atol=1e-15) and out["stress_crystal"].shape == (1, 3, 3)
