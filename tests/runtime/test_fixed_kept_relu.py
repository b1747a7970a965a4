"""Traced runs compute a Conv and the Relu behind it in one compiled epilogue pass
(`_steps.kept_relus`, `_elementwise.KeptRelu`): every kept value, its dtype, the outputs and
the trace root are those of the two nodes run one after the other."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from edgetrust.runtime.fixed import Fault, FixedExecutor, _kernels, _steps
from edgetrust.runtime.fixed._steps import kept_relus
from tests.runtime.graphs import Builder, squeezenet_style


def _shared_output() -> onnx.ModelProto:
    """Conv outputs read by a Relu and by other nodes (an Add, a second Relu, a MaxPool), a
    Relu that is not the first reader, and a Conv output that is a graph output."""
    b = Builder(3)
    c1 = b.conv("input", 3, 8, 3, pad=1)
    r1 = b.op("Relu", [c1])
    c2 = b.conv(r1, 8, 8, 1)
    pooled = b.op("MaxPool", [c2], kernel_shape=[2, 2], strides=[1, 1])
    r2 = b.op("Relu", [c2])
    r2b = b.op("Relu", [c2])
    total = b.op("Add", [r2, c1])
    c3 = b.conv(total, 8, 4, 3, pad=1, bias=False)
    r3 = b.op("Relu", [c3])
    both = b.op("Add", [r2b, r2])
    return b.model(
        [("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [
            (r3, TensorProto.FLOAT, [1, 4, 12, 12]),
            (c3, TensorProto.FLOAT, [1, 4, 12, 12]),
            (pooled, TensorProto.FLOAT, [1, 8, 11, 11]),
            (both, TensorProto.FLOAT, [1, 8, 12, 12]),
        ],
        "shared",
    )


def _sample(ex: FixedExecutor, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = tuple(d or 2 for d in ex.input_dims[ex.input_names[0]] or [1])
    return {ex.input_names[0]: rng.standard_normal(shape).astype(np.float32)}


def _node_by_node(model: onnx.ModelProto, precision: str) -> FixedExecutor:
    plain = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    plain.__dict__["_kept_relus"] = {}
    return plain


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("name", ["squeezenet", "shared"])
def test_kept_relus_give_the_node_by_node_trace(
    name: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = squeezenet_style(size=32) if name == "squeezenet" else _shared_output()
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    plain = _node_by_node(model, precision)
    found = kept_relus(ex)
    assert len(found) >= 3
    if name == "shared":  # the Conv feeding a MaxPool and two Relus: the first Relu
        pool = next(n for n in ex.nodes if n.op_type == "MaxPool")
        c2 = next(i for i, n in enumerate(ex.nodes) if n.output[0] == pool.input[0])
        readers = [j for j, n in enumerate(ex.nodes) if list(n.input) == [pool.input[0]]]
        assert found[c2] == next(j for j in readers if ex.nodes[j].op_type == "Relu")
    calls: list[bool] = []
    real = _steps.relu_values

    def spy(*args: Any) -> Any:
        got = real(*args)
        calls.append(got is not None and got[1] is not None)
        return got

    monkeypatch.setattr("edgetrust.runtime.fixed._executor.relu_values", spy)
    for seed in range(2):
        x = _sample(ex, seed)
        calls.clear()
        _, kept = ex._execute(x, keep=True)
        assert calls and all(calls)  # the one-pass epilogue ran for every pair
        _, want = plain._execute(x, keep=True)
        assert len(kept) == len(want)
        for a, b in zip(kept, want, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        out, trace = ex.run_traced(x)
        out_plain, trace_plain = plain.run_traced(x)
        assert list(out) == list(out_plain)
        for k in out:
            np.testing.assert_array_equal(out[k], out_plain[k])
        assert trace.root == trace_plain.root
        for k in range(trace.size):
            assert trace.commitment(k).root == trace_plain.commitment(k).root
        np.testing.assert_array_equal(ex.run(x)[ex.output_names[0]], out[ex.output_names[0]])


_PATHS = {
    "blas": {"ENABLED": False},  # onnxruntime off: the im2col BLAS product
    "digits": {"MIN_TERMS": 1},  # short sums by base-256 digits too
    "matconv": {"MIN_TERMS": 1, "MATMUL": True},
}


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("path", list(_PATHS))
def test_every_conv_path_keeps_the_node_by_node_values(
    path: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgetrust.runtime.fixed import _digitconv, _ortconv

    for key, value in _PATHS[path].items():
        monkeypatch.setattr(_ortconv if key == "ENABLED" else _digitconv, key, value)
    model = _shared_output()
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    plain = _node_by_node(model, precision)
    assert kept_relus(ex)
    x = _sample(ex, 5)
    _, kept = ex._execute(x, keep=True)
    _, want = plain._execute(x, keep=True)
    for a, b in zip(kept, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert ex.run_traced(x)[1].root == plain.run_traced(x)[1].root


def test_kept_relus_off_is_node_by_node(monkeypatch: pytest.MonkeyPatch) -> None:
    model = squeezenet_style(size=16)
    ex = FixedExecutor(model)
    x = _sample(ex, 1)
    want = ex.run_traced(x)[1].root
    monkeypatch.setattr(_steps, "KEPT_RELUS", False)
    monkeypatch.setattr("edgetrust.runtime.fixed._executor.relu_values", None)  # not called
    assert ex.run_traced(x)[1].root == want


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_a_numpy_epilogue_leaves_the_relu_to_its_node(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the compiled kernels the Conv runs its numpy epilogue (its own output) and
    the Relu runs as a node: the same trace."""
    model = _shared_output()
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    x = _sample(ex, 2)
    want = _node_by_node(model, precision).run_traced(x)[1].root
    monkeypatch.setattr(_kernels, "ENABLED", False)
    assert ex.run_traced(x)[1].root == want


def test_a_fault_in_a_kept_conv_is_followed_downstream() -> None:
    model = _shared_output()
    ex = FixedExecutor(model)
    plain = _node_by_node(model, "int8")
    x = _sample(ex, 3)
    clean = ex.run_traced(x)[1].root
    for conv in list(kept_relus(ex))[:2]:
        for node in (conv, kept_relus(ex)[conv]):
            fault = Fault(node, element=3, delta=5)
            got = ex.run_traced(x, fault=fault)[1]
            assert got.root == plain.run_traced(x, fault=fault)[1].root
            assert got.root != clean


def _rescale_ref(v: np.ndarray, mult: np.ndarray, shift: int, qmax: int) -> np.ndarray:
    """sat(round_half_away(v · m / 2**shift)) per channel (axis 1) with Python integers."""
    out = np.empty(v.shape, np.int64)
    for idx in np.ndindex(*v.shape):
        p = int(v[idx]) * int(mult[idx[1]])
        r = (abs(p) + (1 << (shift - 1))) >> shift
        out[idx] = max(-qmax, min(qmax, r if p >= 0 else -r))
    return out


_SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(0, 7))


@settings(max_examples=150, deadline=None)
@given(
    _SHAPES,
    st.sampled_from([(np.int8, 127), (np.int16, 32767), (np.int64, 127)]),
    st.integers(31, 40),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_channel_epilogue_relu_is_the_epilogue_then_maximum(
    shape: tuple[int, int, int], kind: tuple[Any, int], shift: int, with_bias: bool, seed: int
) -> None:
    dtype, qmax = kind
    rng = np.random.default_rng(seed)
    n, c, inner = shape
    # exact float sums; multiples of 2**(shift-1) / mult around ties
    acc = rng.integers(-(1 << 22), 1 << 22, (n, c, inner)).astype(np.float32)
    mult = rng.integers(0, (1 << 31) + 1, c).astype(np.int64)
    mult[0] = 1 << 31  # the bound
    bias = rng.integers(-(1 << 20), 1 << 20, c).astype(np.int64) if with_bias else None
    got = _kernels.channel_epilogue_relu(acc, bias, mult, shift, qmax, dtype)
    want = _kernels.channel_epilogue(acc, bias, mult, shift, qmax, dtype=dtype)
    assert got is not None and want is not None
    v = acc.astype(np.int64) + (0 if bias is None else bias.reshape(1, -1, 1))
    np.testing.assert_array_equal(want, _rescale_ref(v, mult, shift, qmax))
    assert got[0].dtype == got[1].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], np.maximum(want, 0))
    if acc.size:  # outside the kernel's range: refused, as channel_epilogue refuses
        bad = acc.copy()
        bad.reshape(-1)[-1] = np.nan
        assert _kernels.channel_epilogue_relu(bad, bias, mult, shift, qmax, dtype) is None
        big = np.full(c, 1 << 52, np.int64)
        assert _kernels.channel_epilogue_relu(acc, big, mult, shift, qmax, dtype) is None
        over = mult.copy()
        over[0] = (1 << 31) + 1
        assert _kernels.channel_epilogue_relu(acc, bias, over, shift, qmax, dtype) is None


def test_channel_epilogue_relu_ties_round_away_from_zero() -> None:
    shift = 31
    acc = np.array([[[1.0, -1.0, 3.0, -3.0, 0.0]]], np.float32)
    mult = np.array([1 << 30], np.int64)  # x / 2: every odd x is a tie
    got = _kernels.channel_epilogue_relu(acc, None, mult, shift, 127, np.int8)
    assert got is not None
    assert got[0].tolist() == [[[1, -1, 2, -2, 0]]]
    assert got[1].tolist() == [[[1, 0, 2, 0, 0]]]
    assert _kernels.channel_epilogue_relu(acc, None, mult, 30, 127, np.int8) is None
    assert _kernels.channel_epilogue_relu(acc, None, mult, 31, 32767, np.int8) is None


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3),
    _SHAPES,
    st.sampled_from([(np.int16, 32767), (np.int64, 32767), (np.int16, 127)]),
    st.integers(31, 45),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_digit_epilogue_relu_is_the_epilogue_then_maximum(
    n_parts: int,
    shape: tuple[int, int, int],
    kind: tuple[Any, int],
    shift: int,
    with_bias: bool,
    seed: int,
) -> None:
    dtype, qmax = kind
    rng = np.random.default_rng(seed)
    parts = rng.integers(-(1 << 24), 1 << 24, (n_parts, *shape)).astype(np.float64)
    odd = (1 << (8 * np.arange(n_parts))).astype(np.int64)
    c = shape[1]
    mult = rng.integers(0, (1 << 31) + 1, c).astype(np.int64)
    bias = rng.integers(-(1 << 40), 1 << 40, c).astype(np.int64) if with_bias else None
    got = _kernels.digit_epilogue_relu(parts, odd, bias, mult, shift, qmax, dtype)
    want = _kernels.digit_epilogue(parts, odd, bias, mult, shift, qmax, dtype=dtype)
    if want is None:  # a sum past the kernel's proof: refused by both
        assert got is None
        return
    assert got is not None
    assert got[0].dtype == got[1].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], np.maximum(want, 0))
    if parts.size:
        bad = parts.copy()
        bad.reshape(-1)[0] = np.inf
        assert _kernels.digit_epilogue_relu(bad, odd, bias, mult, shift, qmax, dtype) is None
        big = np.full(c, -(1 << 52), np.int64)
        assert _kernels.digit_epilogue_relu(parts, odd, big, mult, shift, qmax, dtype) is None
