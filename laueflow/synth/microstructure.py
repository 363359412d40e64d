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
@dataclass
class _Grains:
    """The Voronoi grains of a scan and the beam-footprint sub-samples they cover."""

    seeds: np.ndarray  # (G, 2) seed positions (x, y), µm
    size_um: float  # typical grain diameter, √(area / G), µm
    base: np.ndarray  # (G, 3, 3) orientations U
    material: np.ndarray  # (G,) int16, index into the materials list
    samples: np.ndarray  # (P·K, 2) sub-sample positions of every footprint, µm
    parent: np.ndarray  # (P·K,) int64, the grain of each sub-sample


class _DomainTable:
    """The domains made so far, appended block by block (grains first): the columns of
    :class:`Domains` that do not depend on the fields."""

    def __init__(self, grains: _Grains):
        n = len(grains.seeds)
        self.kind, self.parent = [np.full(n, GRAIN)], [np.full(n, -1)]
        self.rotation, self.centre, self.material = [grains.base], [grains.seeds], [grains.material]
        self.count = n

    def add(self, kind, parent, rotation, centre, material) -> int:
        """Append domains (``rotation (n, 3, 3)``, ``centre (n, 2)``, the others ``(n,)``); the
        id of the first."""
        first = self.count
        self.kind.append(kind)
        self.parent.append(parent)
        self.rotation.append(rotation)
        self.centre.append(centre)
        self.material.append(material)
        self.count += len(rotation)
        return first


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
    if twin_law not in TWIN_LAWS:
        raise ValueError(f"twin_law must be one of {sorted(TWIN_LAWS)}, got {twin_law!r}")
    beam = 1.5 * step_um if beam_size_um is None else float(beam_size_um)
    lo, extent = -0.5 * step_um, np.array([nx * step_um, ny * step_um])  # seeds: half a step margin
    yy, xx = np.meshgrid(np.arange(ny) * step_um, np.arange(nx) * step_um, indexing="ij")
    centres = np.stack([xx.ravel(), yy.ravel()], axis=-1)  # (P, 2)
    offsets = footprint_offsets(beam)
    grains = _voronoi_grains(rng, n_grains, lo, extent, centres, offsets, second_phase_fraction)

    def twinned(g):
        return (grains.base[g] @ twin_rotation(lattice_parameters[grains.material[g]], *TWIN_LAWS[twin_law]))[None]

    table = _DomainTable(grains)
    domain = grains.parent.copy()
    _add_twin_lamellae(table, domain, grains, rng, twin_fraction, twinned)
    _add_fine_twins(table, domain, grains, rng, fine_twin_grains, fine_twin_period_um, twinned)
    _add_subgrains(table, domain, grains, rng, subgrain_fraction, subgrain_misorientation_deg)
    top_ids, top_w = _footprint_weights(domain, len(centres), len(offsets), table.count, min_weight)
    slot_ids, slot_w = [top_ids], [top_w]
    if deep_grains > 0:  # faint deeper grains (coarser Voronoi, one per point, no footprint overlap)
        deep_seeds = lo + rng.random((deep_grains, 2)) * extent
        first = table.add(np.full(deep_grains, DEEP), np.full(deep_grains, -1), _rotations(rng, deep_grains),
                          deep_seeds, np.zeros(deep_grains, dtype=np.int16))
        slot_ids.append(cKDTree(deep_seeds).query(centres)[1][:, None] + first)
        slot_w.append(np.full((len(centres), 1), float(deep_weight)))
    if substrate:  # single crystal: [001] along the sample normal, random in-plane rotation
        spin = Rotation.from_euler("z", rng.uniform(0, 360), degrees=True).as_matrix()
        first = table.add([SUBSTRATE], [-1], (sample_rotation() @ spin)[None], np.zeros((1, 2)),
                          [len(lattice_parameters) - 1])
        slot_ids.append(np.full((len(centres), 1), first))
        slot_w.append(np.full((len(centres), 1), float(substrate_weight)))
    domains = _domain_fields(table, rng, grains.size_um, orientation_gradient_deg_per_um, strain_magnitude)
    ids, w = np.concatenate(slot_ids, axis=1), np.concatenate(slot_w, axis=1)  # (P, S)
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
        grain_map=top_ids[:, 0].reshape(ny, nx).astype(np.int32),
        domains=domains,
        step_um=float(step_um),
    )


def _voronoi_grains(rng, n_grains: int, lo: float, extent: np.ndarray, centres: np.ndarray, offsets: np.ndarray,
                    second_phase_fraction: float) -> _Grains:
    """Voronoi seeds over ``[lo, lo + extent]`` µm, random orientations, the second phase drawn
    per grain, and the grain of every footprint sub-sample (``centres (P, 2)`` + ``offsets (K, 2)``)."""
    seeds = lo + rng.random((n_grains, 2)) * extent
    samples = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    parent = cKDTree(seeds).query(samples)[1].astype(np.int64)
    base = _rotations(rng, n_grains)
    material = np.zeros(n_grains, dtype=np.int16)
    if second_phase_fraction > 0:
        material[rng.random(n_grains) < second_phase_fraction] = 1
    return _Grains(seeds, float(np.sqrt(extent.prod() / n_grains)), base, material, samples, parent)


def _add_twin_lamellae(table: _DomainTable, domain, grains: _Grains, rng, fraction: float, twinned) -> None:
    """A twin lamella (a band 0.15–0.35 grain sizes wide) through each grain drawn with
    probability ``fraction``; ``domain`` (per sub-sample) is updated in place."""
    n_grains = len(grains.seeds)
    for g in (np.flatnonzero(rng.random(n_grains) < fraction) if fraction > 0 else []):
        angle = rng.uniform(0, np.pi)
        normal = np.array([np.cos(angle), np.sin(angle)])
        width = rng.uniform(0.15, 0.35) * grains.size_um
        centre = grains.seeds[g] + rng.uniform(-0.25, 0.25) * grains.size_um * normal
        in_band = (grains.parent == g) & (np.abs((grains.samples - centre) @ normal) < width / 2)
        domain[in_band] = table.add([TWIN], [g], twinned(g), centre[None], [grains.material[g]])


def _add_fine_twins(table: _DomainTable, domain, grains: _Grains, rng, count: int, period_um: float,
                    twinned) -> None:
    """Parallel lamellae of one twin variant, ``period_um`` apart, through the ``count`` largest
    grains (one twin domain per grain)."""
    if count <= 0:
        return
    sizes = np.bincount(grains.parent, minlength=len(grains.seeds))
    for g in np.argsort(-sizes, kind="stable")[:int(count)]:
        angle = rng.uniform(0, np.pi)
        normal = np.array([np.cos(angle), np.sin(angle)])
        position = (grains.samples - grains.seeds[g]) @ normal / (0.5 * period_um)
        domain[(grains.parent == g) & (np.floor(position) % 2 == 1)] = table.count
        table.add([TWIN], [g], twinned(g), grains.seeds[g][None], [grains.material[g]])


def _add_subgrains(table: _DomainTable, domain, grains: _Grains, rng, fraction: float,
                   misorientation_deg: float) -> None:
    """Low-angle sub-grains: a small Voronoi tessellation (2–4 cells) inside each grain drawn with
    probability ``fraction``, outside its twin lamellae."""
    n_grains = len(grains.seeds)
    for g in (np.flatnonzero(rng.random(n_grains) < fraction) if fraction > 0 else []):
        n_sub = int(rng.integers(2, 5))
        sub_seeds = grains.seeds[g] + rng.normal(0, grains.size_um / 3, (n_sub, 2))
        sub_seeds[0] = grains.seeds[g]
        members = np.flatnonzero(domain == g)  # not the twin lamellae
        if len(members) == 0:
            continue
        which = cKDTree(sub_seeds).query(grains.samples[members])[1]
        misorientation = _small_rotations(rng, n_sub - 1, misorientation_deg)
        for j in range(1, n_sub):
            domain[members[which == j]] = table.add([SUBGRAIN], [g], (misorientation[j - 1] @ grains.base[g])[None],
                                                    sub_seeds[j][None], [grains.material[g]])


def _footprint_weights(domain, n_points: int, n_sub_samples: int, n_domains: int, min_weight: float):
    """``(ids, weights)``, both ``(P, S)``: per point the domains its footprint covers (by
    decreasing weight, −1 padded) and the fractions of the footprint they cover (below
    ``min_weight`` dropped, the rest renormalised)."""
    point = np.repeat(np.arange(n_points), n_sub_samples)
    counts = np.bincount(point * n_domains + domain, minlength=n_points * n_domains).reshape(n_points, n_domains)
    weights = counts / n_sub_samples
    weights[weights < min_weight] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    order = np.argsort(-weights, axis=1, kind="stable")
    ids = order[:, :int((weights > 0).sum(axis=1).max())]
    w = np.take_along_axis(weights, ids, axis=1)
    return np.where(w > 0, ids, -1), w


def _domain_fields(table: _DomainTable, rng, grain_size_um: float, gradient_deg_per_um: float,
                   strain_magnitude: float) -> Domains:
    """:class:`Domains` with each domain's random orientation gradient and strain field (none on
    the substrate)."""
    n = table.count
    gradient = rng.standard_normal((n, 3, 2))
    gradient /= np.linalg.norm(gradient, axis=1, keepdims=True)
    gradient *= np.deg2rad(gradient_deg_per_um)
    wavelength = rng.uniform(2.0, 4.0, n) * grain_size_um
    direction = rng.uniform(0, 2 * np.pi, n)
    wavevector = (2 * np.pi / wavelength)[:, None] * np.stack([np.cos(direction), np.sin(direction)], -1)
    domains = Domains(
        kind=np.concatenate([np.asarray(k, dtype=np.int8) for k in table.kind]),
        parent=np.concatenate([np.asarray(p, dtype=np.int32) for p in table.parent]),
        material=np.concatenate([np.asarray(m, dtype=np.int16) for m in table.material]),
        rotation=np.concatenate(table.rotation),
        centre_um=np.concatenate(table.centre).astype(float),
        gradient=gradient,
        strain_mean=0.7 * strain_magnitude * random_deviatoric(n, rng),
        strain_wave=0.3 * strain_magnitude * random_deviatoric(n, rng),
        wavevector=wavevector,
        phase=rng.uniform(0, 2 * np.pi, n),
    )
    fixed = domains.kind == SUBSTRATE
    domains.gradient[fixed] = 0.0
    domains.strain_mean[fixed] = 0.0
    domains.strain_wave[fixed] = 0.0
    return domains


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
