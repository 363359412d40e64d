"""Materials: lattice, space group, atom sites, extinction rule, structure factors.

A :class:`Material` answers the two questions the simulator asks: which reflections are allowed
(:meth:`Material.allowed`) and how strong they are (:meth:`Material.structure_factor_squared`).

Extinction rules (``extinction_rule``):

* ``"space_group"`` (default): reflection conditions of the space group (gemmi) **and**
  structure-factor zeros from the atom sites where they are known (e.g. Si/Ge 222, 600).
* ``"lauetools"``: LaueTools' own short code (``lauetools_extinction``), to compare with
  LaueTools spot lists exactly. ``docs/materials.md`` lists where the two rules differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from importlib import resources

import gemmi
import numpy as np
import yaml

from .extinctions import LAUETOOLS_CODES, lauetools_allowed, space_group_allowed
from .lattice import b_matrix, reciprocal_metric

__all__ = ["AtomSite", "Material", "get_material", "get_materials", "list_materials", "material_from_entry",
           "material_from_dict", "register_materials", "material_differences", "lauetools_material",
           "LAUETOOLS_PRESET"]

#: |F|² below this fraction of Σf² counts as a structure-factor zero
_STRUCTURE_FACTOR_ZERO = 1e-6


@dataclass(frozen=True)
class AtomSite:
    """An atom of the asymmetric unit: element symbol and fractional coordinates."""

    element: str
    xyz: tuple[float, float, float]
    occupancy: float = 1.0


@dataclass(frozen=True, eq=False)
class Material:
    """A crystalline phase.

    Parameters
    ----------
    name : key, e.g. ``"Cu"``.
    lattice_parameters : ``(a, b, c, alpha, beta, gamma)`` in Å and degrees.
    space_group : Hermann–Mauguin symbol (gemmi, optionally with ``:setting``) or number 1–230.
    atoms : asymmetric-unit sites; empty when unknown (then only space-group conditions apply).
    lauetools_extinction : LaueTools code (``fcc``, ``dia``, ``bcc``, ``wurtzite`` …) or None.
    extinction_rule : ``"space_group"`` or ``"lauetools"``.
    """

    name: str
    lattice_parameters: tuple[float, ...]
    space_group: str | int = 1
    atoms: tuple[AtomSite, ...] = ()
    lauetools_extinction: str | None = None
    extinction_rule: str = "space_group"
    elastic_constants_gpa: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        params = tuple(float(v) for v in self.lattice_parameters)
        if len(params) != 6 or min(params[:3]) <= 0:
            raise ValueError(
                f"material {self.name!r}: lattice_parameters must be (a, b, c, alpha, beta, gamma) "
                f"with positive lengths in Å, got {self.lattice_parameters}"
            )
        object.__setattr__(self, "lattice_parameters", params)
        object.__setattr__(self, "atoms", tuple(_site(a) for a in self.atoms))
        if self.extinction_rule not in ("space_group", "lauetools"):
            raise ValueError(f"extinction_rule must be 'space_group' or 'lauetools', got {self.extinction_rule!r}")
        if self.extinction_rule == "lauetools" and self.lauetools_extinction not in LAUETOOLS_CODES:
            raise ValueError(
                f"material {self.name!r}: extinction_rule 'lauetools' needs lauetools_extinction in "
                f"{sorted(LAUETOOLS_CODES)}, got {self.lauetools_extinction!r}"
            )
        self.spacegroup  # validates the symbol early

    # -- crystallography -------------------------------------------------------------------
    @cached_property
    def spacegroup(self):
        """The gemmi ``SpaceGroup``."""
        try:
            return gemmi.SpaceGroup(self.space_group) if isinstance(self.space_group, str) else gemmi.SpaceGroup(int(self.space_group))
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"material {self.name!r}: unknown space group {self.space_group!r} ({err})") from None

    @property
    def space_group_number(self) -> int:
        return self.spacegroup.number

    @property
    def crystal_system(self) -> str:
        return self.spacegroup.crystal_system_str()

    @cached_property
    def b_matrix(self) -> np.ndarray:
        """LaueTools ``B0`` (3, 3), Å⁻¹."""
        return b_matrix(self.lattice_parameters)

    def with_rule(self, extinction_rule: str) -> "Material":
        """Copy of this material using ``extinction_rule`` (``"space_group"`` or ``"lauetools"``)."""
        return replace(self, extinction_rule=extinction_rule)

    def allowed(self, hkl) -> np.ndarray:
        """Boolean mask (...,) of allowed reflections for integer ``hkl`` (..., 3)."""
        hkl = np.asarray(hkl, dtype=np.int64)
        if self.extinction_rule == "lauetools":
            return lauetools_allowed(hkl, self.lauetools_extinction)
        ok = space_group_allowed(hkl, self.spacegroup.xhm())
        if self.atoms:
            f2 = self.structure_factor_squared(hkl)
            ok &= f2 > _STRUCTURE_FACTOR_ZERO * self._sum_f2_zero
        return ok

    @cached_property
    def _positions(self):
        """All atom positions in the cell: (elements list, (n_atoms, 3) fractional, occupancies)."""
        ops = self.spacegroup.operations()
        elements, coords, occ = [], [], []
        for site in self.atoms:
            pts = np.array([op.apply_to_xyz(list(site.xyz)) for op in ops]) % 1.0
            pts = _unique_positions(pts)
            elements += [site.element] * len(pts)
            coords.append(pts)
            occ += [site.occupancy] * len(pts)
        return elements, np.concatenate(coords) if coords else np.zeros((0, 3)), np.array(occ)

    @cached_property
    def _sum_f2_zero(self) -> float:
        elements, _, occ = self._positions
        return float(sum((o * _form_factor(e, 0.0)) ** 2 for e, o in zip(elements, occ))) or 1.0

    def structure_factor_squared(self, hkl) -> np.ndarray:
        """|F(hkl)|² (electrons²) from the atom sites and IT92 form factors; 1 if no atoms known."""
        hkl = np.asarray(hkl, dtype=float)
        if not self.atoms:
            return np.ones(hkl.shape[:-1])
        elements, coords, occ = self._positions
        s2 = np.einsum("...i,ij,...j->...", hkl, reciprocal_metric(self.lattice_parameters), hkl) / 4
        phase = 2 * np.pi * hkl @ coords.T  # (..., n_atoms)
        f = np.stack([_form_factor(e, s2) * o for e, o in zip(elements, occ)], axis=-1)
        real = np.sum(f * np.cos(phase), axis=-1)
        imag = np.sum(f * np.sin(phase), axis=-1)
        return real**2 + imag**2

    def to_dict(self) -> dict:
        """Plain-data description (for Zarr attributes and provenance); :func:`material_from_dict`
        rebuilds the material from it, so stores carry their materials' full definitions."""
        return {
            "name": self.name,
            "lattice_parameters": list(self.lattice_parameters),
            "space_group": self.spacegroup.xhm(),
            "space_group_number": self.space_group_number,
            "atoms": [[a.element, *a.xyz, a.occupancy] for a in self.atoms],
            "lauetools_extinction": self.lauetools_extinction,
            "extinction_rule": self.extinction_rule,
            "elastic_constants_gpa": dict(self.elastic_constants_gpa),
            "source": self.source,
        }


def _site(atom) -> AtomSite:
    if isinstance(atom, AtomSite):
        return atom
    element, *xyz = atom
    if len(xyz) not in (3, 4):
        raise ValueError(f"atom site must be [element, x, y, z(, occupancy)], got {atom}")
    return AtomSite(str(element), tuple(float(v) for v in xyz[:3]), float(xyz[3]) if len(xyz) == 4 else 1.0)


def _unique_positions(points, tol=1e-6):
    keep = []
    for p in points:
        if not any(np.all(np.abs(((p - q) + 0.5) % 1.0 - 0.5) < tol) for q in keep):
            keep.append(p)
    return np.array(keep)


@lru_cache(maxsize=None)
def _it92(element: str):
    coefficients = gemmi.Element(element).it92
    return np.array(coefficients.a), np.array(coefficients.b), float(coefficients.c)


def _form_factor(element: str, stol2):
    """X-ray form factor f(sinθ/λ) from the IT92 Gaussian fit; ``stol2 = (sinθ/λ)²`` in Å⁻²."""
    a, b, c = _it92(element)
    stol2 = np.asarray(stol2, dtype=float)
    return np.sum(a * np.exp(-np.multiply.outer(stol2, b)), axis=-1) + c


@lru_cache(maxsize=1)
def _library() -> dict:
    text = resources.files("laueflow.data").joinpath("materials.yaml").read_text()
    return yaml.safe_load(text)


def material_from_entry(name: str, entry: dict) -> Material:
    """A :class:`Material` from one entry of a materials YAML mapping (layout of
    ``laueflow/data/materials.yaml``; user files: :func:`laueflow.io.materials_file.load_materials_file`)."""
    unknown = set(entry) - {"lattice", "space_group", "atoms", "lauetools_extinction", "extinction_rule", "elastic_constants_gpa", "source"}
    if unknown:
        raise ValueError(f"material {name!r}: unknown keys {sorted(unknown)}")
    return Material(
        name=name,
        lattice_parameters=tuple(entry["lattice"]),
        space_group=entry.get("space_group", 1),
        atoms=tuple(entry.get("atoms") or ()),
        lauetools_extinction=entry.get("lauetools_extinction"),
        extinction_rule=entry.get("extinction_rule", "space_group"),
        elastic_constants_gpa=dict(entry.get("elastic_constants_gpa") or {}),
        source=entry.get("source", ""),
    )


def material_from_dict(d: dict) -> Material:
    """The :class:`Material` described by :meth:`Material.to_dict` (as stored in scan and results
    stores and model files)."""
    return Material(name=d["name"], lattice_parameters=tuple(d["lattice_parameters"]), space_group=d["space_group"],
                    atoms=tuple(d.get("atoms") or ()), lauetools_extinction=d.get("lauetools_extinction"),
                    extinction_rule=d.get("extinction_rule", "space_group"),
                    elastic_constants_gpa=dict(d.get("elastic_constants_gpa") or {}), source=d.get("source", ""))


#: materials registered in this process (a user's materials file), looked up before the library
_USER_MATERIALS: dict[str, Material] = {}


def register_materials(materials) -> list[str]:
    """Make ``materials`` (Material objects) known by name to :func:`get_material` in this
    process, before the library (a user's materials file; ``laueflow … --materials-file``)."""
    for m in materials:
        _USER_MATERIALS[m.name.lower()] = m
    return [m.name for m in materials]


def list_materials() -> list[str]:
    """Names of the materials in the built-in library."""
    return sorted(_library())


_ALIASES = {"fe": "alpha-Fe", "alpha_fe": "alpha-Fe", "α-fe": "alpha-Fe", "sapphire": "Al2O3", "zirconia": "ZrO2"}


#: suffix selecting LaueTools' lattice parameters and extinction code: ``get_material("Cu@lauetools")``
LAUETOOLS_PRESET = "@lauetools"


@lru_cache(maxsize=1)
def _lauetools_table() -> dict:
    text = resources.files("laueflow.data").joinpath("lauetools_materials.yaml").read_text()
    return yaml.safe_load(text)


def lauetools_material(name: str) -> Material:
    """``name`` as LaueTools defines it (its lattice parameters and extinction code, rule
    ``"lauetools"``), named ``"<name>@lauetools"``: spot lists identical to LaueTools' for
    cross-checks (the library's space group and atom sites are kept where it has the material)."""
    table = {k.lower(): k for k in _lauetools_table()}
    key = table.get(str(name).lower()) or table.get(_ALIASES.get(str(name).lower(), "").lower())
    if key is None:
        raise ValueError(f"no LaueTools preset for {name!r}; presets: {', '.join(sorted(_lauetools_table()))}")
    entry = _lauetools_table()[key]
    try:
        base = _library_material(key, "space_group")
        space_group, atoms, elastic = base.space_group, base.atoms, base.elastic_constants_gpa
    except ValueError:
        space_group, atoms, elastic = entry["space_group"], (), {}
    return Material(name=f"{key}{LAUETOOLS_PRESET}", lattice_parameters=tuple(entry["lattice"]),
                    space_group=space_group, atoms=atoms, lauetools_extinction=entry["code"],
                    extinction_rule="lauetools", elastic_constants_gpa=dict(elastic),
                    source="LaueTools material table (dict_Materials), laueflow/data/lauetools_materials.yaml")


def get_material(name: str, extinction_rule: str = "space_group") -> Material:
    """A material by name (case-insensitive): one registered from a user's materials file
    (:func:`register_materials`), else the built-in library's, e.g. ``get_material("Cu")``;
    ``"Cu@lauetools"``: LaueTools' definition (:func:`lauetools_material`, its rule always)."""
    if str(name).lower().endswith(LAUETOOLS_PRESET):
        return lauetools_material(str(name)[: -len(LAUETOOLS_PRESET)])
    user = _USER_MATERIALS.get(str(name).lower())
    if user is not None:
        return user if extinction_rule == user.extinction_rule else user.with_rule(extinction_rule)
    return _library_material(name, extinction_rule)


@lru_cache(maxsize=None)
def _library_material(name: str, extinction_rule: str) -> Material:
    library = _library()
    key = {k.lower(): k for k in library}.get(name.lower()) or _ALIASES.get(name.lower())
    if key is None:
        raise ValueError(
            f"unknown material {name!r}; known: {', '.join(list_materials())}. "
            "Define others with Material(name, lattice_parameters, space_group, ...) or a materials YAML file."
        )
    return material_from_entry(key, library[key]).with_rule(extinction_rule)


def get_materials(materials, extinction_rule: str = "space_group") -> list[Material]:
    """Materials from names, :class:`Material` objects or ``{"name": ...}`` dicts (one or a list).

    Names come from the library (:func:`get_material`; unknown names raise ``ValueError`` listing
    the known ones); ``Material`` objects pass through unchanged.
    """
    if isinstance(materials, (str, Material, dict)):
        materials = [materials]
    out = []
    for m in materials or []:
        if isinstance(m, Material):
            out.append(m)
        elif isinstance(m, dict) and "lattice_parameters" in m:  # a full definition (stores, model files)
            mat = material_from_dict(m)
            out.append(mat if mat.extinction_rule == extinction_rule else mat.with_rule(extinction_rule))
        else:
            out.append(get_material(str(m["name"] if isinstance(m, dict) else m), extinction_rule))
    return out


def material_differences(first, second, labels=("first", "second")) -> list[str]:
    """What differs between two lists of materials, compared by name in any order: materials
    only in one, lattice parameters (beyond 1e-6 Å/°), space group. Empty: the same materials."""
    a, b = {m.name: m for m in first}, {m.name: m for m in second}
    out = [f"{name} only in the {labels[0]}" for name in a if name not in b]
    out += [f"{name} only in the {labels[1]}" for name in b if name not in a]
    for name in (n for n in a if n in b):
        if not np.allclose(a[name].lattice_parameters, b[name].lattice_parameters, rtol=0, atol=1e-6):
            out.append(f"{name}: lattice {list(a[name].lattice_parameters)} in the {labels[0]}, "
                       f"{list(b[name].lattice_parameters)} in the {labels[1]}")
        if a[name].spacegroup.number != b[name].spacegroup.number:
            out.append(f"{name}: space group {a[name].spacegroup.xhm()} in the {labels[0]}, "
                       f"{b[name].spacegroup.xhm()} in the {labels[1]}")
    return out
