import numpy as np
import pytest

from laueflow.kernels.partitions import adjusted_rand_index, contingency_table


def test_contingency_counts_pairs_of_labels():
    table = contingency_table([0, 0, 1, 5, 5, 5], [7, 7, 7, 2, 2, 9])
    # rows: a = 0, 1, 5; columns: b = 2, 7, 9 (sorted label values)
    np.testing.assert_array_equal(table, [[0, 2, 0], [0, 1, 0], [2, 0, 1]])


def test_ari_hand_computed_and_permutation_invariant():
    a = np.array([0, 0, 0, 1, 1, 1])
    b = np.array([0, 0, 1, 1, 2, 2])
    # contingency [[2, 1, 0], [0, 1, 2]]: index = 1 + 1 = 2; rows 3 + 3 = 6; cols 1 + 1 + 1 = 3; pairs 15
    # expected = 6 * 3 / 15 = 1.2; max = 4.5 → ARI = 0.8 / 3.3
    assert adjusted_rand_index(a, b) == pytest.approx(0.8 / 3.3)
    assert adjusted_rand_index(a, 7 - a) == pytest.approx(1.0)
    assert adjusted_rand_index(b, a) == pytest.approx(adjusted_rand_index(a, b))


def test_ari_of_independent_labellings_is_near_zero_and_edge_cases():
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 4, 20000), rng.integers(0, 4, 20000))) < 0.01
    assert adjusted_rand_index([3, 3, 3], [1, 1, 1]) == 1.0
    assert np.isnan(adjusted_rand_index([1], [2]))
    with pytest.raises(ValueError, match="different sizes"):
        adjusted_rand_index([1, 2], [1, 2, 3])
