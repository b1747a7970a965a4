"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^31 - 1).

Secure aggregation shares two 32-byte secrets per client (its masking key and its self-mask
seed) with every peer, and the server reconstructs one of them per client from any `t` shares
(Shamir 1979, "How to share a secret"; Bonawitz et al. 2017, §4). A secret is cut into nine
30-bit chunks, each shared with an independent random polynomial of degree t - 1; evaluation
and interpolation run on all chunks (and on many x-coordinates) at once with numpy.

Written here rather than taken from PyPI, and tested exhaustively: the prime-field packages we
found are pure Python and too slow for a round (`shamirs` 4.0 took ~2 s to interpolate one
secret from 67 shares on this machine; a round reconstructs one secret per client), and
pycryptodome's `Shamir` works in GF(2^128) with a bit-serial multiply, slower still. The field
is the Mersenne prime 2^31 - 1 so that a product of two elements fits in an unsigned 64-bit
integer and numpy can do the arithmetic exactly.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = [
    "CHUNK_BITS",
    "MAX_SHARES",
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "Share",
    "combine_secret",
    "split_secret",
]

PRIME = 2**31 - 1
"""The field modulus, the Mersenne prime M31."""

SECRET_BYTES = 32
"""Every shared secret is 32 bytes (an X25519 private key or a PRG seed)."""

CHUNK_BITS = 30
"""Bits of secret per field element: 2^30 < PRIME, so every chunk is a field element."""

_CHUNKS = -(-SECRET_BYTES * 8 // CHUNK_BITS)  # 9 chunks carry 270 bits >= 256

MAX_SHARES = 65535
"""x-coordinates are 1..65535 (u16 on the wire); far more peers than a round has."""

SHARE_BYTES = 2 + 4 * _CHUNKS
"""Wire size of one share: u16 x-coordinate, then one u32 per chunk (big-endian)."""

U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Share:
    """One share: the evaluations at `x` of the polynomials hiding each chunk of a secret."""

    x: int
    """The x-coordinate, 1..MAX_SHARES; never 0, where the secret sits."""
    values: tuple[int, ...]
    """One field element per chunk."""

    def to_bytes(self) -> bytes:
        """Fixed-size encoding: u16 x, then u32 per chunk, big-endian."""
        return struct.pack(f">H{_CHUNKS}I", self.x, *self.values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse a share, checking its size, its x-coordinate and that values are in the field."""
        if len(data) != SHARE_BYTES:
            raise InvalidInputError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        x, *values = struct.unpack(f">H{_CHUNKS}I", data)
        if x == 0:
            raise InvalidInputError("share x-coordinate must not be 0")
        if any(v >= PRIME for v in values):
            raise InvalidInputError("share value is not a field element")
        return cls(x, tuple(values))


def _secret_to_chunks(secret: bytes) -> list[int]:
    if len(secret) != SECRET_BYTES:
        raise InvalidInputError(f"a shared secret is {SECRET_BYTES} bytes, got {len(secret)}")
    n = int.from_bytes(secret, "big")
    mask = (1 << CHUNK_BITS) - 1
    return [(n >> (CHUNK_BITS * i)) & mask for i in range(_CHUNKS)]


def _chunks_to_secret(chunks: Sequence[int]) -> bytes:
    n = 0
    for i, c in enumerate(chunks):
        if c >> CHUNK_BITS:
            raise InvalidInputError("shares do not reconstruct a valid secret (chunk overflow)")
        n |= c << (CHUNK_BITS * i)
    if n >> (SECRET_BYTES * 8):
        raise InvalidInputError("shares do not reconstruct a valid secret (too many bits)")
    return n.to_bytes(SECRET_BYTES, "big")


def _random_field_elements(count: int, prime: int) -> U64:
    """`count` elements uniform in [0, prime), by rejection sampling (exactly uniform)."""
    bits = prime.bit_length()
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        raw = np.frombuffer(os.urandom(8 * (count - out.size)), dtype=np.uint64)
        raw = raw >> np.uint64(64 - bits)
        out = np.concatenate([out, raw[raw < prime]])
    return out[:count]


def _evaluate(coeffs: U64, xs: U64, prime: int) -> U64:
    """Horner evaluation of polynomials (rows of `coeffs` are degree 0..t-1) at each x.

    `coeffs` has shape (t, m) for m polynomials; returns shape (len(xs), m).
    """
    p = np.uint64(prime)
    acc = np.zeros((xs.size, coeffs.shape[1]), dtype=np.uint64)
    for row in coeffs[::-1]:
        acc = (acc * xs[:, None] + row[None, :]) % p
    return acc


def split_chunks(
    chunks: Sequence[int], *, threshold: int, xs: Sequence[int], prime: int = PRIME
) -> list[tuple[int, ...]]:
    """Share field elements `chunks` t-of-n: one tuple of evaluations per x in `xs`.

    Exposed for the exhaustive tests, which use a small prime; `split_secret` is the API.
    """
    if threshold < 1:
        raise InvalidInputError("threshold must be at least 1")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise InvalidInputError("share x-coordinates must be distinct and in 1..prime-1")
    if threshold > len(xs):
        raise InvalidInputError(f"threshold {threshold} exceeds the number of shares {len(xs)}")
    secret_row = np.asarray(chunks, dtype=np.uint64)[None, :]
    random_rows = _random_field_elements((threshold - 1) * secret_row.shape[1], prime)
    coeffs = np.concatenate([secret_row, random_rows.reshape(threshold - 1, secret_row.shape[1])])
    values = _evaluate(coeffs, np.asarray(xs, dtype=np.uint64), prime)
    return [tuple(row) for row in values.tolist()]


def split_secret(secret: bytes, *, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Split a 32-byte `secret` into one share per x-coordinate; any `threshold` recover it.

    Fewer than `threshold` shares reveal nothing about the secret: every chunk has its own
    random polynomial, so each set of t - 1 evaluations is uniform whatever the secret.
    """
    if any(not 0 < x <= MAX_SHARES for x in xs):
        raise InvalidInputError(f"share x-coordinates must be in 1..{MAX_SHARES}")
    rows = split_chunks(_secret_to_chunks(secret), threshold=threshold, xs=xs)
    return [Share(x, row) for x, row in zip(xs, rows, strict=True)]


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...], prime: int) -> tuple[int, ...]:
    """Lagrange basis coefficients λ_i = Π_{j≠i} x_j / (x_j - x_i) mod p, for f(0)."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % prime
                den = den * (xj - xi) % prime
        out.append(num * pow(den, -1, prime) % prime)
    return tuple(out)


def combine_chunks(
    points: Sequence[tuple[int, Sequence[int]]], *, threshold: int, prime: int = PRIME
) -> list[int]:
    """Interpolate f(0) for each chunk from `threshold` points ``(x, values)``.

    Only the first `threshold` points are used; a caller that has more may pass them all.
    """
    if threshold < 1:
        raise InvalidInputError("threshold must be at least 1")
    if len(points) < threshold:
        raise InvalidInputError(f"need {threshold} shares to reconstruct, got {len(points)}")
    used = points[:threshold]
    xs = tuple(x for x, _ in used)
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise InvalidInputError("shares must have distinct x-coordinates in 1..prime-1")
    widths = {len(v) for _, v in used}
    if len(widths) != 1:
        raise InvalidInputError("shares have different numbers of chunks")
    lam = np.asarray(_lagrange_at_zero(xs, prime), dtype=np.uint64)
    ys = np.asarray([list(v) for _, v in used], dtype=np.uint64)
    if np.any(ys >= prime):
        raise InvalidInputError("share value is not a field element")
    # Each product is < 2^62; reducing before the sum keeps t terms under 2^64 for t < 2^33.
    terms = (lam[:, None] * ys) % np.uint64(prime)
    return [int(v) % prime for v in terms.sum(axis=0, dtype=np.uint64)]


def combine_secret(shares: Sequence[Share], *, threshold: int) -> bytes:
    """Reconstruct the 32-byte secret from at least `threshold` shares.

    Shares are used in the order given (the first `threshold`). With fewer shares, or shares
    that are not of one sharing, the result is refused or is a different value: callers that
    need to detect a bad share compare the result with a commitment (secure aggregation checks
    the public key or the seed commitment the owner signed).

    Raises:
        InvalidInputError: too few shares, duplicate x-coordinates, or a result that is not a
            32-byte secret.
    """
    chunks = combine_chunks([(s.x, s.values) for s in shares], threshold=threshold)
    return _chunks_to_secret(chunks)
