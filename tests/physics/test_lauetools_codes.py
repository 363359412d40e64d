"""Every extinction code of LaueTools' material table, with the conditions as LaueTools states
them (known answers per code), and where they coincide with the space group (gemmi)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from laueflow.physics.extinctions import LAUETOOLS_CODES, lauetools_allowed, space_group_allowed
from laueflow.physics.materials import get_material

# LaueTools' material table (dict_Materials) uses these codes; all must be known
TABLE_CODES = {"no", "fcc", "bcc", "dia", "wurtzite", "h+k=2n", "h+k+l=2n", "2h+k=2n", "Al2O3", "SG141", "SG166",
               "R3m_sg160", "Ti2AlN", "VO2_mono", "rutile"}
HKL = np.array([h for h in itertools.product(range(-6, 7), repeat=3) if any(h)])


def test_every_code_of_the_lauetools_material_table_is_known():
    assert TABLE_CODES <= set(LAUETOOLS_CODES)


@pytest.mark.parametrize("code, allowed, forbidden", [
    ("SG141", [(2, 0, 0), (2, 2, 0), (1, 0, 1), (2, 1, 1), (0, 0, 4), (2, 2, 4)],
              [(1, 1, 0), (0, 0, 2), (1, 0, 0), (2, 2, 2), (0, 1, 2), (3, 1, 0)]),
    ("SG227", [(1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0), (4, 4, 0)],
              [(2, 0, 0), (1, 1, 0), (2, 1, 1), (1, 1, 2), (6, 0, 0)]),
    ("Ti2AlN", [(1, 0, 0), (0, 0, 2), (1, 0, 2), (1, 1, 0)], [(1, 1, 1), (0, 0, 1), (3, 0, 1), (2, -1, 1)]),
    ("rutile", [(1, 1, 0), (1, 0, 1), (2, 0, 0), (0, 1, 1)], [(1, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 2)]),
    ("VO2_mono2", [(1, 1, 0), (2, 0, 0), (1, 1, 1), (2, 0, 1)], [(1, 0, 0), (0, 1, 0), (1, 2, 0), (0, 1, 1)]),
    ("Al2O3_rhombo", [(1, 1, 0), (1, 1, 2), (2, 2, 2)], [(1, 0, 0), (1, 1, 1), (1, 2, 1)]),
    ("137", [(1, 1, 0), (2, 0, 2), (0, 0, 2)], [(1, 0, 0), (0, 0, 1), (1, 1, 1)]),
    ("2h+k=2n", [(1, 0, 0), (1, 2, 3)], [(0, 1, 0), (1, 1, 1)]),
])
def test_known_answers(code, allowed, forbidden):
    assert lauetools_allowed(np.array(allowed), code).all(), code
    assert not lauetools_allowed(np.array(forbidden), code).any(), code


def test_codes_that_are_a_space_group_agree_with_gemmi():
    np.testing.assert_array_equal(lauetools_allowed(HKL, "R3m_sg160"), space_group_allowed(HKL, "R 3 m:H"))
    np.testing.assert_array_equal(lauetools_allowed(HKL, "SG166"), space_group_allowed(HKL, "R -3 m:H"))


def test_beta_tin_uses_sg141():
    sn = get_material("Sn")
    assert sn.lauetools_extinction == "SG141"
    code, group = lauetools_allowed(HKL, "SG141"), space_group_allowed(HKL, sn.spacegroup.xhm())
    old = lauetools_allowed(HKL, "h+k+l=2n")  # the code LaueTools used for Sn before SG141
    assert (code != group).sum() == 36 and (old != group).sum() == 112  # SG141: much closer to I4₁/amd
