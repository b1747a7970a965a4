"""KNN-Shapley: the closed form against Shapley values from the definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.data.value import exact_shapley, knn_shapley, knn_utility, owner_shares
from edgetrust.errors import InvalidInputError


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 8),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
)
def test_closed_form_equals_the_definition(n: int, k: int, t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xtr = rng.normal(size=(n, 2))
    ytr = rng.integers(0, 2, n)
    xte = rng.normal(size=(t, 2))
    yte = rng.integers(0, 2, t)
    fast = knn_shapley(xtr, ytr, xte, yte, k=k)
    slow = exact_shapley(n, knn_utility(xtr, ytr, xte, yte, k=k))
    assert np.abs(fast - slow).max() < 1e-9
    # efficiency: the values sum to the utility of the whole set
    assert abs(fast.sum() - knn_utility(xtr, ytr, xte, yte, k=k)(list(range(n)))) < 1e-9


def test_flipped_labels_get_the_lowest_values() -> None:
    from edgetrust.zoo import load_digits_split

    # the anchor setting: 500 training digits, 1,297 test digits, 10% labels flipped
    xtr, xte, ytr, yte = load_digits_split(test_fraction=1297 / 1797)
    assert len(xtr) == 500
    rng = np.random.default_rng(0)
    ytr = ytr.copy()
    flipped = rng.choice(500, 50, replace=False)
    ytr[flipped] = (ytr[flipped] + rng.integers(1, 10, 50)) % 10
    v = knn_shapley(xtr, ytr, xte, yte, k=5)
    bottom = set(np.argsort(v)[:50].tolist())
    assert len(bottom & set(flipped.tolist())) / 50 >= 0.8


def test_shares_and_bad_input() -> None:
    assert owner_shares([1.0, 1.0, 2.0, -1.0], ["a", "b", "b", "a"]) == {"a": 0.25, "b": 0.75}
    with pytest.raises(InvalidInputError):
        knn_shapley(np.zeros((3, 2)), [0, 1], np.zeros((1, 2)), [0])
    with pytest.raises(InvalidInputError):
        knn_shapley(np.zeros((3, 2)), [0, 1, 1], np.zeros((1, 3)), [0])
    with pytest.raises(InvalidInputError):
        knn_shapley([[np.nan, 1]], [0], [[0, 1]], [0])
    with pytest.raises(InvalidInputError):
        knn_shapley(np.zeros((3, 2)), [0, 1, 1], np.zeros((1, 2)), [0], k=0)
