"""Table lookup for element-wise ops: the same integers as the op's own arithmetic, faster.

An element-wise op whose output element depends only on one or two real inputs (each an
integer in [-qmax, qmax]) and on constants that vary along a small `pattern` of axes (a
BatchNormalization's channel, a broadcast per-channel Mul) is a function of at most
(2·qmax + 1)² · |pattern| argument tuples. `lut_run` evaluates the op's own `combine` once on
every such tuple (cached), then gathers: one index pass and one `take` instead of the dozen
int64 passes a wide requantization costs. The integers are those `combine` gives, element by
element, because `combine` is element-wise and exact (no order- or shape-dependent rounding);
tests compare both paths bit for bit. Inputs outside [-qmax, qmax] (never produced by the
executor) fall back to `combine`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgetrust.runtime.fixed import _arith as arith
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import I64

MIN_ELEMENTS = 2048
"""Below this output size the direct arithmetic is as fast as building an index."""

MAX_TABLE = 1 << 19
"""Largest table, in entries (int64): 4 MiB, built once per op."""

MAX_TABLE_RATIO = 8
"""Nor a table more than this many times the tensor it serves (int16 tables are large)."""


def const_pattern(shapes: Sequence[tuple[int, ...]], ndim: int) -> tuple[int, ...] | None:
    """Broadcast shape (rank `ndim`) of the constants' shapes; None if one is of higher rank."""
    if any(len(s) > ndim for s in shapes):
        return None
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    try:
        return tuple(int(d) for d in np.broadcast_shapes((1,) * ndim, *padded))
    except ValueError:
        return None


def lut_run(
    cache: dict[Any, Any],
    vals: Sequence[I64],
    var: Sequence[int],
    pattern: tuple[int, ...] | None,
    qmax: int,
    combine: Callable[[list[I64]], I64],
) -> I64 | None:
    """`combine(vals)` by table, or None when a table does not apply or would not pay.

    `var` are the positions in `vals` of the non-constant inputs (the rest are constants,
    identical on every run); `pattern` is the shape along which the constants vary.
    """
    if pattern is None or not 1 <= len(var) <= 2:
        return None
    shape = vals[var[0]].shape
    if len(shape) == 0 or len(pattern) != len(shape) or pattern[0] != 1:
        return None
    if any(vals[i].shape != shape or vals[i].dtype != np.int64 for i in var):
        return None
    size = int(np.prod(shape))
    if size < MIN_ELEMENTS:
        return None
    if any(p not in (1, d) for p, d in zip(pattern, shape, strict=True)):
        return None
    nv = 2 * qmax + 1
    bsize = int(np.prod(pattern))
    entries = bsize * nv ** len(var)
    if (len(var) == 2 and bsize != 1) or entries > min(MAX_TABLE, MAX_TABLE_RATIO * size):
        return None
    key = (tuple(var), pattern)
    if key not in cache:
        cache[key] = _table(vals, var, pattern, qmax, combine)
    table, offset = cache[key]
    # the compiled gathers check the range in the same pass; where they do not apply (or
    # find a value outside it), numpy checks and gathers
    if len(var) == 1:
        fast = _gather_one_compiled(table, vals[var[0]], pattern, qmax)
    else:
        fast = _kernels.gather_pairs(vals[var[0]], vals[var[1]], table, qmax)
    if fast is not None:
        return fast
    for i in var:
        if int(vals[i].min()) < -qmax or int(vals[i].max()) > qmax:
            return None
    if len(var) == 1:
        return _gather_one(table, offset, vals[var[0]], pattern, qmax)
    return _gather_two(table, vals[var[0]], vals[var[1]], qmax)


def _channel_view(shape: tuple[int, ...], pattern: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(outer, C, inner) for constants varying along at most one axis; None otherwise."""
    varying = [a for a, d in enumerate(pattern) if d != 1]
    if len(varying) > 1:
        return None
    axis = varying[0] if varying else 0
    channels = pattern[axis] if varying else 1
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    size = int(np.prod(shape, dtype=np.int64))
    return outer, channels, size // max(1, outer * channels)


def _gather_one_compiled(table: I64, x: I64, pattern: tuple[int, ...], qmax: int) -> I64 | None:
    """`_gather_one` in one compiled pass, or None (then numpy runs)."""
    view = _channel_view(x.shape, pattern)
    if view is None or not x.flags.c_contiguous:
        return None
    res = np.empty(x.shape, np.int64)
    ok = _kernels.gather_channels(x.reshape(view), table, 0, 2 * qmax + 1, qmax, res.reshape(view))
    return res if ok else None


def _gather_one(table: I64, offset: I64, x: I64, pattern: tuple[int, ...], qmax: int) -> I64:
    """``table[offset + x]``: the entry of x's constant position p is p·nv + x + qmax.

    Where the constants vary along one axis (a channel), the tensor is viewed as (outer, C,
    inner) and gathered in blocks of whole channels: each block reads one 2·qmax + 1 slice of
    the table (in L1) and needs no full-size index array.
    """
    view = _channel_view(x.shape, pattern)
    if view is None or not x.flags.c_contiguous:
        idx = x + offset
        out: I64 = table.take(idx)
        return out
    nv = 2 * qmax + 1
    outer, channels, inner = view
    xv = x.reshape(outer, channels, inner)
    res = np.empty(x.shape, np.int64)
    rv = res.reshape(outer, channels, inner)
    base = (np.arange(channels, dtype=np.int64) * nv + qmax).reshape(channels, 1)
    scratch = np.empty(min(arith.BLOCK, x.size), np.int64)
    for o, c0, c1, i0, i1 in arith.channel_blocks(outer, channels, inner):
        idx = scratch[: (c1 - c0) * (i1 - i0)].reshape(c1 - c0, i1 - i0)
        np.add(xv[o, c0:c1, i0:i1], base[c0:c1], out=idx)
        np.take(table, idx, out=rv[o, c0:c1, i0:i1], mode="clip")  # idx is in range
    return res


def _gather_two(table: I64, x: I64, y: I64, qmax: int) -> I64:
    """``table[(x + qmax)·nv + y + qmax]`` (one constant position; the 2·qmax + 1 squared
    table is gathered at random either way, so blocks do not pay here)."""
    nv = 2 * qmax + 1
    idx = x * nv
    idx += y
    idx += qmax * nv + qmax
    out: I64 = table.take(idx)
    return out


def _table(
    vals: Sequence[I64],
    var: Sequence[int],
    pattern: tuple[int, ...],
    qmax: int,
    combine: Callable[[list[I64]], I64],
) -> tuple[I64, I64 | None]:
    nv = 2 * qmax + 1
    grid = np.arange(-qmax, qmax + 1, dtype=np.int64)
    rest = (1,) * (len(pattern) - 1)
    args = list(vals)
    if len(var) == 1:
        full = (nv, *pattern[1:])
        args[var[0]] = np.ascontiguousarray(np.broadcast_to(grid.reshape((nv, *rest)), full))
        bsize = int(np.prod(pattern))
        # stored position-major (entry p·nv + x + qmax), so one channel's entries are adjacent
        by_value = np.asarray(combine(args), dtype=np.int64).reshape(nv, bsize)
        table = np.ascontiguousarray(by_value.T).reshape(-1)
        offset = np.arange(bsize, dtype=np.int64).reshape(pattern) * nv + qmax
        return table, offset
    args[var[0]] = np.repeat(grid, nv).reshape((nv * nv, *rest))
    args[var[1]] = np.tile(grid, nv).reshape((nv * nv, *rest))
    table = np.ascontiguousarray(combine(args), dtype=np.int64).reshape(-1)
    return table, None


class LazyTable:
    """``entry(q)`` for every element of an integer tensor, each q computed once and kept in a
    dense table over [-qmax - 1, qmax] (for ops whose entry is slow, exact rational work);
    values outside that range are computed one by one and not kept."""

    def __init__(self, qmax: int, entry: Callable[[int], int]) -> None:
        self.lo = -qmax - 1
        self.entry = entry
        self.table = np.zeros(2 * qmax + 2, np.int64)
        self.filled = np.zeros(2 * qmax + 2, bool)

    def __call__(self, q: I64) -> I64:
        """The looked-up tensor, shaped as `q`."""
        q = np.asarray(q, np.int64)
        if q.size and (int(q.min()) < self.lo or int(q.max()) >= self.lo + self.table.size):
            flat = [self.entry(int(v)) for v in q.reshape(-1)]
            return np.array(flat, np.int64).reshape(q.shape)
        idx = q - self.lo
        for i in np.unique(idx[~self.filled[idx]]).tolist():
            self.table[i] = self.entry(i + self.lo)
            self.filled[i] = True
        out: I64 = self.table.take(idx)
        return out
