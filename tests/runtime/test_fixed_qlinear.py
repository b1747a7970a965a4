"""QLinearConv, QLinearMatMul, ConvInteger (`_qlinear`): exact at the model's own scales.

Each op is checked three ways: against a pure-Python-integer reference of the integer
definition (docs/fixed.md), element by element against the vectorised run (the referee's
view), and against onnxruntime and onnx.reference (independent float implementations): ONNX
rounds acc · ratio half to even in float, the executor with its 31-bit multiplier half away
from zero, so they may differ by one integer step, and only where acc · ratio is within about
2**-24 (relative, float32) of a half-integer.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime.conftest import FullSource, node_io, ort_u8s8_exact

ONE_STEP = 1
"""|fixed - onnxruntime| and |fixed - onnx.reference| bound, in output integers."""


def _ort(model: bytes, x: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(
        ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, x)[0]
    )


def _model(node: helper.NodeProto, inputs: list, out_type: int, inits: list) -> bytes:
    graph = helper.make_graph(
        [node],
        "q",
        inputs,
        [helper.make_tensor_value_info("y", out_type, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def _rescale(acc: int, mult: int, shift: int) -> int:
    """round_half_away(acc · mult / 2**shift) in Python integers."""
    p = abs(acc) * mult
    q = (p + (1 << (shift - 1))) >> shift
    return q if acc >= 0 else -q


def _check_elements(ex: FixedExecutor, x: dict[str, np.ndarray]) -> np.ndarray:
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    assert ex.ops[0].out_shape(src) == out.shape
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])
    return out


def _qconv(*, bias: bool = True, group: int = 1, y_scale: float = 0.05) -> tuple[bytes, dict]:
    rng = np.random.default_rng(3)
    c, oc = 4, 6
    w = rng.integers(-127, 128, (oc, c // group, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.004, oc).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(121, np.uint8), "xz"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(w_scale, "ws"),
        numpy_helper.from_array(np.zeros(oc, np.int8), "wz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(117, np.uint8), "yz"),
    ]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias:
        inits.append(numpy_helper.from_array(rng.integers(-3000, 3000, oc).astype(np.int32), "b"))
        names.append("b")
    node = helper.make_node(
        "QLinearConv", names, ["y"], "qconv", pads=[1, 0, 1, 2], strides=[2, 1], group=group
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, 7, 6])]
    x = {"x": rng.integers(0, 256, (1, c, 7, 6)).astype(np.uint8)}
    return _model(node, inputs, TensorProto.UINT8, inits), x


def _ref_qconv(ex: FixedExecutor, x: np.ndarray) -> np.ndarray:
    """QLinearConv by its integer definition, in Python integers, from the model alone."""
    op = ex.ops[0]
    p = op.params()
    w = np.asarray(op.info(3).const, np.int64)
    oc, cg, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh, ow, pt, pl, _, _ = op.geometry(h, wd)  # type: ignore[attr-defined]
    sh, sw = op.strides  # type: ignore[attr-defined]
    out = np.zeros((n, oc, oh, ow), np.int64)
    g_oc = oc // op.group  # type: ignore[attr-defined]
    for o in range(oc):
        mult = int(p["mult"][o if p["mult"].size > 1 else 0])
        g = o // g_oc
        for i in range(oh):
            for j in range(ow):
                acc = int(p["b"][o])
                for ci in range(cg):
                    for a in range(kh):
                        for b in range(kw):
                            yy, xx = i * sh - pt + a, j * sw - pl + b
                            if 0 <= yy < h and 0 <= xx < wd:
                                xv = int(x[0, g * cg + ci, yy, xx]) - 121
                                acc += xv * int(w[o, ci, a, b])
                y = _rescale(acc, mult, int(p["shift"][0])) + 117
                out[0, o, i, j] = min(255, max(0, y))
    return out


@pytest.mark.parametrize(("bias", "group"), [(True, 1), (False, 2)])
def test_qlinearconv_is_its_integer_definition_and_tracks_onnx(bias: bool, group: int) -> None:
    model, x = _qconv(bias=bias, group=group)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    got = ex.run(x)["y"]
    assert np.array_equal(got, _ref_qconv(ex, x["x"]))
    assert np.array_equal(_check_elements(ex, x), got)
    others = [ReferenceEvaluator(model).run(None, x)[0]]
    others += [_ort(model, x)] if ort_u8s8_exact() else []
    for want in others:
        assert int(np.max(np.abs(got - want.astype(np.int64)))) <= ONE_STEP
    again = FixedExecutor(model, precision="int8", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root


def _qmatmul(b_const: bool) -> tuple[bytes, dict, np.ndarray]:
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (2, 3, 50)).astype(np.int8)
    b = rng.integers(-127, 128, (50, 7)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.03, np.float32), "as"),
        numpy_helper.from_array(np.array(-5, np.int8), "az"),
        numpy_helper.from_array(np.array(0.004, np.float32), "bs"),
        numpy_helper.from_array(np.array(0, np.int8), "bz"),
        numpy_helper.from_array(np.array(0.2, np.float32), "ys"),
        numpy_helper.from_array(np.array(3, np.int8), "yz"),
    ]
    inputs = [helper.make_tensor_value_info("a", TensorProto.INT8, [2, 3, 50])]
    feeds = {"a": a}
    if b_const:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.INT8, [50, 7]))
        feeds["b"] = b
    node = helper.make_node(
        "QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], "qmm"
    )
    return _model(node, inputs, TensorProto.INT8, inits), feeds, b


@pytest.mark.parametrize("b_const", [True, False])
def test_qlinearmatmul_is_its_integer_definition_and_tracks_onnx(b_const: bool) -> None:
    model, x, b = _qmatmul(b_const)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    got = ex.run(x)["y"]
    p = ex.ops[0].params()
    acc = (x["a"].astype(np.int64) + 5) @ b.astype(np.int64)
    want_int = [
        min(127, max(-128, _rescale(int(v), int(p["mult"][0]), int(p["shift"][0])) + 3))
        for v in acc.reshape(-1)
    ]
    assert got.reshape(-1).tolist() == want_int
    assert np.array_equal(_check_elements(ex, x), got)
    others = [ReferenceEvaluator(model).run(None, x)[0]]
    others += [_ort(model, x)] if ort_u8s8_exact() else []
    for want in others:
        assert int(np.max(np.abs(got - want.astype(np.int64)))) <= ONE_STEP


def test_convinteger_equals_onnxruntime_exactly() -> None:
    rng = np.random.default_rng(7)
    w = rng.integers(0, 256, (5, 3, 2, 2)).astype(np.uint8)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(100, np.uint8), "xz"),
        numpy_helper.from_array(np.array(128, np.uint8), "wz"),
    ]
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], "ci", pads=[1, 1, 0, 0])
    inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 5, 5])]
    model = _model(node, inputs, TensorProto.INT32, inits)
    x = {"x": rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8)}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    got = ex.run(x)["y"]
    assert np.array_equal(got, _ort(model, x).astype(np.int64))
    assert np.array_equal(got, ReferenceEvaluator(model).run(None, x)[0].astype(np.int64))
    assert np.array_equal(_check_elements(ex, x), got)


@pytest.mark.parametrize(("xtype", "lo", "hi"), [(np.int8, -128, 128), (np.uint8, 0, 256)])
def test_convinteger_without_zero_points_takes_either_input_type(
    xtype: type, lo: int, hi: int
) -> None:
    """x_zero_point absent: int8 and uint8 inputs both run, equal to onnxruntime."""
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, (4, 2, 3, 3)).astype(np.int8)
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], "ci")
    elem = TensorProto.INT8 if xtype is np.int8 else TensorProto.UINT8
    inputs = [helper.make_tensor_value_info("x", elem, [1, 2, 5, 5])]
    model = _model(node, inputs, TensorProto.INT32, [numpy_helper.from_array(w, "w")])
    x = {"x": rng.integers(lo, hi, (1, 2, 5, 5)).astype(xtype)}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    got = ex.run(x)["y"]
    assert np.array_equal(got, _ort(model, x).astype(np.int64))
    assert np.array_equal(_check_elements(ex, x), got)


def _with_init(model: bytes, name: str, value: np.ndarray) -> bytes:
    import onnx

    m = onnx.load_from_string(model)
    for i, t in enumerate(m.graph.initializer):
        if t.name == name:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
    return m.SerializeToString()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ys", np.array(-0.5, np.float32), "QLinearConv node qconv: y_scale must be positive"),
        ("ys", np.array(1e-30, np.float32), "QLinearConv node qconv: scales cannot be combined"),
        ("yz", np.array(3, np.int32), "QLinearConv node qconv: y_zero_point must be uint8"),
        ("ws", np.ones(4, np.float32), "QLinearConv node qconv: w_scale has 4 values for 6"),
        ("xz", np.array([1, 2], np.uint8), "QLinearConv node qconv: x_zero_point must be one"),
    ],
)
def test_bad_scales_and_zero_points_name_the_node(
    name: str, value: np.ndarray, message: str
) -> None:
    model, _ = _qconv()
    with pytest.raises(UnsupportedError, match=message):
        FixedExecutor(_with_init(model, name, value))


def test_non_constant_weights_are_refused() -> None:
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], "ci")
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3]),
        helper.make_tensor_value_info("w", TensorProto.UINT8, [1, 1, 2, 2]),
    ]
    with pytest.raises(UnsupportedError, match="ConvInteger node ci: weights w must be a const"):
        FixedExecutor(_model(node, inputs, TensorProto.INT32, []))
