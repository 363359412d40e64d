"""Read and write LaueTools ``.det`` calibration files.

Layout (LaueTools ``IOLaueTools.readCalib_det_file``): line 1 holds
``dd, xcen, ycen, xbet, xgam, pixelsize, dim1, dim2``; line 6 the calibrant's UB matrix; then
``# key : value`` lines, which take precedence for the 5 geometric parameters. :func:`read_det`
is strict: a value that is not a finite number, a wrong count or an impossible value (dd or
pixelsize ≤ 0, a non-integer frame size) is a ``ValueError`` naming the file, line and parameter,
never a guess. ``xcen, ycen`` are in LaueTools' 1-based X, Y pixel convention, exactly as stored
in :class:`Calibration` (numbers → geometry:
:func:`laueflow.physics.geometry.calibration_from_lauetools`).
"""
from __future__ import annotations

import ast
import datetime as _dt
import re
from pathlib import Path

import numpy as np

from ..physics.geometry import LAUETOOLS_PARAMETERS, Calibration, calibration_from_lauetools

__all__ = ["read_det", "write_det", "parse_key_value_comments"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_KEY_VALUE = re.compile(r"^\s*#\s*([A-Za-z_][\w ]*?)\s*:\s*(.*?)\s*$")


def parse_key_value_comments(lines) -> dict[str, str]:
    """``# key : value`` lines → dict of raw strings (also used for ``.cor`` headers)."""
    out = {}
    for line in lines:
        m = _KEY_VALUE.match(line)
        if m:
            out[m.group(1).strip()] = m.group(2)
    return out


def read_det(path) -> Calibration:
    """Read a LaueTools ``.det`` file into a :class:`Calibration`.

    Strict: line 1 must hold 6 or 8 finite numbers and each ``# key : value`` override of the 5
    geometric parameters one finite number, else a ``ValueError`` naming the file, line and
    parameter. The calibrant UB matrix (if any) and the material are kept in ``calibration.extra``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    lines = path.read_text(errors="replace").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty .det file")
    first = _read_first_line(path, lines[0])
    comments = parse_key_value_comments(lines)
    extra = {}
    matrix = _read_matrix(lines)
    if matrix is not None:
        extra["calibrant_ub"] = matrix.tolist()
    if "Material" in comments:
        extra["calibrant_material"] = comments["Material"]
    overrides = _read_overrides(path, lines)
    return calibration_from_lauetools(first, overrides, detector_name=comments.get("CCDLabel", "sCMOS"),
                                      extra=extra)


_LINE1_NAMES = ["dd", "xcen", "ycen", "xbet", "xgam", "pixelsize", "dim1", "dim2"]
_LINE1_HELP = ("line 1 must hold 6 or 8 numbers separated by commas (or spaces): "
               "'dd, xcen, ycen, xbet, xgam, pixelsize[, dim1, dim2]' (mm, px, px, deg, deg, mm, px, px), "
               "as LaueTools writes it")


def _number(text: str) -> float | None:
    """``text`` as a finite float, or None (no nan/inf, no ``1_000``, nothing around it)."""
    return float(text) if re.fullmatch(_NUMBER, text.strip()) else None


def _split_first_line(line: str) -> list[str]:
    tokens = [t.strip() for t in line.split(",")] if "," in line else line.split()
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # one trailing comma (LaueTools ignores it too)
    return tokens


def _read_first_line(path: Path, line: str) -> list[float]:
    """Line 1 → ``[dd, xcen, ycen, xbet, xgam, pixelsize(, dim1, dim2)]``; ValueError if not exact."""
    where = f"{path}, line 1"
    tokens = _split_first_line(line)
    if len(tokens) not in (6, 8):
        raise ValueError(f"{where}: found {len(tokens)} values in {line!r}; {_LINE1_HELP}. Fix line 1.")
    values = []
    for i, (token, name) in enumerate(zip(tokens, _LINE1_NAMES), start=1):
        value = _number(token)
        if value is None:
            raise ValueError(f"{where}, value {i} ({name}): {token!r} is not a finite number; "
                             f"{_LINE1_HELP}. Fix that value.")
        values.append(value)
    _check_physical(where, dict(zip(_LINE1_NAMES, values)))
    return values


def _check_physical(where: str, values: dict) -> None:
    """dd > 0 and pixelsize > 0 (mm); dim1, dim2 positive integers (px)."""
    for name in ("dd", "pixelsize"):
        if name in values and values[name] <= 0:
            raise ValueError(f"{where}: {name} must be > 0 mm, got {values[name]!r}. Fix {name}.")
    for name in ("dim1", "dim2"):
        v = values.get(name)
        if v is not None and (v < 1 or v != int(v)):
            raise ValueError(f"{where}: {name} (frame size, px) must be a positive integer, got {v!r}. "
                             f"Fix {name}.")


def _read_overrides(path: Path, lines) -> dict[str, float]:
    """``# key : value`` lines of the 5 geometric parameters → floats (the last one of a key wins)."""
    out = {}
    for number, line in enumerate(lines, start=1):
        m = _KEY_VALUE.match(line)
        if not m or m.group(1).strip() not in LAUETOOLS_PARAMETERS:
            continue
        key, text = m.group(1).strip(), m.group(2)
        value = _number(text)
        where = f"{path}, line {number}, key {key!r}"
        if value is None:
            raise ValueError(f"{where}: {text!r} is not a finite number; this line overrides {key} of "
                             f"line 1, so fix its value or delete the line.")
        _check_physical(where, {key: value})
        out[key] = value
    return out


def _read_matrix(lines):
    text = " ".join(lines[5:6]) if len(lines) > 5 else ""
    if "[" not in text:
        for line in lines:
            if line.strip().startswith("[["):
                text = line
                break
        else:
            return None
    try:
        matrix = np.array(ast.literal_eval(text.strip()), dtype=float)
    except (ValueError, SyntaxError):
        return None
    return matrix if matrix.shape == (3, 3) else None


def write_det(path, calibration: Calibration, *, material: str = "unknown", ub=None, source: str = "") -> Path:
    """Write ``calibration`` as a LaueTools ``.det`` file (readable by LaueTools and :func:`read_det`).

    Values are written at full precision (LaueTools' GUI rounds; readers do not care).
    """
    path = Path(path)
    c = calibration
    ub = np.eye(3) if ub is None else np.asarray(ub, dtype=float)
    rows, cols = (int(n) for n in c.frame_shape)
    # plain floats: numpy 2 writes 'np.float64(70.5)', which no reader takes for a number
    dd, xcen, ycen, xbet, xgam, pixel = (float(v) for v in (*c.parameters, c.pixel_size_mm))
    matrix = "[" + ",".join("[" + ",".join(f"{v:.7f}" for v in row) + "]" for row in ub) + "]"
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{dd!r}, {xcen!r}, {ycen!r}, {xbet!r}, {xgam!r}, {pixel!r}, {rows}, {cols}",
        "Sample-Detector distance(IM), xO, yO, angle1, angle2, pixelsize, dim1, dim2",
        f"Calibration done with {material} at {now} with laueflow",
        f"Experimental Data file: {source}",
        "Orientation Matrix:",
        matrix,
        f"# Material : {material}",
        f"# dd : {dd!r}",
        f"# xcen : {xcen!r}",
        f"# ycen : {ycen!r}",
        f"# xbet : {xbet!r}",
        f"# xgam : {xgam!r}",
        f"# pixelsize : {pixel!r}",
        f"# xpixelsize : {pixel!r}",
        f"# ypixelsize : {pixel!r}",
        f"# CCDLabel : {c.detector_name}",
        f"# framedim : ({rows}, {cols})",
        f"# detectordiameter : {max(rows, cols) * pixel!r}",
        "# kf_direction : Z>0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
