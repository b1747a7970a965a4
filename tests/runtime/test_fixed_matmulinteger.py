"""MatMulInteger (`_integer`): exact, identical to onnxruntime's int32 result."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime.conftest import FullSource, node_io, ort_u8s8_exact

_T = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _model(b_dtype: type, b_const: bool, b_zp: np.ndarray) -> tuple[bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 40)).astype(np.uint8)
    info = np.iinfo(b_dtype)
    b = rng.integers(info.min, info.max + 1, (40, 5)).astype(b_dtype)
    inits = [
        numpy_helper.from_array(np.array(131, np.uint8), "az"),
        numpy_helper.from_array(b_zp.astype(b_dtype), "bz"),
    ]
    inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 3, 40])]
    feeds = {"a": a}
    if b_const:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", _T[b_dtype], [40, 5]))
        feeds["b"] = b
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"], "mmi")
    graph = helper.make_graph(
        [node],
        "mmi",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString(), feeds


@pytest.mark.parametrize(
    ("b_dtype", "b_const", "b_zp"),
    [
        (np.uint8, True, np.array(7)),
        (np.int8, True, np.array([1, -2, 0, 3, 5])),
        (np.int8, False, np.array(-4)),
    ],
)
def test_exact_and_equal_to_onnxruntime(b_dtype: type, b_const: bool, b_zp: np.ndarray) -> None:
    model, x = _model(b_dtype, b_const, b_zp)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    got = ex.run(x)["y"]
    exact = ReferenceEvaluator(model).run(None, x)[0]
    assert np.array_equal(got, exact.astype(np.int64))
    if ort_u8s8_exact():
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, x)[0]
        assert np.array_equal(got, want.astype(np.int64))
    ints = ex.run_integers(x)
    ins, out = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    assert ex.ops[0].out_shape(src) == out.shape
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])
    again = FixedExecutor(model, precision="int8", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root


def test_real_inputs_are_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"], "mmi")],
        "mmi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(
        UnsupportedError, match="MatMulInteger node mmi: input 0 must be an integer"
    ):
        FixedExecutor(model.SerializeToString())
