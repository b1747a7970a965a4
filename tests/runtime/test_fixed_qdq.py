"""QuantizeLinear and DequantizeLinear (`_qdq`) at the model's own scales."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime.conftest import FullSource, node_io

SHAPE = [2, 3, 4]


def _model(nodes: list, inputs: list, inits: list, out_type: int) -> bytes:
    graph = helper.make_graph(
        nodes, "qdq", inputs, [helper.make_tensor_value_info("y", out_type, SHAPE)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _quantize(zp: np.ndarray, scale: float) -> bytes:
    return _model(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], "q")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [
            numpy_helper.from_array(np.array(scale, np.float32), "s"),
            numpy_helper.from_array(zp, "z"),
        ],
        TensorProto.UINT8 if zp.dtype == np.uint8 else TensorProto.INT8,
    )


@pytest.mark.parametrize(
    "zp", [np.array(128, np.uint8), np.array(-3, np.int8), np.array(0, np.int8)]
)
@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_quantize_is_the_exact_definition_and_tracks_onnxruntime(
    zp: np.ndarray, precision: str
) -> None:
    model = _quantize(zp, 0.02)
    x = {"x": (np.random.default_rng(0).standard_normal(SHAPE) * 1.5).astype(np.float32)}
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    q, y = ints[0].astype(np.int64), ints[1]
    s = ex.infos["x"].scale
    assert s is not None
    lo, hi = (0, 255) if zp.dtype == np.uint8 else (-128, 127)
    want = [
        max(
            lo,
            min(
                hi,
                round(Fraction(int(v)) * Fraction(s) / Fraction(float(np.float32(0.02)))) + int(zp),
            ),
        )
        for v in q.reshape(-1)
    ]
    assert y.reshape(-1).tolist() == want
    assert np.array_equal(ex.run(x)["y"], y)
    xhat = {"x": (q * s).astype(np.float32)}
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, xhat)[0]
    assert int(np.max(np.abs(ref.astype(np.int64) - y))) <= 1  # float32 x̂/scale at a tie
    src = FullSource(ex.ops[0], node_io(ex, ints, 0)[0])
    for j in range(y.size):
        assert ex.ops[0].element(j, y.shape, src) == int(y.reshape(-1)[j])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_dequantize_is_exact_at_int16(dtype: type) -> None:
    zp = np.array(128 if dtype is np.uint8 else -5, dtype)
    model = _model(
        [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], "dq")],
        [
            helper.make_tensor_value_info(
                "x", TensorProto.UINT8 if dtype is np.uint8 else TensorProto.INT8, SHAPE
            )
        ],
        [
            numpy_helper.from_array(np.array(0.037, np.float32), "s"),
            numpy_helper.from_array(zp, "z"),
        ],
        TensorProto.FLOAT,
    )
    info = np.iinfo(dtype)
    x = {"x": np.random.default_rng(1).integers(info.min, info.max + 1, SHAPE).astype(dtype)}
    ex = FixedExecutor(model, precision="int16", calibration=[x])
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.array_equal(ex.run(x)["y"], want)
    again = FixedExecutor(model, precision="int16", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root


def test_per_axis_activation_quantization_is_refused() -> None:
    model = _model(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], "q", axis=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [
            numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "s"),
            numpy_helper.from_array(np.zeros(3, np.int8), "z"),
        ],
        TensorProto.INT8,
    )
    x = {"x": np.ones(SHAPE, np.float32)}
    with pytest.raises(UnsupportedError, match="QuantizeLinear node q: per-axis"):
        FixedExecutor(model, precision="int8", calibration=[x])
