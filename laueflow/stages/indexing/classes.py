"""Output classes of the LaueNN indexer: hkl families (+ material).

A spot's class is the symmetry family of its *primitive* reciprocal-lattice direction (harmonics
merged: ``hkl`` reduced by its gcd), restricted to indices ``|h|, |k|, |l| ≤ max_index``, for one
material. Families are orbits of the material's Laue group (:func:`hkl_operators`, point group
plus inversion); families whose angular fingerprint (angles to all observable directions up to
``max_index + 2`` within ``max_angle_deg``, binned at ``step_deg``) is identical and non-empty cannot be told apart
by the network and are merged into one class. Multi-material tables concatenate the per-material
class lists (material 0 first), so the class also predicts the material.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from ...physics.materials import Material
from ...physics.symmetry import hkl_operators

__all__ = ["ClassTable", "build_class_table", "primitive_hkl", "observable_directions"]


def primitive_hkl(hkl) -> np.ndarray:
    """Miller indices reduced by their gcd (harmonics → primitive direction); 000 stays 000."""
    hkl = np.asarray(hkl, dtype=np.int64)
    g = np.gcd.reduce(np.abs(hkl), axis=-1)
    return hkl // np.where(g == 0, 1, g)[..., None]


def observable_directions(material: Material, max_index: int, max_multiple: int = 12) -> np.ndarray:
    """Primitive directions with ``|h|,|k|,|l| ≤ max_index`` having an allowed multiple (≤ 12)."""
    r = np.arange(-max_index, max_index + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.gcd.reduce(np.abs(hkl), axis=1) == 1]
    mult = np.arange(1, max_multiple + 1)
    allowed = material.allowed(hkl[:, None, :] * mult[None, :, None]).any(axis=1)
    return hkl[allowed]


@dataclass
class ClassTable:
    """Class list of one or several materials.

    Attributes
    ----------
    materials : material names, in model order.
    max_index : per material.
    class_material : (C,) int, material index of each class.
    class_hkl : (C, 3) int, representative primitive hkl of each class.
    members : list of C arrays (m_c, 3): all primitive hkl of the class (every merged family).
    lookup : per material, int array of shape ``(2L+1,)*3`` mapping primitive hkl → class (−1);
        ``L ≥ max_index`` covers whole families (hexagonal families reach beyond ``max_index``).
    """

    materials: list
    max_index: list
    class_material: np.ndarray
    class_hkl: np.ndarray
    members: list
    lookup: list = field(repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.class_hkl)

    def label(self, material_index, hkl) -> np.ndarray:
        """Class of each spot (n,) given its material index (n,) or scalar and hkl (n, 3); −1 = none."""
        hkl = primitive_hkl(hkl)
        mat = np.broadcast_to(np.asarray(material_index, dtype=np.int64), hkl.shape[:-1])
        out = np.full(hkl.shape[:-1], -1, dtype=np.int64)
        for i, table in enumerate(self.lookup):
            k = (table.shape[0] - 1) // 2
            sel = (mat == i) & (np.abs(hkl).max(axis=-1) <= k)
            if sel.any():
                h = hkl[sel] + k
                out[sel] = table[h[:, 0], h[:, 1], h[:, 2]]
        return out

    def subset(self, keep) -> "ClassTable":
        """Table with only the classes ``keep`` (bool mask or indices), lookups renumbered."""
        keep = np.flatnonzero(np.asarray(keep)) if np.asarray(keep).dtype == bool else np.asarray(keep)
        remap = np.full(self.n_classes + 1, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        lookup = [remap[t] for t in self.lookup]  # −1 indexes the sentinel → −1
        return ClassTable(list(self.materials), list(self.max_index), self.class_material[keep],
                          self.class_hkl[keep], [self.members[i] for i in keep], lookup)

    def to_dict(self) -> dict:
        return {"materials": list(self.materials), "max_index": [int(k) for k in self.max_index],
                "class_material": self.class_material.tolist(), "class_hkl": self.class_hkl.tolist(),
                "members": [m.tolist() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassTable":
        class_material = np.asarray(d["class_material"], dtype=np.int64)
        members = [np.asarray(m, dtype=np.int64).reshape(-1, 3) for m in d["members"]]
        lookup = []
        for i in range(len(d["max_index"])):
            mine = [members[c] for c in np.flatnonzero(class_material == i)]
            k = int(max((np.abs(m).max() for m in mine), default=0))
            t = np.full((2 * k + 1,) * 3, -1, dtype=np.int64)
            for c in np.flatnonzero(class_material == i):
                h = members[c] + k
                t[h[:, 0], h[:, 1], h[:, 2]] = c
            lookup.append(t)
        return cls(list(d["materials"]), [int(k) for k in d["max_index"]], class_material,
                   np.asarray(d["class_hkl"], dtype=np.int64).reshape(-1, 3), members, lookup)


def _families(material: Material, max_index: int):
    """(representatives (F, 3), full families) of the observable primitive directions ≤ max_index."""
    dirs = observable_directions(material, max_index)
    ops = hkl_operators(material)
    k = max_index
    big = 3 * max_index + 1  # room for whole orbits (hexagonal: |h + k| may exceed max_index)
    seen = np.zeros((2 * big + 1,) * 3, dtype=bool)
    reps, members = [], []
    # deterministic order: by |q| then lexicographic (LaueNN orders by enumeration; any fixed order works)
    qlen = np.linalg.norm(dirs @ material.b_matrix.T, axis=1)
    order = np.lexsort((-dirs[:, 2], -dirs[:, 1], -dirs[:, 0], np.round(qlen, 9)))
    for h in dirs[order]:
        if seen[tuple(h + big)]:
            continue
        orbit = np.unique(ops @ h, axis=0)  # the whole family, members may exceed max_index
        seen[tuple((orbit + big).T)] = True
        # representative: lexicographically largest member (LaueNN keeps the last of its enumeration)
        rep = orbit[np.lexsort(orbit.T[::-1])[-1]]
        reps.append(rep)
        members.append(orbit)
    return np.asarray(reps), members


def _fingerprint(rep, dirs, b0, max_angle_deg, step_deg):
    g = dirs @ b0.T
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r = b0 @ rep
    r = r / np.linalg.norm(r)
    ang = np.rad2deg(np.arccos(np.clip(g @ r, -1, 1)))
    ang = ang[(ang > 1e-6) & (ang <= max_angle_deg)]
    return tuple(np.bincount(np.floor(ang / step_deg + 1e-6).astype(int),
                             minlength=int(round(max_angle_deg / step_deg)) + 1).tolist())


def build_class_table(materials, max_index, max_angle_deg: float = 20.0, step_deg: float = 0.1) -> ClassTable:
    """Classes of ``materials`` (list of :class:`Material`), ``max_index`` int or one per material."""
    if isinstance(max_index, (int, np.integer)):
        max_index = [int(max_index)] * len(materials)
    class_material, class_hkl, members, lookup = [], [], [], []
    for i, (mat, k) in enumerate(zip(materials, max_index)):
        reps, fam_members = _families(mat, k)
        # merge families with identical, non-empty fingerprints (angles to the observable
        # directions up to max_index + 2 within max_angle_deg)
        near = observable_directions(mat, k + 2)
        groups: dict = {}
        for f, rep in enumerate(reps):
            fp = _fingerprint(rep, near, mat.b_matrix, max_angle_deg, step_deg)
            groups.setdefault(fp if any(fp) else ("empty", f), []).append(f)
        kl = int(max(np.abs(m).max() for m in fam_members))
        table = np.full((2 * kl + 1,) * 3, -1, dtype=np.int64)
        for fams in sorted(groups.values()):
            c = len(class_hkl)
            mem = np.concatenate([fam_members[f] for f in fams])
            class_material.append(i)
            class_hkl.append(reps[fams[0]])
            members.append(mem)
            h = mem + kl
            table[h[:, 0], h[:, 1], h[:, 2]] = c
        lookup.append(table)
    names = [m.name for m in materials]
    return ClassTable(names, list(max_index), np.asarray(class_material, dtype=np.int64),
                      np.asarray(class_hkl, dtype=np.int64).reshape(-1, 3), members, lookup)
