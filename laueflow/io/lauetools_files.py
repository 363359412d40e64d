"""LaueTools-style text files: ``.dat`` and ``.cor`` peak lists and ``.fit`` refinement results.

Written so that users can cross-check laueflow results in LaueTools. Pixel positions in these
files use LaueTools' convention ``X = col + 1, Y = row + 1`` (laueflow arrays are 0-based);
strain in ``.fit`` files is in 10⁻³ units, as LaueTools writes it.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..physics.geometry import LAUETOOLS_PIXEL_OFFSET, Calibration, calibration_from_lauetools, pixel_to_angles
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

__all__ = ["write_dat", "write_cor", "read_cor", "read_dat", "read_peaklist", "PeakList", "header_calibration",
           "PEAKLIST_SUFFIXES", "write_fit", "read_fit", "read_reference_ub", "parse_ub_variant"]

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


# --------------------------------------------------------------------------- peak-list readers
# LaueTools' layouts (IOLaueTools: ``writefile_Peaklist``/``read_Peaklist`` for .dat,
# ``writefile_cor``/``readfile_cor`` for .cor): one line of column names, one row per peak, then
# ``#`` comment lines (``# File created at …``, ``# From: …``, ``# Comments: nb of peaks N``; in
# a .cor the calibration as ``# key : value`` lines, e.g. ``# dd     :   70.1``, ``# framedim :
# (2018, 2016)``). Columns are read by name; files without a name line by their count.

#: column names of a .dat file without a name line, by count (LaueTools' 11- and 10-column
#: layouts and its plain ``X Y I``; ``X Y`` = no intensities)
_DAT_BY_COUNT = {
    2: ["peak_X", "peak_Y"],
    3: ["peak_X", "peak_Y", "peak_I"],
    10: ["peak_X", "peak_Y", "peak_I", "peak_fwaxmaj", "peak_fwaxmin", "peak_inclination", "Xdev", "Ydev",
         "peak_bkg", "Ipixmax"],
    11: _DAT_COLUMNS.split(),
}
#: .cor columns by count when there is no name line (LaueTools reads 3 columns as ``2theta chi I``)
_COR_BY_COUNT = {2: ["2theta", "chi"], 3: ["2theta", "chi", "I"], 4: ["2theta", "chi", "X", "Y"]}
#: LaueTools' "unindexed spots" .cor (first line ``# Unindexed …``): these 6 columns
_COR_UNINDEXED = ["spot_index", "I", "2theta", "chi", "X", "Y"]
_ALIASES = {
    "x": "X", "y": "Y", "peak_x": "X", "peak_y": "Y", "pixx": "X", "pixy": "Y", "xexp": "X", "yexp": "Y",
    "2theta": "2theta", "2θ": "2theta", "twotheta": "2theta", "tth": "2theta", "2theta_exp": "2theta",
    "chi": "chi", "χ": "chi", "chi_exp": "chi",
}
#: intensity columns, preferred first (.dat: background-subtracted before total)
_INTENSITY_NAMES = ("peak_Isub", "peak_I", "I", "Intensity", "intensity", "peak_Itot")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_table(path, by_count: dict, first_comment_names: dict | None = None):
    """(column names, (n, k) float array, every line) of a LaueTools-style text table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"peak list not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    content = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    names = None
    first = next((ln for ln in lines if ln.strip()), "")
    for marker, marker_names in (first_comment_names or {}).items():
        if first.lstrip().startswith(marker):
            names = list(marker_names)
    if names is None and content and not all(_is_number(t) for t in content[0][1].split()):
        names = content.pop(0)[1].split()
    rows = []
    for number, line in content:
        tokens = line.replace(",", " ").split()
        try:
            rows.append([float(t) for t in tokens])
        except ValueError:
            raise ValueError(f"{path}, line {number}: not a row of numbers: {line.strip()[:80]!r}") from None
    if not rows:
        if names is None:
            raise ValueError(f"{path}: no peaks and no line of column names: not a peak list")
        return names, np.zeros((0, len(names))), lines  # a peak list of no peaks (a blank image)
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns ({sorted(widths)})")
    width = widths.pop()
    if names is None:
        if width not in by_count and not (by_count is _COR_BY_COUNT and width >= 5):
            raise ValueError(f"{path}: {width} columns and no line of column names; expected "
                             + " or ".join(str(k) for k in sorted(by_count)) + " columns")
        names = by_count.get(width) or ["2theta", "chi", "X", "Y", "I"] + [f"column_{k}" for k in range(5, width)]
    if len(names) != width:
        raise ValueError(f"{path}: {len(names)} column names ({' '.join(names)}) for {width} columns of numbers")
    return names, np.array(rows, dtype=float).reshape(-1, width), lines


def _columns(names, data) -> dict:
    out = {}
    for i, name in enumerate(names):
        out.setdefault(_ALIASES.get(name.lower(), name), data[:, i])
    return out


def _intensity(columns: dict):
    return next((columns[n] for n in _INTENSITY_NAMES if n in columns), None)


def read_dat(path) -> dict:
    """Read a ``.dat`` peak list (LaueTools' 11- or 10-column layout, ``X Y I`` or ``X Y``).

    Returns every column by its name, plus ``col``/``row`` (0-based: ``X − 1``, ``Y − 1``) and
    ``intensity`` (``peak_Isub``, else ``peak_I``/``I``/``peak_Itot``; absent when the file has no
    intensity column). ``ValueError`` names the file and line of anything unreadable.
    """
    names, data, _ = _read_table(path, _DAT_BY_COUNT)
    columns = _columns(names, data)
    if "X" not in columns or "Y" not in columns:
        raise ValueError(f"{path}: no pixel columns (peak_X, peak_Y) among {' '.join(names)}")
    columns["col"] = columns["X"] - LAUETOOLS_PIXEL_OFFSET
    columns["row"] = columns["Y"] - LAUETOOLS_PIXEL_OFFSET
    intensity = _intensity(columns)
    if intensity is not None:
        columns["intensity"] = intensity
    return columns


def read_cor(path):
    """Read a ``.cor`` file → (columns, header).

    Columns by name (``2theta chi X Y I`` and any extra ones, e.g. LaueTools' ``data_sat`` and
    spot properties; files without a name line: ``2theta chi [I]`` or ``2theta chi X Y [I …]``
    by count; LaueTools' ``# Unindexed`` layout ``spot_index I 2theta chi X Y``), with 0-based
    ``col``/``row`` when the file has pixel columns (X, Y are popped) and ``intensity`` when it has
    an intensity column. ``header``: the ``# key : value`` comment lines as raw strings (the
    calibration: :func:`header_calibration`).
    """
    names, data, lines = _read_table(path, _COR_BY_COUNT, {"# Unindexed": _COR_UNINDEXED})
    columns = _columns(names, data)
    if "2theta" not in columns or "chi" not in columns:
        raise ValueError(f"{path}: no 2theta and chi columns among {' '.join(names)}")
    if "X" in columns and "Y" in columns:
        columns["col"] = columns.pop("X") - LAUETOOLS_PIXEL_OFFSET
        columns["row"] = columns.pop("Y") - LAUETOOLS_PIXEL_OFFSET
    intensity = _intensity(columns)
    if intensity is not None:
        columns["intensity"] = intensity
    return columns, parse_key_value_comments(lines)


def _header_number(header: dict, key: str, path) -> float | None:
    text = header.get(key)
    if text is None or not str(text).strip():
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{path}: header value '{key} : {text}' is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"{path}: header value '{key} : {text}' is not a finite number")
    return value


def header_calibration(header: dict, path="the .cor file") -> Calibration | None:
    """The calibration written in a ``.cor`` header (``# dd : …`` … lines), or None when it holds
    none. Needs ``dd xcen ycen xbet xgam`` and ``pixelsize`` (or ``xpixelsize``); ``framedim``
    (``(2018, 2016)``, ``[2048.0 2048.0]`` …) defaults to 2018 × 2016 when absent. Partial or
    unreadable values are a ``ValueError`` naming what is missing."""
    names = ("dd", "xcen", "ycen", "xbet", "xgam")
    values = {k: _header_number(header, k, path) for k in names}
    pixel = _header_number(header, "xpixelsize", path) or _header_number(header, "pixelsize", path)
    if all(v is None for v in values.values()):
        return None
    missing = [k for k, v in values.items() if v is None] + ([] if pixel else ["pixelsize"])
    if missing:
        raise ValueError(f"{path}: the header calibration lacks {', '.join(missing)}")
    numbers = [values[k] for k in names] + [pixel]
    frame = header.get("framedim")
    if frame:
        dims = [t for t in str(frame).replace("(", " ").replace(")", " ").replace("[", " ").replace("]", " ")
                .replace(",", " ").split()]
        try:
            numbers += [int(float(d)) for d in dims]
        except ValueError:
            raise ValueError(f"{path}: header value 'framedim : {frame}' is not two numbers") from None
        if len(dims) != 2:
            raise ValueError(f"{path}: header value 'framedim : {frame}' is not two numbers")
    label = str(header.get("CCDLabel") or "sCMOS").strip() or "sCMOS"
    try:
        return calibration_from_lauetools(numbers, detector_name=label)
    except ValueError as err:
        raise ValueError(f"{path}: header calibration: {err}") from None


@dataclass
class PeakList:
    """One peak-list file as read: per peak (file order) 0-based ``col``/``row`` (None for a
    ``.cor`` without pixel columns), ``two_theta``/``chi`` (degrees; None for a ``.dat``, whose
    angles come from a calibration), ``intensity`` (None without an intensity column); the
    ``.cor`` header as raw strings and its calibration (None without one)."""

    path: Path
    kind: str
    col: np.ndarray | None
    row: np.ndarray | None
    two_theta: np.ndarray | None
    chi: np.ndarray | None
    intensity: np.ndarray | None
    header: dict
    calibration: Calibration | None

    @property
    def n_peaks(self) -> int:
        return len(self.col if self.col is not None else self.two_theta)


PEAKLIST_SUFFIXES = (".dat", ".cor")


def read_peaklist(path) -> PeakList:
    """A ``.dat`` or ``.cor`` file → :class:`PeakList` (``ValueError`` for anything unreadable)."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind == "dat":
        c = read_dat(path)
        return PeakList(path, kind, c["col"], c["row"], None, None, c.get("intensity"), {}, None)
    if kind == "cor":
        c, header = read_cor(path)
        return PeakList(path, kind, c.get("col"), c.get("row"), c["2theta"], c["chi"], c.get("intensity"),
                        header, header_calibration(header, path))
    raise ValueError(f"{path}: not a peak list (.dat or .cor)")


_FIT_COLUMNS = ("spot_index Intensity h k l pixDev energy(keV) Xexp Yexp 2theta_exp chi_exp "
                "Xtheo Ytheo 2theta_theo chi_theo Qx Qy Qz grainindex")


def _matrix_block(label, matrix, fmt="{:.8f}"):
    m = np.atleast_2d(matrix)
    return [f"#{label}"] + ["#[" + " ".join(fmt.format(v) for v in row) + "]" for row in m]


def write_fit(path, *, ub, material: Material, calibration: Calibration, hkl, obs_col, obs_row,
              intensity=None, spot_index=None, grain_index: int = 0, source: str = "",
              ub_variant: str = "laueflow", reference_ub=None, strain: bool = True) -> Path:
    """One refined grain as a LaueTools-style ``.fit`` file.

    Theoretical positions, energies and ``Q`` (LT frame) are computed from ``ub``; strain blocks
    are in 10⁻³ units, crystal and sample (40°) frames.

    ``ub_variant`` picks the symmetry-equivalent UB written (:mod:`laueflow.physics.ub_variants`:
    ``laueflow`` = ``ub`` as given, ``identity``, ``lauetools``, ``sample``, ``reference`` with
    ``reference_ub``); the hkl of every spot are transformed with it (same ``Q``), and the
    orientation, strain and lattice-parameter blocks are computed from the written UB. A footer
    block records the variant and the integer ``T`` with ``hkl(file) = T · hkl(ub)``.

    ``strain=False``: an orientation without strain refinement (e.g. from indexing alone): the
    strain, von Mises and lattice-parameter blocks are left out (they would read as zero strain)
    and the first line says ``Orientation Refinement`` (LaueTools' wording for that case).
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
        f"#{'Strain and Orientation' if strain else 'Orientation'} Refinement from experimental file: {source}",
        f"#File created at {_now()} with laueflow",
        f"#Number of indexed spots: {n}", "#Element", f"#{material.name}", "#grainIndex", f"#G_{grain_index}",
        f"#Mean Deviation(pixel): {np.mean(deviation):.3f}", "#" + _FIT_COLUMNS,
    ]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in table]
    lines += _matrix_block("UB matrix in q= (UB) B0 G* ", ub)
    lines += _matrix_block("B0 matrix in q= UB (B0) G*", b0)
    lines += _matrix_block("UBB0 matrix in q= (UB B0) G* i.e. recip. basis vectors are columns in LT frame", ub @ b0)
    lines += _matrix_block("Euler angles phi theta psi (deg)", matrix_to_euler(polar_rotation(ub)), "{:.3f}")
    if strain:
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
