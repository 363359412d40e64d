"""Detector geometry of a top-reflection ("Z>0") Laue set-up, in LaueTools' conventions.

Frames and symbols follow ``docs/conventions.md``: lab (LT) frame with x along the beam and
z up; ``two_theta`` and ``chi`` in degrees; the detector is described by a :class:`Calibration`.

Pixel convention
----------------
laueflow uses **0-based array coordinates** everywhere: ``col`` is the column index and ``row``
the row index of ``image[row, col]``, pixel centres at integers, the detector area spanning
``[-0.5, n_cols - 0.5] x [-0.5, n_rows - 0.5]``. LaueTools' ``X, Y`` (as in ``.dat``, ``.cor``
and ``.fit`` files) are ``X = col + 1, Y = row + 1``. The calibration's ``xcen_px, ycen_px``
are kept exactly as LaueTools writes them (``X, Y`` convention), so ``.det`` files round-trip.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..backend import get_array_module
from ..kernels.vectors import angles_to_qhat

__all__ = [
    "Calibration",
    "DEFAULT_CALIBRATION",
    "LAUETOOLS_PARAMETERS",
    "calibration_from_lauetools",
    "LAUETOOLS_PIXEL_OFFSET",
    "pixel_to_angles",
    "angles_to_pixel",
    "angles_to_qhat",
    "angles_to_outgoing",
    "qhat_to_angles",
    "angular_distance",
    "in_frame",
]

#: LaueTools pixel X, Y = 0-based col, row + 1 (XMAS heritage).
LAUETOOLS_PIXEL_OFFSET = 1.0


@dataclass(frozen=True)
class Calibration:
    """Geometry of a flat detector above the sample (LaueTools ``Z>0`` geometry).

    Parameters
    ----------
    distance_mm : sample-to-detector distance along the detector normal (LaueTools ``dd``).
    xcen_px, ycen_px : where the normal through the sample hits the detector, LaueTools X, Y
        pixel convention (0-based column/row + 1).
    xbet_deg : tilt of the detector normal from vertical about lab y (deg).
    xgam_deg : in-plane rotation of the pixel axes about the normal (deg).
    pixel_size_mm : square pixel size (mm).
    frame_shape : ``(n_rows, n_cols)`` of the image array (LaueTools ``framedim``).
    detector_name : LaueTools ``CCDLabel``.
    """

    distance_mm: float
    xcen_px: float
    ycen_px: float
    xbet_deg: float
    xgam_deg: float
    pixel_size_mm: float = 0.0734
    frame_shape: tuple[int, int] = (2018, 2016)
    detector_name: str = "sCMOS"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if not self.distance_mm > 0:
            raise ValueError(f"distance_mm must be > 0, got {self.distance_mm}")
        if not self.pixel_size_mm > 0:
            raise ValueError(f"pixel_size_mm must be > 0, got {self.pixel_size_mm}")
        shape = tuple(int(n) for n in self.frame_shape)
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"frame_shape must be (n_rows, n_cols) > 0, got {self.frame_shape}")
        object.__setattr__(self, "frame_shape", shape)

    @property
    def parameters(self) -> list[float]:
        """The 5 LaueTools parameters ``[dd, xcen, ycen, xbet, xgam]``."""
        return [self.distance_mm, self.xcen_px, self.ycen_px, self.xbet_deg, self.xgam_deg]

    @property
    def n_rows(self) -> int:
        return self.frame_shape[0]

    @property
    def n_cols(self) -> int:
        return self.frame_shape[1]

    def to_dict(self) -> dict:
        """JSON/Zarr-attribute friendly dict (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["frame_shape"] = list(self.frame_shape)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "extra"}
        return cls(**known)

    def replace(self, **changes) -> "Calibration":
        return replace(self, **changes)


#: BM32 sCMOS calibration of the LaueNN GaN/Si example (Si calibrant), used as default.
DEFAULT_CALIBRATION = Calibration(79.612, 977.81, 932.17, 0.477, 0.447, 0.0734, (2018, 2016), "sCMOS")

#: LaueTools' names of the 5 geometric parameters → :class:`Calibration` fields.
LAUETOOLS_PARAMETERS = {"dd": "distance_mm", "xcen": "xcen_px", "ycen": "ycen_px", "xbet": "xbet_deg",
                        "xgam": "xgam_deg"}


def calibration_from_lauetools(values, overrides=None, *, detector_name: str = "sCMOS",
                               extra=None) -> Calibration:
    """A :class:`Calibration` from LaueTools' numbers (as in a ``.det`` file).

    ``values``: ``[dd, xcen, ycen, xbet, xgam, pixelsize[, dim1, dim2]]`` (frame 2018×2016 when
    ``dim1, dim2`` are absent); ``overrides``: ``{LaueTools name: value}`` for the 5 geometric
    parameters, which take precedence over ``values``.
    """
    values = [float(v) for v in values]
    if len(values) < 6:
        raise ValueError(f"need dd, xcen, ycen, xbet, xgam, pixelsize[, dim1, dim2], got {values}")
    fields = ["distance_mm", "xcen_px", "ycen_px", "xbet_deg", "xgam_deg", "pixel_size_mm"]
    params = dict(zip(fields, values))
    for key, value in (overrides or {}).items():
        params[LAUETOOLS_PARAMETERS[key]] = float(value)
    frame = (int(values[6]), int(values[7])) if len(values) >= 8 else (2018, 2016)
    return Calibration(frame_shape=frame, detector_name=detector_name, extra=dict(extra or {}), **params)


def _frame_vectors(calibration: Calibration, xp):
    beta = np.deg2rad(calibration.xbet_deg)
    normal = xp.asarray([np.sin(beta), 0.0, np.cos(beta)])
    e_x = xp.asarray([0.0, -1.0, 0.0])
    e_y = xp.asarray([np.cos(beta), 0.0, -np.sin(beta)])
    return normal, e_x, e_y


def angles_to_outgoing(two_theta, chi):
    """Unit outgoing-beam vector ``u_f`` (..., 3) in the lab frame from angles in degrees."""
    xp = get_array_module(two_theta, chi)
    tth = xp.deg2rad(xp.asarray(two_theta, dtype=float))
    c = xp.deg2rad(xp.asarray(chi, dtype=float))
    s = xp.sin(tth)
    return xp.stack([xp.cos(tth), s * xp.sin(c), s * xp.cos(c)], axis=-1)


def qhat_to_angles(qhat):
    """Inverse of :func:`angles_to_qhat`: (..., 3) unit vectors → (two_theta, chi) in degrees."""
    xp = get_array_module(qhat)
    q = xp.asarray(qhat, dtype=float)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    theta = xp.arcsin(xp.clip(-q[..., 0], -1.0, 1.0))
    chi = xp.arctan2(q[..., 1], q[..., 2])
    return xp.rad2deg(2 * theta), xp.rad2deg(chi)


def pixel_to_angles(col, row, calibration: Calibration):
    """0-based pixel coordinates → ``(two_theta, chi)`` in degrees (same shape as inputs)."""
    xp = get_array_module(col, row)
    col = xp.asarray(col, dtype=float)
    row = xp.asarray(row, dtype=float)
    p = calibration.pixel_size_mm
    u = (col + LAUETOOLS_PIXEL_OFFSET - calibration.xcen_px) * p
    v = (row + LAUETOOLS_PIXEL_OFFSET - calibration.ycen_px) * p
    gam = np.deg2rad(calibration.xgam_deg)
    beta = np.deg2rad(calibration.xbet_deg)
    a = np.cos(gam) * u + np.sin(gam) * v
    c = -np.sin(gam) * u + np.cos(gam) * v
    d = calibration.distance_mm
    mx = d * np.sin(beta) + c * np.cos(beta)
    my = -a
    mz = d * np.cos(beta) - c * np.sin(beta)
    norm = xp.sqrt(mx * mx + my * my + mz * mz)
    two_theta = xp.rad2deg(xp.arccos(xp.clip(mx / norm, -1.0, 1.0)))
    chi = xp.rad2deg(xp.arctan2(my, mz))
    return two_theta, chi


def outgoing_to_pixel(u_f, calibration: Calibration):
    """Unit outgoing vectors (..., 3) → 0-based ``(col, row)``; NaN where the ray misses the plane."""
    xp = get_array_module(u_f)
    u_f = xp.asarray(u_f, dtype=float)
    beta = np.deg2rad(calibration.xbet_deg)
    gam = np.deg2rad(calibration.xgam_deg)
    ux, uy, uz = u_f[..., 0], u_f[..., 1], u_f[..., 2]
    along_normal = ux * np.sin(beta) + uz * np.cos(beta)
    hits = along_normal > 1e-12
    t = calibration.distance_mm / xp.where(hits, along_normal, 1.0)
    a = -t * uy
    c = t * (ux * np.cos(beta) - uz * np.sin(beta))
    u = np.cos(gam) * a - np.sin(gam) * c
    v = np.sin(gam) * a + np.cos(gam) * c
    p = calibration.pixel_size_mm
    col = calibration.xcen_px + u / p - LAUETOOLS_PIXEL_OFFSET
    row = calibration.ycen_px + v / p - LAUETOOLS_PIXEL_OFFSET
    return xp.where(hits, col, xp.nan), xp.where(hits, row, xp.nan)


def angles_to_pixel(two_theta, chi, calibration: Calibration):
    """``(two_theta, chi)`` in degrees → 0-based ``(col, row)``; NaN where the ray misses."""
    return outgoing_to_pixel(angles_to_outgoing(two_theta, chi), calibration)


def in_frame(col, row, calibration: Calibration, margin_px: float = 0.0):
    """True where a 0-based position lies on the detector area, at least ``margin_px`` inside.

    The detector area spans ``[-0.5, n_cols - 0.5] x [-0.5, n_rows - 0.5]`` (pixel edges).
    """
    xp = get_array_module(col, row)
    n_rows, n_cols = calibration.frame_shape
    return (
        (col >= -0.5 + margin_px)
        & (col <= n_cols - 0.5 - margin_px)
        & (row >= -0.5 + margin_px)
        & (row <= n_rows - 0.5 - margin_px)
        & xp.isfinite(col)
        & xp.isfinite(row)
    )


def angular_distance(two_theta_1, chi_1, two_theta_2, chi_2):
    """Angle in degrees between the scattering vectors of two spots (broadcasting).

    ``cos Δ = sinθ1 sinθ2 + cosθ1 cosθ2 cos(χ1 − χ2)`` with θ = 2θ/2.
    """
    xp = get_array_module(two_theta_1, chi_1, two_theta_2, chi_2)
    t1 = xp.deg2rad(xp.asarray(two_theta_1, dtype=float)) / 2
    t2 = xp.deg2rad(xp.asarray(two_theta_2, dtype=float)) / 2
    dchi = xp.deg2rad(xp.asarray(chi_1, dtype=float) - xp.asarray(chi_2, dtype=float))
    cos_d = xp.sin(t1) * xp.sin(t2) + xp.cos(t1) * xp.cos(t2) * xp.cos(dchi)
    return xp.rad2deg(xp.arccos(xp.clip(cos_d, -1.0, 1.0)))
