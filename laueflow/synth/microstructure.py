"""Synthetic microstructures: Voronoi grains, twins, sub-grains, beam-footprint overlap, fields.

Everything here is pure numpy on small arrays (one entry per scan point × grain slot); nothing
touches images. Positions are in µm in the sample plane: scan point ``(iy, ix)`` sits at
``(x, y) = (ix · step, iy · step)``.

A *domain* is anything with its own orientation and its own grain id: a Voronoi grain, a twin
lamella inside a grain, a low-angle sub-grain, a faint deeper grain, or the substrate crystal.
Domain ids are dense, ``0 .. n_domains − 1`` (grains first, then twins, sub-grains, deep grains,
substrate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..physics.lattice import b_matrix
from ..physics.strain import sample_rotation, ub_from_deviatoric_strain

__all__ = [
    "DOMAIN_KINDS",
    "Domains",
    "Microstructure",
    "build_microstructure",
    "footprint_offsets",
    "random_deviatoric",
    "twin_rotation",
    "ub_from_strain_batched",
]

#: ``grain_kind`` codes written to the truth (index = code)
DOMAIN_KINDS = ("grain", "twin", "subgrain", "deep", "substrate")
GRAIN, TWIN, SUBGRAIN, DEEP, SUBSTRATE = range(5)


@dataclass
class Domains:
    """Per-domain (grain id) table."""

    kind: np.ndarray  # (D,) int8, index into DOMAIN_KINDS
    parent: np.ndarray  # (D,) int32, parent grain of a twin / sub-grain, else -1
    material: np.ndarray  # (D,) int16, index into the materials list
    rotation: np.ndarray  # (D, 3, 3) orientation U at the domain's reference point (no strain)
    centre_um: np.ndarray  # (D, 2) reference point (x, y) of the gradient field, µm
    gradient: np.ndarray  # (D, 3, 2) rotation-vector gradient d(omega)/d(x, y), rad/µm
    strain_mean: np.ndarray  # (D, 3, 3) constant part of the deviatoric strain (crystal frame)
    strain_wave: np.ndarray  # (D, 3, 3) amplitude tensor of the sinusoidal part
    wavevector: np.ndarray  # (D, 2) rad/µm
    phase: np.ndarray  # (D,) rad

    def __len__(self) -> int:
        return len(self.kind)


@dataclass
class Microstructure:
    """Per-point truth of a scan, ``S`` = number of grain slots.

    Slots hold the grains of the top layer sorted by decreasing weight, then the deeper grain,
    then the substrate; unused slots have ``grain_id = -1`` and NaN matrices.
    """

    grain_id: np.ndarray  # (ny, nx, S) int32
    grain_weight: np.ndarray  # (ny, nx, S) float64
    grain_material: np.ndarray  # (ny, nx, S) int16, -1 fill
    rotation: np.ndarray  # (ny, nx, S, 3, 3) U at the point (NaN fill)
    deviatoric_strain: np.ndarray  # (ny, nx, S, 3, 3) crystal frame (NaN fill)
    orientation_matrix: np.ndarray  # (ny, nx, S, 3, 3) UB (NaN fill)
    grain_map: np.ndarray  # (ny, nx) int32 dominant top-layer grain
    domains: Domains
    step_um: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.grain_map.shape


# ----------------------------------------------------------------------------------------- helpers
def footprint_offsets(beam_size_um: float, n_across: int = 11) -> np.ndarray:
    """(K, 2) sample offsets (µm) covering a disc of diameter ``beam_size_um`` uniformly."""
    if beam_size_um <= 0:
        return np.zeros((1, 2))
    t = (np.arange(n_across) - (n_across - 1) / 2) / n_across * beam_size_um
    gx, gy = np.meshgrid(t, t)
    keep = gx**2 + gy**2 <= (beam_size_um / 2) ** 2
    return np.stack([gx[keep], gy[keep]], axis=-1)


def random_deviatoric(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) random symmetric traceless tensors of von Mises equivalent exactly 1."""
    m = rng.standard_normal((n, 3, 3))
    m = (m + m.swapaxes(1, 2)) / 2
    m -= np.trace(m, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    vm = np.sqrt(2.0 / 3.0 * np.einsum("nij,nij->n", m, m))
    return m / vm[:, None, None]


#: twin laws: (angle in degrees, lattice direction of the axis). ``sigma3``: 60° about [111], the Σ3
#: twin of cubic crystals; ``dauphine``: 60° about [001] on hexagonal axes, the Dauphiné twin of
#: quartz (and the obverse/reverse twin of rhombohedral crystals) — every spot at the same place
TWIN_LAWS = {"sigma3": (60.0, (1, 1, 1)), "dauphine": (60.0, (0, 0, 1))}


def twin_rotation(lattice_parameters, angle_deg: float = 60.0, direction=(1, 1, 1)) -> np.ndarray:
    """Crystal-frame rotation of a twin: ``angle_deg`` about the lattice direction ``direction``.

    Σ3 twin of cubic crystals = 60° about <111>. Expressed in the ``B0`` Cartesian frame, so the
    twin's orientation is ``U_twin = U · R``.
    """
    axis = np.linalg.inv(b_matrix(lattice_parameters)).T @ np.asarray(direction, dtype=float)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(np.deg2rad(angle_deg) * axis).as_matrix()


def ub_from_strain_batched(rotation, strain_crystal, lattice_parameters) -> np.ndarray:
    """:func:`laueflow.physics.strain.ub_from_deviatoric_strain` over leading axes (one call per
    matrix, so the convention stays exactly the physics module's)."""
    rotation = np.asarray(rotation, dtype=float)
    strain = np.asarray(strain_crystal, dtype=float)
    flat_r, flat_e = rotation.reshape(-1, 3, 3), strain.reshape(-1, 3, 3)
    out = np.empty_like(flat_r)
    for i in range(len(flat_r)):
        out[i] = ub_from_deviatoric_strain(flat_r[i], flat_e[i], lattice_parameters)
    return out.reshape(rotation.shape)


def _rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 3, 3))
    return Rotation.random(n, rng=rng).as_matrix().reshape(n, 3, 3)


def _small_rotations(rng, n, angle_deg) -> np.ndarray:
    """``n`` rotations of exactly ``angle_deg`` about random axes."""
    axes = rng.standard_normal((n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return Rotation.from_rotvec(axes * np.deg2rad(angle_deg)).as_matrix().reshape(n, 3, 3)


# ------------------------------------------------------------------------------------------- build
def build_microstructure(
    shape: tuple[int, int],
    step_um: float,
    n_grains: int,
    rng: np.random.Generator,
    lattice_parameters: list,
    *,
    beam_size_um: float | None = None,
    orientation_gradient_deg_per_um: float = 0.02,
    strain_magnitude: float = 1e-3,
    twin_fraction: float = 0.0,
    fine_twin_grains: int = 0,
    fine_twin_period_um: float = 4.0,
    twin_law: str = "sigma3",
    subgrain_fraction: float = 0.0,
    subgrain_misorientation_deg: float = 1.0,
    second_phase_fraction: float = 0.0,
    deep_grains: int = 0,
    deep_weight: float = 0.08,
    substrate: bool = False,
    substrate_weight: float = 1.0,
    min_weight: float = 0.02,
    max_slots: int | None = None,
) -> Microstructure:
    """Build the grain map, orientations and strain fields of a scan.

    ``lattice_parameters`` lists the reference cells of the materials: index 0 = main phase,
    1 = second phase (used when ``second_phase_fraction > 0``), last = substrate (when
    ``substrate``). ``beam_size_um`` (default 1.5 × step) is the diameter of the beam footprint:
    each grain's weight at a point is the fraction of that disc it covers (grains below
    ``min_weight`` dropped, the rest renormalised to sum 1). Deep grains add one slot of weight
    ``deep_weight``; the substrate adds one slot of weight ``substrate_weight`` at every point.

    Twins (lamellae and fine twins) follow ``twin_law`` (:data:`TWIN_LAWS`; ``U_twin = U · R``).
    Fine twins: the ``fine_twin_grains`` largest grains are filled with parallel lamellae of one
    Σ3 twin variant alternating with the parent, ``fine_twin_period_um`` apart (each lamella half
    a period wide, random direction); all the lamellae of one grain are one twin domain.

    Strain: per domain ``ε(r) = m · (0.7 A + 0.3 sin(k·r + φ) B)`` with ``A, B`` random traceless
    symmetric tensors of von Mises equivalent 1 and ``m = strain_magnitude``; hence the von Mises
    strain lies in ``[0.4 m, m]`` everywhere (the substrate is unstrained). Orientation: the
    rotation vector varies linearly in space, ``|dω/dx| = |dω/dy| =``
    ``orientation_gradient_deg_per_um`` (lab-frame rotation applied to the domain's base U).
    """
    ny, nx = (int(v) for v in shape)
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if n_grains < 1:
        raise ValueError(f"need at least one grain, got {n_grains}")
    if step_um <= 0:
        raise ValueError(f"step_um must be > 0, got {step_um}")
    beam = 1.5 * step_um if beam_size_um is None else float(beam_size_um)
    main_lattice = lattice_parameters[0]
    if twin_law not in TWIN_LAWS:
        raise ValueError(f"twin_law must be one of {sorted(TWIN_LAWS)}, got {twin_law!r}")

    def twin_of(lat):
        return twin_rotation(lat, *TWIN_LAWS[twin_law])

    # --- Voronoi seeds over the scanned area (plus half a step margin)
    lo = -0.5 * step_um
    extent = np.array([nx * step_um, ny * step_um])
    seeds = lo + rng.random((n_grains, 2)) * extent
    grain_size = np.sqrt(extent.prod() / n_grains)

    # --- sub-samples of every beam footprint
    yy, xx = np.meshgrid(np.arange(ny) * step_um, np.arange(nx) * step_um, indexing="ij")
    centres = np.stack([xx.ravel(), yy.ravel()], axis=-1)  # (P, 2)
    offsets = footprint_offsets(beam)
    samples = centres[:, None, :] + offsets[None, :, :]  # (P, K, 2)
    flat = samples.reshape(-1, 2)
    parent = cKDTree(seeds).query(flat)[1].astype(np.int64)
    domain = parent.copy()

    kinds = [np.full(n_grains, GRAIN)]
    parents = [np.full(n_grains, -1)]
    base = _rotations(rng, n_grains)
    rotations = [base]
    dom_centres = [seeds]
    materials = np.zeros(n_grains, dtype=np.int16)
    if second_phase_fraction > 0:
        materials[rng.random(n_grains) < second_phase_fraction] = 1
    mats = [materials]
    next_id = n_grains

    # --- twins: a lamella (band) through each twinned grain
    twinned = np.flatnonzero(rng.random(n_grains) < twin_fraction) if twin_fraction > 0 else []
    for g in twinned:
        angle = rng.uniform(0, np.pi)
        normal = np.array([np.cos(angle), np.sin(angle)])
        width = rng.uniform(0.15, 0.35) * grain_size
        centre = seeds[g] + rng.uniform(-0.25, 0.25) * grain_size * normal
        in_band = (parent == g) & (np.abs((flat - centre) @ normal) < width / 2)
        domain[in_band] = next_id
        kinds.append([TWIN])
        parents.append([g])
        lat = lattice_parameters[materials[g]]
        rotations.append((base[g] @ twin_of(lat))[None])
        dom_centres.append(centre[None])
        mats.append([materials[g]])
        next_id += 1

    # --- fine twins: parallel lamellae of one twin variant through the largest grains
    if fine_twin_grains > 0:
        sizes = np.bincount(parent, minlength=n_grains)
        for g in np.argsort(-sizes, kind="stable")[:int(fine_twin_grains)]:
            angle = rng.uniform(0, np.pi)
            normal = np.array([np.cos(angle), np.sin(angle)])
            position = (flat - seeds[g]) @ normal / (0.5 * fine_twin_period_um)
            domain[(parent == g) & (np.floor(position) % 2 == 1)] = next_id
            kinds.append([TWIN])
            parents.append([g])
            rotations.append((base[g] @ twin_of(lattice_parameters[materials[g]]))[None])
            dom_centres.append(seeds[g][None])
            mats.append([materials[g]])
            next_id += 1

    # --- low-angle sub-grains: a small Voronoi tessellation inside the grain
    subdivided = np.flatnonzero(rng.random(n_grains) < subgrain_fraction) if subgrain_fraction > 0 else []
    for g in subdivided:
        n_sub = int(rng.integers(2, 5))
        sub_seeds = seeds[g] + rng.normal(0, grain_size / 3, (n_sub, 2))
        sub_seeds[0] = seeds[g]
        members = np.flatnonzero(domain == g)  # not the twin lamellae
        if len(members) == 0:
            continue
        which = cKDTree(sub_seeds).query(flat[members])[1]
        misorientation = _small_rotations(rng, n_sub - 1, subgrain_misorientation_deg)
        for j in range(1, n_sub):
            domain[members[which == j]] = next_id
            kinds.append([SUBGRAIN])
            parents.append([g])
            rotations.append((misorientation[j - 1] @ base[g])[None])
            dom_centres.append(sub_seeds[j][None])
            mats.append([materials[g]])
            next_id += 1
    n_top = next_id

    # --- footprint weights of the top layer
    n_points, n_sub_samples = len(centres), len(offsets)
    point = np.repeat(np.arange(n_points), n_sub_samples)
    counts = np.bincount(point * n_top + domain, minlength=n_points * n_top).reshape(n_points, n_top)
    weights = counts / n_sub_samples
    weights[weights < min_weight] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    order = np.argsort(-weights, axis=1, kind="stable")
    n_top_slots = int((weights > 0).sum(axis=1).max())
    top_ids = order[:, :n_top_slots]
    top_w = np.take_along_axis(weights, top_ids, axis=1)
    top_ids = np.where(top_w > 0, top_ids, -1)
    grain_map = top_ids[:, 0].reshape(ny, nx).astype(np.int32)

    slot_ids = [top_ids]
    slot_w = [top_w]
    # --- faint deeper grains (coarser Voronoi, one per point, no footprint overlap)
    if deep_grains > 0:
        deep_seeds = lo + rng.random((deep_grains, 2)) * extent
        deep = cKDTree(deep_seeds).query(centres)[1] + next_id
        slot_ids.append(deep[:, None])
        slot_w.append(np.full((n_points, 1), float(deep_weight)))
        kinds.append(np.full(deep_grains, DEEP))
        parents.append(np.full(deep_grains, -1))
        rotations.append(_rotations(rng, deep_grains))
        dom_centres.append(deep_seeds)
        mats.append(np.zeros(deep_grains, dtype=np.int16))
        next_id += deep_grains
    # --- substrate single crystal: [001] along the sample normal, random in-plane rotation
    if substrate:
        spin = Rotation.from_euler("z", rng.uniform(0, 360), degrees=True).as_matrix()
        slot_ids.append(np.full((n_points, 1), next_id))
        slot_w.append(np.full((n_points, 1), float(substrate_weight)))
        kinds.append([SUBSTRATE])
        parents.append([-1])
        rotations.append((sample_rotation() @ spin)[None])
        dom_centres.append(np.zeros((1, 2)))
        mats.append([len(lattice_parameters) - 1])
        next_id += 1

    n_domains = next_id
    kind = np.concatenate([np.asarray(k, dtype=np.int8) for k in kinds])
    # --- per-domain fields
    gradient = rng.standard_normal((n_domains, 3, 2))
    gradient /= np.linalg.norm(gradient, axis=1, keepdims=True)
    gradient *= np.deg2rad(orientation_gradient_deg_per_um)
    wavelength = rng.uniform(2.0, 4.0, n_domains) * grain_size
    direction = rng.uniform(0, 2 * np.pi, n_domains)
    wavevector = (2 * np.pi / wavelength)[:, None] * np.stack([np.cos(direction), np.sin(direction)], -1)
    domains = Domains(
        kind=kind,
        parent=np.concatenate([np.asarray(p, dtype=np.int32) for p in parents]),
        material=np.concatenate([np.asarray(m, dtype=np.int16) for m in mats]),
        rotation=np.concatenate(rotations),
        centre_um=np.concatenate(dom_centres).astype(float),
        gradient=gradient,
        strain_mean=0.7 * strain_magnitude * random_deviatoric(n_domains, rng),
        strain_wave=0.3 * strain_magnitude * random_deviatoric(n_domains, rng),
        wavevector=wavevector,
        phase=rng.uniform(0, 2 * np.pi, n_domains),
    )
    fixed = kind == SUBSTRATE
    domains.gradient[fixed] = 0.0
    domains.strain_mean[fixed] = 0.0
    domains.strain_wave[fixed] = 0.0

    ids = np.concatenate(slot_ids, axis=1)  # (P, S)
    w = np.concatenate(slot_w, axis=1)
    if max_slots is not None and ids.shape[1] > max_slots:
        raise ValueError(f"{ids.shape[1]} grain slots needed, more than max_slots={max_slots}")
    rot, eps, ub, mat = _fields_at(domains, ids, centres, lattice_parameters)
    n_slots = ids.shape[1]
    return Microstructure(
        grain_id=ids.reshape(ny, nx, n_slots).astype(np.int32),
        grain_weight=np.where(ids >= 0, w, 0.0).reshape(ny, nx, n_slots),
        grain_material=mat.reshape(ny, nx, n_slots),
        rotation=rot.reshape(ny, nx, n_slots, 3, 3),
        deviatoric_strain=eps.reshape(ny, nx, n_slots, 3, 3),
        orientation_matrix=ub.reshape(ny, nx, n_slots, 3, 3),
        grain_map=grain_map,
        domains=domains,
        step_um=float(step_um),
    )


def _fields_at(domains: Domains, ids: np.ndarray, centres: np.ndarray, lattice_parameters):
    """Rotation, strain, UB and material at every (point, slot); NaN / -1 where ``ids < 0``."""
    n_points, n_slots = ids.shape
    valid = ids >= 0
    d = np.where(valid, ids, 0)
    r = centres[:, None, :] - domains.centre_um[d]  # (P, S, 2)
    omega = np.einsum("psij,psj->psi", domains.gradient[d], r)
    rot = Rotation.from_rotvec(omega.reshape(-1, 3)).as_matrix().reshape(n_points, n_slots, 3, 3)
    rot = rot @ domains.rotation[d]
    arg = np.einsum("psj,psj->ps", domains.wavevector[d], centres[:, None, :]) + domains.phase[d]
    eps = domains.strain_mean[d] + np.sin(arg)[..., None, None] * domains.strain_wave[d]
    mat = np.where(valid, domains.material[d], -1).astype(np.int16)
    ub = np.full(rot.shape, np.nan)
    for m, lattice in enumerate(lattice_parameters):
        sel = valid & (mat == m)
        if sel.any():
            ub[sel] = ub_from_strain_batched(rot[sel], eps[sel], lattice)
    nan = ~valid
    rot[nan] = np.nan
    eps[nan] = np.nan
    return rot, eps, ub, mat
