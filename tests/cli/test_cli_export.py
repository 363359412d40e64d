"""`laueflow export --ub-variant`: the real command on a small results store holding refined grains
(the point arrays `export` reads, written with xarray: a strained Cu and a strained GaN grain whose
stored UB is deliberately not the `identity` variant)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from laueflow.cli.main import main
from laueflow.io.lauetools_files import read_fit
from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.orientations import matrix_to_euler, random_orientations
from laueflow.physics.strain import (
    deviatoric_strain_crystal,
    polar_rotation,
    strain_crystal_to_sample,
    ub_from_deviatoric_strain,
)
from laueflow.physics.ub_variants import choose_ub_variant, proper_rotations

UB_KEY = "UB matrix in q= (UB) B0 G*"
CRYSTAL_KEY = "deviatoric strain in direct crystal frame (10-3 unit)"
SAMPLE_KEY = "deviatoric strain in sample2 frame (10-3 unit)"
EULER_KEY = "Euler angles phi theta psi (deg)"
MATERIALS = ["Cu", "GaN"]
NY, NX, POINT = 1, 2, (0, 1)


def _grain(name, seed):
    """A strained grain whose UB is the `identity` variant times a non-trivial symmetry rotation."""
    material = get_material(name)
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 5e-4, (3, 3))
    e = (e + e.T) / 2
    e -= np.trace(e) / 3 * np.eye(3)
    ub = ub_from_deviatoric_strain(random_orientations(1, seed=seed)[0], e, material.lattice_parameters)
    canonical = choose_ub_variant(ub, material, "identity").ub
    _, rotations = proper_rotations(material)
    return canonical @ rotations[3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ubs = [_grain("Cu", 4), _grain("GaN", 8)]
    cols, rows, grains, hkls = [], [], [], []
    for g, (name, ub) in enumerate(zip(MATERIALS, ubs)):
        spots = simulate_spots(get_material(name), ub, CAL)
        cols.append(spots.col), rows.append(spots.row), grains.append(np.full(len(spots), g)), hkls.append(spots.hkl)
    n = sum(map(len, cols))
    n_peak, n_grain = n + 3, 3  # 3 unindexed peaks; grain slot 2 empty
    shape = (NY, NX)
    peak = lambda fill, dtype=np.float32: np.full(shape + (n_peak,), fill, dtype)  # noqa: E731
    col, row, grain, hkl = peak(np.nan), peak(np.nan), peak(-1, np.int16), np.zeros(shape + (n_peak, 3), np.int32)
    col[POINT][:n], row[POINT][:n] = np.concatenate(cols), np.concatenate(rows)
    col[POINT][n:], row[POINT][n:] = [100.0, 900.0, 1500.0], [200.0, 1000.0, 300.0]
    grain[POINT][:n], hkl[POINT][:n] = np.concatenate(grains), np.concatenate(hkls)
    orientation = np.full(shape + (n_grain, 3, 3), np.nan)
    orientation[POINT][:2] = ubs
    status = np.full(shape + (n_grain,), 4, np.int8)
    status[POINT][:2] = 0
    material = np.full(shape + (n_grain,), -1, np.int16)
    material[POINT][:2] = [0, 1]
    ds = xr.Dataset(
        {
            "peak_col": (("y", "x", "peak"), col), "peak_row": (("y", "x", "peak"), row),
            "peak_intensity": (("y", "x", "peak"), np.where(np.isfinite(col), 100.0, np.nan).astype(np.float32)),
            "peak_background": (("y", "x", "peak"), np.where(np.isfinite(col), 10.0, np.nan).astype(np.float32)),
            "grain_material": (("y", "x", "grain"), material),
            "refined_orientation": (("y", "x", "grain", "i3", "j3"), orientation),
            "strain_status": (("y", "x", "grain"), status),
            "peak_grain_refined": (("y", "x", "peak"), grain),
            "peak_hkl_refined": (("y", "x", "peak", "i3"), hkl),
        },
        attrs={"calibration": CAL.to_dict(), "materials": MATERIALS},
    )
    with warnings.catch_warnings():  # consolidated, as `laueflow run` leaves a results store
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the Zarr v3 spec"
        ds.to_zarr(root / "results.zarr", mode="w", zarr_format=3, consolidated=True)
    return {"root": root, "results": root / "results.zarr", "ubs": ubs}


def _export(store, out, *extra):
    return main(["export", str(store["results"]), "--point", f"{POINT[0]},{POINT[1]}", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def exported(store):
    out = {}
    for variant in ("laueflow", "identity", "lauetools", "sample"):
        folder = store["root"] / variant
        assert _export(store, folder, "--ub-variant", variant) == 0
        out[variant] = [read_fit(folder / f"laueflow_y{POINT[0]}_x{POINT[1]}_g{g}.fit") for g in range(2)]
    assert _export(store, store["root"] / "default") == 0
    out["default"] = [read_fit(store["root"] / "default" / f"laueflow_y{POINT[0]}_x{POINT[1]}_g{g}.fit") for g in range(2)]
    return out


def _hkl(fit):
    return np.column_stack([fit["spots"]["h"], fit["spots"]["k"], fit["spots"]["l"]])


def _q(fit):
    return np.column_stack([fit["spots"]["Qx"], fit["spots"]["Qy"], fit["spots"]["Qz"]])


@pytest.mark.parametrize("g", [0, 1], ids=MATERIALS)
def test_default_is_the_stored_ub(store, exported, g):
    for variant in ("default", "laueflow"):
        fit = exported[variant][g]
        assert np.array_equal(fit[UB_KEY], np.round(store["ubs"][g], 8))
        assert fit["laueflow UB variant: laueflow"] is None
        assert np.array_equal(fit["laueflow hkl transform T: hkl = T hkl_laueflow, UB = UB_laueflow B0 T^-1 B0^-1"], np.eye(3))
    assert np.abs(exported["laueflow"][g]["spots"]["pixDev"]).max() < 1e-4


@pytest.mark.parametrize("g", [0, 1], ids=MATERIALS)
def test_identity_variant_moves_ub_hkl_and_crystal_strain_consistently(store, exported, g):
    material = get_material(MATERIALS[g])
    latt = material.lattice_parameters
    stored = store["ubs"][g]
    variant = choose_ub_variant(stored, material, "identity")
    before, after = exported["laueflow"][g], exported["identity"][g]
    # UB: the identity variant, a different matrix from the stored one (UB · S, S ≠ I)
    assert np.abs(after[UB_KEY] - variant.ub).max() < 1e-8
    assert np.abs(after[UB_KEY] - stored).max() > 0.1
    # hkl: h' = S⁻¹ h for every spot, and the same spot set: Q, theoretical pixels, energies unchanged
    assert np.array_equal(_hkl(after), variant.hkl(_hkl(before)))
    assert not np.array_equal(_hkl(after), _hkl(before))
    for column in ("Xtheo", "Ytheo", "energy(keV)", "pixDev", "spot_index"):
        assert np.abs(after["spots"][column] - before["spots"][column]).max() < 1e-5, column
    assert np.abs(_q(after) - _q(before)).max() < 1e-5
    # orientation: Euler angles of the new UB's rotation part
    assert np.abs(after[EULER_KEY][0] - matrix_to_euler(polar_rotation(variant.ub))).max() < 1e-3
    # crystal-frame strain: ε' = S_dᵀ ε S_d; sample-frame strain unchanged (file: 1e-3 units, 3 decimals)
    eps = deviatoric_strain_crystal(stored, latt)
    assert np.abs(before[CRYSTAL_KEY] - eps * 1e3).max() <= 5e-4
    assert np.abs(after[CRYSTAL_KEY] - variant.strain_crystal(eps) * 1e3).max() <= 2e-3
    assert np.abs(after[CRYSTAL_KEY] - before[CRYSTAL_KEY]).max() > 0.05  # components really moved
    assert np.abs(after[SAMPLE_KEY] - before[SAMPLE_KEY]).max() <= 2e-3
    assert np.abs(after[SAMPLE_KEY] - strain_crystal_to_sample(eps, stored, latt) * 1e3).max() <= 2e-3
    assert after["laueflow UB variant: identity"] is None


@pytest.mark.parametrize("g", [0, 1], ids=MATERIALS)
def test_other_variants(store, exported, g):
    material = get_material(MATERIALS[g])
    for name in ("lauetools", "sample"):
        fit = exported[name][g]
        variant = choose_ub_variant(store["ubs"][g], material, name)
        assert np.abs(fit[UB_KEY] - variant.ub).max() < 1e-8
        assert np.array_equal(_hkl(fit), variant.hkl(_hkl(exported["laueflow"][g])))
        assert np.abs(_q(fit) - _q(exported["laueflow"][g])).max() < 1e-5


def _lauetools_layout_fit(path, ub):
    """A .fit file in LaueTools' own layout ('##' column line, numpy-style matrix rows)."""
    rows = ["#[[" + " ".join(f"{v: .9f}" for v in ub[0]) + "]"] + \
           ["# [" + " ".join(f"{v: .9f}" for v in r) + "]" for r in ub[1:2]] + \
           ["# [" + " ".join(f"{v: .9f}" for v in ub[2]) + "]]"]
    path.write_text("\n".join([
        "#Strain and Orientation Refinement from experimental file: img_0001.cor",
        "#Number of indexed spots: 1", "#Element", "#Cu", "#grainIndex", "#G_0",
        "##spot_index intensity h k l 2theta Chi Xexp Yexp Energy GrainIndex PixDev",
        "0.000000 50.0 1.000000 1.000000 1.000000 80.0 10.0 1000.0 900.0 9.0 0.000000 0.1",
        "#UB matrix in q= (UB) B0 G* ", *rows, "#B0 matrix in q= UB (B0) G*",
        "#[[ 0.27 -0. 0.]", "# [ 0. 0.27 -0.]", "# [ 0. 0. 0.27]]", "#Euler angles phi theta psi (deg)",
        "#[150.14   83.112 174.149]", ""]))
    return path


@pytest.mark.parametrize("g", [0, 1], ids=MATERIALS)
def test_reference_variant_from_fit_npy_and_text(store, exported, g, tmp_path):
    material = get_material(MATERIALS[g])
    target = choose_ub_variant(store["ubs"][g], material, "lauetools").ub
    # a reference a little misoriented from the lauetools variant of the same grain
    reference = random_orientations(1, seed=0)[0]
    reference = polar_rotation(target) @ polar_rotation(np.eye(3) + 0.02 * (reference - reference.T))
    np.save(tmp_path / "ref.npy", reference)
    (tmp_path / "ref.txt").write_text("# UB\n" + "\n".join(" ".join(f"{v:.12f}" for v in r) for r in reference) + "\n")
    (tmp_path / "ref_brackets.txt").write_text(str(reference.round(12).tolist()))
    files = [tmp_path / "ref.npy", tmp_path / "ref.txt", tmp_path / "ref_brackets.txt",
             _lauetools_layout_fit(tmp_path / "lt.fit", reference)]
    for k, file in enumerate(files):
        out = tmp_path / f"out{k}"
        assert _export(store, out, "--ub-variant", f"reference:{file}") == 0
        fit = read_fit(out / f"laueflow_y{POINT[0]}_x{POINT[1]}_g{g}.fit")
        assert np.abs(fit[UB_KEY] - target).max() < 1e-8, file.name
        assert np.array_equal(_hkl(fit), _hkl(exported["lauetools"][g]))
    # a laueflow .fit works as a reference too: reference = the identity export → identity variant
    identity_fit = store["root"] / "identity" / f"laueflow_y{POINT[0]}_x{POINT[1]}_g{g}.fit"
    assert _export(store, tmp_path / "again", "--ub-variant", f"reference:{identity_fit}") == 0
    again = read_fit(tmp_path / "again" / f"laueflow_y{POINT[0]}_x{POINT[1]}_g{g}.fit")
    assert np.abs(again[UB_KEY] - exported["identity"][g][UB_KEY]).max() < 1e-8


def test_bad_ub_variant_values_say_what_to_do(store, tmp_path, capsys):
    (tmp_path / "four.txt").write_text("1 0 0 1\n")
    (tmp_path / "left.txt").write_text("-1 0 0\n0 1 0\n0 0 1\n")
    (tmp_path / "empty.fit").write_text("#spot_index h k l\n1 1 1 1\n")
    cases = [
        ("closest", "unknown --ub-variant 'closest': choose laueflow, identity, lauetools, sample or reference:FILE"),
        ("reference", "--ub-variant reference needs a file: reference:FILE"),
        ("reference:", "--ub-variant reference needs a file: reference:FILE"),
        (f"reference:{tmp_path / 'missing.fit'}", f"reference UB file not found: {tmp_path / 'missing.fit'}; give a .fit file"),
        (f"reference:{tmp_path / 'four.txt'}", f"the UB in {tmp_path / 'four.txt'} must be a 3×3 matrix, got shape (4,); give"),
        (f"reference:{tmp_path / 'left.txt'}", "is not a right-handed orientation matrix (det = -1"),
        (f"reference:{tmp_path / 'empty.fit'}", f"could not read a 3×3 UB matrix from {tmp_path / 'empty.fit'} "
                                                "(no 'UB matrix in q= (UB) B0 G*' block); give a .fit file"),
    ]
    for value, message in cases:
        assert _export(store, tmp_path / "out", f"--ub-variant={value}") == 2, value
        err = capsys.readouterr().err
        assert "laueflow export: error: " in err and message in err, (value, err)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_help_shows_the_option_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "--ub-variant VARIANT" in text
    assert "laueflow export demo/results.zarr --point 3,4 --ub-variant lauetools" in text
    assert "--ub-variant reference:" in text
