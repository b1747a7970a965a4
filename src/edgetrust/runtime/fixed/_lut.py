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
    for i in var:
        if int(vals[i].min()) < -qmax or int(vals[i].max()) > qmax:
            return None
    key = (tuple(var), pattern)
    if key not in cache:
        cache[key] = _table(vals, var, pattern, qmax, combine)
    table, offset = cache[key]
    if len(var) == 1:
        idx = vals[var[0]] * bsize if bsize > 1 else vals[var[0]] + qmax
        if bsize > 1:
            idx += offset
    else:
        idx = vals[var[0]] * nv
        idx += vals[var[1]]
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
        offset = np.arange(bsize, dtype=np.int64).reshape(pattern) + qmax * bsize
    else:
        args[var[0]] = np.repeat(grid, nv).reshape((nv * nv, *rest))
        args[var[1]] = np.tile(grid, nv).reshape((nv * nv, *rest))
        offset = None
    table = np.ascontiguousarray(combine(args), dtype=np.int64).reshape(-1)
    return table, offset
