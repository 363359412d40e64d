"""Read and write LaueTools ``.det`` calibration files.

Layout (LaueTools ``IOLaueTools.readCalib_det_file``): line 1 holds
``dd, xcen, ycen, xbet, xgam, pixelsize, dim1, dim2``; line 6 the calibrant's UB matrix; then
``# key : value`` lines, which take precedence for the 5 geometric parameters. ``xcen, ycen``
are in LaueTools' 1-based X, Y pixel convention, exactly as stored in :class:`Calibration`
(numbers → geometry: :func:`laueflow.physics.geometry.calibration_from_lauetools`).
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


def parse_key_value_comments(lines) -> dict[str, str]:
    """``# key : value`` lines → dict of raw strings (also used for ``.cor`` headers)."""
    out = {}
    for line in lines:
        m = re.match(r"^\s*#\s*([A-Za-z_][\w ]*?)\s*:\s*(.*?)\s*$", line)
        if m:
            out[m.group(1).strip()] = m.group(2)
    return out


def read_det(path) -> Calibration:
    """Read a LaueTools ``.det`` file into a :class:`Calibration`.

    The calibrant UB matrix (if any) and the material are kept in ``calibration.extra``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    lines = path.read_text(errors="replace").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty .det file")
    first = [float(v) for v in re.findall(_NUMBER, lines[0])]
    if len(first) < 6:
        raise ValueError(
            f"{path}: line 1 must hold 'dd, xcen, ycen, xbet, xgam, pixelsize[, dim1, dim2]', "
            f"got {lines[0]!r}"
        )
    comments = parse_key_value_comments(lines)
    extra = {}
    matrix = _read_matrix(lines)
    if matrix is not None:
        extra["calibrant_ub"] = matrix.tolist()
    if "Material" in comments:
        extra["calibrant_material"] = comments["Material"]
    overrides = {key: comments[key] for key in LAUETOOLS_PARAMETERS if key in comments}
    return calibration_from_lauetools(first, overrides, detector_name=comments.get("CCDLabel", "sCMOS"),
                                      extra=extra)


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
    rows, cols = c.frame_shape
    matrix = "[" + ",".join("[" + ",".join(f"{v:.7f}" for v in row) + "]" for row in ub) + "]"
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{c.distance_mm!r}, {c.xcen_px!r}, {c.ycen_px!r}, {c.xbet_deg!r}, {c.xgam_deg!r}, "
        f"{c.pixel_size_mm!r}, {rows}, {cols}",
        "Sample-Detector distance(IM), xO, yO, angle1, angle2, pixelsize, dim1, dim2",
        f"Calibration done with {material} at {now} with laueflow",
        f"Experimental Data file: {source}",
        "Orientation Matrix:",
        matrix,
        f"# Material : {material}",
        f"# dd : {c.distance_mm!r}",
        f"# xcen : {c.xcen_px!r}",
        f"# ycen : {c.ycen_px!r}",
        f"# xbet : {c.xbet_deg!r}",
        f"# xgam : {c.xgam_deg!r}",
        f"# pixelsize : {c.pixel_size_mm!r}",
        f"# xpixelsize : {c.pixel_size_mm!r}",
        f"# ypixelsize : {c.pixel_size_mm!r}",
        f"# CCDLabel : {c.detector_name}",
        f"# framedim : ({rows}, {cols})",
        f"# detectordiameter : {max(rows, cols) * c.pixel_size_mm!r}",
        "# kf_direction : Z>0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
