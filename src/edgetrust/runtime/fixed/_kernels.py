"""Compiled twins of the fixed executor's hot numpy passes, with the numpy code as fallback.

Each function here returns the same integers as the numpy path its caller names (the tests
compare them with hypothesis, and against Python integers), or None when the compiled path
does not apply: numba missing or failing to compile, `ENABLED` switched off, an input
outside the range the kernel's proof covers. The caller then runs its numpy code, which
stays the definition. numba is imported on first use, not with the executor, so processes
that never run a model do not pay its import (~0.15 s); see `_jit` for the compile cache.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

ENABLED = True
"""Tests switch this off to run (and compare against) the numpy path."""

_log = logging.getLogger(__name__)
_state: dict[str, ModuleType | None] = {}
_broken: set[str] = set()


def _jit() -> ModuleType | None:
    """The compiled arithmetic module (`_jit`; `_jitdata` beside it), or None when disabled
    or unavailable (decided once)."""
    if not ENABLED:
        return None
    if "jit" not in _state:
        jit: ModuleType | None
        try:
            from edgetrust.runtime.fixed import _jit as jit
            from edgetrust.runtime.fixed import _jitdata

            _state["data"] = _jitdata
        except Exception as exc:  # numba absent or broken: the numpy path gives the same bits
            _log.info("numba kernels unavailable (%s); using numpy", exc)
            jit = None
        _state["jit"] = jit
    return _state["jit"]


def _call(name: str, *args: Any) -> bool | None:
    """Run kernel `name` (of `_jit` or `_jitdata`); None if unavailable or it fails (to
    compile, typically: then that kernel is not tried again in this process, and numpy
    runs)."""
    jit = _jit()
    if jit is None or name in _broken:
        return None
    try:
        kernel = getattr(jit, name, None) or getattr(_state["data"], name)
        return bool(kernel(*args))
    except Exception as exc:  # the kernels raise nothing themselves: numba failed
        _log.warning("numba kernel %s failed (%s); using numpy", name, exc)
        _broken.add(name)
        return None


def requantize(
    x: I64,
    mult: I64,
    shift: int,
    lo: int,
    hi: int,
    *,
    channel_axis: int | None = None,
    out: I64 | None = None,
) -> I64 | None:
    """``clip(apply_rescale(x, Rescale(mult, shift), channel_axis=...), lo, hi)`` in one
    pass, into `out` if given (which may be `x`: element by element), else a new array.
    None (out untouched) outside the multipliers' range 0 ≤ mult ≤ 2**31, 1 ≤ shift ≤ 62
    (a referee may read any from a commitment) or |x| < 2**62, where numpy defines it."""
    if x.dtype != np.int64 or x.ndim == 0 or not 1 <= shift <= 62:
        return None
    mult = np.ascontiguousarray(mult.reshape(-1), dtype=np.int64)
    if mult.size == 1:
        outer, channels, inner = 1, 1, x.size
    else:
        axis = channel_axis if channel_axis is not None else -1
        axis = axis + x.ndim if axis < 0 else axis
        if not 0 <= axis < x.ndim or x.shape[axis] != mult.size:
            return None
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        channels = mult.size
        inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
    view = (outer, channels, inner)
    if out is None:
        out = np.empty(x.shape, np.int64)
    elif out.shape != x.shape or out.dtype != np.int64 or not out.flags.c_contiguous:
        return None
    elif out is not x and np.may_share_memory(out, x):
        return None
    src = np.ascontiguousarray(x).reshape(view)
    if not _call("requantize", src, mult, shift, lo, hi, out.reshape(view)):
        return None
    return out


def gemm_epilogue(
    acc: npt.NDArray[Any], bias: I64 | None, mult: I64, shift: int, lo: int, hi: int
) -> I64 | None:
    """``clip(apply_rescale(int64(acc) + bias, Rescale(mult, shift), channel_axis=-1), lo,
    hi)`` for a 2-D float matmul result holding exact integers (bias per column, or none)."""
    if acc.ndim != 2 or acc.dtype not in (np.float32, np.float64):
        return None
    cols = acc.shape[1]
    if mult.size not in (1, cols) or not 31 <= shift <= 62 or mult.dtype != np.int64:
        return None
    if mult.size != cols or mult.ndim != 1:
        mult = np.full(cols, mult.reshape(-1)[0], np.int64)
    b = np.zeros(cols, np.int64) if bias is None else np.ascontiguousarray(bias, np.int64)
    if b.shape != (cols,):
        return None
    out = np.empty(acc.shape, np.int64)
    # float32 sums are exact only below 2**24 (larger ones make the call fail anyway)
    small = acc.dtype == np.float32
    if not _call("gemm_epilogue", np.ascontiguousarray(acc), b, mult, shift, lo, hi, out, small):
        return None
    return out


def channel_epilogue(
    acc: npt.NDArray[Any],
    bias: I64 | None,
    mult: I64,
    shift: int,
    qmax: int,
    *,
    relu: bool = False,
    table: I64 | None = None,
    dtype: Any = np.int64,
) -> I64 | None:
    """A convolution's requantization from its exact float sums, in one pass:
    ``sat(apply_rescale(int64(acc) + bias, Rescale(mult, shift), channel_axis=1), qmax)``
    for acc (N, C, ...), then max(·, 0) if `relu`, or - for a fused BatchNormalization -
    the gather of its `channel_table` (2·qmax + 1 entries per channel, position-major).
    Same integers as `_ortconv.F32Requant` followed by the post it would be given; None
    where the compiled path does not apply (shift < 31, |bias| ≥ 2**52, odd shapes). The
    result is in `dtype` (int8/int16 when it holds ±qmax: the results never leave it)."""
    both = _channel_epilogue(acc, bias, mult, shift, qmax, relu, table, dtype, False)
    return None if both is None else both[0]


def channel_epilogue_relu(
    acc: npt.NDArray[Any], bias: I64 | None, mult: I64, shift: int, qmax: int, dtype: Any
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]] | None:
    """``channel_epilogue(acc, bias, mult, shift, qmax, dtype=dtype)`` and max(·, 0) of it,
    both from one pass (a Conv and the Relu behind it in a traced run, which keeps both);
    None where `channel_epilogue` would not apply."""
    both = _channel_epilogue(acc, bias, mult, shift, qmax, False, None, dtype, True)
    return None if both is None or both[1] is None else (both[0], both[1])


def _channel_epilogue(
    acc: npt.NDArray[Any],
    bias: I64 | None,
    mult: I64,
    shift: int,
    qmax: int,
    relu: bool,
    table: I64 | None,
    dtype: Any,
    keep_relu: bool,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None] | None:
    """`channel_epilogue`'s result and, with `keep_relu`, max(·, 0) of it from the same pass."""
    if acc.ndim < 2 or acc.dtype not in (np.float32, np.float64) or not 31 <= shift <= 62:
        return None
    channels = acc.shape[1]
    view = (acc.shape[0], channels, acc.size // max(1, acc.shape[0] * channels))
    mult = np.asarray(mult, np.int64).reshape(-1)
    if mult.size not in (1, channels) or (relu and table is not None):
        return None
    if mult.size != channels:
        mult = np.full(channels, mult[0], np.int64)
    b = np.zeros(channels, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    if b.shape != (channels,):
        return None
    nv = 2 * qmax + 1
    tab = np.zeros(0, np.int64) if table is None else np.ascontiguousarray(table, np.int64)
    if table is not None and tab.size != channels * nv:
        return None
    if np.iinfo(dtype).max < qmax:
        return None
    out = np.empty(acc.shape, dtype)
    kept = np.empty(acc.shape if keep_relu else (0,), dtype)
    src = np.ascontiguousarray(acc).reshape(view)
    lo = 0 if relu else -qmax
    small = acc.dtype == np.float32  # exact float32 sums are below 2**24
    mult = np.ascontiguousarray(mult)
    kept3 = kept.reshape(view if keep_relu else (0, 0, 0))
    if FLOAT_EPILOGUE and small and table is None:
        fargs = (src, b, mult, shift, lo, qmax, out.reshape(view), kept3)
        if _call("channel_epilogue_float", *fargs):
            return out, (kept if keep_relu else None)
    args = (src, b, mult, shift, lo, qmax, tab, nv, out.reshape(view))
    if not _call("channel_epilogue", *args, small, kept3):
        return None
    return out, (kept if keep_relu else None)


FLOAT_EPILOGUE = True
"""Try `_jit.channel_epilogue_float` first (the same integers where it succeeds; tests
switch it off to compare)."""


def to_float(
    a: I64, amax: int, dtype: Any, out: npt.NDArray[Any] | None = None
) -> npt.NDArray[Any] | None:
    """``a.astype(dtype)`` for a C-contiguous int64 array with |a| ≤ amax (checked), where
    amax < 2**24 (float32) or 2**53 (float64) makes every conversion exact; into `out` (a
    C-contiguous array of a's shape and that dtype) when given."""
    limit = 1 << (24 if dtype is np.float32 else 53)
    if a.dtype != np.int64 or not a.flags.c_contiguous or not 0 <= amax <= limit:
        return None
    if dtype is not np.float32 and dtype is not np.float64:
        return None
    if out is None:
        out = np.empty(a.shape, dtype)
    elif out.dtype != dtype or out.shape != a.shape or not out.flags.c_contiguous:
        return None
    if not _call("to_float", a.reshape(-1), amax, out.reshape(-1)):
        return None
    return out


def quantize(values: npt.NDArray[Any], scale: float, qmax: int) -> I64 | None:
    """``_arith.quantize(values, scale, qmax)`` for one scalar scale; None where some value
    is NaN or ±Inf (numpy then defines the result, or the caller's validation names it):
    an input's finiteness check in the same pass."""
    if values.dtype not in (np.float32, np.float64) or not 0 < qmax < 1 << 31:
        return None
    out = np.empty(values.shape, np.int64)
    flat = np.ascontiguousarray(values).reshape(-1)
    if not _call("quantize", flat, float(scale), qmax, out.reshape(-1)):
        return None
    return out


def softmax_rows(q: I64, table: I64, qmax: int) -> I64 | None:
    """`_norm.Softmax._softmax_last` on (R, n) rows by the table of E(d), d = max - q."""
    if q.dtype != np.int64 or q.ndim != 2:
        return None
    out = np.empty(q.shape, np.int64)
    if not _call("softmax_rows", np.ascontiguousarray(q), table, qmax, out):
        return None
    return out


def gather_channels(x: I64, table: I64, first: int, nv: int, qmax: int, out: I64) -> bool | None:
    """``out = table.take(clip((first + c)·nv + qmax + x))`` with x, out 3-D (outer, C,
    inner) - out may be x - as ``np.take(mode="clip")`` does; whether no index was clipped.
    None (out untouched) when the compiled path is off or the arrays do not fit it."""
    if x.dtype != np.int64 or out.dtype != np.int64 or table.dtype != np.int64 or x.ndim != 3:
        return None
    if out.shape != x.shape or not table.flags.c_contiguous:
        return None
    return _call("gather_channels", x, table, first, nv, qmax, out)


def gather_pairs(x: I64, y: I64, table: I64, qmax: int) -> I64 | None:
    """``table[(x + qmax)·nv + y + qmax]`` for same-shape x, y with |x|, |y| ≤ qmax; None
    when some value is outside that range (or the compiled path is off)."""
    if x.dtype != np.int64 or y.dtype != np.int64 or x.shape != y.shape:
        return None
    out = np.empty(x.shape, np.int64)
    flat = [np.ascontiguousarray(v).reshape(-1) for v in (x, y)]
    if not _call("gather_pairs", flat[0], flat[1], table, qmax, out.reshape(-1)):
        return None
    return out


def requantize_narrow(
    x: npt.NDArray[Any], mult: I64, shift: int, qmax: int
) -> npt.NDArray[Any] | None:
    """`requantize` for a narrow integer x (int8/int16/int32) with one multiplier, into a new
    array of x's type: ``clip(apply_rescale(int64(x), Rescale(mult, shift)), -qmax, qmax)``
    (the compiled loop widens each element to int64 itself; its results lie in
    [-qmax, qmax], which x's type holds). None where that does not apply."""
    if x.dtype not in (np.int8, np.int16, np.int32) or x.ndim == 0 or mult.size != 1:
        return None
    if not 0 <= qmax <= np.iinfo(x.dtype).max or not 1 <= shift <= 62:
        return None
    out = np.empty(x.shape, x.dtype)
    src = np.ascontiguousarray(x).reshape(-1)
    m = int(mult.reshape(-1)[0])
    if x.dtype == np.int8 and src.size >= _TABLE_MIN:
        # Every int8 in [-qmax, qmax] requantized once, then looked up: the same integers
        # (each entry is this kernel's result for its value), twice as fast on SqueezeNet's
        # Concat inputs; a value outside the table's range is requantized directly below.
        values = np.arange(-qmax, qmax + 1, dtype=np.int8)
        table = np.empty_like(values)
        if _call("requantize_narrow", values, m, shift, -qmax, qmax, table) and _call(
            "gather_channels",
            src.reshape(1, 1, -1),
            table,
            0,
            table.size,
            qmax,
            out.reshape(1, 1, -1),
        ):
            return out
    if not _call("requantize_narrow", src, m, shift, -qmax, qmax, out.reshape(-1)):
        return None
    return out


_TABLE_MIN = 4096
"""Elements from which `requantize_narrow` builds its int8 table (a call of its own) first."""


def digit_epilogue(
    parts: npt.NDArray[Any],
    odd: I64,
    bias: I64 | None,
    mult: I64,
    shift: int,
    qmax: int,
    *,
    bn: tuple[I64, I64, int, int] | None = None,
    relu: bool = False,
    dtype: Any = np.int64,
) -> I64 | None:
    """An int16 convolution's requantization from its exact float digit sums, in one pass:
    ``sat(apply_rescale(Σ_p int64(parts[p]) · odd[p] + bias, Rescale(mult, shift),
    channel_axis=1), qmax)`` for parts (P, N, C, ...) - `_digitconv.DigitConv`'s
    combination and `_digitconv.Requantizer` - then, with ``bn = (A, B, mult, shift)``, a
    fused BatchNormalization's ``sat(apply_rescale(q · A_c + B_c, Rescale(mult, shift)),
    qmax)`` (`_batchnorm.ArithPost`), then max(·, 0) if `relu`. The result (N, C, ...) is in
    `dtype` (int16 holds ±qmax); None where the compiled path does not apply."""
    both = _digit_epilogue(parts, odd, bias, mult, shift, qmax, bn, relu, dtype, False)
    return None if both is None else both[0]


def digit_epilogue_relu(
    parts: npt.NDArray[Any],
    odd: I64,
    bias: I64 | None,
    mult: I64,
    shift: int,
    qmax: int,
    dtype: Any,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]] | None:
    """``digit_epilogue(parts, odd, bias, mult, shift, qmax, dtype=dtype)`` and max(·, 0) of
    it, both from one pass (an int16 Conv and the Relu behind it in a traced run, which keeps
    both); None where `digit_epilogue` would not apply."""
    both = _digit_epilogue(parts, odd, bias, mult, shift, qmax, None, False, dtype, True)
    return None if both is None or both[1] is None else (both[0], both[1])


def _digit_epilogue(
    parts: npt.NDArray[Any],
    odd: I64,
    bias: I64 | None,
    mult: I64,
    shift: int,
    qmax: int,
    bn: tuple[I64, I64, int, int] | None,
    relu: bool,
    dtype: Any,
    keep_relu: bool,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None] | None:
    """`digit_epilogue`'s result and, with `keep_relu`, max(·, 0) of it from the same pass."""
    if parts.ndim < 3 or parts.dtype not in (np.float32, np.float64) or not 31 <= shift <= 62:
        return None
    n_parts, outer, channels = parts.shape[:3]
    inner = parts.size // max(1, n_parts * outer * channels)
    odd = np.ascontiguousarray(odd, np.int64).reshape(-1)
    if n_parts == 1 and bn is None and odd.tolist() == [1] and 0 < qmax < 1 << 16:
        # One part of factor 1 (a MatMul's sums): the same integers by `channel_epilogue`,
        # which has no digit combination to do (~22% faster on SqueezeNet's shapes)
        return _channel_epilogue(parts[0], bias, mult, shift, qmax, relu, None, dtype, keep_relu)
    mult = np.asarray(mult, np.int64).reshape(-1)
    if odd.size != n_parts or mult.size not in (1, channels) or np.iinfo(dtype).max < qmax:
        return None
    if mult.size != channels:
        mult = np.full(channels, mult[0], np.int64)
    b = np.zeros(channels, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    if b.shape != (channels,):
        return None
    empty = np.zeros(0, np.int64)
    bn_a, bn_b, bn_m, bn_s = empty, empty, 0, 31
    if bn is not None:
        bn_a, bn_b = (np.ascontiguousarray(v, np.int64).reshape(-1) for v in bn[:2])
        bn_m, bn_s = int(bn[2]), int(bn[3])
    shape = (outer, channels, *parts.shape[3:])
    out = np.empty(shape, dtype)
    kept = np.empty(shape if keep_relu else (0,), dtype)
    src = np.ascontiguousarray(parts).reshape(n_parts, outer, channels, inner)
    view = (outer, channels, inner)
    lo = 0 if relu else -qmax
    args = (src, odd, b, np.ascontiguousarray(mult), shift, qmax, bn_a, bn_b, bn_m, bn_s, lo)
    if not _call(
        "digit_epilogue",
        *args,
        out.reshape(view),
        kept.reshape(view if keep_relu else (0, 0, 0)),
        src.dtype == np.float32,
    ):
        return None
    return out, (kept if keep_relu else None)


def affine_requantize(
    x: npt.NDArray[Any],
    a: I64,
    b: I64,
    mult: int,
    shift: int,
    qmax: int,
    *,
    relu: bool = False,
    out: I64 | None = None,
) -> I64 | None:
    """``sat(apply_rescale(x · a_c + b_c, Rescale([mult], shift)), qmax)`` (then max(·, 0)
    if `relu`) for x (N, C, ...) with per-channel a, b in one pass: `_batchnorm`'s
    `combine`, or its `ArithPost` on a block. Into `out` if given (which may be `x`), else a
    new int64 array; None (out untouched) where the compiled path does not apply."""
    if x.ndim < 2 or x.dtype not in (np.int16, np.int32, np.int64) or qmax >= 1 << 31:
        return None
    channels = x.shape[1]
    a = np.ascontiguousarray(a, np.int64).reshape(-1)
    b = np.ascontiguousarray(b, np.int64).reshape(-1)
    if a.size != channels or b.size != channels:
        return None
    if out is None:
        out = np.empty(x.shape, np.int64)
    elif out.shape != x.shape or out.dtype != np.int64 or not out.flags.c_contiguous:
        return None
    elif out is not x and np.may_share_memory(out, x):
        return None
    if not x.flags.c_contiguous:
        return None
    view = (x.shape[0], channels, x.size // max(1, x.shape[0] * channels))
    lo = 0 if relu else -qmax
    args = (x.reshape(view), a, b, int(mult), int(shift), int(qmax), lo, out.reshape(view))
    if not _call("affine_requantize", *args):
        return None
    return out


def add_requant(
    a: npt.NDArray[Any],
    b: npt.NDArray[Any],
    wa: int,
    wb: int,
    mult: I64,
    shift: int,
    qmax: int,
    *,
    relu: bool = False,
    dtype: Any = np.int64,
) -> I64 | None:
    """``sat(apply_rescale(int64(a) · wa + int64(b) · wb, Rescale(mult, shift)))`` for two
    same-shape integer arrays of any width (int8/int16 too) and one multiplier, in one pass
    into a new array of `dtype` (int8/int16 where it holds ±qmax): `AddSub`'s two-input
    integer definition, then max(·, 0) with `relu` (a Relu behind it, in the same pass: the
    clip to [0, qmax]). None where that does not apply (the numpy path then runs)."""
    if a.shape != b.shape or a.ndim == 0 or mult.size != 1 or not 1 <= shift <= 62:
        return None
    if a.dtype.kind != "i" or b.dtype.kind != "i" or np.iinfo(dtype).max < qmax:
        return None
    out = np.empty(a.shape, dtype)
    fa = np.ascontiguousarray(a).reshape(-1)
    fb = np.ascontiguousarray(b).reshape(-1)
    m = int(mult.reshape(-1)[0])
    lo = 0 if relu else -qmax
    if not _call("add_requant", fa, fb, wa, wb, m, shift, lo, qmax, out.reshape(-1)):
        return None
    return out


def dequantize(values: npt.NDArray[Any], scale: float) -> npt.NDArray[np.float32] | None:
    """``(values.astype(float64) * scale).astype(float32)`` for an int8/16/32/64 array."""
    if values.dtype not in (np.int8, np.int16, np.int32, np.int64):
        return None
    out = np.empty(values.shape, np.float32)
    flat = np.ascontiguousarray(values).reshape(-1)
    if not _call("dequantize", flat, float(scale), out.reshape(-1)):
        return None
    return out


def gather_relu(
    x: npt.NDArray[Any], table: I64, nv: int, qmax: int, relu: bool
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None] | None:
    """``table[c·nv + qmax + x]`` per channel c (axis 1) of an int8/16/64 array x with
    |x| ≤ qmax - a BatchNormalization's `channel_table` gather - in x's own dtype, and
    with `relu` also ``max(·, 0)`` of it as a second array; None where the compiled path
    does not apply (then numpy runs the nodes)."""
    if x.dtype not in (np.int8, np.int16, np.int64) or x.ndim < 2 or table.dtype != np.int64:
        return None
    if not table.flags.c_contiguous:
        return None
    channels = x.shape[1]
    view = (x.shape[0], channels, x.size // max(1, x.shape[0] * channels))
    out = np.empty(x.shape, x.dtype)
    relu_out = np.empty(x.shape if relu else (0,), x.dtype)
    src = np.ascontiguousarray(x).reshape(view)
    rv = relu_out.reshape(view) if relu else relu_out.reshape(0, 0, 0)
    if not _call("gather_relu", src, table, nv, qmax, out.reshape(view), rv):
        return None
    return out, (relu_out if relu else None)


def narrow(x: npt.NDArray[Any], qmax: int, dtype: Any) -> npt.NDArray[Any] | None:
    """`x` (int64) as a new `dtype` (int8/int16) array of the same integers, where every
    |x| ≤ qmax ≤ dtype's maximum; None otherwise (or where the kernel is off)."""
    if x.dtype != np.int64 or not 0 <= qmax <= np.iinfo(dtype).max:
        return None
    out = np.empty(x.shape, dtype)
    if not _call("narrow", np.ascontiguousarray(x).reshape(-1), qmax, out.reshape(-1)):
        return None
    return out


def max_pool2d(
    x: npt.NDArray[Any],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    pads: tuple[int, int],
    out_hw: tuple[int, int],
) -> npt.NDArray[Any] | None:
    """A 2-D max pool of (N, C, H, W) integers in x's own dtype, padding never winning:
    `_jitdata.max_pool2d` with (top, left) `pads` and the output's (OH, OW); None where the
    compiled path does not apply (then numpy folds the taps: the same integers)."""
    if x.ndim != 4 or x.dtype.kind != "i" or min(*kernel, *strides, *dilations) < 1:
        return None
    out = np.empty((*x.shape[:2], *out_hw), x.dtype)
    if not out.size:
        return out
    args = (*kernel, *strides, *dilations, *pads)
    if not _call("max_pool2d", np.ascontiguousarray(x), *args, out):
        return None
    return out
