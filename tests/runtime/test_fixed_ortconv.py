"""Conv's onnxruntime float32 path (`_ortconv`) gives the integers of the im2col BLAS path and
of a direct int64 convolution, for every geometry, and only where its bound proves it exact."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _kernels, _ortconv
from edgetrust.runtime.fixed._conv import Conv
from tests.runtime.graphs import single_op


def _direct(x: np.ndarray, w: np.ndarray, b: np.ndarray, op: Conv) -> np.ndarray:
    """Σ x · w + b by taps in int64 (groups, strides, dilations, padding)."""
    n, _, h, w_ = x.shape
    oh, ow, pt, pl, pb, pr = op.geometry(h, w_)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    (sh, sw), (dh, dw) = op.strides, op.dilations
    ocg = op.oc // op.group
    out = np.zeros((n, op.oc, oh, ow), np.int64)
    for g in range(op.group):
        xg = xp[:, g * op.cg : (g + 1) * op.cg]
        wg = w[g * ocg : (g + 1) * ocg]
        for i in range(op.kh):
            for j in range(op.kw):
                tap = xg[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh][
                    ..., j * dw : j * dw + (ow - 1) * sw + 1 : sw
                ]
                out[:, g * ocg : (g + 1) * ocg] += np.einsum("nchw,oc->nohw", tap, wg[:, :, i, j])
    return out + b[None, :, None, None]


def _conv_op(cin: int, cout: int, group: int, k: int, seed: int, **attrs: Any) -> Conv:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    bias = (rng.standard_normal(cout) * 0.5).astype(np.float32)
    model = single_op("Conv", [(1, cin, 9, 9)], consts={1: w, 2: bias}, group=group, **attrs)
    calib = {"x0": rng.standard_normal((1, cin, 9, 9)).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int8", calibration=[calib])
    op = ex.ops[0]
    assert isinstance(op, Conv)
    return op


def _sums(op: Conv, x: np.ndarray, xmax: int, enabled: bool) -> np.ndarray:
    old = _ortconv.ENABLED
    _ortconv.ENABLED = enabled
    try:
        return op.conv_sum(x, op.weights()["b"], xmax, op.qmax)
    finally:
        _ortconv.ENABLED = old


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    cin_g=st.integers(1, 5),
    cout_g=st.integers(1, 4),
    group=st.sampled_from([1, 1, 2, 3]),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    seed=st.integers(0, 1000),
)
def test_ort_path_equals_blas_path_and_direct_sum(
    data: st.DataObject,
    cin_g: int,
    cout_g: int,
    group: int,
    k: int,
    stride: int,
    dilation: int,
    pad: str,
    seed: int,
) -> None:
    attrs: dict[str, Any] = {"strides": [stride, stride], "dilations": [dilation, dilation]}
    if pad == "NOTSET":
        attrs["pads"] = data.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    else:
        attrs["auto_pad"] = pad
    op = _conv_op(cin_g * group, cout_g * group, group, k, seed, **attrs)
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    per_c = int(np.abs(w4).reshape(op.oc, op.cg, -1).sum(axis=2).max())
    # xmax from the int8 range up to where one input channel alone breaks the bound, so that
    # the single-call, the chunked and the refused cases all occur.
    xmax = data.draw(
        st.sampled_from([op.qmax, (1 << 24) // (per_c * max(1, op.cg - 1)), (1 << 24) // per_c])
    )
    xmax = max(1, xmax)
    rng = np.random.default_rng(seed)
    x = rng.integers(-xmax, xmax + 1, size=(data.draw(st.integers(1, 2)), op.cg * group, 9, 9))
    plan = _ortconv.channel_chunks(w4, group, xmax, op.weights()["b"])
    event("refused" if plan is None else f"{min(len(plan[0]), 3)} chunk(s)")
    fast = _sums(op, x, xmax, True)
    slow = _sums(op, x, xmax, False)
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, _direct(x, w4, op.weights()["b"], op))


def test_chunks_keep_every_partial_sum_within_float32() -> None:
    op = _conv_op(6, 4, 1, 3, seed=5, pads=[1, 1, 1, 1])
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    per_c = np.abs(w4).reshape(op.oc, op.cg, -1).sum(axis=2)
    b = op.weights()["b"]
    xmax = (1 << 24) // int(per_c.sum(axis=1).max()) * 3  # about three chunks' worth
    plan = _ortconv.channel_chunks(w4, 1, xmax, b)
    assert plan is not None
    chunks, with_bias = plan
    assert len(chunks) >= 3
    assert chunks[0][0] == 0 and chunks[-1][1] == op.cg
    assert all(a[1] == b_[0] for a, b_ in itertools.pairwise(chunks))
    for i, (c0, c1) in enumerate(chunks):
        bound = xmax * per_c[:, c0:c1].sum(axis=1) + (np.abs(b) if i == 0 and with_bias else 0)
        assert int(bound.max()) <= 1 << 24
    x = np.random.default_rng(1).integers(-xmax, xmax + 1, size=(1, 6, 9, 9))
    np.testing.assert_array_equal(_sums(op, x, xmax, True), _direct(x, w4, b, op))


def test_the_int8_executor_takes_the_onnxruntime_path_and_int16_does_not() -> None:
    model = single_op(
        "Conv",
        [(1, 16, 12, 12)],
        consts={1: np.random.default_rng(2).standard_normal((8, 16, 3, 3)).astype(np.float32)},
        pads=[1, 1, 1, 1],
    ).SerializeToString()
    x = {"x0": np.random.default_rng(3).standard_normal((1, 16, 12, 12)).astype(np.float32)}
    for precision, expect in (("int8", True), ("int16", False)):
        ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
        ex.run(x)
        op = ex.ops[0]
        assert isinstance(op, Conv)
        taken = [fast is not None for _, fast in op.__dict__.get("_ortcache", {}).values()]
        assert taken == [expect]


@pytest.mark.parametrize("bad", [0, 1 << 24])
def test_no_float32_path_where_no_bound_holds(bad: int) -> None:
    op = _conv_op(2, 2, 1, 3, seed=0)
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    if bad:
        assert _ortconv.channel_chunks(w4, 1, bad) is None
        assert op._ort_conv(bad, None) is None
    else:
        assert _ortconv.channel_chunks(np.zeros((2, 0, 3, 3), np.int64), 1, 1) is None


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    oc=st.integers(1, 5),
    inner=st.sampled_from([1, 7, 4096, 70_000]),
    with_bias=st.booleans(),
)
def test_f32_requant_equals_apply_rescale(
    data: st.DataObject, oc: int, inner: int, with_bias: bool
) -> None:
    """Straight from float32 sums, block by block: the integers of apply_rescale + saturate,
    ties included (multipliers with many trailing zero bits make exact ties reachable)."""
    from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, saturate

    zeros = data.draw(st.sampled_from([0, 5, 20, 25, 30]))
    # A tie needs x a multiple of 2**(shift - 1 - zeros): keep that small often.
    shift = min(62, max(31, zeros + 1 + data.draw(st.integers(0, 40))))
    mult = np.array(
        data.draw(st.lists(st.integers(0, (1 << 31) >> zeros), min_size=oc, max_size=oc)),
        np.int64,
    ) << np.int64(zeros)
    mult = np.minimum(mult, 1 << 31)
    rs = Rescale(mult, shift)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    span = data.draw(st.sampled_from([3, 1 << 10, (1 << 24) - (1 << 12)]))
    y = rng.integers(-span, span + 1, size=(1, oc, inner)).astype(np.float32)
    bias = rng.integers(-(1 << 12), 1 << 12, size=oc) if with_bias else None
    bound = span + (1 << 12)
    rq = _ortconv.F32Requant.plan(rs, bias, 127, bound)
    if rq is None:
        assert bound * int(mult.max()) + (1 << (shift - 1)) >= 1 << 63
        return
    acc = y.astype(np.int64) + (0 if bias is None else bias[None, :, None])
    want = saturate(apply_rescale(acc, rs, channel_axis=1), 127)
    np.testing.assert_array_equal(rq(y), want)


def test_f32_requant_rounds_exact_ties_away_from_zero() -> None:
    """x · m / 2**s = ±k + ½ exactly: the tie-free shortcut must not be taken."""
    rs = _ortconv.Rescale(np.array([1 << 30], np.int64), 31)  # ratio ½
    rq = _ortconv.F32Requant.plan(rs, None, 127, 100)
    assert rq is not None and not rq.tie_free
    y = np.array([[[-5, -3, -1, 1, 3, 5]]], np.float32)
    np.testing.assert_array_equal(rq(y), [[[-3, -2, -1, 1, 2, 3]]])


def _fusion_model() -> bytes:
    """Conv→BN→Relu, Conv→BN, Conv→Relu, and two Convs that must not fuse: one whose output
    is read twice, one whose output is a graph output."""
    from onnx import TensorProto

    from tests.runtime.graphs import Builder

    b = Builder(seed=11)
    a = b.op("Relu", [b.bn(b.conv("input", 3, 8, 3, pad=1), 8)])  # conv + bn + relu
    c = b.bn(b.conv(a, 8, 8, 3, pad=1), 8)  # conv + bn
    d = b.op("Relu", [b.conv(c, 8, 8, 1)])  # conv + relu
    e = b.conv(d, 8, 8, 3, pad=1)  # read twice: no fusion
    f = b.op("Add", [b.op("Relu", [e]), e])
    g = b.conv(f, 8, 4, 1, bias=False)
    b.op("Relu", [g], name="out")  # g is also a graph output: no fusion
    return b.model(
        [("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [("out", TensorProto.FLOAT, None), (g, TensorProto.FLOAT, None)],
        check=False,
    ).SerializeToString()


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_fused_untraced_run_gives_the_node_by_node_integers(
    precision: str, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untraced run fuses BatchNormalization/Relu behind their Conv (in the compiled
    epilogue, or block by block in numpy); the outputs equal the traced (node by node)
    run's, and only the chains whose intermediates nobody else reads are fused."""
    monkeypatch.setattr(_kernels, "ENABLED", compiled)
    model = _fusion_model()
    rng = np.random.default_rng(4)
    calib = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    ex = FixedExecutor(model, precision=precision, calibration=calib)  # type: ignore[arg-type]
    x = {"input": (rng.standard_normal((1, 3, 16, 16)) * 1.5).astype(np.float32)}
    fused = ex.run(x)
    kinds = sorted(
        "+".join(ex.nodes[j].op_type for j in chain) for chain, _ in ex._fusions().values()
    )
    # int16: these short sums take the BLAS path, fused when one exact product covers them
    # (test_fixed_ortconv16 fuses the digit path).
    assert kinds == ["BatchNormalization", "BatchNormalization+Relu", "Relu"]
    plain = FixedExecutor(model, precision=precision, calibration=calib)  # type: ignore[arg-type]
    plain._fusion_map = {}  # node by node
    want = plain.run(x)
    assert sorted(fused) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(fused[name], value)
    assert ex.run_traced(x)[1].root == plain.run_traced(x)[1].root
