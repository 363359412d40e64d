"""`laueflow index`: the real command on simulated peak lists of known strained Cu grains (.dat with
pixels from the calibration, .cor with its header, a .dat without intensities in shuffled order, a
.cor without pixel columns, a broken file), serially and on a local cluster of 2 workers, with a
small indexer model trained once into a temporary cache."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import replace

import numpy as np
import pytest

from laueflow.cli.main import main
from laueflow.io.detfile import write_det
from laueflow.io.lauetools_files import read_fit, write_cor, write_dat
from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations
from laueflow.physics.strain import polar_rotation, strain_crystal_to_sample, ub_from_deviatoric_strain
from laueflow.physics.ub_variants import choose_ub_variant
from laueflow.pipeline.indexers import get_indexer
from tiny_models import TINY

#: TINY with less training (≈ 7 s on 2 cores; 97 % validation accuracy: enough for clean patterns)
CONFIG = replace(TINY, n_train=80, n_validation=20, epochs=8)
CU = get_material("Cu")
UB_KEY = "UB matrix in q= (UB) B0 G*"
SAMPLE_KEY = "deviatoric strain in sample2 frame (10-3 unit)"


def _grain(seed):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 5e-4, (3, 3))
    e = (e + e.T) / 2
    e -= np.trace(e) / 3 * np.eye(3)
    return ub_from_deviatoric_strain(random_orientations(1, seed=seed)[0], e, CU.lattice_parameters), e


def _spots(seeds):
    grains = [_grain(s) for s in seeds]
    parts = [simulate_spots(CU, ub, CAL) for ub, _ in grains]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return grains, cat("col"), cat("row"), cat("intensity") * 1e4, cat("two_theta"), cat("chi"), cat("hkl")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    cache = root / "cache"
    get_indexer(["Cu"], CAL, CONFIG, cache_dir=cache, verbose=False, threads=1)
    (root / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    write_det(root / "calib.det", CAL, material="Si")
    peaks = root / "peaks"
    peaks.mkdir()
    truth = {}
    g, col, row, inten, *_ = _spots([11])
    write_dat(peaks / "one.dat", col, row, inten, np.full(len(col), 100.0))
    truth["one"] = g
    g, col, row, inten, *_ = _spots([12, 13])
    write_cor(peaks / "two.cor", col, row, inten, CAL)
    truth["two"] = g
    g, col, row, *_ = _spots([14])  # pixels only, shuffled: no intensity to order the spots
    order = np.random.default_rng(0).permutation(len(col))
    (peaks / "plain.dat").write_text("peak_X peak_Y\n" + "".join(
        f"{c + 1:.3f} {r + 1:.3f}\n" for c, r in zip(col[order], row[order])))
    truth["plain"] = g
    g, _, _, inten, tth, chi, _ = _spots([15])  # LaueTools' 3-column .cor: 2theta chi I
    (peaks / "angles.cor").write_text("2theta chi I\n" + "".join(
        f"{t:.6f}   {c:.6f}   {i:.3f}\n" for t, c, i in zip(tth, chi, inten))
        + "".join(f"# {k}     :   {v}\n" for k, v in zip(("dd", "xcen", "ycen", "xbet", "xgam"), CAL.parameters))
        + f"# pixelsize     :   {CAL.pixel_size_mm}\n# framedim     :   (2018, 2016)\n")
    truth["angles"] = g
    write_dat(peaks / "blank.dat", [], [], [], [])  # a blank image: no peaks, no grain, no failure
    (peaks / "broken.dat").write_text("peak_X peak_Y peak_I\n101.0 200.5 7\n102.0 oops 8\n")
    common = ["--material", "Cu", "--cache-dir", str(cache), "--indexer-config", str(root / "config.json"),
              "--no-train", "--max-grains", "2"]
    return {"root": root, "peaks": peaks, "det": str(root / "calib.det"), "truth": truth, "common": common}


def _summary(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _misorientation_deg(a, b):
    r = polar_rotation(a).T @ polar_rotation(b)
    return float(np.rad2deg(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def _check_fit(path, truth_grains, *, strain=True):
    """The .fit grain is one of the truth grains: UB within 0.1°, every spot's hkl the truth's (in
    the truth's symmetry variant), sample-frame strain (variant-independent) as simulated."""
    fit = read_fit(path)
    ub = fit[UB_KEY]
    best = min(truth_grains, key=lambda g: _misorientation_deg(choose_ub_variant(ub, CU, "reference", g[0]).ub, g[0]))
    true_ub, true_eps = best
    variant = choose_ub_variant(ub, CU, "reference", true_ub)
    assert _misorientation_deg(variant.ub, true_ub) < 0.1
    spots = simulate_spots(CU, true_ub, CAL)
    s = fit["spots"]
    assert len(s["h"]) >= 20
    for x, y, hkl in zip(s["Xexp"], s["Yexp"], np.column_stack([s["h"], s["k"], s["l"]])):
        i = np.argmin(np.hypot(spots.col + 1 - x, spots.row + 1 - y))
        assert np.hypot(spots.col[i] + 1 - x, spots.row[i] + 1 - y) < 0.05
        np.testing.assert_array_equal(variant.hkl(hkl.astype(int)), spots.hkl[i])
    if strain:
        want = strain_crystal_to_sample(true_eps, true_ub, CU.lattice_parameters) * 1e3
        np.testing.assert_allclose(fit[SAMPLE_KEY], want, atol=0.03)  # 3e-5: pixels written to 0.01 px
    else:
        assert SAMPLE_KEY not in fit
    return fit


def _run(data, out, *extra):
    return main(["index", str(data["peaks"]), "--calibration", data["det"], "--out", str(out), *data["common"], *extra])


@pytest.fixture(scope="module")
def serial(data):
    out = data["root"] / "serial"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = _run(data, out, "--serial")
    return rc, out, stdout.getvalue(), stderr.getvalue()


def test_index_serial_writes_fit_files_matching_the_truth(data, serial):
    rc, out, stdout, stderr = serial
    assert rc == 1  # broken.dat failed; the others were written
    rows = _summary(out / "summary.csv")
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].rsplit("/", 1)[-1], []).append(row)
    assert sorted(by_file) == ["angles.cor", "blank.dat", "broken.dat", "one.dat", "plain.dat", "two.cor"]
    (broken,) = by_file.pop("broken.dat")
    assert "line 3: not a row of numbers" in broken["error"] and broken["grain"] == ""
    (blank,) = by_file.pop("blank.dat")
    assert blank["n_peaks"] == "0" and blank["error"] == "" and blank["grain"] == ""
    assert blank["note"] == "no grain found; 0 peak(s): nothing to index"
    for name, file_rows in by_file.items():
        stem = name.split(".")[0]
        truth = data["truth"][stem]
        assert [r["grain"] for r in file_rows] == [str(k) for k in range(len(truth))], name
        for r in file_rows:
            assert r["error"] == "" and r["material"] == "Cu" and float(r["matching_rate"]) > 90
            assert r["fit_file"] == f"{stem}_g{r['grain']}.fit"
            fit = _check_fit(out / r["fit_file"], truth, strain=stem != "angles")
            euler = [float(r[k]) for k in ("euler_phi1_deg", "euler_Phi_deg", "euler_phi2_deg")]
            np.testing.assert_allclose(euler, fit["Euler angles phi theta psi (deg)"].ravel(), atol=2e-3)
            assert r["strain_status"] == ("not refined: no pixel columns" if stem == "angles" else "ok")
            assert r["variant_ambiguous"] == "0"  # cubic Cu: no variant puts every spot at the same place
        n_peaks = int(file_rows[0]["n_peaks"])
        assert n_peaks == sum(len(simulate_spots(CU, ub, CAL)) for ub, _ in truth)
        assert int(file_rows[0]["n_predict"]) == min(n_peaks, 50)  # max(40 centres, 25 × 2 grains)
        assert min(n_peaks, 50) <= int(file_rows[0]["n_seed_spots"]) <= n_peaks  # blocks of 50 until explained
    assert by_file["plain.dat"][0]["intensities"] == "none"
    assert "spots used in file order" in by_file["plain.dat"][0]["note"]
    assert by_file["one.dat"][0]["intensities"] == by_file["two.cor"][0]["intensities"] == "given"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.csv", "one_g0.fit", "two_g0.fit", "two_g1.fit", "plain_g0.fit", "angles_g0.fit"])
    assert "1 without grain, 1 failed" in stdout and "broken.dat: line 3: not a row of numbers" in stderr
    assert "without intensities" in stdout and "without pixel columns" in stdout


def test_index_on_a_local_cluster_of_two_workers_gives_the_serial_result(data, serial):
    serial_out = serial[1]
    out = data["root"] / "cluster"
    assert _run(data, out, "--workers", "2", "--summary", "summary.tsv") == 1
    with open(out / "summary.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows == _summary(serial_out / "summary.csv")
    for fit in serial_out.glob("*.fit"):
        np.testing.assert_allclose(read_fit(out / fit.name)[UB_KEY], read_fit(fit)[UB_KEY], atol=1e-12)


def test_overwrite_is_refused_then_replaces_only_this_runs_files(data, capsys):
    out = data["root"] / "overwrite"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "one_g1.fit").write_text("old")  # a name this run may write (2 grains searched)
    args = ["index", str(data["peaks"] / "one.dat"), "--calibration", data["det"], "--out", str(out), "--serial",
            *data["common"]]
    assert main(args) == 2
    assert "already holds 1 file(s)" in capsys.readouterr().err and not (out / "one_g0.fit").exists()
    assert main(args + ["--overwrite"]) == 0
    _check_fit(out / "one_g0.fit", data["truth"]["one"])
    assert (out / "notes.txt").read_text() == "mine" and (out / "one_g1.fit").read_text() == "old"
    assert "1 older file(s) of the same names were not rewritten" in capsys.readouterr().out
    assert [r["fit_file"] for r in _summary(out / "summary.csv")] == ["one_g0.fit"]


def test_calibration_from_cor_headers_and_the_det_winning(data, capsys, tmp_path):
    two = data["peaks"] / "two.cor"
    common = data["common"] + ["--serial"]
    # .cor files alone: their header calibration
    assert main(["index", str(two), "--out", str(tmp_path / "a"), *common]) == 0
    _check_fit(tmp_path / "a" / "two_g0.fit", data["truth"]["two"])
    # a .cor whose header (and angles) come from another calibration, but true pixel columns:
    # --calibration wins, the angles are recomputed from the pixels, and the file gets a warning
    other = CAL.replace(distance_mm=CAL.distance_mm + 1.5, xcen_px=CAL.xcen_px - 20)
    g, col, row, inten, *_ = _spots([16])
    write_cor(tmp_path / "shifted.cor", col, row, inten, other)
    assert main(["index", str(tmp_path / "shifted.cor"), "--calibration", data["det"], "--out", str(tmp_path / "b"),
                 *common]) == 0
    _check_fit(tmp_path / "b" / "shifted_g0.fit", g)
    (row0,) = _summary(tmp_path / "b" / "summary.csv")
    assert "header calibration differs from --calibration (dd" in row0["note"]
    assert "recomputed from the pixel columns" in capsys.readouterr().err
    # without --calibration: two different headers, or a .dat → refused before anything runs
    for inputs, message in [([two, tmp_path / "shifted.cor"], "hold 2 different calibrations"),
                            ([data["peaks"] / "one.dat"], "--calibration FILE.det is needed for .dat files")]:
        assert main(["index", *map(str, inputs), "--out", str(tmp_path / "c"), *common]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_argument_errors_exit_2(data, capsys, tmp_path):
    base = ["index", str(data["peaks"] / "one.dat"), "--calibration", data["det"], "--serial"]
    cases = [
        (["--out", str(tmp_path / "o"), "--material", "Cu", "--cache-dir", str(tmp_path / "empty"), "--no-train",
          "--indexer-config", str(data["root"] / "config.json")], "laueflow train indexer --material Cu"),
        (["--out", str(tmp_path / "o"), *data["common"], "--ub-variant", "nearest"], "unknown --ub-variant"),
        (["--out", str(tmp_path / "o"), *data["common"], "--material", "Unobtainium"], "unknown material"),
        (["--out", str(tmp_path / "o"), *data["common"], "--summary", "table.xlsx"], "--summary must"),
        (["--out", str(tmp_path / "o"), *data["common"][:-2], "--max-grains", "0"], "--max-grains must be ≥ 1"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, message
        assert message in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing.dat"), "--out", str(tmp_path / "o"), *data["common"]]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["index", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "laueflow index peaks/ --calibration calib.det --material Cu --out fits/" in text


def test_folder_takes_the_cor_of_a_dat_and_name_clashes_are_refused(data, capsys, tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    g, col, row, inten, *_ = _spots([17])
    write_dat(folder / "x.dat", col, row, inten, np.full(len(col), 10.0))
    write_cor(folder / "x.cor", col, row, inten, CAL)
    (folder / "notes.txt").write_text("not a peak list")
    out = tmp_path / "out"
    assert main(["index", str(folder), "--out", str(out), "--serial", *data["common"]]) == 0
    assert "1 .dat file(s) left out: a .cor of the same name is next to each" in capsys.readouterr().out
    assert [r["file"] for r in _summary(out / "summary.csv")] == [str(folder / "x.cor")]
    _check_fit(out / "x_g0.fit", g)
    assert main(["index", str(folder / "x.dat"), str(folder / "x.cor"), "--calibration", data["det"],
                 "--out", str(tmp_path / "out2"), "--serial", *data["common"]]) == 2
    assert "would write the same output names" in capsys.readouterr().err
