from __future__ import annotations

import numpy as np
import pytest

from edgetrust.collab.robust import coordinate_median, krum, norm_bound, trimmed_mean
from edgetrust.errors import InvalidInputError


def _honest_and_attackers(n: int = 10, f: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    honest = [np.ones(20) + 0.1 * rng.normal(size=20) for _ in range(n - f)]
    return honest + [np.full(20, 1000.0)] * f


def test_plain_mean_is_hijacked_robust_rules_are_not() -> None:
    ups = _honest_and_attackers()
    assert np.mean(ups, axis=0).min() > 100  # two attackers drag the mean far away
    for agg in (
        coordinate_median(ups),
        trimmed_mean(ups, trim=2),
        krum(ups, byzantine=2),
        krum(ups, byzantine=2, select=6),
    ):
        assert np.allclose(agg, 1.0, atol=0.5)  # one honest update has noise 0.1·N(0,1)


def test_trimmed_mean_without_trimming_is_mean() -> None:
    ups = [np.arange(5.0), np.arange(5.0) * 3]
    assert np.allclose(trimmed_mean(ups, trim=0), np.arange(5.0) * 2)


def test_norm_bound() -> None:
    assert np.allclose(norm_bound(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    assert np.allclose(norm_bound(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])


def test_krum_picks_the_central_update() -> None:
    ups = [
        np.array([0.0, 0.0]),
        np.array([0.1, 0.0]),
        np.array([0.0, 0.1]),
        np.array([0.1, 0.1]),
        np.array([5.0, 5.0]),
    ]
    assert np.linalg.norm(krum(ups, byzantine=1)) < 0.2


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (lambda: coordinate_median([]), "at least one"),
        (lambda: coordinate_median([np.zeros(2), np.zeros(3)]), "one length"),
        (lambda: coordinate_median([np.array([np.nan])]), "NaN"),
        (lambda: trimmed_mean([np.zeros(2)] * 4, trim=2), "`trim`"),
        (lambda: krum([np.zeros(2)] * 4, byzantine=1), "`byzantine`"),
        (lambda: krum([np.zeros(2)] * 6, byzantine=1, select=6), "`select`"),
        (lambda: norm_bound(np.zeros(2), 0), "`max_norm`"),
    ],
)
def test_bad_input(call: object, msg: str) -> None:
    with pytest.raises(InvalidInputError, match=msg):
        call()  # type: ignore[operator]
