"""Which reflections are allowed: LaueTools extinction codes and space-group rules.

Two selectable rules (``Material.extinction_rule``):

* ``"lauetools"`` — LaueTools' short codes (``fcc``, ``bcc``, ``dia``, ``wurtzite``, ``no``,
  ``h+k+l=2n``, ``h+k=2n``, ``Al2O3``, ``SG166``, ``SG141`` (β-Sn), ``SG227``, ``Ti2AlN``,
  ``Al2O3_rhombo``, ``137``, ``VO2_mono``, ``VO2_mono2``, ``rutile``, and ``R3m_sg160``, ``2h+k=2n``
  from its material table), so that simulated spot lists can be compared with LaueTools exactly.
  The conditions are LaueTools' as its ``ApplyExtinctionrules`` states them (e.g. its ``SG227``
  lacks Fd-3m's 0kl: k + l = 4n), not the space group's.
* ``"space_group"`` — the general and special reflection conditions of any of the 230 space
  groups (from gemmi), plus structure-factor zeros where atom sites are known.

All functions take integer Miller indices ``hkl`` of shape (..., 3) and return a boolean array
(...,). ``000`` is never allowed.
"""
from __future__ import annotations

from functools import lru_cache

import gemmi
import numpy as np

__all__ = ["LAUETOOLS_CODES", "lauetools_allowed", "space_group_allowed"]


def _split(hkl):
    hkl = np.asarray(hkl)
    return hkl[..., 0], hkl[..., 1], hkl[..., 2]


def _fcc(h, k, l):
    return ((h - k) % 2 == 0) & ((h - l) % 2 == 0)


LAUETOOLS_CODES = {
    "no": lambda h, k, l: np.ones(np.shape(h), bool),
    "fcc": _fcc,
    "dia": lambda h, k, l: _fcc(h, k, l) & ((h + k + l) % 4 != 2),
    "bcc": lambda h, k, l: (h + k + l) % 2 == 0,
    "h+k+l=2n": lambda h, k, l: (h + k + l) % 2 == 0,
    "h+k=2n": lambda h, k, l: (h + k) % 2 == 0,
    "wurtzite": lambda h, k, l: ~((h == k) & (l % 2 == 1)),
    "Al2O3": lambda h, k, l: ((-h + k + l) % 3 == 0) & (l % 2 == 0),
    "SG166": lambda h, k, l: (-h + k + l) % 3 == 0,
    "VO2_mono": lambda h, k, l: ~(
        ((k == 0) & (l % 2 == 1)) | ((h == 0) & (l == 0) & (k % 2 == 1))
    ),
    "VO2_mono2": lambda h, k, l: ((h + k) % 2 == 0) & ~(
        ((k == 0) & (h % 2 == 1)) | ((h == 0) & (k % 2 == 1))
    ),
    "rutile": lambda h, k, l: ~(
        ((h == 0) & ((k + l) % 2 == 1)) | ((h == 0) & (k == 0) & (l % 2 == 1))
        | ((k == 0) & (l == 0) & (h % 2 == 1))
    ),
    "Ti2AlN": lambda h, k, l: ~((h == k) & (l % 2 == 1)) & ~((l % 2 == 1) & ((h - k) % 3 == 0)),
    "SG141": lambda h, k, l: ((h + k + l) % 2 == 0) & ~(  # β-Sn, I4₁/amd
        ((l == 0) & (h % 2 == 1) & (k % 2 == 1)) | ((h == 0) & ((k + l) % 2 == 1))
        | ((h == k) & ((2 * h + l) % 4 != 0)) | ((h == 0) & (k == 0) & (l % 4 != 0))
        | ((k == 0) & (l == 0) & (h % 2 == 1)) | ((k == -h) & (l == 0) & (h % 2 == 1))
    ),
    "SG227": lambda h, k, l: _fcc(h, k, l) & ~(  # Fd-3m, as LaueTools states it
        ((h == 0) & (k % 2 == 1) & (l % 2 == 1) & ((k + l) % 4 != 0))
        | ((k == 0) & (h % 2 == 1) & (l % 2 == 1) & ((h + l) % 4 != 0))
        | ((l == 0) & (h % 2 == 1) & (k % 2 == 1) & ((h + k) % 4 != 0))
        | ((h == k) & ((h + l) % 2 == 1)) | ((k == l) & ((l + h) % 2 == 1)) | ((l == h) & ((h + k) % 2 == 1))
        | ((k == 0) & (l == 0) & (h % 4 != 0)) | ((l == 0) & (h == 0) & (k % 4 != 0))
        | ((h == 0) & (k == 0) & (l % 4 != 0))
    ),
    "Al2O3_rhombo": lambda h, k, l: (h == k) & (l % 2 == 0) & ((h + k + l) % 2 == 0),
    "137": lambda h, k, l: (l % 2 == 0) & ((h + k + l) % 2 == 0),
    # in LaueTools' material table, not in the ApplyExtinctionrules versions we could read: the
    # R-centring condition of R3m (hexagonal axes) and "2h+k = 2n" as written (i.e. k even)
    "R3m_sg160": lambda h, k, l: (-h + k + l) % 3 == 0,
    "2h+k=2n": lambda h, k, l: (2 * h + k) % 2 == 0,
}


def lauetools_allowed(hkl, code: str) -> np.ndarray:
    """Allowed-reflection mask under LaueTools' extinction ``code`` (see module doc)."""
    if code not in LAUETOOLS_CODES:
        raise ValueError(
            f"unknown LaueTools extinction code {code!r}; known: {sorted(LAUETOOLS_CODES)}"
        )
    h, k, l = _split(np.asarray(hkl, dtype=np.int64))
    allowed = np.asarray(LAUETOOLS_CODES[code](h, k, l), dtype=bool)
    return allowed & ~((h == 0) & (k == 0) & (l == 0))


@lru_cache(maxsize=64)
def _group_ops(space_group):
    if isinstance(space_group, str):
        return gemmi.SpaceGroup(space_group).operations()
    if not 1 <= int(space_group) <= 230:
        raise ValueError(f"space group number must be 1..230, got {space_group}")
    return gemmi.SpaceGroup(int(space_group)).operations()


def space_group_allowed(hkl, space_group) -> np.ndarray:
    """Allowed-reflection mask from the reflection conditions of ``space_group`` (gemmi).

    ``space_group``: number 1–230 or a gemmi Hermann–Mauguin symbol (with ``:setting``).

    Evaluated once per distinct hkl; results are cached per (space group, hkl set) by callers.
    """
    hkl = np.asarray(hkl, dtype=np.int64)
    ops = _group_ops(space_group)
    flat = hkl.reshape(-1, 3)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    absent = np.fromiter(
        (ops.is_systematically_absent([int(h), int(k), int(l)]) for h, k, l in unique),
        dtype=bool,
        count=len(unique),
    )
    zero = ~unique.any(axis=1)
    allowed = ~(absent | zero)
    return allowed[inverse.ravel()].reshape(hkl.shape[:-1])
