"""Integer arithmetic every fixed-point op is written in: one rounding rule, saturation,
rescaling by an integer multiplier, and exact matrix products through float BLAS.

The rounding rule, used everywhere a value is divided or shifted: **round half away from
zero**. ``round_shift(x, s)`` is x / 2**s and ``round_div(x, d)`` is x / d, both rounded that
way, on int64 arrays. Nothing here depends on evaluation order: every operation is exact
integer arithmetic, or float arithmetic proven exact (see `exact_matmul`).

Plan-time computations on floats (scales, multipliers, folded constants) use only IEEE-754
basic operations (+ - × ÷ √, ldexp/frexp), which are correctly rounded and therefore give the
same bits on every machine; no libm transcendental function is ever called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import ResourceLimitError
from edgetrust.runtime.fixed import _kernels

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

INT64_SAFE = 1 << 62
"""Every intermediate is proven below this bound, leaving a bit for the rounding offset."""

MULT_BITS = 31
"""Multipliers are integers in [2**30, 2**31]: ~9 significant decimal digits."""


def round_shift(x: I64, shift: int) -> I64:
    """x / 2**shift, rounded half away from zero (shift ≥ 0, a Python int).

    For x ≥ 0: floor((x + 2**(s-1)) / 2**s). For x < 0 the same on |x|, negated, which is
    ``(x + 2**(s-1) - 1) >> s`` with an arithmetic shift (floor division by 2**s).
    """
    if shift <= 0:
        return x if shift == 0 else x << -shift
    half = np.int64(1 << (shift - 1))
    return (x + (half - (x < 0))) >> shift


def round_shift_nonneg(x: I64, shift: I64) -> I64:
    """x / 2**shift rounded half up, for x ≥ 0 and per-element shifts 0 ≤ shift ≤ 62."""
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    out: I64 = (x + half) >> shift
    return out


def round_div(x: I64, d: I64 | int) -> I64:
    """x / d rounded half away from zero, for positive integer divisors d.

    That is sign(x) · floor((|x| + h) / d) with h = floor(d / 2), computed as one floor
    division: for x ≥ 0 it is floor((x + h) / d); for x < 0, -floor((-x + h) / d) =
    ceil((x - h) / d) = floor((x - h + d - 1) / d), and d - 1 - h = h for odd d, h - 1 for
    even d. So the result is floor((x + h - [x < 0 and d even]) / d).
    """
    xx = np.asarray(x, dtype=np.int64)
    dd = np.asarray(d, dtype=np.int64)
    out = np.right_shift(xx, 63)  # -1 where x < 0, else 0 (a new array)
    out &= (dd & 1) - 1  # -1 where d is even, else 0
    out += xx
    out += dd // 2
    out //= dd
    res: I64 = np.asarray(out)
    return res


def round_float(x: F64) -> F64:
    """Round float64 values half away from zero, exactly (no x + 0.5 double rounding)."""
    out: F64 = np.trunc(x)
    frac = x - out  # exact: Sterbenz lemma, |frac| < 1 and t, x share the exponent range
    if out.ndim == 0 or out.dtype != np.float64:
        return out + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)
    # frac has the sign of x: add ±1 where |frac| ≥ 1/2 (in place), then +0.0 so that -0.0
    # becomes +0.0 as t + 0.0 did.
    out += frac >= 0.5
    out -= frac <= -0.5
    out += 0.0
    return out


def saturate(x: I64, qmax: int) -> I64:
    """Clamp to the symmetric range [-qmax, qmax] (in place)."""
    np.clip(x, -qmax, qmax, out=x)
    return x


def narrow_dtype(qmax: int) -> Any:
    """The narrowest integer type holding ±qmax: int8, int16, else int64."""
    return np.int8 if qmax <= 127 else np.int16 if qmax <= 32767 else np.int64


def quantize(values: npt.ArrayLike, scale: float | F64, qmax: int) -> I64:
    """round_half_away(values / scale), saturated to [-qmax, qmax] (int64)."""
    if isinstance(scale, float) and isinstance(values, np.ndarray):
        fast = _kernels.quantize(values, scale, qmax)
        if fast is not None:
            return fast
    v = np.asarray(values, dtype=np.float64) / scale
    v = np.clip(round_float(v), -qmax, qmax)
    return v.astype(np.int64)


def scale_for(max_abs: float, qmax: int) -> float:
    """The per-tensor scale mapping [-max_abs, max_abs] onto [-qmax, qmax]; 1.0 for all-zero."""
    if not math.isfinite(max_abs) or max_abs <= 0.0:
        return 1.0
    return max_abs / qmax


@dataclass(frozen=True)
class Rescale:
    """Multiplication by real ratios: ``round_half_away(x · mult / 2**shift)``, exactly.

    `mult` holds one multiplier per channel (or one for all), each ≤ 2**31; 31 ≤ shift ≤ 62
    after `apply_rescale` folds ratios ≥ 1 into a left shift of x.
    """

    mult: I64
    shift: int

    def params(self) -> dict[str, I64]:
        """As named int64 arrays, for commitment next to a node's weights."""
        return {"mult": self.mult.astype(np.int64), "shift": np.array([self.shift], np.int64)}

    @staticmethod
    def from_params(mult: I64, shift: I64) -> Rescale:
        """Inverse of `params` (for the referee, which reads them from commitments)."""
        return Rescale(np.asarray(mult, np.int64), int(shift[0]))


_MAX_LEFT = 29  # ratios up to 2**29: beyond, every op would saturate on any non-zero input


def make_rescale(ratios: npt.ArrayLike) -> Rescale:
    """Integer multipliers for non-negative real `ratios` (one per channel, or one).

    The largest ratio gets a multiplier in [2**30, 2**31]; channels share its shift, so a
    channel whose ratio is 2**-k of the largest keeps 31 - k significant bits.
    """
    r = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("rescale ratios must be finite and non-negative")
    rmax = float(r.max())
    if rmax == 0.0:
        return Rescale(np.zeros(r.shape, np.int64), 62)
    _, e = math.frexp(rmax)  # rmax = m·2**e, 0.5 ≤ m < 1
    if e > _MAX_LEFT:
        raise ValueError(f"rescale ratio {rmax:g} is too large")
    shift = MULT_BITS - e
    mult = round_float(np.ldexp(r, shift)).astype(np.int64)
    if shift > 62:
        # Ratios below 2**-31: drop multiplier bits so the shift stays ≤ 62.
        mult = round_shift(mult, shift - 62)
        shift = 62
    return Rescale(mult, shift)


def _mul_shift(a: I64, m: I64 | np.int64, s: int) -> I64:
    """floor((a·m + 2**(s-1)) / 2**s) exactly, for 0 ≤ a < 2**62, 0 ≤ m ≤ 2**31, 31 ≤ s ≤ 62.

    When a < 2**31 the product fits int64 directly. Otherwise split a = ah·2**31 + al and
    lo = al·m = lh·2**31 + ll, so a·m = t·2**31 + ll with t = ah·m + lh (all < 2**63). With
    u = ll + 2**(s-1): floor((t·2**31 + u) / 2**s) = floor((t + floor(u / 2**31)) / 2**(s-31)),
    because adding a fraction below 1 to an integer numerator never changes a floor by an
    integer power of two.
    """
    half = np.int64(1 << (s - 1))
    if a.size == 0 or int(a.max()) < (1 << 31):
        out: I64 = (a * m + half) >> s
        return out
    ah = a >> 31
    al = a & np.int64((1 << 31) - 1)
    lo = al * m
    t = ah * m + (lo >> 31)
    u = (lo & np.int64((1 << 31) - 1)) + half
    out = (t + (u >> 31)) >> (s - 31)
    return out


_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


def apply_rescale(
    x: I64, rs: Rescale, *, channel_axis: int | None = None, bound: int | None = None
) -> I64:
    """round_half_away(x · mult / 2**shift), per-channel multipliers along `channel_axis`.

    Exact whenever |result| < 2**60 (and |x| < 2**62). For ratios ≥ 1, x is first clamped
    so that x · 2**(31 - shift) ≤ 2**61; a clamped x gives a result of the right sign and
    magnitude ≥ 2**60, which every caller saturates far below. `bound`, when given, is a
    proven bound on |x| (from the plan), which saves the two passes that find max |x|; the
    integers are the same either way (every path below computes the same exact value).
    """
    if x.ndim and x.dtype == np.int64:
        fast = _kernels.requantize(
            x, rs.mult, rs.shift, _I64_MIN, _I64_MAX, channel_axis=channel_axis
        )
        if fast is not None:
            return fast
    mult: Any = rs.mult
    if mult.size == 1:
        mult = mult.reshape(())
    elif channel_axis is not None:
        shape = [1] * x.ndim
        shape[channel_axis] = mult.size
        mult = mult.reshape(shape)
    shift = rs.shift
    if shift >= 31 and x.ndim and x.size and x.dtype == np.int64:
        xmax = bound if bound is not None else max(int(x.max()), -int(x.min()))
        if xmax * int(rs.mult.max()) + (1 << (shift - 1)) < (1 << 63):
            # One fused pass when |x|·mult + 2**(shift-1) < 2**63: for x < 0,
            # (x·m + 2**(s-1) - 1) >> s = -floor((|x|·m + 2**(s-1)) / 2**s) (write
            # |x|·m + 2**(s-1) = q·2**s + r, 0 ≤ r < 2**s: the left side is
            # floor(-q + (2**s - 1 - r) / 2**s) = -q).
            p: I64 = x * mult
            p += np.int64(1 << (shift - 1))
            p += x >> 63  # -1 where x < 0
            p >>= shift
            return p
        if xmax < (1 << 62) and np.broadcast_shapes(x.shape, np.shape(mult)) == x.shape:
            t = tie_free_split(xmax, rs)
            if t is not None:
                return _mul_shift_split(x, mult, shift, t)
            return _mul_shift_signed(x, mult, shift)
    a = np.abs(x)
    if shift < 31:
        left = 31 - shift
        a = np.minimum(a, np.int64(1 << (61 - left))) << left
        shift = 31
    r = _mul_shift(a, mult, shift)
    out: I64 = np.where(x < 0, -r, r)
    return out


def tie_free_split(xmax: int, rs: Rescale) -> int | None:
    """The split bit t of `_mul_shift_split` for |x| ≤ xmax, or None when it does not apply.

    1. No ties: round half away from zero and half up (floor((x·m + 2**(s-1)) / 2**s)) differ
       only where x·m ≡ 2**(s-1) (mod 2**s), an exact tie with x < 0 (for x < 0 the rule is
       ceil((x·m - 2**(s-1)) / 2**s), which is the floor of that plus one unless the quotient
       is an integer). A tie needs v2(x·m) = s - 1, so |x| ≥ 2**(s-1) / lowbit(m) (x ≠ 0;
       m = 0 never ties): xmax · max_c lowbit(m_c) < 2**(s-1) rules every tie out.
    2. No overflow: t makes |x|·(m >> t) ≤ 2**62; x·(m mod 2**t) + 2**(s-1) and the high sum
       are checked below 2**63 in Python integers.
    """
    m = rs.mult
    s = rs.shift
    mmax = int(m.max())
    lowbit = int(np.max(m & -m))
    if xmax * lowbit >= 1 << (s - 1):
        return None
    t = max(1, xmax.bit_length() + mmax.bit_length() - 62)
    half = 1 << (s - 1)
    if t > s or xmax * ((1 << t) - 1) + half >= 1 << 63:
        return None
    if xmax * (mmax >> t) + xmax + 1 + (half >> t) >= 1 << 63:
        return None
    return t


def _mul_shift_split(x: I64, m: Any, s: int, t: int) -> I64:
    """floor((x·m + 2**(s-1)) / 2**s) - equal to the rounding rule where `tie_free_split`
    gave t - in six int64 passes, splitting the multiplier: m = mh·2**t + ml, 0 ≤ ml < 2**t.

    x·m + 2**(s-1) = x·mh·2**t + (x·ml + 2**(s-1)), and for integers N, r:
    floor((N·2**t + r) / 2**s) = floor((N + floor(r / 2**t)) / 2**(s-t)) (floor(floor(y/a)/b)
    = floor(y/(a·b)) for positive integers a, b). Neither part overflows (`tie_free_split`).
    """
    mh = m >> t
    ml = m & ((1 << t) - 1)
    lo: I64 = x * ml
    lo += np.int64(1 << (s - 1))
    lo >>= t
    hi: I64 = x * mh
    hi += lo
    hi >>= s - t
    return hi


def _mul_shift_signed(x: I64, m: Any, s: int) -> I64:
    """floor((x·m + 2**(s-1) - [x < 0]) / 2**s) - the fused rule above - without overflow,
    for |x| < 2**62, 0 ≤ m ≤ 2**31, 31 ≤ s ≤ 62.

    Split x = ah·2**31 + al with ah = x >> 31 (floor, |ah| ≤ 2**31) and 0 ≤ al < 2**31. With
    c = 2**(s-1) - [x < 0] ≥ 0 and lo = al·m + c = q·2**31 + r (0 ≤ r < 2**31, lo < 2**63):
    x·m + c = (ah·m + q)·2**31 + r, and floor(X / 2**s) = floor(floor(X / 2**31) / 2**(s-31)),
    so the result is (ah·m + q) >> (s - 31); |ah·m| ≤ 2**62 and q < 2**32, so nothing
    overflows. No abs, no select: the same integers as `_mul_shift` on |x|, negated.
    """
    lo: I64 = x & np.int64((1 << 31) - 1)
    lo *= m
    lo += np.int64(1 << (s - 1))
    lo += x >> 63
    lo >>= 31
    t: I64 = x >> 31
    t *= m
    t += lo
    t >>= s - 31
    return t


def requantize(x: I64, rs: Rescale, qmax: int, *, channel_axis: int | None = None) -> I64:
    """Rescale and saturate to [-qmax, qmax]: the last step of every op with a new scale."""
    fast = _kernels.requantize(x, rs.mult, rs.shift, -qmax, qmax, channel_axis=channel_axis)
    if fast is not None:
        return fast
    return saturate(apply_rescale(x, rs, channel_axis=channel_axis), qmax)


BLOCK = 1 << 16
"""Elements per block of `requantize_block` callers: 512 KiB of int64, so that the dozen
passes of a requantization run in L2 cache and need no full-size temporaries (fresh
full-size arrays cost page faults that outweigh the arithmetic)."""

MIN_BLOCKED = 4096
"""Below this many elements ops keep their whole-tensor path (as fast; element() uses it)."""


def requantize_block(w: I64, rs: Rescale, qmax: int) -> None:
    """``w[...] = sat(apply_rescale(w, rs))`` in place, for one multiplier (``rs.mult.size
    == 1``); the same integers as `requantize`, with at most one block-sized temporary.

    The bound is this block's own max |w|, so every block takes the cheapest exact path it
    admits: one fused pass, the tie-free multiplier split, or `apply_rescale` itself.
    """
    if w.size == 0:
        return
    if _kernels.requantize(w, rs.mult, rs.shift, -qmax, qmax, out=w) is not None:
        return
    xmax = max(int(w.max()), -int(w.min()))
    s = rs.shift
    t = tie_free_split(xmax, rs) if s >= 31 and xmax < (1 << 62) else None
    m = int(rs.mult.reshape(-1)[0])
    if t is None:
        np.copyto(w, apply_rescale(w, rs, bound=xmax))
    elif xmax * m + (1 << (s - 1)) < 1 << 63:
        w *= np.int64(m)  # no tie, no overflow: floor((w·m + 2**(s-1)) / 2**s) directly
        w += np.int64(1 << (s - 1))
        w >>= s
    else:
        lo: I64 = np.multiply(w, np.int64(m & ((1 << t) - 1)))
        lo += np.int64(1 << (s - 1))
        lo >>= t
        w *= np.int64(m >> t)
        w += lo
        w >>= s - t
    np.clip(w, -qmax, qmax, out=w)


def channel_blocks(outer: int, channels: int, inner: int) -> list[tuple[int, int, int, int, int]]:
    """Blocks ``(o, c0, c1, i0, i1)`` of about `BLOCK` elements covering an array viewed as
    (outer, channels, inner): whole channels at a time where a channel is small."""
    if inner >= BLOCK:
        return [
            (o, c, c + 1, i, min(inner, i + BLOCK))
            for o in range(outer)
            for c in range(channels)
            for i in range(0, inner, BLOCK)
        ]
    step = max(1, BLOCK // max(inner, 1))
    return [
        (o, c, min(channels, c + step), 0, inner)
        for o in range(outer)
        for c in range(0, channels, step)
    ]


# Mantissa bits (including the implicit one) of the float formats BLAS computes in.
_FLOAT_FORMATS: tuple[tuple[type[np.floating[Any]], int], ...] = (
    (np.float32, 24),
    (np.float64, 53),
)
_MIN_FLOAT32_CHUNK = 64  # below this many terms per chunk, float64 is faster than chunking


def matmul_chunk(amax: int, bmax: int) -> tuple[type[np.floating[Any]] | None, int]:
    """The float format and largest K-chunk for which `exact_matmul` is exact.

    Proof: with |a| ≤ amax and |b| ≤ bmax, every product is an integer of magnitude ≤ amax·bmax
    and every partial sum of at most k products one of magnitude ≤ k·amax·bmax. If that is at
    most 2**p (p = 24 for float32, 53 for float64) every such integer is representable, so every
    multiplication, addition or fused multiply-add the BLAS performs - in any order, blocking
    or thread split - is exact. Hence k = floor(2**p / (amax·bmax)). For int8 (127·127) that is
    1040 terms in float32; for int16 (32767·32767) 8,388,864 terms in float64.
    Returns ``(None, 0)`` when neither format helps; the caller then multiplies in int64.
    """
    p = amax * bmax
    if p <= 0:
        return np.float64, 1 << 53
    for dtype, bits in _FLOAT_FORMATS:
        k = (1 << bits) // p
        if k >= _MIN_FLOAT32_CHUNK or (dtype is np.float64 and k >= 1):
            return dtype, k
    return None, 0


def as_float(a: I64, amax: int, dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
    """``a.astype(dtype)``, by the compiled pass when it applies (the same values)."""
    fast = _kernels.to_float(a, amax, dtype)
    return fast if fast is not None else a.astype(dtype)


def exact_matmul(
    a: I64, b: I64 | None, amax: int, bmax: int, *, b_float: npt.NDArray[Any] | None = None
) -> I64:
    """``a @ b`` exactly (int64), through float BLAS in K-chunks proven exact (`matmul_chunk`).

    `amax` and `bmax` bound |a| and |b|. The chunk results are exact integers and are summed in
    int64, which cannot overflow because K·amax·bmax < 2**62 is checked first. `b_float` is
    `b` already converted to the float format `float_format(amax, bmax)` (cached weights).
    """
    k_dim = a.shape[-1]
    if k_dim * amax * bmax >= INT64_SAFE:
        raise ResourceLimitError(
            f"a dot product of {k_dim} terms bounded by {amax}·{bmax} could overflow int64",
            limit=INT64_SAFE,
        )
    dtype, chunk = matmul_chunk(amax, bmax)
    if b_float is not None and b_float.dtype == dtype:
        bf = b_float
    else:
        assert b is not None
        bf = b.astype(dtype) if dtype is not None else b
    if dtype is None:
        # No float format is exact here (operands too wide): numpy's int64 matmul is exact
        # because the whole sum is below 2**62 (checked above), just slower (no BLAS).
        assert b is not None
        out_int: I64 = np.matmul(a, b)
        return out_int
    af = as_float(a, amax, dtype)
    if k_dim <= chunk:
        single: I64 = np.matmul(af, bf).astype(np.int64)
        return single
    total: I64 | None = None
    for start in range(0, k_dim, chunk):
        part = np.matmul(af[..., start : start + chunk], bf[..., start : start + chunk, :])
        part_i = part.astype(np.int64)
        total = part_i if total is None else total + part_i
    assert total is not None
    return total
