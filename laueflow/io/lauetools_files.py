"""LaueTools-style text files: ``.dat`` and ``.cor`` peak lists and ``.fit`` refinement results.

Written so that users can cross-check laueflow results in LaueTools. Pixel positions in these
files use LaueTools' convention ``X = col + 1, Y = row + 1`` (laueflow arrays are 0-based);
strain in ``.fit`` files is in 10⁻³ units, as LaueTools writes it.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ..physics.geometry import LAUETOOLS_PIXEL_OFFSET, Calibration, pixel_to_angles
from ..physics.materials import Material
from ..physics.orientations import matrix_to_euler
from ..physics.simulate import HC_KEV_ANGSTROM
from ..physics.strain import (
    deviatoric_strain_crystal,
    lattice_parameters_from_ub,
    polar_rotation,
    strain_crystal_to_sample,
    von_mises_strain,
)
from ..physics.ub_variants import UB_VARIANTS, check_reference_ub, choose_ub_variant
from ..stages.strain.model import predict_pixels
from .detfile import parse_key_value_comments

__all__ = ["write_dat", "write_cor", "read_cor", "write_fit", "read_fit", "read_reference_ub", "parse_ub_variant"]

_DAT_COLUMNS = "peak_X peak_Y peak_Itot peak_Isub peak_fwaxmaj peak_fwaxmin peak_inclination Xdev Ydev peak_bkg Ipixmax"


def _now():
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _calibration_comments(calibration: Calibration) -> list[str]:
    c = calibration
    return [
        f"# dd : {c.distance_mm!r}", f"# xcen : {c.xcen_px!r}", f"# ycen : {c.ycen_px!r}",
        f"# xbet : {c.xbet_deg!r}", f"# xgam : {c.xgam_deg!r}", f"# pixelsize : {c.pixel_size_mm!r}",
        f"# CCDLabel : {c.detector_name}", f"# framedim : {tuple(c.frame_shape)}", "# kf_direction : Z>0",
    ]


def write_dat(path, col, row, intensity, background, *, sigma_major=None, sigma_minor=None, max_pixel=None, source: str = "") -> Path:
    """Peak list in LaueTools ``.dat`` layout (rows sorted by decreasing intensity above background)."""
    col, row = np.asarray(col, float), np.asarray(row, float)
    keep = np.isfinite(col) & np.isfinite(row)
    order = np.argsort(-np.asarray(intensity, float)[keep], kind="stable")
    pick = lambda a, fill=0.0: (np.full(len(col), fill) if a is None else np.asarray(a, float))[keep][order]  # noqa: E731
    isub, bkg = pick(intensity), pick(background)
    table = np.column_stack([
        pick(col) + LAUETOOLS_PIXEL_OFFSET, pick(row) + LAUETOOLS_PIXEL_OFFSET, isub + bkg, isub,
        pick(sigma_major, 1.0), pick(sigma_minor, 1.0), np.zeros(len(isub)), np.zeros(len(isub)), np.zeros(len(isub)),
        bkg, pick(max_pixel, np.nan),
    ])
    lines = [_DAT_COLUMNS]
    for r in table:
        lines.append(" ".join(f"{v:.2f}" for v in r[:6]) + f" {r[6]:.3f} " + " ".join(f"{v:.2f}" for v in r[7:10]) + f" {np.nan_to_num(r[10]):.0f}")
    lines += [f"# File created at {_now()} with laueflow", f"# From image: {source}", f"# nb of peaks : {len(table)}"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_cor(path, col, row, intensity, calibration: Calibration, *, source: str = "") -> Path:
    """Peak list with angles in LaueTools ``.cor`` layout (``2theta chi X Y I`` + calibration)."""
    col, row, intensity = (np.asarray(a, float) for a in (col, row, intensity))
    keep = np.isfinite(col) & np.isfinite(row)
    col, row, intensity = col[keep], row[keep], intensity[keep]
    two_theta, chi = pixel_to_angles(col, row, calibration)
    lines = ["2theta chi X Y I"]
    lines += [f"{t:.5f} {c:.5f} {x + LAUETOOLS_PIXEL_OFFSET:.5f} {y + LAUETOOLS_PIXEL_OFFSET:.5f} {i:.5f}"
              for t, c, x, y, i in zip(two_theta, chi, col, row, intensity)]
    lines += [f"# File created at {_now()} with laueflow", f"# From: {source}", *_calibration_comments(calibration)]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_cor(path):
    """Read a ``.cor`` file → (dict of columns with 0-based ``col``/``row``, calibration dict of raw strings)."""
    lines = Path(path).read_text().splitlines()
    names = lines[0].split()
    rows = [list(map(float, ln.split())) for ln in lines[1:] if ln.strip() and not ln.startswith("#")]
    data = np.array(rows).reshape(-1, len(names))
    columns = {n: data[:, i] for i, n in enumerate(names)}
    columns["col"] = columns.pop("X") - LAUETOOLS_PIXEL_OFFSET
    columns["row"] = columns.pop("Y") - LAUETOOLS_PIXEL_OFFSET
    return columns, parse_key_value_comments(lines)


_FIT_COLUMNS = ("spot_index Intensity h k l pixDev energy(keV) Xexp Yexp 2theta_exp chi_exp "
                "Xtheo Ytheo 2theta_theo chi_theo Qx Qy Qz grainindex")


def _matrix_block(label, matrix, fmt="{:.8f}"):
    m = np.atleast_2d(matrix)
    return [f"#{label}"] + ["#[" + " ".join(fmt.format(v) for v in row) + "]" for row in m]


def write_fit(path, *, ub, material: Material, calibration: Calibration, hkl, obs_col, obs_row,
              intensity=None, spot_index=None, grain_index: int = 0, source: str = "",
              ub_variant: str = "laueflow", reference_ub=None) -> Path:
    """One refined grain as a LaueTools-style ``.fit`` file.

    Theoretical positions, energies and ``Q`` (LT frame) are computed from ``ub``; strain blocks
    are in 10⁻³ units, crystal and sample (40°) frames.

    ``ub_variant`` picks the symmetry-equivalent UB written (:mod:`laueflow.physics.ub_variants`:
    ``laueflow`` = ``ub`` as given, ``identity``, ``lauetools``, ``sample``, ``reference`` with
    ``reference_ub``); the hkl of every spot are transformed with it (same ``Q``), and the
    orientation, strain and lattice-parameter blocks are computed from the written UB. A footer
    block records the variant and the integer ``T`` with ``hkl(file) = T · hkl(ub)``.
    """
    variant = choose_ub_variant(ub, material, ub_variant, reference_ub)
    ub = variant.ub
    hkl = variant.hkl(np.asarray(hkl, float))
    obs_col, obs_row = np.asarray(obs_col, float), np.asarray(obs_row, float)
    n = len(hkl)
    intensity = np.ones(n) if intensity is None else np.asarray(intensity, float)
    spot_index = np.arange(n) if spot_index is None else np.asarray(spot_index)
    b0 = material.b_matrix
    q = hkl @ (ub @ b0).T
    theo_col, theo_row = predict_pixels(q, calibration)
    energy = HC_KEV_ANGSTROM * np.einsum("ij,ij->i", q, q) / (-2 * q[:, 0])
    tth_exp, chi_exp = pixel_to_angles(obs_col, obs_row, calibration)
    tth_theo, chi_theo = pixel_to_angles(theo_col, theo_row, calibration)
    deviation = np.hypot(obs_col - theo_col, obs_row - theo_row)
    table = np.column_stack([
        spot_index, intensity, hkl, deviation, energy, obs_col + 1, obs_row + 1, tth_exp, chi_exp,
        theo_col + 1, theo_row + 1, tth_theo, chi_theo, q, np.full(n, grain_index),
    ])
    latt = material.lattice_parameters
    crystal = deviatoric_strain_crystal(ub, latt)
    sample = strain_crystal_to_sample(crystal, ub, latt)
    lines = [
        f"#Strain and Orientation Refinement from experimental file: {source}",
        f"#File created at {_now()} with laueflow",
        f"#Number of indexed spots: {n}", "#Element", f"#{material.name}", "#grainIndex", f"#G_{grain_index}",
        f"#Mean Deviation(pixel): {np.mean(deviation):.3f}", "#" + _FIT_COLUMNS,
    ]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in table]
    lines += _matrix_block("UB matrix in q= (UB) B0 G* ", ub)
    lines += _matrix_block("B0 matrix in q= UB (B0) G*", b0)
    lines += _matrix_block("UBB0 matrix in q= (UB B0) G* i.e. recip. basis vectors are columns in LT frame", ub @ b0)
    lines += _matrix_block("Euler angles phi theta psi (deg)", matrix_to_euler(polar_rotation(ub)), "{:.3f}")
    lines += _matrix_block("deviatoric strain in direct crystal frame (10-3 unit)", crystal * 1e3, "{:.3f}")
    lines += _matrix_block("deviatoric strain in sample2 frame (10-3 unit)", sample * 1e3, "{:.3f}")
    lines += [f"#equivalent (von Mises) strain (10-3 unit)", f"#{von_mises_strain(crystal) * 1e3:.3f}"]
    lines += _matrix_block("new lattice parameters", lattice_parameters_from_ub(ub, latt), "{:.7f}")
    lines += ["#CCDLabel", f"#{calibration.detector_name}", "#DetectorParameters",
              "#[" + ", ".join(f"{v:.3f}" for v in calibration.parameters) + "]",
              "#pixelsize", f"#{calibration.pixel_size_mm}", "#Frame dimensions", f"#{tuple(calibration.frame_shape)}"]
    lines += [f"#laueflow UB variant: {variant.name}"]
    lines += _matrix_block("laueflow hkl transform T: hkl = T hkl_laueflow, UB = UB_laueflow B0 T^-1 B0^-1", variant.hkl_transform, "{:.0f}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_fit(path) -> dict:
    """Read a ``.fit`` file written by :func:`write_fit` (or LaueTools): spot table + labelled blocks.

    Matrix rows may be written ``#[a b c]`` (laueflow) or numpy-style ``#[[a b c]`` / ``# [d e f]]``
    (LaueTools); the column-name line may start with ``#`` or ``##``.
    """
    lines = Path(path).read_text().splitlines()
    header = next((i for i, ln in enumerate(lines) if ln.lstrip("#").startswith("spot_index")), None)
    if header is None:
        raise ValueError(f"{path}: no spot table header (a '#spot_index ...' line): not a .fit file")
    names = lines[header].lstrip("#").split()
    rows, blocks, label = [], {}, None
    for ln in lines[header + 1:]:
        if not ln.startswith("#"):
            if ln.strip():
                rows.append(list(map(float, ln.split())))
        elif ln[1:].lstrip().startswith("["):
            blocks.setdefault(label, []).append([float(v) for v in ln[1:].strip().strip("[]").replace(",", " ").split()])
        else:
            label = ln[1:].strip()
            blocks.setdefault(label, [])
    data = np.array(rows).reshape(-1, len(names))
    out = {"spots": {n: data[:, i] for i, n in enumerate(names)}}
    for key, value in blocks.items():
        out[key] = np.array(value) if value else None
    return out


_UB_LABEL = "ubmatrixinq=(ub)b0g*"


def read_reference_ub(path) -> np.ndarray:
    """A reference orientation matrix (3, 3) from a ``.fit`` file (its ``UB matrix in q= (UB) B0
    G*`` block, laueflow or LaueTools layout), a ``.npy`` file or a text file of 9 numbers.

    Raises ``ValueError`` saying what was wrong and what to give instead.
    """
    path = Path(path)
    hint = ("give a .fit file (LaueTools or laueflow export), a .npy file holding a 3×3 array, or a "
            "text file with the 9 numbers of the 3×3 UB (3 rows of 3)")
    if not path.is_file():
        raise ValueError(f"reference UB file not found: {path}; {hint}")
    try:
        if path.suffix.lower() == ".fit":
            fit = read_fit(path)
            key = next((k for k in fit if k and k.lower().replace(" ", "").startswith(_UB_LABEL)), None)
            if key is None or fit[key] is None:
                raise ValueError("no 'UB matrix in q= (UB) B0 G*' block")
            matrix = fit[key]
        elif path.suffix.lower() == ".npy":
            matrix = np.load(path, allow_pickle=False)
        else:
            text = " ".join(ln.split("#")[0] for ln in path.read_text().splitlines())
            matrix = [float(v) for v in text.replace(",", " ").replace("[", " ").replace("]", " ").split()]
        return check_reference_ub(matrix, where=f"the UB in {path}")
    except (ValueError, OSError) as err:  # UnicodeDecodeError is a ValueError
        message = str(err)
        if message.startswith("the UB in"):
            raise ValueError(f"{message}; {hint}") from None
        raise ValueError(f"could not read a 3×3 UB matrix from {path} ({message}); {hint}") from None


def parse_ub_variant(text: str) -> tuple[str, np.ndarray | None]:
    """``--ub-variant`` value → ``(variant, reference_ub)``: ``laueflow``, ``identity``,
    ``lauetools``, ``sample`` or ``reference:FILE`` (FILE read by :func:`read_reference_ub`).

    Raises ``ValueError`` saying what was wrong and what to do.
    """
    value = str(text).strip()
    name, sep, file = value.partition(":")
    name = name.strip().lower()
    if name == "reference":
        if not sep or not file.strip():
            raise ValueError("--ub-variant reference needs a file: reference:FILE, e.g. "
                             "--ub-variant reference:lauetools/grain_g0.fit (a .fit, .npy or text 3×3 UB)")
        return "reference", read_reference_ub(file.strip())
    if name in UB_VARIANTS and not sep:
        return name, None
    choices = ", ".join(v for v in UB_VARIANTS if v != "reference")
    raise ValueError(f"unknown --ub-variant {value!r}: choose {choices} or reference:FILE "
                     "(e.g. --ub-variant identity, --ub-variant reference:grain_g0.fit)")
