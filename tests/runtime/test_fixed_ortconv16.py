"""Conv's int16 path through onnxruntime's float32 Conv by base-256 digits (`_digitconv`) gives
the integers of the im2col BLAS path and of a direct int64 sum, for every geometry, extreme
int16 values and chunked digit sums."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _digitconv, _ortconv
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, saturate
from edgetrust.runtime.fixed._conv import Conv
from tests.runtime.graphs import single_op
from tests.runtime.test_fixed_ortconv import _direct

QMAX = 32767


@contextmanager
def _paths(
    ort: bool, digits: bool = True, exact: int | None = None, matmul: bool = False
) -> Iterator[None]:
    """Switch the onnxruntime paths (and lower the float32 bound, which only shrinks chunks:
    a smaller bound is still a proof); `matmul` lets one-group convolutions take `_matconv`
    (off: the digits, which this file tests; `test_fixed_epilogue16` tests the MatMul)."""
    old = (
        _ortconv.ENABLED,
        _digitconv.ENABLED,
        _ortconv._EXACT,
        _digitconv.MIN_TERMS,
        _digitconv.MATMUL,
    )
    _ortconv.ENABLED, _digitconv.ENABLED, _digitconv.MATMUL = ort, digits, matmul
    _digitconv.MIN_TERMS = 1  # short sums too (the executor leaves them to BLAS: speed only)
    if exact is not None:
        _ortconv._EXACT = exact
    try:
        yield
    finally:
        (
            _ortconv.ENABLED,
            _digitconv.ENABLED,
            _ortconv._EXACT,
            _digitconv.MIN_TERMS,
            _digitconv.MATMUL,
        ) = old


def _conv_op(w: np.ndarray, group: int, hw: int, **attrs: Any) -> Conv:
    """An int16 Conv whose quantized weights are `w` itself (integers, each row reaching
    ±32767, so the per-row scale is 1)."""
    cout, cg = w.shape[:2]
    rng = np.random.default_rng(0)
    bias = rng.integers(-(1 << 20), 1 << 20, size=cout).astype(np.float32)
    shape = [(1, cg * group, hw, hw)]
    model = single_op(
        "Conv", shape, consts={1: w.astype(np.float32), 2: bias}, group=group, **attrs
    )
    calib = {"x0": rng.standard_normal(shape[0]).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[calib])
    op = ex.ops[0]
    assert isinstance(op, Conv)
    np.testing.assert_array_equal(op.weights()["w"], w.reshape(cout, -1))
    return op


def _int16(rng: np.random.Generator, shape: tuple[int, ...], lo: int, extremes: bool) -> Any:
    """Random integers in [lo, 32767]; with `extremes`, mostly the range's edges and the
    values whose low digit is ±128/127 (the digit bounds' worst cases)."""
    if not extremes:
        return rng.integers(lo, QMAX + 1, size=shape)
    edge = np.array([lo, lo + 1, -32640, -128, -129, -1, 0, 127, 128, 32639, 32640, QMAX])
    return rng.choice(edge[edge >= lo], size=shape)


def _weights(rng: np.random.Generator, shape: tuple[int, ...], extremes: bool) -> Any:
    w = _int16(rng, shape, -QMAX, extremes)
    w.reshape(shape[0], -1)[:, 0] = np.where(rng.random(shape[0]) < 0.5, QMAX, -QMAX)
    return w


def _sums(op: Conv, x: np.ndarray, xmax: int, **paths: Any) -> np.ndarray:
    with _paths(**paths):
        return op.conv_sum(x, op.weights()["b"], xmax, op.qmax)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    cin_g=st.integers(1, 5),
    cout_g=st.integers(1, 4),
    group=st.sampled_from([1, 1, 2, 3]),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    extremes=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_digit_path_equals_blas_path_and_direct_sum(
    data: st.DataObject,
    cin_g: int,
    cout_g: int,
    group: int,
    k: int,
    stride: int,
    dilation: int,
    pad: str,
    extremes: bool,
    seed: int,
) -> None:
    attrs: dict[str, Any] = {"strides": [stride, stride], "dilations": [dilation, dilation]}
    if pad == "NOTSET":
        attrs["pads"] = data.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    else:
        attrs["auto_pad"] = pad
    rng = np.random.default_rng(seed)
    w = _weights(rng, (cout_g * group, cin_g, k, k), extremes)
    op = _conv_op(w, group, 7, **attrs)
    # -32768 only where the caller's bound admits it (zero-point-shifted integers).
    xmax = data.draw(st.sampled_from([QMAX, QMAX + 1]))
    x = _int16(rng, (data.draw(st.integers(1, 2)), cin_g * group, 7, 7), -xmax, extremes)
    # A lowered float32 bound makes the digit sums need chunks (and refuses grouped ones).
    exact = data.draw(st.sampled_from([None, 1 << 19, 1 << 17, 1 << 15]))
    w4 = w.astype(np.int64)
    with _paths(True, exact=exact):
        plan = _digitconv.DigitConv.plan(w4, group, xmax, None)
    chunks = 0 if plan is None else max(len(t.chunks) for t in plan.terms)
    event("refused" if plan is None else f"{min(chunks, 3)} chunk(s)")
    fast = _sums(op, x, xmax, ort=True, exact=exact)
    slow = _sums(op, x, xmax, ort=False)
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, _direct(x, w4, op.weights()["b"], op))


@pytest.mark.parametrize("mode", ["concat", "karatsuba", "split"])
def test_every_mode_is_exact_at_the_real_bound_with_chunks(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worst-case digits (every low digit ±128, high digits 128) over 1,152 terms: the digit
    sums need chunks at the real 2**24 bound, and the result is still exact."""
    monkeypatch.setattr(_digitconv, "MODE", mode)
    rng = np.random.default_rng(7)
    w = rng.choice(np.array([-32640, 32640, -32767, 32767, 32639, -32639]), (3, 128, 3, 3))
    op = _conv_op(w, 1, 5, pads=[1, 1, 1, 1])
    with _paths(True):
        plan = _digitconv.DigitConv.plan(w.astype(np.int64), 1, QMAX, None)
    assert plan is not None and max(len(t.chunks) for t in plan.terms) >= 2
    x = rng.choice(np.array([-QMAX, QMAX, -32640, 32640, 32639, -32639]), (1, 128, 5, 5))
    fast = _sums(op, x, QMAX, ort=True)
    np.testing.assert_array_equal(fast, _sums(op, x, QMAX, ort=False))
    np.testing.assert_array_equal(fast, _direct(x, w.astype(np.int64), op.weights()["b"], op))


@settings(max_examples=200, deadline=None)
@given(v=st.lists(st.integers(-(1 << 23), 1 << 23), min_size=1, max_size=50))
def test_balanced_digits(v: list[int]) -> None:
    a = np.array(v, np.int64)
    h, low = _digitconv.split_digits(a)
    np.testing.assert_array_equal(256 * h + low, a)
    assert int(low.min()) >= -128 and int(low.max()) <= 127
    assert int(np.abs(h).max()) <= _digitconv.high_bound(int(np.abs(a).max()))


def test_no_digit_path_where_no_bound_holds() -> None:
    w = np.full((2, 1, 1, 2), QMAX, np.int64)
    # Short sums: no digits (BLAS, or one group: `_matconv`, tested in test_fixed_epilogue16).
    assert _digitconv.DigitConv.plan_digits(w, 1, QMAX, None) is None
    with _paths(True):
        assert _digitconv.DigitConv.plan(w, 1, 1 << 24, None) is None
        assert _digitconv.DigitConv.plan(np.zeros((2, 0, 1, 1), np.int64), 1, QMAX, None) is None
    with _paths(True, exact=1 << 10):  # one channel alone exceeds the bound
        assert _digitconv.DigitConv.plan(w, 1, QMAX, None) is None


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    oc=st.integers(1, 5),
    inner=st.sampled_from([1, 7, 4096, 70_000]),
)
def test_requant_blocks_equal_apply_rescale(data: st.DataObject, oc: int, inner: int) -> None:
    """Block by block with the plan's bound: the integers of apply_rescale + saturate on the
    whole tensor, ties included."""
    zeros = data.draw(st.sampled_from([0, 5, 20, 30]))
    shift = min(62, max(31, zeros + 1 + data.draw(st.integers(0, 40))))
    n_mult = data.draw(st.sampled_from([1, oc]))
    mult = np.array(
        data.draw(st.lists(st.integers(0, (1 << 31) >> zeros), min_size=n_mult, max_size=n_mult)),
        np.int64,
    ) << np.int64(zeros)
    rs = Rescale(np.minimum(mult, 1 << 31), shift)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    span = data.draw(st.sampled_from([3, 1 << 20, 1 << 45, (1 << 53) - 1]))
    acc = rng.integers(-span, span + 1, size=(1, oc, inner))
    want = saturate(apply_rescale(acc, rs, channel_axis=1), QMAX)
    got = _digitconv.requant_blocks(acc.astype(np.float64), rs, span, QMAX)
    np.testing.assert_array_equal(got, want)


def test_int16_executor_takes_the_digit_path_and_keeps_the_blas_integers() -> None:
    """A whole int16 run (fused and traced) gives the integers and root of the BLAS path."""
    rng = np.random.default_rng(2)
    model = single_op(
        "Conv",
        [(1, 16, 12, 12)],
        consts={1: rng.standard_normal((8, 16, 3, 3)).astype(np.float32)},
        pads=[1, 1, 1, 1],
    ).SerializeToString()
    x = {"x0": rng.standard_normal((1, 16, 12, 12)).astype(np.float32)}
    ex = FixedExecutor(model, precision="int16", calibration=[x])
    fast = ex.run(x)
    op = ex.ops[0]
    assert isinstance(op, Conv)
    assert [d is not None for _, d in op.__dict__["_digitcache"].values()] == [True]
    with _paths(False):
        slow_ex = FixedExecutor(model, precision="int16", calibration=[x])
        slow = slow_ex.run(x)
        root = slow_ex.run_traced(x)[1].root
    for name, value in slow.items():
        np.testing.assert_array_equal(fast[name], value)
    assert ex.run_traced(x)[1].root == root


def test_fused_int16_run_gives_the_node_by_node_integers() -> None:
    """Conv→BN→Relu chains fused behind the digit path: the integers and root of the node by
    node run."""
    from tests.runtime.test_fixed_ortconv import _fusion_model

    model = _fusion_model()
    rng = np.random.default_rng(4)
    calib = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    x = {"input": (rng.standard_normal((1, 3, 16, 16)) * 1.5).astype(np.float32)}
    with _paths(True):
        ex = FixedExecutor(model, precision="int16", calibration=calib)
        fused = ex.run(x)
        kinds = sorted(
            "+".join(ex.nodes[j].op_type for j in chain) for chain, _ in ex._fusions().values()
        )
        assert kinds == ["BatchNormalization", "BatchNormalization+Relu", "Relu"]
        root = ex.run_traced(x)[1].root
    with _paths(False):
        plain = FixedExecutor(model, precision="int16", calibration=calib)
        plain._fusion_map = {}  # node by node
        want = plain.run(x)
        assert plain.run_traced(x)[1].root == root
    for name, value in want.items():
        np.testing.assert_array_equal(fused[name], value)


@settings(max_examples=100, deadline=None)
@given(
    oc=st.integers(1, 4),
    channels=st.integers(1, 80),
    align=st.sampled_from([1, 8, 16]),
    scale=st.sampled_from([1 << 10, 1 << 17, 1 << 20, 1 << 22]),
    seed=st.integers(0, 2**32 - 1),
)
def test_aligned_chunks_keep_the_bound(
    oc: int, channels: int, align: int, scale: int, seed: int
) -> None:
    """Chunks cover the channels in order, each within 2**24, starting at multiples of
    `align` unless one aligned block alone breaks the bound (then unaligned)."""
    per_c = np.random.default_rng(seed).integers(0, scale, size=(oc, channels))
    chunks = _ortconv.l1_chunks(per_c, 1, align=align)
    if int(per_c.max()) > 1 << 24:
        assert chunks is None
        return
    assert chunks is not None
    assert chunks[0][0] == 0 and chunks[-1][1] == channels
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(chunks))
    assert all(int(per_c[:, c0:c1].sum(axis=1).max()) <= 1 << 24 for c0, c1 in chunks)
    blocks = [per_c[:, c : c + align].sum(axis=1).max() for c in range(0, channels, align)]
    if channels > align and max(blocks) <= 1 << 24:
        assert all(c0 % align == 0 for c0, _ in chunks)
