"""Attribution: exact KNN-Shapley values of training records, and per-owner shares.

`knn_shapley` is the closed form of Jia et al., "Efficient task-specific data valuation for
nearest neighbor algorithms" (VLDB 2019, Theorem 1): for the utility "fraction of the K nearest
neighbours of a test point that share its label", the Shapley value of every training point is
given by one recursion over the training points sorted by distance, so all N values for one
test point cost O(N log N); values are averaged over the test points. The farthest point's
value is 1/max(N, K) (the paper states 1/N, for N ≥ K; the cross-check found the case N < K).
`exact_shapley` computes
the same values from the definition (every subset, O(2^N)), for cross-checking on small sets.
Values are floats (sums of fractions); ties in distance are broken by training index.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["exact_shapley", "knn_shapley", "knn_utility", "owner_shares"]

F64 = npt.NDArray[np.float64]


def _check(x: Any, y: Any, name: str) -> tuple[F64, npt.NDArray[Any]]:
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y)
    if xa.ndim != 2 or ya.ndim != 1 or len(xa) != len(ya) or len(xa) == 0:
        raise InvalidInputError(f"{name} needs features N×D and labels N (N ≥ 1)")
    if not np.isfinite(xa).all():
        raise InvalidInputError(f"{name} features hold NaN or infinity")
    return xa, ya


def _order(x_train: F64, x_test: F64, chunk: int = 1024) -> npt.NDArray[np.int64]:
    """For each test point, training indices by increasing distance (stable on ties)."""
    out = np.empty((len(x_test), len(x_train)), dtype=np.int64)
    sq = (x_train**2).sum(axis=1)
    for s in range(0, len(x_test), chunk):
        t = x_test[s : s + chunk]
        d = sq[None, :] - 2.0 * t @ x_train.T  # |t|² is the same for the whole row
        out[s : s + chunk] = np.argsort(d, axis=1, kind="stable")
    return out


def knn_shapley(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, k: int = 5) -> F64:
    """Exact Shapley value of each training record for the K-nearest-neighbour utility.

    Recursion (Jia et al. 2019, Thm. 1), training points α_1..α_N sorted by distance to one
    test point: s(α_N) = 1[y_αN = y] / max(N, K), and for i < N
    s(α_i) = s(α_{i+1}) + (1[y_αi = y] - 1[y_α(i+1) = y]) / K · min(K, i) / i.
    """
    xtr, ytr = _check(x_train, y_train, "training data")
    xte, yte = _check(x_test, y_test, "test data")
    if xtr.shape[1] != xte.shape[1]:
        raise InvalidInputError("training and test features have different widths")
    if not isinstance(k, int) or k < 1:
        raise InvalidInputError("k must be a positive integer")
    n = len(xtr)
    order = _order(xtr, xte)
    match = (ytr[order] == yte[:, None]).astype(np.float64)  # (T, N), sorted by distance
    s = np.zeros_like(match)
    s[:, n - 1] = match[:, n - 1] / max(n, k)
    i = np.arange(1, n, dtype=np.float64)  # 1-based rank i for positions 0..n-2
    coef = np.minimum(k, i) / (k * i)
    diff = (match[:, :-1] - match[:, 1:]) * coef[None, :]
    # s_i = s_N + sum_{j >= i} diff_j : a reversed cumulative sum
    s[:, :-1] = s[:, n - 1 : n] + np.cumsum(diff[:, ::-1], axis=1)[:, ::-1]
    values = np.zeros((len(xte), n))
    np.put_along_axis(values, order, s, axis=1)
    mean: F64 = values.mean(axis=0)
    return mean


def knn_utility(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, k: int = 5
) -> Callable[[Sequence[int]], float]:
    """The utility KNN-Shapley values: mean over test points of (matching among K nearest)/K."""
    xtr, ytr = _check(x_train, y_train, "training data")
    xte, yte = _check(x_test, y_test, "test data")
    d = ((xte[:, None, :] - xtr[None, :, :]) ** 2).sum(axis=2)

    def utility(subset: Sequence[int]) -> float:
        if not subset:
            return 0.0
        idx = np.array(sorted(subset))
        total = 0.0
        for t in range(len(xte)):
            near = idx[np.argsort(d[t, idx], kind="stable")[:k]]
            total += float((ytr[near] == yte[t]).sum()) / k
        return total / len(xte)

    return utility


def exact_shapley(n: int, utility: Callable[[Sequence[int]], float]) -> F64:
    """Shapley values from the definition: every subset of `n` players (n ≤ 14)."""
    if not 1 <= n <= 14:
        raise InvalidInputError("exact Shapley values are computed for 1-14 players")
    values = np.zeros(n)
    cache: dict[tuple[int, ...], float] = {}

    def u(s: tuple[int, ...]) -> float:
        if s not in cache:
            cache[s] = utility(s)
        return cache[s]

    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                values[i] += w * (u(tuple(sorted((*s, i)))) - u(s))
    return values


def owner_shares(values: Any, owners: Sequence[str]) -> dict[str, float]:
    """Each owner's share of the total positive value of the records they contributed."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(owners):
        raise InvalidInputError("one owner per value")
    pos = np.clip(v, 0, None)
    total = float(pos.sum())
    out: dict[str, float] = {}
    for o, val in zip(owners, pos, strict=True):
        out[o] = out.get(o, 0.0) + float(val)
    return {o: (s / total if total > 0 else 0.0) for o, s in sorted(out.items())}
