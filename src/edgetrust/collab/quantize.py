"""Fixed-point quantization of model updates into Z_(2^k), the ring secure aggregation sums in.

Masks cancel only in modular integer arithmetic, so each client maps its float update to
integers before masking and the server maps the integer sum back (Bonawitz et al. 2017, §3;
Kairouz et al. 2021 for the same construction with DP). Each coordinate is clipped to
[-bound, bound] and mapped onto ``levels + 1`` points with *stochastic* rounding, which is
unbiased, so rounding errors average out over clients instead of accumulating.

Error bound (documented and tested): with ``Δ = 2·bound / levels``, for every coordinate of
every client, ``|dequantize(quantize(x)) - clip(x)| < Δ`` and the expectation is exact. For a
sum over m clients the error is below ``m·Δ`` in the worst case, and its standard deviation is
at most ``√m·Δ/2``. ``levels = ⌊(2^k - 1) / max_summands⌋``, so the sum of up to
`max_summands` quantized vectors never wraps modulo 2^k and is recovered exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["MAX_MODULUS_BITS", "MIN_MODULUS_BITS", "Quantizer", "mod_mask"]

MIN_MODULUS_BITS = 8
MAX_MODULUS_BITS = 32
"""Vectors travel as uint32; a ring of 2^k for k ≤ 32 is the low k bits of uint32 arithmetic."""

U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]


def mod_mask(modulus_bits: int) -> np.uint32:
    """The bit mask that reduces a uint32 modulo 2^modulus_bits."""
    return np.uint32((1 << modulus_bits) - 1)


@dataclass(frozen=True, kw_only=True)
class Quantizer:
    """Maps float vectors to Z_(2^k) and sums back to floats, with a bounded error."""

    bound: float
    """Each coordinate is clipped to [-bound, bound] before quantization."""
    modulus_bits: int
    """k: the ring is Z_(2^k)."""
    max_summands: int
    """The most vectors that will be summed; sets the levels so the sum cannot wrap."""

    def __post_init__(self) -> None:
        if not (isinstance(self.bound, float | int) and math.isfinite(self.bound)):
            raise InvalidInputError("`bound` must be a finite number")
        if self.bound <= 0:
            raise InvalidInputError("`bound` must be positive")
        if not MIN_MODULUS_BITS <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise InvalidInputError(
                f"`modulus_bits` must be in {MIN_MODULUS_BITS}..{MAX_MODULUS_BITS}"
            )
        if self.max_summands < 1:
            raise InvalidInputError("`max_summands` must be at least 1")
        if self.levels < 1:
            raise InvalidInputError(
                f"`modulus_bits`={self.modulus_bits} leaves no room for "
                f"{self.max_summands} summands; raise it or lower `max_summands`"
            )

    @property
    def levels(self) -> int:
        """L: each client's coordinate becomes an integer in 0..L."""
        return ((1 << self.modulus_bits) - 1) // self.max_summands

    @property
    def step(self) -> float:
        """Δ = 2·bound / L, the quantization step (error bound per coordinate per client)."""
        return 2.0 * self.bound / self.levels

    def quantize(self, values: npt.ArrayLike, rng: np.random.Generator) -> U32:
        """Clip, scale to [0, L] and round stochastically (unbiased) to uint32."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise InvalidInputError("quantize takes a flat vector")
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("cannot quantize NaN or infinite values")
        scaled = (np.clip(x, -self.bound, self.bound) + self.bound) * (
            self.levels / (2 * self.bound)
        )
        floor = np.floor(scaled)
        up = rng.random(x.shape) < (scaled - floor)
        q = floor + up
        # Float error can land a hair outside [0, L]; clamp so the no-wrap guarantee holds.
        out: U32 = np.clip(q, 0, self.levels).astype(np.uint32)
        return out

    def dequantize_sum(self, total: npt.ArrayLike, count: int) -> F64:
        """Map the modular sum of `count` quantized vectors back to the float sum."""
        if not 1 <= count <= self.max_summands:
            raise InvalidInputError(f"count must be in 1..{self.max_summands}, got {count}")
        s = np.asarray(total, dtype=np.uint32).astype(np.float64)
        if np.any(s > count * self.levels):
            raise InvalidInputError("sum is out of range for that many summands")
        return s * (2 * self.bound / self.levels) - count * self.bound

    def dequantize(self, q: npt.ArrayLike) -> F64:
        """Map one quantized vector back to floats (the sum of one)."""
        return self.dequantize_sum(q, 1)
