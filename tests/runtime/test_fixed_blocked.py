"""The tie-free multiplier split, the blocked requantization and the Softmax exp table give
the bits of the old paths.

Each fast path is compared with the path it replaces (`_mul_shift_signed`, the whole-tensor
`saturate(apply_rescale(...))`) and with the Python-integer reference, on random and on
constructed tie values. No timing here (see bench/).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _lut
from edgetrust.runtime.fixed import _arith as arith
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    Rescale,
    _mul_shift_signed,
    _mul_shift_split,
    apply_rescale,
    requantize_block,
    round_div,
    saturate,
    tie_free_split,
)
from tests.runtime import fixed_ref as ref
from tests.runtime.graphs import single_op

pytestmark = pytest.mark.usefixtures("both_kernel_paths")


# Multipliers with any number of trailing zero bits (ties need many), up to 2**31.
MULT = st.one_of(
    st.integers(0, 2**31),
    st.builds(
        lambda odd, k: min((2 * odd + 1) << k, 2**31), st.integers(0, 2**20), st.integers(0, 30)
    ),
    st.sampled_from([0, 1, 2**30, 2**31 - 1, 2**31]),
)
SHIFT = st.integers(31, 62)
X = st.integers(-(2**62) + 1, 2**62 - 1)


@contextmanager
def _block_size(block: int) -> Iterator[None]:
    """`arith.BLOCK` set to `block` (small blocks exercise the block edges)."""
    old = arith.BLOCK
    arith.BLOCK = block
    try:
        yield
    finally:
        arith.BLOCK = old


def _ties(m: int, s: int) -> list[int]:
    """Values x with x·m ≡ 2**(s-1) (mod 2**s) - exact ties - that fit below 2**62."""
    if m == 0:
        return []
    v2 = (m & -m).bit_length() - 1
    base = 1 << max(0, s - 1 - v2)
    if v2 > s - 1 or base >= 1 << 61:
        return []
    return [k * base for k in (1, -1, 3, -3) if abs(k * base) < 1 << 62]


@settings(max_examples=400)
@given(st.lists(X, min_size=1, max_size=12), MULT, SHIFT, st.booleans())
def test_split_is_exact_where_it_applies(xs: list[int], m: int, s: int, ties: bool) -> None:
    if ties:
        xs = xs + _ties(m, s)
    x = np.array(xs, np.int64)
    rs = Rescale(np.array([m], np.int64), s)
    xmax = max(abs(v) for v in xs)
    t = tie_free_split(xmax, rs)
    if t is None:
        return
    assert not any((v * m) % (1 << s) == 1 << (s - 1) for v in xs)  # no tie slipped through
    got = _mul_shift_split(x, np.int64(m), s, t).tolist()
    assert got == [ref.rescale(v, m, s) for v in xs]
    assert got == _mul_shift_signed(x, np.int64(m), s).tolist()


@settings(max_examples=200)
@given(MULT, SHIFT)
def test_split_refuses_data_with_ties(m: int, s: int) -> None:
    for v in _ties(m, s):
        assert tie_free_split(abs(v), Rescale(np.array([m], np.int64), s)) is None


@settings(max_examples=300)
@given(
    st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=12),
    st.lists(MULT, min_size=1, max_size=4),
    SHIFT,
)
def test_apply_rescale_matches_the_signed_split(xs: list[int], ms: list[int], s: int) -> None:
    """Per-channel multipliers: whichever path apply_rescale takes, the old integers."""
    x = np.array([[v] * len(ms) for v in xs], np.int64)
    mult = np.array(ms, np.int64)
    rs = Rescale(mult, s)
    got = apply_rescale(x, rs, channel_axis=1)
    assert got.tolist() == _mul_shift_signed(x, mult.reshape(1, -1), s).tolist()
    for i, j in np.ndindex(x.shape):
        want = ref.rescale(int(x[i, j]), ms[j], s)
        if abs(want) < 2**60:
            assert got[i, j] == want


@settings(max_examples=300)
@given(
    st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=16),
    MULT,
    st.integers(1, 62),
    st.sampled_from([127, 32767]),
    st.booleans(),
)
def test_requantize_block_matches_requantize(
    xs: list[int], m: int, s: int, qmax: int, ties: bool
) -> None:
    if ties:
        xs = xs + _ties(m, s)
    rs = Rescale(np.array([m], np.int64), s)
    x = np.array(xs, np.int64)
    want = saturate(apply_rescale(x, rs), qmax)
    w = x.copy()
    requantize_block(w, rs, qmax)
    assert w.tolist() == want.tolist()
    if s >= 31:
        assert w.tolist() == [ref.sat(ref.rescale(v, m, s), qmax) for v in xs]


_BN: dict[int, Any] = {}


def _bn_op(channels: int) -> Any:
    """An int16 BatchNormalization op with seeded constants, calibrated once per width."""
    if channels not in _BN:
        rng = np.random.default_rng(channels)
        consts = {
            1: rng.uniform(-1.5, 1.5, channels).astype(np.float32),
            2: (rng.standard_normal(channels) * 2.0).astype(np.float32),
            3: (rng.standard_normal(channels) * 0.3).astype(np.float32),
            4: rng.uniform(1e-3, 2.0, channels).astype(np.float32),
        }
        model = single_op("BatchNormalization", [(1, channels, 4, 4)], consts=consts)
        cal = {"x0": rng.standard_normal((1, channels, 4, 4)).astype(np.float32)}
        ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[cal])
        _BN[channels] = next(op for op in ex.ops if op.node.op_type == "BatchNormalization")
    return _BN[channels]


@pytest.mark.parametrize("block", [7, 64, arith.BLOCK])
@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([1, 3, 16]),
    st.integers(1, 2),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_batchnorm_blocks_match_the_whole_tensor(
    block: int, channels: int, n: int, h: int, w: int, seed: int
) -> None:
    op = _bn_op(channels)
    rng = np.random.default_rng(seed)
    x = rng.integers(-32767, 32768, (n, channels, h, w)).astype(np.int64)
    x.reshape(-1)[: min(4, x.size)] = [32767, -32767, 0, -1][: min(4, x.size)]
    p = op.params()
    rs = Rescale.from_params(p["mult"], p["shift"])
    want = saturate(apply_rescale(op.wide([x]), rs), op.qmax)
    with _block_size(block):
        got = op._blocked(x, rs)
    assert got.tolist() == want.tolist()
    a, b = p["a"].tolist(), p["b"].tolist()
    m, s = int(p["mult"][0]), int(p["shift"][0])
    flat = x.reshape(n, channels, -1)
    for i, c, j in np.ndindex(flat.shape):
        if (i + c + j) % 7 == 0:
            v = int(flat[i, c, j]) * a[c] + b[c]
            assert got.reshape(flat.shape)[i, c, j] == ref.sat(ref.rescale(v, m, s), op.qmax)


_ADD: dict[tuple[str, int], Any] = {}


def _add_op(op_type: str, n: int) -> Any:
    """An int16 Add/Sub/Sum op over n inputs of unequal scales, calibrated once."""
    if (op_type, n) not in _ADD:
        rng = np.random.default_rng(n)
        model = single_op(op_type, [(2, 3, 8, 8)] * n)
        cal = {
            f"x{k}": (rng.standard_normal((2, 3, 8, 8)) * (k + 1)).astype(np.float32)
            for k in range(n)
        }
        ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[cal])
        _ADD[op_type, n] = next(op for op in ex.ops if op.node.op_type == op_type)
    return _ADD[op_type, n]


@pytest.mark.parametrize(("op_type", "n"), [("Add", 2), ("Sub", 2), ("Sum", 3)])
@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 5000), st.integers(0, 2**32 - 1), st.sampled_from([5, 4096])
)
def test_add_blocks_match_the_whole_tensor(
    op_type: str, n: int, rows: int, cols: int, seed: int, block: int
) -> None:
    op = _add_op(op_type, n)
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-32767, 32768, (rows, cols)).astype(np.int64) for _ in range(n)]
    for x in xs:
        x.reshape(-1)[:2] = [32767, -32767][: x.size]
    want = saturate(apply_rescale(op.wide(xs), op.rs), op.qmax)
    with _block_size(block):
        got = op._blocked(xs)
    assert got.tolist() == want.tolist()
    m, s = int(op.rs.mult[0]), op.rs.shift
    for j in range(0, rows * cols, 97):
        v = sum(int(x.reshape(-1)[j]) * wk for x, wk in zip(xs, op.weights_, strict=True))
        assert got.reshape(-1)[j] == ref.sat(ref.rescale(v, m, s), op.qmax)


_SOFTMAX: dict[tuple[str, float], Any] = {}


def _softmax_op(precision: str, spread: float) -> Any:
    """A Softmax op whose input scale follows `spread` (wide or narrow exp arguments)."""
    if (precision, spread) not in _SOFTMAX:
        model = single_op("Softmax", [(4, 10)], axis=-1)
        cal = {"x0": (np.linspace(-1.0, 1.0, 40) * spread).reshape(4, 10).astype(np.float32)}
        ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[cal])  # type: ignore[arg-type]
        _SOFTMAX[precision, spread] = next(op for op in ex.ops if op.node.op_type == "Softmax")
    return _SOFTMAX[precision, spread]


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["int8", "int16"]),
    st.sampled_from([0.01, 1.0, 30.0, 500.0]),
    st.integers(1, 60),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_softmax_table_matches_the_exp_path(
    precision: str, spread: float, rows: int, cols: int, seed: int
) -> None:
    """The cached e**-u table and the shortened division: the integers of exp_neg_q30 and
    round_div, and of the Python-integer reference (rows with repeated maxima included)."""
    op = _softmax_op(precision, spread)
    rng = np.random.default_rng(seed)
    q = rng.integers(-op.qmax, op.qmax + 1, (rows, cols)).astype(np.int64)
    q[0, :] = op.qmax  # all ties
    q[-1, 0] = -op.qmax  # the extreme d = 2·qmax (the table's last entry)
    q[-1, -1] = op.qmax
    d = np.max(q, axis=-1, keepdims=True) - q
    e = nl.exp_neg_q30(apply_rescale(d, op.to_q16))
    want = round_div(e * op.qmax, np.sum(e, axis=-1, keepdims=True))
    got = op._softmax_last(q)
    assert got.tolist() == want.tolist()
    mult, shift = int(op.to_q16.mult[0]), op.to_q16.shift
    for r in range(0, rows, 7):
        assert got[r].tolist() == ref.softmax_row(q[r].tolist(), mult, shift, op.qmax)


def _binary_op(op_type: str, shapes: tuple[tuple[int, ...], ...]) -> Any:
    key = (op_type, *shapes)
    if key not in _ADD:
        rng = np.random.default_rng(len(shapes[1]))
        model = single_op(op_type, list(shapes))
        cal = {
            f"x{k}": (rng.standard_normal(s) * (k + 1)).astype(np.float32)
            for k, s in enumerate(shapes)
        }
        ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[cal])
        _ADD[key] = next(op for op in ex.ops if op.node.op_type == op_type)
    return _ADD[key]


@pytest.mark.parametrize("op_type", ["Mul", "Add"])
@pytest.mark.parametrize("rhs", [(4, 1600), (4, 1), (1600,)])
@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([5, 4096]))
def test_in_place_requantization_matches_the_reference(
    op_type: str, rhs: tuple[int, ...], seed: int, block: int
) -> None:
    """Wide results of broadcast Mul/Add requantized in place by blocks: the integers of
    saturate(apply_rescale(wide)) and of the Python-integer reference."""
    op = _binary_op(op_type, ((4, 1600), rhs))
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-32767, 32768, s).astype(np.int64) for s in ((4, 1600), rhs)]
    xs[0][0, :3] = [32767, -32767, 0]
    wide = op.wide(xs)
    want = saturate(apply_rescale(wide.copy(), op.rs), op.qmax)
    with _block_size(block):
        got = op.combine(xs)
    assert got.tolist() == want.tolist()
    a, b = np.broadcast_arrays(*xs)
    m, s = int(op.rs.mult[0]), op.rs.shift
    for idx in [(0, 0), (0, 1), (0, 2), (3, 1599), (2, 777)]:
        va, vb = int(a[idx]), int(b[idx])
        if op_type == "Mul":
            v = va * vb
        else:
            v = va * op.weights_[0] + vb * op.weights_[1]
        assert got[idx] == ref.sat(ref.rescale(v, m, s), op.qmax)


@settings(max_examples=400)
@given(
    st.lists(st.integers(-(2**61), 2**61), min_size=1, max_size=12),
    st.lists(st.integers(1, 2**40), min_size=1, max_size=12),
    st.booleans(),
)
def test_round_div_single_division_is_exact(xs: list[int], ds: list[int], ties: bool) -> None:
    """round_div's one floor division: the integers of sign(x)·floor((|x| + d//2) / d) and
    of the Fraction reference, for scalar and per-element divisors, odd and even, at ties."""
    n = min(len(xs), len(ds))
    xs, ds = xs[:n], ds[:n]
    if ties:  # x = (k + 1/2)·d for even d, both signs
        xs = [
            (2 * (v % 1000) + 1) * (d // 2) * (1 if v >= 0 else -1) if d % 2 == 0 else v
            for v, d in zip(xs, ds, strict=True)
        ]
    x = np.array(xs, np.int64)
    d = np.array(ds, np.int64)
    want = [ref.rdiv(v, dv) for v, dv in zip(xs, ds, strict=True)]
    assert round_div(x, d).tolist() == want
    old = (np.abs(x) + d // 2) // d
    assert np.where(x < 0, -old, old).tolist() == want
    assert round_div(x, ds[0]).tolist() == [ref.rdiv(v, ds[0]) for v in xs]
    assert round_div(x[0], ds[0]).shape == ()


@pytest.mark.parametrize("block", [5, 300, arith.BLOCK])
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([(2, 3, 17, 40), (1, 64, 40), (3, 2100), (1, 1, 5000)]),
    st.integers(0, 3),
    st.sampled_from([127, 32767]),
    st.integers(0, 2**32 - 1),
)
def test_table_gather_matches_combine(
    block: int, shape: tuple[int, ...], axis_pick: int, qmax: int, seed: int
) -> None:
    """The position-major table, gathered by channel blocks: the integers of `combine`, for
    constants along one axis (outer > 1, channels split inside), none, or several axes."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    cshape = [1] * ndim
    if axis_pick == 3 and ndim > 2:  # constants along two axes: the unblocked gather
        cshape[1], cshape[2] = shape[1], shape[2]
    elif axis_pick % ndim:
        cshape[axis_pick % ndim] = shape[axis_pick % ndim]
    const = rng.integers(-9, 10, cshape).astype(np.int64)
    bias = rng.integers(-(2**20), 2**20, cshape).astype(np.int64)
    x = rng.integers(-qmax, qmax + 1, shape).astype(np.int64)
    x.reshape(-1)[:2] = [qmax, -qmax]
    rs = Rescale(np.array([1234567891], np.int64), 40)

    def combine(v: list[np.ndarray]) -> np.ndarray:
        return saturate(apply_rescale(v[0] * v[1] * 4096 + v[2], rs), qmax)

    vals = [x, const, bias]
    pattern = _lut.const_pattern([const.shape, bias.shape], ndim)
    with _block_size(block):
        got = _lut.lut_run({}, vals, [0], pattern, qmax, combine)
    entries = int(np.prod(cshape)) * (2 * qmax + 1)
    if entries > min(_lut.MAX_TABLE, _lut.MAX_TABLE_RATIO * x.size):
        assert got is None
        return
    assert got is not None
    assert got.tolist() == combine(vals).tolist()


def test_blocks_with_out_of_range_inputs_match_the_whole_tensor() -> None:
    """Values beyond ±qmax (never produced by the executor, but possible in a disputed
    trace) make a block fall back to the limb path: still the old integers."""
    op = _bn_op(3)
    rng = np.random.default_rng(5)
    x = rng.integers(-32767, 32768, (1, 3, 64, 64)).astype(np.int64)
    x[0, 1, 5, :4] = [2**31, -(2**31), 2**40, -(2**40)]
    p = op.params()
    rs = Rescale.from_params(p["mult"], p["shift"])
    want = saturate(apply_rescale(op.wide([x]), rs), op.qmax)
    assert op._blocked(x, rs).tolist() == want.tolist()
    add = _add_op("Add", 2)
    ys = [x.reshape(3, -1).copy(), np.flip(x.reshape(3, -1), 1).copy()]
    want = saturate(apply_rescale(add.wide(ys), add.rs), add.qmax)
    assert add._blocked(ys).tolist() == want.tolist()
    assert add.combine(ys).tolist() == want.tolist()
