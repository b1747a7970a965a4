"""The numba-compiled loops behind `_kernels`: one pass each where numpy needs several.

Imported only through `_kernels` (lazily, and never when numba is missing or broken). Every
loop is int64 arithmetic with proven bounds, or float64 steps that are exact; no fast-math,
no reduction whose order could change a bit. Each returns False - leaving its output
unspecified - on an input outside the range its proof covers (NaN, |x| ≥ 2**62), and the
caller then runs the numpy twin, which defines the result there.

Compiled code is cached (``cache=True``): next to this file when its directory is writable,
else in numba's user cache directory, or in ``NUMBA_CACHE_DIR`` when that is set. Where no
cache location is writable, the loops are compiled on first use in every process.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

_LIMIT = 1 << 62
_LOW31 = (1 << 31) - 1


def _jit(fn: Any) -> Any:
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location: compile per process
        return numba.njit(nogil=True)(fn)


@numba.njit(inline="always")
def extremes(x: Any) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """(min, max) of a non-empty (outer, C, inner) array."""
    outer, channels, inner = x.shape
    lo = x[0, 0, 0]
    hi = lo
    for o in range(outer):
        for c in range(channels):
            for i in range(inner):
                lo = min(lo, x[o, c, i])
                hi = max(hi, x[o, c, i])
    return lo, hi


@_jit
def mul_shift(v: int, m: int, shift: int) -> int:  # pragma: no cover - compiled
    """round_half_away(v · m / 2**shift) for |v| < 2**62, 0 ≤ m ≤ 2**31, 0 ≤ shift ≤ 62:
    `_arith.apply_rescale` on one element (the same split proofs, element by element)."""
    if shift >= 31:
        # _arith._mul_shift_signed: floor((v·m + 2**(s-1) - [v < 0]) / 2**s)
        lo = ((v & _LOW31) * m + (1 << (shift - 1)) + (v >> 63)) >> 31
        return ((v >> 31) * m + lo) >> (shift - 31)
    # ratios ≥ 1: |v| clamped to 2**(61 - left), shifted left, then _arith._mul_shift at 31
    left = 31 - shift
    a = min(abs(v), 1 << (61 - left)) << left
    lo = (a & _LOW31) * m
    r = (a >> 31) * m + (lo >> 31) + (((lo & _LOW31) + (1 << 30)) >> 31)
    return -r if v < 0 else r


@_jit
def requantize(
    x: Any, mult: Any, shift: int, lo: int, hi: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """``out = clip(round_half_away(x · mult[c] / 2**shift), lo, hi)`` for x viewed as
    (outer, C, inner) with C = mult.size; False, before anything is written (so `out` may
    be `x`), where some |x| ≥ 2**62 or a multiplier is outside [0, 2**31]."""
    outer, channels, inner = x.shape
    for c in range(channels):
        if mult[c] < 0 or mult[c] > 1 << 31:
            return False
    if x.size == 0:
        return True
    lo_x, hi_x = extremes(x)
    if lo_x <= -_LIMIT or hi_x >= _LIMIT:
        return False
    if shift < 31:
        for o in range(outer):
            for c in range(channels):
                for i in range(inner):
                    out[o, c, i] = min(max(mul_shift(x[o, c, i], mult[c], shift), lo), hi)
        return True
    # mul_shift's first branch inlined and branch-free, so that it vectorizes
    half = 1 << (shift - 1)
    rest = shift - 31
    for o in range(outer):
        for c in range(channels):
            m = mult[c]
            for i in range(inner):
                v = x[o, c, i]
                low = ((v & _LOW31) * m + half + (v >> 63)) >> 31
                out[o, c, i] = min(max(((v >> 31) * m + low) >> rest, lo), hi)
    return True


@numba.njit(inline="always")
def _int_of(f: float, small: bool) -> Any:  # pragma: no cover - compiled
    """int64(f) for an integer-valued float, through int32 when `small` (|f| < 2**31, so
    exact): AVX2 converts floats to int32 in vectors but to int64 only one by one (measured
    ~1.3x faster over a whole epilogue there). The branch is loop-invariant."""
    return np.int64(np.int32(f)) if small else np.int64(f)


@_jit
def gemm_epilogue(
    acc: Any, bias: Any, mult: Any, shift: int, lo: int, hi: int, out: Any, small: bool
) -> bool:  # pragma: no cover - compiled
    """``out[r, c] = clip(rescale(int64(acc[r, c]) + bias[c], mult[c]), lo, hi)``: a float
    matmul's exact-integer result, biased and requantized per column, for shift ≥ 31 and
    |bias| < 2**52 (so that |acc| < 2**61 keeps the sum within `mul_shift`'s proof).
    `small`: every |acc| < 2**31 (False otherwise), converted through int32 (`_int_of`)."""
    rows, cols = acc.shape
    half = 1 << (shift - 1)
    rest = shift - 31
    limit = 2.0**31 if small else 2.0**61
    bad = False
    for c in range(cols):
        bad |= (bias[c] >= 1 << 52) | (bias[c] <= -(1 << 52))
        bad |= (mult[c] < 0) | (mult[c] > 1 << 31)
    for r in range(rows):
        for c in range(cols):
            f = acc[r, c]
            ok = (f < limit) & (f > -limit)  # False for NaN
            bad |= not ok
            v = _int_of(f if ok else 0.0, small) + bias[c]
            m = mult[c]
            low = ((v & _LOW31) * m + half + (v >> 63)) >> 31
            out[r, c] = min(max(((v >> 31) * m + low) >> rest, lo), hi)
    return not bad


@_jit
def channel_epilogue(
    acc: Any,
    bias: Any,
    mult: Any,
    shift: int,
    lo: int,
    hi: int,
    table: Any,
    nv: int,
    out: Any,
    small: bool,
    relu_out: Any,
) -> bool:  # pragma: no cover - compiled
    """`gemm_epilogue` with the channels on the middle axis of (outer, C, inner) - a
    convolution's float sums - then, when `table` is not empty, the gather of
    `gather_channels` (first = 0, qmax = hi) on each result: a fused BatchNormalization.
    When `relu_out` is not empty, ``max(out, 0)`` is written there too: a Conv and the Relu
    behind it, both kept by a traced run, in one pass."""
    outer, channels, inner = acc.shape
    half = 1 << (shift - 1)
    rest = shift - 31
    limit = 2.0**31 if small else 2.0**61
    top = table.size - 1
    bad = False
    for c in range(channels):
        bad |= (bias[c] >= 1 << 52) | (bias[c] <= -(1 << 52))
        bad |= (mult[c] < 0) | (mult[c] > 1 << 31)
    if table.size and (lo < -hi or channels * nv > table.size or 2 * hi + 1 > nv):
        return False  # the table's rows would not cover [lo, hi]
    for o in range(outer):
        for c in range(channels):
            b = bias[c]
            m = mult[c]
            for i in range(inner):
                f = acc[o, c, i]
                ok = (f < limit) & (f > -limit)  # False for NaN
                bad |= not ok
                v = _int_of(f if ok else 0.0, small) + b
                low = ((v & _LOW31) * m + half + (v >> 63)) >> 31
                out[o, c, i] = min(max(((v >> 31) * m + low) >> rest, lo), hi)
            if top >= 0:
                base = c * nv + hi
                for i in range(inner):
                    out[o, c, i] = table[np.uint64(base + out[o, c, i])]
            if relu_out.size:
                for i in range(inner):
                    relu_out[o, c, i] = max(out[o, c, i], 0)
    return not bad


@_jit
def softmax_rows(q: Any, table: Any, qmax: int, out: Any) -> bool:  # pragma: no cover
    """Per row of q (R, n): ``E = table[max - q]``, ``out = floor(num / S)`` with
    num = E·qmax + S // 2 and S = Σ E; False where some max - q is outside the table, some
    E is outside [0, 2**30] (`_nonlinear.exp_neg_q30` values are not), S < 1 or S ≥ 2**50.

    The floor is ``trunc(fl(fl(num + 0.5) · fl(1 / S)))``, exactly: E ≤ 2**30 and
    qmax ≤ 2**15 make num < 2**45 + 2**49 < 2**50, so num + 0.5 is a float64 and the two
    roundings leave a relative error below 2**-52 + 2**-105, i.e. an absolute error below
    (num + 0.5)·2**-51.9 / S < 0.5 / S. And (num + 0.5) / S = floor(num / S) + (r + 0.5) / S
    with 0 ≤ r < S lies at least 0.5 / S from every integer, so truncation gives the floor.
    """
    rows, n = q.shape
    size = table.size
    if n == 0:
        return True
    if qmax > 1 << 15:
        return False
    for r in range(rows):
        mx = q[r, 0]
        mn = mx
        for j in range(1, n):
            mx = max(mx, q[r, j])
            mn = min(mn, q[r, j])
        # every d = mx - q is then in [0, size): unsigned indices, no wrap-around checks
        if mn <= -_LIMIT or mx >= _LIMIT or mx - mn >= size:
            return False
        total = 0
        emin = table[np.uint64(0)]
        emax = emin
        for j in range(n):
            e = table[np.uint64(mx - q[r, j])]
            out[r, j] = e  # kept for the last pass: one table read per element (int16
            # tables are 512 KiB, beyond L1 and most L2)
            total += e
            emin = min(emin, e)
            emax = max(emax, e)
        if emin < 0 or emax > 1 << 30 or total < 1 or total >= 1 << 50:
            return False
        half = total // 2
        inv = 1.0 / float(total)
        for j in range(n):
            num = out[r, j] * qmax + half
            out[r, j] = np.int64((float(num) + 0.5) * inv)
    return True


@_jit
def requantize_narrow(
    x: Any, m: int, shift: int, lo: int, hi: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """`requantize` with one multiplier on a 1-D narrow integer x (|x| < 2**31, within
    `mul_shift`'s proof), each element widened to int64 before any arithmetic; `out` is of
    x's type and [lo, hi] within it (the caller checks). False for a multiplier outside
    [0, 2**31]."""
    if m < 0 or m > 1 << 31:
        return False
    if shift < 31:
        for i in range(x.size):
            out[i] = min(max(mul_shift(np.int64(x[i]), m, shift), lo), hi)
        return True
    half = np.int64(1 << (shift - 1))
    rest = shift - 31
    for i in range(x.size):
        v = np.int64(x[i])
        low = ((v & _LOW31) * m + half + (v >> 63)) >> 31
        out[i] = min(max(((v >> 31) * m + low) >> rest, lo), hi)
    return True


@_jit
def digit_epilogue(
    parts: Any,
    odd: Any,
    bias: Any,
    mult: Any,
    shift: int,
    qmax: int,
    bn_a: Any,
    bn_b: Any,
    bn_m: int,
    bn_shift: int,
    lo: int,
    out: Any,
    relu_out: Any,
    small: bool,
) -> bool:  # pragma: no cover - compiled
    """An int16 convolution's epilogue from its exact float digit sums, in one pass:
    ``v = Σ_p int64(parts[p]) · odd[p] + bias[c]`` for parts (P, outer, C, inner), then
    ``q = clip(rescale(v, mult[c], shift), -qmax, qmax)`` (shift ≥ 31), then - when `bn_a`
    is not empty, a fused BatchNormalization - ``q = clip(rescale(q · bn_a[c] + bn_b[c],
    bn_m, bn_shift), -qmax, qmax)``, then ``max(q, lo)`` (lo = 0: a fused Relu; -qmax: none).

    False (out unspecified) where a part is not below 2**53 in magnitude (or NaN), a sum
    reaches 2**62, or a parameter is outside the range of the rescale's proof (|bias| and
    |bn_b| < 2**52, multipliers in [0, 2**31], |bn_a| ≤ 2**31, qmax < 2**16). `small`: the
    parts are float32 sums (exact only below 2**24; checked below 2**31 here), so where also
    every |odd| < 2**31 each product is int32 by int32, which x86 multiplies in one vector
    instruction (int64 by int64: three with AVX-512, one by one with AVX2; the kernel alone
    5-11% faster on SqueezeNet's and ResNet's shapes, AVX-512)."""
    n_parts, outer, channels, inner = parts.shape
    half = 1 << (shift - 1)
    rest = shift - 31
    has_bn = bn_a.size > 0
    if shift < 31 or shift > 62 or qmax >= 1 << 16 or qmax < 0:
        return False
    if has_bn and (bn_a.size != channels or bn_b.size != channels):
        return False
    if has_bn and (bn_m < 0 or bn_m > 1 << 31 or bn_shift < 0 or bn_shift > 62):
        return False
    bad = False
    for c in range(channels):
        bad |= (bias[c] >= 1 << 52) | (bias[c] <= -(1 << 52))
        bad |= (mult[c] < 0) | (mult[c] > 1 << 31)
        if has_bn:
            bad |= (bn_a[c] > 1 << 31) | (bn_a[c] < -(1 << 31))
            bad |= (bn_b[c] >= 1 << 52) | (bn_b[c] <= -(1 << 52))
    for p in range(n_parts):
        bad |= (odd[p] > 1 << 31) | (odd[p] < -(1 << 31))
        small &= (odd[p] < 1 << 31) & (odd[p] > -(1 << 31))
    if bad:
        return False
    limit = 2.0**31 if small else 2.0**53
    bn_half = 1 << (bn_shift - 1) if bn_shift >= 1 else 0
    bn_rest = bn_shift - 31
    acc = np.empty(inner, np.int64)
    for o in range(outer):
        for c in range(channels):
            b = bias[c]
            for i in range(inner):
                acc[i] = b
            for p in range(n_parts):
                k = np.int64(np.int32(odd[p])) if small else odd[p]  # exact: see above
                for i in range(inner):
                    f = parts[p, o, c, i]
                    ok = (f < limit) & (f > -limit)  # False for NaN
                    bad |= not ok
                    acc[i] += _int_of(f if ok else 0.0, small) * k
            m = mult[c]
            for i in range(inner):
                v = acc[i]
                bad |= (v >= _LIMIT) | (v <= -_LIMIT)
                low = ((v & _LOW31) * m + half + (v >> 63)) >> 31
                acc[i] = min(max(((v >> 31) * m + low) >> rest, -qmax), qmax)
            if has_bn:
                a = bn_a[c]
                bb = bn_b[c]
                if bn_shift >= 31:
                    for i in range(inner):
                        v = acc[i] * a + bb
                        low = ((v & _LOW31) * bn_m + bn_half + (v >> 63)) >> 31
                        acc[i] = min(max(((v >> 31) * bn_m + low) >> bn_rest, -qmax), qmax)
                else:
                    for i in range(inner):
                        r = mul_shift(acc[i] * a + bb, bn_m, bn_shift)
                        acc[i] = min(max(r, -qmax), qmax)
            for i in range(inner):
                out[o, c, i] = max(acc[i], lo)
            if relu_out.size:  # a traced run's Relu behind the Conv, both kept
                for i in range(inner):
                    relu_out[o, c, i] = max(acc[i], 0)
    return not bad


@_jit
def affine_requantize(
    x: Any, a: Any, b: Any, mult: int, shift: int, qmax: int, lo: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """``out = max(clip(rescale(x · a[c] + b[c], mult, shift), -qmax, qmax), lo)`` for x
    viewed as (outer, C, inner): a BatchNormalization (`_batchnorm`), then a Relu when lo =
    0. False, before anything is written (so `out` may be `x`), where some |x| > 2**16,
    |a| > 2**31, |b| ≥ 2**52 (then |x·a + b| < 2**62: `mul_shift`'s range) or the
    multiplier or shift is outside [0, 2**31], [0, 62]."""
    outer, channels, inner = x.shape
    if mult < 0 or mult > 1 << 31 or shift < 0 or shift > 62:
        return False
    for c in range(channels):
        if a[c] > 1 << 31 or a[c] < -(1 << 31) or b[c] >= 1 << 52 or b[c] <= -(1 << 52):
            return False
    for o in range(outer):
        for c in range(channels):
            lo_x = 0
            hi_x = 0
            for i in range(inner):
                lo_x = min(lo_x, x[o, c, i])
                hi_x = max(hi_x, x[o, c, i])
            if lo_x < -(1 << 16) or hi_x > 1 << 16:
                return False
    half = 1 << (shift - 1) if shift >= 1 else 0
    rest = shift - 31
    for o in range(outer):
        for c in range(channels):
            ac = a[c]
            bc = b[c]
            if shift >= 31:
                for i in range(inner):
                    v = x[o, c, i] * ac + bc
                    low = ((v & _LOW31) * mult + half + (v >> 63)) >> 31
                    out[o, c, i] = max(min(max(((v >> 31) * mult + low) >> rest, -qmax), qmax), lo)
            else:
                for i in range(inner):
                    r = mul_shift(x[o, c, i] * ac + bc, mult, shift)
                    out[o, c, i] = max(min(max(r, -qmax), qmax), lo)
    return True


@_jit
def add_requant(
    a: Any, b: Any, wa: int, wb: int, mult: int, shift: int, lo: int, hi: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """``out = clip(round_half_away((a·wa + b·wb) · mult / 2**shift), lo, hi)`` over flat
    arrays of any integer type (each element widened to int64 first); False where some
    |a|, |b| ≥ 2**31 or |wa|, |wb| > 2**30 (the int64 sum's bound, < 2**62, then fails) or
    mult is outside [0, 2**31]: `out` is then unspecified and numpy defines the result."""
    if mult < 0 or mult > 1 << 31 or abs(wa) > 1 << 30 or abs(wb) > 1 << 30:
        return False
    top = (1 << 31) - 1
    n = a.size
    for i in range(n):
        if abs(np.int64(a[i])) > top or abs(np.int64(b[i])) > top:
            return False
    if shift < 31:
        for i in range(n):
            v = np.int64(a[i]) * wa + np.int64(b[i]) * wb
            out[i] = min(max(mul_shift(v, mult, shift), lo), hi)
        return True
    half = 1 << (shift - 1)
    rest = shift - 31
    for i in range(n):
        v = np.int64(a[i]) * wa + np.int64(b[i]) * wb
        low = ((v & _LOW31) * mult + half + (v >> 63)) >> 31
        out[i] = min(max(((v >> 31) * mult + low) >> rest, lo), hi)
    return True


@_jit
def channel_epilogue_float(
    acc: Any, bias: Any, mult: Any, shift: int, lo: int, hi: int, out: Any, relu_out: Any
) -> bool:  # pragma: no cover - compiled
    """`channel_epilogue` without a table, for float32 sums, by float64 arithmetic: True
    when every element was proven to get `channel_epilogue`'s integer, else False (then
    `out` is unspecified and the caller runs `channel_epilogue`).

    ``k = mult[c] · 2**-shift`` exactly (an integer in [0, 2**31] times a power of two,
    checked), so with v = y + b (exact: |y| < 2**31 is checked, |b| < 2**52) the real
    d = v · k is the rescale's exact quotient, and p = fl(v · k) is within
    2**-53 |d| of it. The result clip(round_half_away(d), lo, hi) changes value only at
    half-integers; p is first clipped to [lo - 1, hi + 1] (beyond, the result is lo or hi
    either way), and where it is not, |p| ≤ 2**16 and |p - d| < 2**-36 (the fraction
    p - floor(p) is exact but for p in (-1, 0), off by 2**-54 at most, which the margin
    covers). Where p lies more than 2**-30 from
    the nearest half-integer, d lies on the same side of it, and rounding p gives the
    result. An element nearer than that (a tie, or within 2**-30 of one), a sum that is
    too large, NaN or ±Inf, fails the call. Why: int64 multiplies are slow in vectors
    (three instructions with AVX-512, one by one with AVX2); float64 ones are not (the
    kernel 1.25-1.3x faster on SqueezeNet's shapes, AVX-512)."""
    outer, channels, inner = acc.shape
    if hi >= 1 << 16 or lo < -hi or shift < 31 or shift > 62:
        return False
    flo = float(lo)
    fhi = float(hi)
    for c in range(channels):
        if not (bias[c] < 1 << 52 and bias[c] > -(1 << 52) and 0 <= mult[c] <= 1 << 31):
            return False
    flag = False
    for o in range(outer):
        for c in range(channels):
            b = float(bias[c])
            k = math.ldexp(float(mult[c]), -shift)  # exact: a power-of-two scaling
            src = acc[o, c]
            dst = out[o, c]
            for i in range(inner):
                f = np.trunc(float(src[i]))  # as `channel_epilogue`'s int32(f)
                p = (f + b) * k
                p = p if p < fhi + 1.0 else fhi + 1.0
                p = p if p > flo - 1.0 else flo - 1.0
                t = np.floor(p)
                frac = p - t
                flag |= (abs(frac - 0.5) <= 2.0**-30) | (not abs(f) < 2.0**31)  # NaN: not <
                r = t + 1.0 if frac > 0.5 else t
                r = r if r < fhi else fhi
                r = r if r > flo else flo
                dst[i] = np.int32(r)
            if relu_out.size:
                kept = relu_out[o, c]
                for i in range(inner):
                    kept[i] = max(dst[i], 0)
    return not flag


@_jit
def gather_relu(
    x: Any, table: Any, nv: int, qmax: int, out: Any, relu_out: Any
) -> bool:  # pragma: no cover - compiled
    """``out[o, c, i] = table[c·nv + qmax + x[o, c, i]]`` for x viewed as (outer, C, inner),
    and ``relu_out = max(out, 0)`` when relu_out is not empty: a BatchNormalization (and
    the Relu behind it) on a Conv's output, each result kept. out and relu_out may be
    narrower than the table; False where some |x| > qmax, the table does not cover every
    channel, or some gathered value does not fit out's type (the caller then runs numpy)."""
    outer, channels, inner = x.shape
    if x.size == 0:
        return True
    if channels * nv > table.size or 2 * qmax + 1 > nv:
        return False
    lo, hi = extremes(x)
    if lo < -qmax or hi > qmax:
        return False
    bad = False
    relu = relu_out.size > 0
    for o in range(outer):
        for c in range(channels):
            base = c * nv + qmax
            for i in range(inner):
                v = table[np.uint64(base + x[o, c, i])]
                out[o, c, i] = v
                bad |= out[o, c, i] != v
            if relu:
                for i in range(inner):
                    relu_out[o, c, i] = max(out[o, c, i], 0)
    return not bad
