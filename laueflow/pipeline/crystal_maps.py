"""Orientations of a results store as orix objects: ``Orientation``, ``Phase``, ``CrystalMap``.

Frames (docs/conventions.md). laueflow: ``q_lab = UB · B0 · hkl`` with the crystal frame of
``B0`` (x ∥ a*, z ∥ c); the sample frame is the lab frame tilted by 40° (``q_lab = P · q_sample``).
orix: an orientation ``g`` maps a sample (or lab) vector to the crystal frame, ``v_crystal = g v``,
with orix's crystal frame x ∥ a, z ∥ c* (diffpy's lattice base). So, with ``U`` the rotation
part of ``UB``, ``M`` the change of basis from our crystal frame to orix's (identity for cubic,
tetragonal and orthorhombic cells; a 30° turn about c for hexagonal ones):

    g = M · Uᵀ · P   (frame="sample")        g = M · Uᵀ   (frame="lab")

The IPF colours, pole figures and ``.ctf`` files built on it are checked against orix's own
conversions for known orientations (tests/pipeline/test_crystal_maps.py).
"""
from __future__ import annotations

import numpy as np

from ..physics.materials import Material, get_materials
from ..physics.strain import polar_rotation, sample_rotation
from .results import ResultsError, material_names

__all__ = ["FRAMES", "orix_frame_change", "orix_phase", "orix_symmetry", "rotation_matrices",
           "to_orientations", "to_crystal_map", "store_materials", "euler_angles", "ctf_phase"]

FRAMES = ("sample", "lab")


def store_materials(ds) -> list[Material]:
    """The store's materials, by index, from its own definitions (checked against its names)."""
    names = material_names(ds.attrs)
    definitions = ds.attrs.get("material_definitions") or names
    materials = get_materials(definitions)
    if [m.name for m in materials] != names:
        raise ResultsError(f"the store's material definitions {[m.name for m in materials]} do not match its "
                           f"materials {names}")
    return materials


def orix_frame_change(material: Material) -> np.ndarray:
    """``M`` (3, 3): coordinates in laueflow's crystal frame (x ∥ a*, z ∥ c) → orix's (x ∥ a, z ∥ c*)."""
    b0 = material.b_matrix  # columns a*, b*, c* in our frame
    direct = np.linalg.inv(b0).T  # columns a, b, c
    e1 = direct[:, 0] / np.linalg.norm(direct[:, 0])
    e3 = b0[:, 2] / np.linalg.norm(b0[:, 2])
    return np.stack([e1, np.cross(e3, e1), e3])  # rows: orix's axes in our frame


def orix_symmetry(material: Material):
    """orix point group of the material (from its space group number)."""
    from orix.quaternion.symmetry import get_point_group

    return get_point_group(material.space_group_number, proper=False)


def orix_phase(material: Material, phase_id: int | None = None, color: str | None = None):
    """orix ``Phase``: name, point group, space group and lattice of ``material``."""
    from diffpy.structure import Lattice, Structure
    from orix.crystal_map import Phase

    lattice = Lattice(*material.lattice_parameters)
    kwargs = {"color": color} if color else {}
    return Phase(name=material.name, space_group=material.space_group_number,
                 structure=Structure(title=material.name, lattice=lattice), **kwargs)


def rotation_matrices(ub, material: Material, frame: str = "sample") -> np.ndarray:
    """``g`` (..., 3, 3) of the module doc for orientation matrices ``ub`` (..., 3, 3); NaN stays NaN."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    ub = np.asarray(ub, dtype=float)
    ok = np.isfinite(ub).all(axis=(-1, -2))
    g = np.full(ub.shape, np.nan)
    u = polar_rotation(ub[ok])
    g_ok = orix_frame_change(material) @ np.swapaxes(u, -1, -2)
    if frame == "sample":
        g_ok = g_ok @ sample_rotation()
    g[ok] = g_ok
    return g


def to_orientations(ub, material: Material, frame: str = "sample"):
    """orix ``Orientation`` (shape of ``ub`` less (3, 3)) with the material's point group; points
    without an orientation (NaN) are NaN quaternions — mask them with ``np.isfinite``."""
    from orix.quaternion import Orientation

    g = rotation_matrices(ub, material, frame)
    shape = g.shape[:-2]
    ok = np.isfinite(g).all(axis=(-1, -2))
    q = np.full(shape + (4,), np.nan)
    if ok.any():
        q[ok] = Orientation.from_matrix(g[ok]).data
    return Orientation(q.reshape(-1, 4), symmetry=orix_symmetry(material)).reshape(*shape) if shape else \
        Orientation(q, symmetry=orix_symmetry(material))


def to_crystal_map(ds, frame: str = "sample"):
    """An orix ``CrystalMap`` of one grain per point: ``ds`` after :func:`laueflow.pipeline.results.best_grain`
    or ``grain`` (a Dataset still holding a ``grain`` dim is refused: choose first). Points
    without a grain are not indexed (phase -1). Properties: matching rate, matched spots, peak
    count, von Mises strain when present. Coordinates x, y in µm."""
    from orix.crystal_map import CrystalMap, PhaseList
    from orix.quaternion import Rotation

    if "grain" in ds["orientation_matrix"].dims:
        raise ResultsError("to_crystal_map: the Dataset has several grains per point: select one first "
                           "(laueflow.best_grain(ds) or laueflow.grain(ds, k))")
    materials = store_materials(ds)
    ub = np.asarray(ds["orientation_matrix"].values, dtype=float)  # (y, x, 3, 3)
    which = np.asarray(ds["grain_material"].values).astype(int)  # (y, x)
    ny, nx = which.shape
    q = np.full((ny, nx, 4), np.nan)
    for index, mat in enumerate(materials):
        here = (which == index) & np.isfinite(ub).all(axis=(-1, -2))
        if here.any():
            q[here] = Rotation.from_matrix(rotation_matrices(ub[here], mat, frame)).data
    phase_id = np.where(np.isfinite(q).all(-1), which, -1)
    q[phase_id < 0] = (1.0, 0.0, 0.0, 0.0)  # identity for not-indexed points (orix's convention)
    y_um, x_um = np.meshgrid(ds["y_um"].values, ds["x_um"].values, indexing="ij")
    props = {name: np.asarray(ds[name].values, dtype=float).ravel()
             for name in ("matching_rate", "matched_spots", "peak_count", "von_mises_strain") if name in ds}
    phases = PhaseList(phases=[orix_phase(m) for m in materials], ids=list(range(len(materials))))
    return CrystalMap(rotations=Rotation(q.reshape(-1, 4)), phase_id=phase_id.ravel(), x=x_um.ravel(),
                      y=y_um.ravel(), phase_list=phases, prop=props, scan_unit="um")


def euler_angles(ds, frame: str = "sample") -> np.ndarray:
    """Bunge Euler angles (y, x, 3) in degrees of orix's ``g`` (sample → orix crystal frame) of one
    grain per point (``ds`` after best_grain / grain); NaN where no grain."""
    from ..physics.orientations import matrix_to_euler

    if "grain" in ds["orientation_matrix"].dims:
        raise ResultsError("euler_angles: select one grain per point first (best_grain or grain)")
    ub = np.asarray(ds["orientation_matrix"].values, dtype=float)
    which = np.asarray(ds["grain_material"].values).astype(int)
    out = np.full(which.shape + (3,), np.nan)
    for index, mat in enumerate(store_materials(ds)):
        here = (which == index) & np.isfinite(ub).all(axis=(-1, -2))
        if here.any():  # orix from_euler(e) = g  ⇔  scipy ZXZ(e) = gᵀ
            out[here] = matrix_to_euler(np.swapaxes(rotation_matrices(ub[here], mat, frame), -1, -2))
    return out


def ctf_phase(material: Material) -> dict:
    """The .ctf phase line of a material (Laue group from orix's point group)."""
    return {"name": material.name, "lattice_parameters": material.lattice_parameters,
            "laue_group": orix_symmetry(material).laue.name, "space_group": material.space_group_number}
