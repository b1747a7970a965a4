"""The numba-compiled loops behind `_kernels` that convert, look up and move integers (the
arithmetic ones - requantizations, epilogues and the gathers that rescale - are in `_jit`,
whose rules hold here too: exact steps only, False on an input outside a loop's proof,
cached compiled code). No loop here calls one of `_jit`'s: numba's cache tracks changes to
the caller's own file only.

Imported only through `_kernels` (lazily, and never when numba is missing or broken).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetrust.runtime.fixed._jit import _jit


@_jit
def to_float(a: Any, amax: int, out: Any) -> bool:  # pragma: no cover - compiled
    """``out = a`` converted to out's float format (exact: |a| ≤ amax < 2**24 is checked)."""
    bad = False
    if amax < 1 << 31:
        # Through int32 (exact: |v| ≤ amax < 2**31 when the call succeeds): AVX2 converts
        # int32 to float in vectors but int64 only one by one (measured 2.2x faster there).
        for i in range(a.size):
            v = a[i]
            bad |= (v > amax) | (v < -amax)
            out[i] = np.int32(v)
        return not bad
    for i in range(a.size):
        v = a[i]
        bad |= (v > amax) | (v < -amax)
        out[i] = v
    return not bad


@_jit
def quantize(x: Any, scale: float, qmax: int, out: Any) -> bool:  # pragma: no cover - compiled
    """``out = clip(round_half_away(x / scale), -qmax, qmax)``, x 1-D float (converted to
    float64 exactly), one correctly rounded division per element as numpy's.

    Rounding is monotone and fixes integers, so clipping to the integer bounds first gives
    the same result; inside them |v| ≤ qmax < 2**31, so v - trunc(v) is exact (as in
    `_arith.round_float`) and so is the conversion of the rounded value to int32 and int64.
    """
    q = float(qmax)
    bad = False
    for i in range(x.size):  # branch-free, so that LLVM vectorizes the divisions
        f = float(x[i])
        bad |= (f - f) != 0.0  # NaN for NaN and ±Inf: the call returns False
        v = f / scale
        v = v if v < q else q
        v = v if v > -q else -q
        t = float(np.trunc(v))
        frac = v - t
        t = t + 1.0 if frac >= 0.5 else t
        t = t - 1.0 if frac <= -0.5 else t
        # |t| ≤ qmax < 2**31: exact through int32, which AVX2 converts in vectors (int64
        # only one by one).
        out[i] = np.int64(np.int32(t))
    return not bad


@_jit
def gather_channels(
    x: Any, table: Any, first: int, nv: int, qmax: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """``out[o, c, i] = table[clip((first + c)·nv + qmax + x[o, c, i])]`` for x viewed as
    (outer, C, inner) - numpy's ``take(mode="clip")`` - and whether every |x| ≤ qmax (then
    no index was clipped). `out` may be `x` (in place).

    Each row's range is found first; a row within it (every row the executor makes) is
    gathered without clipping, which vectorizes (an in-loop flag or clip would not).
    """
    outer, channels, inner = x.shape
    top = table.size - 1
    ok = True
    if inner == 0:
        return ok
    for o in range(outer):
        for c in range(channels):
            base = (first + c) * nv + qmax
            lo = x[o, c, 0]
            hi = lo
            for i in range(inner):
                lo = min(lo, x[o, c, i])
                hi = max(hi, x[o, c, i])
            if lo >= -qmax and hi <= qmax and base - qmax >= 0 and base + qmax <= top:
                for i in range(inner):
                    out[o, c, i] = table[np.uint64(base + x[o, c, i])]
            else:
                ok = False
                for i in range(inner):
                    out[o, c, i] = table[min(max(base + x[o, c, i], 0), top)]
    return ok


@_jit
def gather_pairs(x: Any, y: Any, table: Any, qmax: int, out: Any) -> bool:  # pragma: no cover
    """``out = table[(x + qmax)·nv + y + qmax]`` (nv = 2·qmax + 1) on 1-D x, y; False (out
    untouched) when some |x| or |y| exceeds qmax or the table is smaller than nv²."""
    nv = 2 * qmax + 1
    if x.size == 0:
        return True
    if table.size < nv * nv:
        return False
    lo = min(x[0], y[0])
    hi = max(x[0], y[0])
    for i in range(x.size):
        lo = min(lo, min(x[i], y[i]))
        hi = max(hi, max(x[i], y[i]))
    if lo < -qmax or hi > qmax:
        return False
    off = qmax * nv + qmax
    for i in range(x.size):
        out[i] = table[np.uint64(x[i] * nv + y[i] + off)]
    return True


@_jit
def dequantize(q: Any, scale: float, out: Any) -> bool:  # pragma: no cover - compiled
    """``out = float32(float64(q) · scale)`` element by element (1-D): numpy's
    ``(q.astype(float64) * scale).astype(float32)``, each step one IEEE rounding."""
    for i in range(q.size):
        out[i] = np.float32(float(q[i]) * scale)
    return True


@_jit
def narrow(x: Any, qmax: int, out: Any) -> bool:  # pragma: no cover - compiled
    """``out = x`` (1-D) into a narrower integer type, and whether every |x| ≤ qmax (else
    out is unspecified: the caller keeps x)."""
    lo = 0
    hi = 0
    for i in range(x.size):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
        out[i] = v
    return lo >= -qmax and hi <= qmax


@_jit
def max_pool2d(
    x: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, pt: int, pl: int, out: Any
) -> bool:  # pragma: no cover - compiled
    """``out[n, c, oy, ox] = max x[n, c, oy·sh - pt + i·dh, ox·sw - pl + j·dw]`` over the
    taps (i, j) inside x (padding never wins), x and out of one integer dtype; False where
    some window holds no tap inside x (`_pool` refuses those first).

    Per plane, as flat 1-D loops over the whole plane: ``vm[t] = max_i p[t + i·dh·w]`` (the
    window's rows, for every start row at once), then ``hm[t] = max_j vm[t + j·dw]`` (its
    columns), then each output whose window lies inside picks ``hm[y0·w + x0]`` - the same
    maximum in another order (max is exact); entries of ``hm`` whose window would wrap to the
    next row are never picked. Windows cut by padding or the far edges take the maximum of
    their inside taps one by one. The shifted reads go through views (``p[off:][t]``, not
    ``p[t + off]``): numba wraps negative indices, and an index it cannot prove ≥ 0 gets a
    select per element that keeps LLVM from vectorizing (SqueezeNet's first pool, int8:
    2.7 ms with ``p[t + off]``, 0.8 ms row by row, 0.2 ms so). Over all planes at once the
    passes leave the cache: slower."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for oy in range(oh):
        y0 = oy * sh - pt
        i0 = 0
        while i0 < kh and y0 + i0 * dh < 0:
            i0 += 1
        i1 = kh
        while i1 > i0 and y0 + (i1 - 1) * dh >= h:
            i1 -= 1
        if i1 <= i0:
            return False
    for ox in range(ow):
        x0 = ox * sw - pl
        if x0 + (kw - 1) * dw < 0 or x0 >= w:
            return False
        j = 0
        while x0 + j * dw < 0:
            j += 1
        if x0 + j * dw >= w:
            return False
    rows = max(0, h - (kh - 1) * dh)  # start rows whose whole window is inside
    inner = w - (kw - 1) * dw  # start columns whose whole window is inside (if > 0)
    nv = rows * w
    nh = max(0, nv - (kw - 1) * dw)
    vm = np.empty(max(nv, 1), x.dtype)
    hm = np.empty(max(nh, 1), x.dtype)
    flat = x.reshape(n, c, h * w)
    for b in range(n):
        for ch in range(c):
            p = flat[b, ch]
            dst = out[b, ch]
            for t in range(nv):
                vm[t] = p[t]
            for i in range(1, kh):
                q = p[i * dh * w :]  # a view: `t` alone indexes it (see the docstring)
                for t in range(nv):
                    vm[t] = max(vm[t], q[t])
            for t in range(nh):
                hm[t] = vm[t]
            for j in range(1, kw):
                q = vm[j * dw :]
                for t in range(nh):
                    hm[t] = max(hm[t], q[t])
            for oy in range(oh):
                y0 = oy * sh - pt
                row = dst[oy]
                lo, hi = 0, 0  # the columns [lo, hi) whose whole window is inside
                if 0 <= y0 < rows and inner > 0:
                    lo = min(ow, (pl + sw - 1) // sw)
                    hi = max(lo, min(ow, (inner + pl + sw - 1) // sw))
                    src = hm[y0 * w + lo * sw - pl :: sw]
                    part = row[lo:hi]
                    for k in range(hi - lo):
                        part[k] = src[k]
                ox = 0
                while ox < ow:  # the cut windows: any left of lo, then right of hi
                    if ox == lo and hi > lo:
                        ox = hi
                        continue
                    x0 = ox * sw - pl
                    best = p[0]
                    seen = False
                    for i in range(kh):
                        y = y0 + i * dh
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            xx = x0 + j * dw
                            if xx < 0 or xx >= w:
                                continue
                            v = p[y * w + xx]
                            best = v if not seen else max(best, v)
                            seen = True
                    row[ox] = best
                    ox += 1
    return True
