"""int16 Conv epilogues: the compiled one-pass digit epilogue (`_kernels.digit_epilogue`:
combination, requantization, fused BatchNormalization arithmetic and Relu) gives the integers
of the numpy block path and of the nodes run one by one; 1×1 convolutions as one float64
MatMul (`_matconv`) give the integers of the BLAS path and of a direct int64 sum."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _digitconv, _kernels, _matconv, _ortconv
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, saturate
from edgetrust.runtime.fixed._batchnorm import ArithPost, BatchNormalization
from edgetrust.runtime.fixed._conv import Conv
from edgetrust.runtime.fixed._elementwise import RELU_POST
from edgetrust.runtime.fixed._matconv import MatConv, _span
from tests.runtime.test_fixed_ortconv import _direct
from tests.runtime.test_fixed_ortconv16 import QMAX, _conv_op, _int16, _weights

_POSTS = ["none", "relu", "bn", "bn+relu"]


def _post(kind: str, rng: np.random.Generator, oc: int, bn_shift: int) -> Any:
    if kind == "none":
        return None
    if kind == "relu":
        return RELU_POST
    a = rng.integers(-(1 << 30), (1 << 30) + 1, size=oc)
    b = rng.integers(-(1 << 51), 1 << 51, size=oc)
    rs = Rescale(np.array([int(rng.integers(0, (1 << 31) + 1))], np.int64), bn_shift)
    return ArithPost(a, b, rs, QMAX, kind.endswith("relu"))


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    n_parts=st.integers(1, 5),
    n=st.integers(1, 2),
    oc=st.integers(1, 6),
    inner=st.sampled_from([1, 5, 49, 3000]),
    f64=st.booleans(),
    kind=st.sampled_from(_POSTS),
    narrow=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_epilogue_equals_the_block_path(
    data: st.DataObject,
    n_parts: int,
    n: int,
    oc: int,
    inner: int,
    f64: bool,
    kind: str,
    narrow: bool,
    seed: int,
) -> None:
    """`Requantizer.compiled` on float parts gives `DigitConv.sums`' block path's integers:
    Σ parts·odd + bias, rescale (ties and saturation included), then the post."""
    rng = np.random.default_rng(seed)
    lim = (1 << 40) if f64 else (1 << 24)
    odd = rng.choice(np.array([1, 3, 255, 65281, 255 * 257]), size=n_parts)
    # The plan's bound: every combination below 2**53 (here with a bias below 2**40).
    span = min(data.draw(st.sampled_from([3, 1 << 12, lim])), (1 << 52) // int(odd.sum()))
    parts = rng.integers(-span, span + 1, size=(n_parts, n, oc, inner))
    bias = rng.integers(-(1 << 40), 1 << 40, size=oc)
    total = parts * odd[:, None, None, None]
    acc = total.sum(axis=0) + bias[None, :, None]
    zeros = data.draw(st.sampled_from([0, 10, 30]))
    shift = data.draw(st.integers(max(31, zeros + 1), 62))
    mult = rng.integers(0, ((1 << 31) >> zeros) + 1, size=oc) << zeros
    rs = Rescale(np.minimum(mult, 1 << 31), shift)
    bound = int(np.abs(acc).max()) + 1
    post = _post(kind, rng, oc, data.draw(st.sampled_from([1, 12, 31, 40, 62])))
    fin = _digitconv.Requantizer(rs, bound, QMAX, post, narrow=narrow)
    got = fin.compiled(parts.astype(np.float64 if f64 else np.float32), odd, bias)
    if _kernels._jit() is None:
        assert got is None
        return
    assert got is not None
    assert got.dtype == (np.int16 if narrow else np.int64)
    # The definition: the numpy blocks (`__call__`) after the exact combination.
    want = np.empty(acc.shape, np.int64)
    assert bound < 1 << 53
    for o in range(n):
        fin(np.asarray(acc[o], np.float64), want[o], 0, oc)  # d: the combination + bias
    ref = saturate(apply_rescale(acc, rs, channel_axis=1), QMAX)
    if post is not None:
        for o in range(n):
            post(ref[o], 0, oc)
    np.testing.assert_array_equal(want, ref)
    np.testing.assert_array_equal(got, ref)


def test_arith_post_is_batchnormalization_combine() -> None:
    """`ArithPost` on a block (one int16 BN behind a 64-channel Conv) gives
    `BatchNormalization.combine`'s integers, with and without Relu."""
    from tests.runtime.graphs import single_op

    rng = np.random.default_rng(3)
    c = 64
    consts = {
        1: rng.uniform(0.5, 1.5, c).astype(np.float32),
        2: rng.normal(0, 0.1, c).astype(np.float32),
        3: rng.normal(0, 0.1, c).astype(np.float32),
        4: rng.uniform(0.5, 1.5, c).astype(np.float32),
    }
    model = single_op("BatchNormalization", [(1, c, 6, 6)], consts=consts)
    x = {"x0": rng.standard_normal((1, c, 6, 6)).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[x])
    bn = ex.ops[0]
    assert isinstance(bn, BatchNormalization)
    assert bn.channel_table(c) is None  # too large at int16: the arithmetic post
    q = rng.integers(-QMAX, QMAX + 1, size=(1, c, 40))
    q[0, :, :4] = [-QMAX, QMAX, 0, -1]
    want = bn.combine([q])
    for relu in (False, True):
        post = bn.channel_post(c, relu=relu)
        assert isinstance(post, ArithPost)
        got = q[0].copy()
        post(got, 0, c)
        np.testing.assert_array_equal(got, np.maximum(want[0], 0) if relu else want[0])
        half = q[0, 10:30].copy()  # a block of channels [10, 30)
        post(half, 10, 30)
        np.testing.assert_array_equal(half, got[10:30])
    assert bn.channel_post(c + 1) is None


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    cin=st.integers(1, 40),
    cout=st.integers(1, 5),
    k=st.sampled_from([1, 1, 2, 3]),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    n=st.integers(1, 2),
    hw=st.integers(1, 7),
    extremes=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_equals_blas_and_direct(
    data: st.DataObject,
    cin: int,
    cout: int,
    k: int,
    stride: int,
    dilation: int,
    n: int,
    hw: int,
    extremes: bool,
    seed: int,
) -> None:
    """Convolutions by one float64 MatMul over im2col columns, any kernel, stride, dilation
    and padding (padding pixels read 0, also for a 1×1 kernel), int16 extremes: the BLAS
    path's and a direct sum's integers."""
    rng = np.random.default_rng(seed)
    w = _weights(rng, (cout, cin, k, k), extremes)
    pads = data.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    if hw + min(pads[0] + pads[2], pads[1] + pads[3]) < dilation * (k - 1) + 1:
        pads = [dilation * (k - 1)] * 4  # the kernel must fit
    attrs: dict[str, Any] = {"pads": pads, "strides": [stride, stride]}
    attrs["dilations"] = [dilation, dilation]
    op = _conv_op(w, 1, hw, **attrs)
    xmax = data.draw(st.sampled_from([QMAX, QMAX + 1]))
    x = _int16(rng, (n, cin, hw, hw), -xmax, extremes)
    w4 = w.astype(np.int64)
    assert isinstance(_digitconv.DigitConv.plan(w4, 1, xmax, None), MatConv)
    b = op.weights()["b"]
    fast = op.conv_sum(x, b, xmax, op.qmax)
    old = _ortconv.ENABLED
    _ortconv.ENABLED = False
    try:
        slow = op.conv_sum(x, b, xmax, op.qmax)
    finally:
        _ortconv.ENABLED = old
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, _direct(x, w4, b, op))


@settings(max_examples=200, deadline=None)
@given(
    n_in=st.integers(1, 12),
    stride=st.integers(1, 4),
    pad=st.integers(-4, 4),
    pad_end=st.integers(0, 4),
)
def test_span_maps_outputs_to_inputs(n_in: int, stride: int, pad: int, pad_end: int) -> None:
    n_out = max(1, (n_in + pad + pad_end - 1) // stride + 1)
    i0, i1, first = _span(n_in, n_out, stride, pad)
    inside = [i for i in range(n_out) if 0 <= i * stride - pad < n_in]
    assert list(range(i0, i1)) == inside
    if inside:
        assert first == inside[0] * stride - pad


def test_matmul_path_refused_where_float64_could_be_inexact() -> None:
    w = np.full((2, 3, 1, 1), QMAX, np.int64)
    assert MatConv.plan_matmul(w, 1, QMAX, None) is not None
    assert MatConv.plan_matmul(w, 2, QMAX, None) is None  # grouped: the digit path
    assert MatConv.plan_matmul(w, 1, 1 << 24, None) is None
    big = np.full((1, 1 << 16, 1, 1), QMAX, np.int64)  # 2**16 · 32767 · (2**24 - 1) ≥ 2**53
    assert MatConv.plan_matmul(big, 1, (1 << 24) - 1, None) is None


def _bn_chain_model(c: int) -> bytes:
    from onnx import TensorProto

    from tests.runtime.graphs import Builder

    b = Builder(seed=5)
    a = b.op("Relu", [b.bn(b.conv("input", 4, c, 3, pad=1), c)])  # 3×3: digits + BN + Relu
    d = b.bn(b.conv(a, c, c, 1), c)  # 1×1: MatMul + BN
    e = b.op("Relu", [b.conv(d, c, c, 3, pad=1)])  # digits + Relu
    g = b.op("Relu", [b.bn(b.conv(e, c, 8, 1, stride=2), 8)])  # strided 1×1 + BN + Relu
    b.op("Relu", [g], name="out")
    return b.model(
        [("input", TensorProto.FLOAT, [1, 4, 12, 12])],
        [("out", TensorProto.FLOAT, None)],
        check=False,
    ).SerializeToString()


@pytest.mark.parametrize("cols_max", [None, 0])
@pytest.mark.parametrize("compiled", [True, False])
def test_wide_int16_bn_chains_fuse_and_keep_the_node_by_node_integers(
    compiled: bool, cols_max: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conv→BN(→Relu) at int16 with 64 channels (no table) fuses through the arithmetic
    post; outputs and trace root equal the node-by-node run's, compiled or numpy, by
    MatMul or (`COLS_MAX` 0) by the digits where a digit plan exists."""
    monkeypatch.setattr(_kernels, "ENABLED", compiled)
    if cols_max is not None:
        monkeypatch.setattr(_matconv, "COLS_MAX", cols_max)
    model = _bn_chain_model(64)
    rng = np.random.default_rng(9)
    calib = [{"input": rng.standard_normal((1, 4, 12, 12)).astype(np.float32)}]
    x = {"input": (rng.standard_normal((1, 4, 12, 12)) * 1.5).astype(np.float32)}
    ex = FixedExecutor(model, precision="int16", calibration=calib)
    fused = ex.run(x)
    chains = sorted(
        "+".join(ex.nodes[j].op_type for j in chain) for chain, _ in ex._fusions().values()
    )
    assert chains == [
        "BatchNormalization",
        "BatchNormalization+Relu",
        "BatchNormalization+Relu",
        "Relu",
    ]
    convs = [op for op in ex.ops if isinstance(op, Conv)]
    kinds = [type(d).__name__ for op in convs for _, d in op.__dict__["_digitcache"].values()]
    assert kinds == ["MatConv"] * 4
    digits = [
        type(d.fallback).__name__ for op in convs for _, d in op.__dict__["_digitcache"].values()
    ]
    assert digits == ["NoneType", "NoneType", "DigitConv", "NoneType"]  # 36 terms: no digits
    plain = FixedExecutor(model, precision="int16", calibration=calib)
    plain._fusion_map = {}  # node by node
    want = plain.run(x)
    for name, value in want.items():
        np.testing.assert_array_equal(fused[name], value)
    assert ex.run_traced(x)[1].root == plain.run_traced(x)[1].root
    with monkeypatch.context() as m:
        m.setattr(_ortconv, "ENABLED", False)  # the BLAS path: the same integers
        blas = FixedExecutor(model, precision="int16", calibration=calib)
        for name, value in blas.run(x).items():
            np.testing.assert_array_equal(fused[name], value)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 2),
    c=st.integers(1, 5),
    inner=st.sampled_from([1, 3, 50, 5000]),
    shift=st.sampled_from([0, 1, 12, 30, 31, 32, 45, 62]),
    relu=st.booleans(),
    narrow=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_affine_requantize_is_the_batchnormalization_arithmetic(
    data: st.DataObject,
    n: int,
    c: int,
    inner: int,
    shift: int,
    relu: bool,
    narrow: bool,
    seed: int,
) -> None:
    """The compiled one-pass BatchNormalization (`_kernels.affine_requantize`) gives
    ``sat(apply_rescale(x·A + B))`` (then Relu) for every shift, ties and saturation
    included; out of its range (|x| > 2**16) it declines and leaves `out` untouched."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-(1 << 16), (1 << 16) + 1, size=(n, c, inner))
    x.reshape(-1)[: min(x.size, 4)] = [-(1 << 16), 1 << 16, 0, -1][: min(x.size, 4)]
    a = rng.integers(-(1 << 31), (1 << 31) + 1, size=c)
    b = rng.integers(-(1 << 52) + 1, 1 << 52, size=c)
    mult = int(data.draw(st.sampled_from([0, 1, 1 << 30, 1 << 31, int(rng.integers(0, 1 << 31))])))
    rs = Rescale(np.array([mult], np.int64), shift)
    wide = x * a[None, :, None] + b[None, :, None]
    want = saturate(apply_rescale(wide, rs), QMAX)
    if relu:
        want = np.maximum(want, 0)
    src = x.astype(np.int16) if narrow and int(np.abs(x).max()) <= QMAX else x
    got = _kernels.affine_requantize(src, a, b, mult, shift, QMAX, relu=relu)
    if _kernels._jit() is None:
        assert got is None
        return
    if src.dtype == np.int16:
        assert got is not None
        np.testing.assert_array_equal(got, want)
        return
    assert got is not None
    np.testing.assert_array_equal(got, want)
    inplace = x.copy()
    assert (
        _kernels.affine_requantize(inplace, a, b, mult, shift, QMAX, relu=relu, out=inplace)
        is not None
    )
    np.testing.assert_array_equal(inplace, want)
    big = x.copy()
    big.reshape(-1)[-1] = (1 << 16) + 1
    keep = big.copy()
    assert _kernels.affine_requantize(big, a, b, mult, shift, QMAX, out=big) is None
    np.testing.assert_array_equal(big, keep)


@settings(max_examples=60, deadline=None)
@given(
    oc=st.integers(1, 6),
    inner=st.sampled_from([1, 7, 3000]),
    f64=st.booleans(),
    relu=st.booleans(),
    keep=st.booleans(),
    dtype=st.sampled_from([np.int16, np.int64]),
    shift=st.integers(31, 62),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_part_of_factor_one_is_the_digit_kernels_integers(
    oc: int, inner: int, f64: bool, relu: bool, keep: bool, dtype: Any, shift: int, seed: int
) -> None:
    """A MatMul's one part (factor 1) goes through `channel_epilogue`: the integers the digit
    kernel itself gives, with and without Relu, kept Relu, narrow or wide, ties included."""
    if _kernels._jit() is None:
        pytest.skip("numba is not available")
    rng = np.random.default_rng(seed)
    lim = (1 << 50) if f64 else (1 << 24)
    parts = rng.integers(-lim, lim + 1, size=(1, 1, oc, inner)).astype(np.float64)
    bias = rng.integers(-(1 << 40), 1 << 40, size=oc)
    mult = rng.integers(0, (1 << 31) + 1, size=oc)
    if 3 << (shift - 1) < lim:  # exact ties: v · 1 = ±(2k + 1) · 2**(shift - 1), no bias
        parts[0, 0, 0, ::3] = rng.choice([-3, -1, 1, 3], size=parts[0, 0, 0, ::3].size) * (
            1 << (shift - 1)
        )
        mult[0], bias[0] = 1, 0
    parts = parts.astype(np.float64 if f64 else np.float32)
    if keep:
        if relu:
            return  # a kept Relu comes without a fused one
        got = _kernels.digit_epilogue_relu(parts, np.array([1]), bias, mult, shift, QMAX, dtype)
    else:
        one = _kernels.digit_epilogue(
            parts, np.array([1]), bias, mult, shift, QMAX, relu=relu, dtype=dtype
        )
        got = None if one is None else (one, None)
    # the digit kernel itself, as every other part count runs it
    view = (1, oc, inner)
    out = np.empty(view, dtype)
    kept = np.empty(view if keep else (0, 0, 0), dtype)
    empty = np.zeros(0, np.int64)
    ok = _kernels._call(
        "digit_epilogue",
        np.ascontiguousarray(parts),
        np.array([1], np.int64),
        bias,
        mult,
        shift,
        QMAX,
        empty,
        empty,
        0,
        31,
        0 if relu else -QMAX,
        out,
        kept,
        not f64,
    )
    assert got is not None and ok
    np.testing.assert_array_equal(got[0], out)
    assert got[0].dtype == dtype
    if keep:
        np.testing.assert_array_equal(got[1], kept)


def test_the_int32_products_are_taken_only_where_they_are_exact() -> None:
    """float32 digit sums with an odd factor of 2**31 (outside int32) take the int64
    products, the same integers as float64 sums; a float32 sum of 2**31 is refused."""
    if _kernels._jit() is None:
        pytest.skip("numba is not available")
    rng = np.random.default_rng(4)
    parts = rng.integers(-(1 << 20), 1 << 20, size=(2, 1, 3, 50))
    odd = np.array([1 << 31, -3], np.int64)
    bias = rng.integers(-1000, 1000, size=3)
    mult = np.full(3, 1 << 30, np.int64)
    args = (odd, bias, mult, 62, QMAX)
    f32 = _kernels.digit_epilogue(parts.astype(np.float32), *args)
    f64 = _kernels.digit_epilogue(parts.astype(np.float64), *args)
    assert f32 is not None and f64 is not None
    np.testing.assert_array_equal(f32, f64)
    acc = (parts * odd[:, None, None, None]).sum(axis=0) + bias[None, :, None]
    want = saturate(apply_rescale(acc, Rescale(mult, 62), channel_axis=1), QMAX)
    np.testing.assert_array_equal(f64, want)
    big = parts.astype(np.float32)
    big[0, 0, 0, 0] = 2.0**31
    assert _kernels.digit_epilogue(big, np.array([1, 3]), bias, mult, 62, QMAX) is None
