"""Fixed-point exp, erf, sigmoid, tanh and square roots, without libm.

Function values come from small tables computed once, at first use, with Python's `decimal`
module (software arithmetic whose exp/ln/sqrt are correctly rounded, so every machine builds
the same table), and are read with linear interpolation in int64. Results are Q30 integers
(value · 2**30). Accuracy: |error| < 2**-17 for erf and < 2**-19 (relative) for exp, below
the resolution of int16 outputs (2**-15).
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import numpy as np
import numpy.typing as npt

from edgetrust.runtime.fixed._arith import round_shift, round_shift_nonneg

I64 = npt.NDArray[np.int64]

ONE_Q30 = 1 << 30
IN_FRAC_BITS = 16
"""Arguments to the functions below are fixed point with 16 fractional bits (Q16)."""

_EXP_TABLE_BITS = 8  # 256 intervals over [0, 1)
_ERF_TABLE_BITS = 7  # intervals of 1/128 ...
_ERF_RANGE = 4  # ... over [0, 4); erf(4) = 1 - 1.5e-8
_EXP_ARG_LIMIT = 64 << IN_FRAC_BITS  # e**-64 < 2**-92, which is 0 in Q30

# 40 digits of pi (a constant, not a computation): enough for 2/sqrt(pi) to 30 digits.
_PI = Decimal("3.141592653589793238462643383279502884197")


def _q30(value: Decimal) -> int:
    """Round a Decimal in [0, 2] to Q30, half away from zero."""
    scaled = value * (1 << 30)
    return int(scaled.to_integral_value(rounding="ROUND_HALF_UP"))


@functools.cache
def _log2e_q30() -> int:
    with localcontext() as ctx:
        ctx.prec = 50
        return _q30(1 / Decimal(2).ln())


@functools.cache
def _exp2_neg_table() -> I64:
    """T[i] = 2**(-i/256) in Q30 for i = 0..256."""
    with localcontext() as ctx:
        ctx.prec = 50
        ln2 = Decimal(2).ln()
        n = 1 << _EXP_TABLE_BITS
        return np.array([_q30((-ln2 * i / n).exp()) for i in range(n + 1)], dtype=np.int64)


@functools.cache
def _exp2_pos_table() -> I64:
    """T[i] = 2**(i/256) in Q30 for i = 0..256."""
    with localcontext() as ctx:
        ctx.prec = 50
        ln2 = Decimal(2).ln()
        n = 1 << _EXP_TABLE_BITS
        return np.array([_q30((ln2 * i / n).exp()) for i in range(n + 1)], dtype=np.int64)


def _erf_decimal(x: Decimal) -> Decimal:
    """erf(x) = 2/sqrt(pi) · sum_n (-1)**n x**(2n+1) / (n! (2n+1)), summed in 60 digits."""
    total = Decimal(0)
    term = x  # (-1)**n x**(2n+1) / n!
    n = 0
    x2 = x * x
    while True:
        contrib = term / (2 * n + 1)
        total += contrib
        if abs(contrib) < Decimal("1e-45"):
            break
        n += 1
        term = -term * x2 / n
    return total * 2 / _PI.sqrt()


@functools.cache
def _erf_table() -> I64:
    """T[i] = erf(i/128) in Q30 for i = 0..512."""
    with localcontext() as ctx:
        ctx.prec = 60
        n = _ERF_RANGE << _ERF_TABLE_BITS
        step = Decimal(1) / (1 << _ERF_TABLE_BITS)
        return np.array([_q30(_erf_decimal(step * i)) for i in range(n + 1)], dtype=np.int64)


def _interpolate(table: I64, index: I64, frac: I64, frac_bits: int) -> I64:
    """table[i] + (table[i+1] - table[i]) · frac / 2**frac_bits, rounded half away."""
    lo = table[index]
    hi = table[index + 1]
    return lo + round_shift((hi - lo) * frac, frac_bits)


def exp_neg_q30(u: I64) -> I64:
    """e**(-u / 2**16) in Q30, for Q16 arguments u ≥ 0.

    e**-x = 2**-(x·log2 e): split y = x·log2 e (Q30) into an integer k and a fraction f, read
    2**-f from the table with linear interpolation, and shift right by k.
    Bounds: u ≤ 64·2**16 after clamping, so u·log2e_q30 < 2**53.
    """
    u = np.minimum(u, _EXP_ARG_LIMIT)
    y = round_shift(u * _log2e_q30(), IN_FRAC_BITS)  # Q30, ≥ 0
    k = y >> 30
    f = y & (ONE_Q30 - 1)
    frac_bits = 30 - _EXP_TABLE_BITS
    m = _interpolate(_exp2_neg_table(), f >> frac_bits, f & ((1 << frac_bits) - 1), frac_bits)
    return round_shift_nonneg(m, np.minimum(k, 62))


def exp_q30_parts(u: I64) -> tuple[I64, I64]:
    """e**(u / 2**16) as ``(m, k)`` with value m · 2**(k - 30) and m in [2**30, 2**31].

    For signed Q16 arguments clamped to ±64; m comes from the 2**f table.
    """
    u = np.clip(u, -_EXP_ARG_LIMIT, _EXP_ARG_LIMIT)
    y = round_shift(u * _log2e_q30(), IN_FRAC_BITS)  # Q30, signed
    k = y >> 30  # floor
    f = y & (ONE_Q30 - 1)
    frac_bits = 30 - _EXP_TABLE_BITS
    m = _interpolate(_exp2_pos_table(), f >> frac_bits, f & ((1 << frac_bits) - 1), frac_bits)
    return m, k


def erf_q30(u: I64) -> I64:
    """erf(u / 2**16) in Q30 (signed), by table over [0, 4) and erf(4) beyond."""
    a = np.abs(u)
    limit = _ERF_RANGE << IN_FRAC_BITS
    frac_bits = IN_FRAC_BITS - _ERF_TABLE_BITS
    clipped = np.minimum(a, limit - 1)
    v = _interpolate(
        _erf_table(), clipped >> frac_bits, clipped & ((1 << frac_bits) - 1), frac_bits
    )
    v = np.where(a >= limit, _erf_table()[-1], v)
    out: I64 = np.where(u < 0, -v, v)
    return out


def sigmoid_q30(u: I64) -> I64:
    """1 / (1 + e**(-x)) in Q30 for Q16 x: computed for |x|, mirrored as 1 - s for x < 0."""
    e = exp_neg_q30(np.abs(u))
    pos = _round_div_pos(np.full_like(e, 1 << 60), ONE_Q30 + e)
    out: I64 = np.where(u < 0, ONE_Q30 - pos, pos)
    return out


def tanh_q30(u: I64) -> I64:
    """tanh(x) = (1 - e**(-2|x|)) / (1 + e**(-2|x|)) · sign(x) in Q30, for Q16 x."""
    e = exp_neg_q30(2 * np.abs(u))
    t = _round_div_pos((ONE_Q30 - e) << 30, ONE_Q30 + e)
    out: I64 = np.where(u < 0, -t, t)
    return out


def _round_div_pos(x: I64, d: I64) -> I64:
    out: I64 = (x + d // 2) // d
    return out


def isqrt_floor(values: list[int]) -> list[int]:
    """floor(sqrt(v)) for non-negative Python integers, exactly (math.isqrt is integer-only)."""
    return [math.isqrt(v) for v in values]
