"""The executor's fast paths give the bits of the plain arithmetic they replace.

Table lookup for element-wise ops (`_lut`) against each op's own `combine`; batched grouped
and depthwise convolution against the per-group loop. No timing here (see bench/).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edgetrust.runtime.fixed import FixedExecutor
from edgetrust.runtime.fixed._elementwise import AddSub, _Broadcasting
from tests.runtime import graphs
from tests.runtime.graphs import OPSET, Builder


def _elementwise_model() -> bytes:
    b = Builder(seed=3)
    c = 8
    x = "input"
    bn = b.op(
        "BatchNormalization",
        [
            x,
            b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
            b.const((b.rng.standard_normal(c) * 0.1).astype(np.float32)),
            b.const((b.rng.standard_normal(c) * 0.1).astype(np.float32)),
            b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
        ],
    )
    mul = b.op("Mul", [bn, b.const(b.rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32))])
    add = b.op("Add", [mul, b.const((b.rng.standard_normal((c, 1, 1)) * 0.1).astype(np.float32))])
    res = b.op("Add", [add, x])
    sub = b.op("Sub", [res, bn])
    sig = b.op("Sigmoid", [sub])
    out = b.op("Mul", [sig, b.const(np.array(1.5, np.float32))], name="out")
    graph = helper.make_graph(
        b.nodes,
        "lut",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, 48, 48])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        b.inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)]
    ).SerializeToString()


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_table_lookup_matches_combine(precision: str) -> None:
    model = _elementwise_model()
    rng = np.random.default_rng(7)
    calib = {"input": rng.standard_normal((1, 8, 48, 48)).astype(np.float32)}
    ex = FixedExecutor(model, precision=precision, calibration=[calib])  # type: ignore[arg-type]
    x = {"input": (rng.standard_normal((1, 8, 48, 48)) * 1.3).astype(np.float32)}
    ints = ex.run_integers(x)
    env = {e.tensor: v.astype(np.int64) for e, v in zip(ex.entries, ints, strict=True)}
    used = 0
    for node, op in zip(ex.nodes, ex.ops, strict=True):
        xs = [env.get(n) for n in node.input]
        if isinstance(op, _Broadcasting):
            vals = [op.x(xs, k) for k in op.present()]
            want = op.combine(vals)
            assert np.array_equal(op.run(xs), want), node.name
            two_inputs = isinstance(op, AddSub) and not any(map(op.is_const, op.present()))
            used += bool(op.__dict__.get("_lut_cache")) or two_inputs
    # int8: every element-wise op here is tabulated, but the two-input Add and Sub, which
    # take one compiled pass (`_kernels.add_requant`; a table where numba is off); int16:
    # those two and the ops without per-channel constants (Sigmoid, the scalar Mul): the
    # others' tables would dwarf the tensors.
    assert used == (7 if precision == "int8" else 4)
    again = FixedExecutor(model, precision=precision, plan=ex.plan)  # type: ignore[arg-type]
    _, t1 = ex.run_traced(x)
    _, t2 = again.run_traced(x)
    assert t1.root == t2.root


def test_table_lookup_falls_back_outside_the_range() -> None:
    """Integers beyond ±qmax (never produced by the executor) take the plain path."""
    model = _elementwise_model()
    calib = {"input": np.random.default_rng(1).standard_normal((1, 8, 48, 48)).astype(np.float32)}
    ex = FixedExecutor(model, precision="int8", calibration=[calib])
    op = ex.ops[0]
    big = np.full((1, 8, 48, 48), 200, np.int64)
    big[0, :, 0, 0] = -300
    assert np.array_equal(op.run([big]), op.combine([big]))


@pytest.mark.parametrize(
    ("cin", "cout", "group", "attrs"),
    [
        (6, 6, 6, {"pads": [1, 1, 1, 1]}),  # depthwise
        (6, 12, 3, {"strides": [2, 2], "pads": [0, 1, 1, 0]}),  # shufflenet-style
        (260, 4, 2, {"pads": [1, 1, 1, 1]}),  # 130 · 9 taps > 1040: two chunks per group
    ],
)
def test_batched_grouped_conv_matches_the_element_view(
    cin: int, cout: int, group: int, attrs: dict[str, object]
) -> None:
    """All groups in one batched matmul: every element equals the referee's own dot product."""
    from tests.runtime import graphs
    from tests.runtime.conftest import FullSource, node_io

    rng = np.random.default_rng(group)
    w = (rng.standard_normal((cout, cin // group, 3, 3)) * 0.3).astype(np.float32)
    model = graphs.single_op(
        "Conv", [(2, cin, 7, 7)], consts={1: w}, group=group, **attrs
    ).SerializeToString()
    x = {"x0": rng.standard_normal((2, cin, 7, 7)).astype(np.float32)}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    flat = out.reshape(-1)
    for j in range(flat.size):
        assert ex.ops[0].element(j, out.shape, src) == int(flat[j])


def test_in_place_round_float_matches_the_where_form() -> None:
    """round_float's in-place form equals t + where(|frac| ≥ ½, sign, 0), signed zeros too."""
    from edgetrust.runtime.fixed._arith import round_float

    rng = np.random.default_rng(0)
    special = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994]
    special += [-0.3, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 4503599627370495.5]
    with np.errstate(invalid="ignore"):
        for arr in (
            np.array(special),
            rng.standard_normal(10_000) * 100,
            rng.integers(-1000, 1000, 10_000) / 2.0,
        ):
            t = np.trunc(arr)
            want = t + np.where(np.abs(arr - t) >= 0.5, np.sign(arr), 0.0)
            got = round_float(arr)
            assert np.array_equal(got, want, equal_nan=True)
            assert np.array_equal(np.signbit(got), np.signbit(want))


@settings(max_examples=60, deadline=None)
@given(
    span=st.sampled_from([1, 127, 128, 32767, 1 << 20, 1 << 40]),
    pads=st.lists(st.integers(0, 1), min_size=4, max_size=4),
    ceil=st.integers(0, 1),
    seed=st.integers(0, 1000),
)
def test_narrow_maxpool_matches_the_int64_fold(
    span: int, pads: list[int], ceil: int, seed: int
) -> None:
    """MaxPool in int8/int16/int32 (input range permitting) gives the int64 fold's integers,
    with padding that never wins, at the edges of each type's range too."""
    from edgetrust.runtime.fixed._pool import _NEG

    model = graphs.single_op(
        "MaxPool", [(1, 3, 7, 7)], kernel_shape=[3, 3], strides=[2, 2], pads=pads, ceil_mode=ceil
    ).SerializeToString()
    calib = {"x0": np.random.default_rng(0).standard_normal((1, 3, 7, 7)).astype(np.float32)}
    op = FixedExecutor(model, precision="int8", calibration=[calib]).ops[0]
    x = np.random.default_rng(seed).integers(-span, span + 1, size=(1, 3, 7, 7))
    x.reshape(-1)[seed % x.size] = -span  # the type's edge: must not meet the padding value
    got = op.run([x])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, op._tap_fold(x, _NEG, np.maximum))


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-200, 200), min_size=0, max_size=300),
    qmax=st.sampled_from([1, 127]),
)
def test_lazy_table_equals_the_entry_function(values: list[int], qmax: int) -> None:
    """Every element looked up equals entry(q), across calls, out-of-range values included."""
    from edgetrust.runtime.fixed._lut import LazyTable

    def entry(q: int) -> int:
        return (q * q * 7 + 3 * q) // 5 - q

    table = LazyTable(qmax, entry)
    q = np.array(values, np.int64)
    for _ in range(2):  # the second call reads the kept entries
        got = table(q)
        assert got.dtype == np.int64
        assert got.tolist() == [entry(v) for v in values]


def test_a_pool_window_of_padding_alone_is_refused_at_plan_time() -> None:
    """Pads as large as the kernel are refused (onnxruntime refuses them too), and a dilated
    window that sees only padding, whose value is undefined, is refused naming the node."""
    from edgetrust.errors import InvalidInputError, UnsupportedError

    calib = {"x0": np.random.default_rng(0).standard_normal((1, 1, 1, 4)).astype(np.float32)}
    big_pads = graphs.single_op("MaxPool", [(1, 1, 1, 4)], kernel_shape=[2, 1], pads=[2, 0, 0, 0])
    with pytest.raises(UnsupportedError, match=r"MaxPool node .*pads .* smaller than the kernel"):
        FixedExecutor(big_pads.SerializeToString(), precision="int8", calibration=[calib])
    dilated = graphs.single_op(
        "MaxPool", [(1, 1, 1, 4)], kernel_shape=[2, 1], dilations=[2, 1], pads=[1, 0, 1, 0]
    )
    with pytest.raises(InvalidInputError, match=r"MaxPool node .*wholly in the padding"):
        FixedExecutor(dilated.SerializeToString(), precision="int8", calibration=[calib])


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_windows_of_padding_alone_are_refused_where_onnxruntime_has_no_value(op_type: str) -> None:
    """Cross-check against onnxruntime over every small 1-D geometry (1,296): a geometry is
    refused exactly when onnxruntime's MaxPool writes -FLT_MAX (a window with no input
    position) or refuses it (pads ≥ kernel). Exhaustive: the cases are sparse."""
    import onnxruntime as ort

    from edgetrust.errors import InvalidInputError, UnsupportedError

    mismatched = []
    for size, kernel, dilation, stride, pad, ceil in itertools.product(
        range(1, 7), range(1, 4), range(1, 5), range(1, 4), range(3), range(2)
    ):
        attrs = dict(
            kernel_shape=[kernel, 1],
            dilations=[dilation, 1],
            strides=[stride, 1],
            pads=[pad, 0, pad, 0],
            ceil_mode=ceil,
        )
        probe = graphs.single_op("MaxPool", [(1, 1, size, 1)], **attrs).SerializeToString()
        x = np.arange(1, size + 1, dtype=np.float32).reshape(1, 1, size, 1)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # its refusals are expected here
        try:
            session = ort.InferenceSession(probe, options, providers=["CPUExecutionProvider"])
            undefined = bool((session.run(None, {"x0": x})[0] < -1e30).any())
        except Exception:  # onnxruntime refuses the attributes (pads ≥ kernel)
            undefined = True
        if size + 2 * pad < dilation * (kernel - 1) + 1:
            undefined = True  # no window fits (onnxruntime truncates a negative size toward 0)
        model = graphs.single_op(op_type, [(1, 1, size, 1)], **attrs).SerializeToString()
        try:
            FixedExecutor(model, precision="int8", calibration=[{"x0": x}])
            refused = False
        except (InvalidInputError, UnsupportedError):
            refused = True
        if refused != undefined:
            mismatched.append((size, kernel, dilation, stride, pad, ceil, refused))
    assert mismatched == []
