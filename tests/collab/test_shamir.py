from __future__ import annotations

import itertools
import os
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.collab import shamir
from edgetrust.collab.shamir import (
    PRIME,
    SHARE_BYTES,
    Share,
    combine_chunks,
    combine_secret,
    split_chunks,
    split_secret,
)
from edgetrust.errors import InvalidInputError


def test_prime_is_prime() -> None:
    # Deterministic Miller-Rabin bases valid for n < 3.3e24.
    n = PRIME
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            pytest.fail(f"{n} is composite (witness {a})")


@pytest.mark.parametrize(("t", "n"), [(1, 1), (1, 3), (2, 3), (3, 3), (2, 5), (3, 5), (5, 5)])
def test_every_threshold_subset_reconstructs(t: int, n: int) -> None:
    secret = os.urandom(32)
    xs = list(range(1, n + 1))
    shares = split_secret(secret, threshold=t, xs=xs)
    for k in range(t, n + 1):
        for subset in itertools.combinations(shares, k):
            for order in (subset, subset[::-1]):
                assert combine_secret(list(order), threshold=t) == secret


def test_fewer_than_threshold_shares_refused() -> None:
    shares = split_secret(os.urandom(32), threshold=3, xs=[1, 2, 3, 4])
    with pytest.raises(InvalidInputError, match="need 3 shares"):
        combine_secret(shares[:2], threshold=3)


def test_exhaustive_perfect_secrecy_small_field() -> None:
    """Over GF(13), t=3: any 2 shares are uniform and independent of the secret.

    For each secret, enumerate every polynomial (all 13^2 choices of the random coefficients)
    and count the pairs of evaluations at x=(1, 2), (2, 5), (4, 12): each pair of values must
    appear exactly once per secret, i.e. the view of t-1 parties is the same for every secret.
    """
    p = 13
    for xs in [(1, 2), (2, 5), (4, 12)]:
        views = []
        for secret in range(p):
            counts: Counter[tuple[int, int]] = Counter()
            for a1, a2 in itertools.product(range(p), repeat=2):
                counts[tuple((secret + a1 * x + a2 * x * x) % p for x in xs)] += 1  # type: ignore[misc]
            assert len(counts) == p * p and set(counts.values()) == {1}
            views.append(counts)
        assert all(v == views[0] for v in views)


def test_exhaustive_small_field_reconstruction() -> None:
    """GF(13), t=3, n=5: every secret, many random polynomials, every 3-subset."""
    p = 13
    for secret in range(p):
        for _ in range(5):
            rows = split_chunks([secret], threshold=3, xs=[1, 2, 3, 4, 5], prime=p)
            points = [(x, row) for x, row in zip([1, 2, 3, 4, 5], rows, strict=True)]
            for subset in itertools.combinations(points, 3):
                assert combine_chunks(list(subset), threshold=3, prime=p) == [secret]


def test_small_field_coefficients_are_uniform() -> None:
    draws = shamir._random_field_elements(13 * 2000, 13)
    counts = Counter(int(v) for v in draws)
    assert set(counts) == set(range(13))
    assert min(counts.values()) > 1700 and max(counts.values()) < 2300


def test_share_matches_independent_polynomial_evaluation() -> None:
    """Cross-check numpy Horner against Python big integers."""
    import numpy as np

    coeffs = shamir._random_field_elements(5 * 3, PRIME).reshape(5, 3)
    xs = np.asarray([1, 7, 65535, 1000], dtype=np.uint64)
    got = shamir._evaluate(coeffs, xs, PRIME)
    for i, x in enumerate(xs.tolist()):
        for m in range(3):
            want = sum(int(coeffs[d, m]) * x**d for d in range(5)) % PRIME
            assert int(got[i, m]) == want


@settings(max_examples=30, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    t=st.integers(1, 6),
    extra=st.integers(0, 4),
    data=st.data(),
)
def test_roundtrip_property(secret: bytes, t: int, extra: int, data: st.DataObject) -> None:
    xs = data.draw(
        st.lists(st.integers(1, 65535), min_size=t + extra, max_size=t + extra, unique=True)
    )
    shares = split_secret(secret, threshold=t, xs=xs)
    wire = [Share.from_bytes(s.to_bytes()) for s in shares]
    picked = data.draw(st.permutations(wire))
    assert combine_secret(picked[:t], threshold=t) == secret


def test_wrong_shares_do_not_reconstruct() -> None:
    secret = os.urandom(32)
    a = split_secret(secret, threshold=2, xs=[1, 2, 3])
    b = split_secret(os.urandom(32), threshold=2, xs=[1, 2, 3])
    mixed = [a[0], b[1]]
    try:
        assert combine_secret(mixed, threshold=2) != secret
    except InvalidInputError:
        pass


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"", "share is"),
        (b"\x00" * (SHARE_BYTES - 1), "share is"),
        (b"\x00" * SHARE_BYTES, "x-coordinate"),
        (b"\x00\x01" + b"\xff" * (SHARE_BYTES - 2), "field element"),
    ],
)
def test_malformed_share_bytes(data: bytes, msg: str) -> None:
    with pytest.raises(InvalidInputError, match=msg):
        Share.from_bytes(data)


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="32 bytes"):
        split_secret(b"short", threshold=1, xs=[1])
    with pytest.raises(InvalidInputError, match="exceeds"):
        split_secret(os.urandom(32), threshold=3, xs=[1, 2])
    with pytest.raises(InvalidInputError, match="distinct"):
        split_secret(os.urandom(32), threshold=1, xs=[1, 1])
    with pytest.raises(InvalidInputError, match=r"1\.\.65535"):
        split_secret(os.urandom(32), threshold=1, xs=[0])
    s = split_secret(os.urandom(32), threshold=2, xs=[1, 2])
    with pytest.raises(InvalidInputError, match="distinct"):
        combine_secret([s[0], s[0]], threshold=2)
