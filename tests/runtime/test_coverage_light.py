"""Coverage: the nine light models of the onnx wheel run under the fixed-point executor.

For each (seeded random weights in place of the wheel's placeholders, one 224×224 image - the
only size their Reshape/Gemm heads accept): the executor plans and runs it, a verifier that has
only the model bytes and the plan reproduces the trace root and the output bytes, the output
tracks onnxruntime within a stated bound, and a device that lies about one number of a node's
output is convicted by the dispute game. Nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.runtime.fixed import Fault, FixedExecutor, QuantPlan
from edgetrust.verify.dispute import Claim, DeviceResponder, DisputeGame, HonestChallenger, play
from tests.runtime.light import LIGHT_MODELS, light_input, light_model

# |fixed - onnxruntime| on the softmax output, int8: the output scale is 1/127, so one step is
# 0.0079; quantization noise through up to 121 layers adds a few more.
SOFTMAX_BOUND = 0.15


def _ort(model: bytes, x: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, x)[0])


def _runs_reverifies_and_convicts(
    model: bytes, x: dict[str, np.ndarray], precision: str, bound: float, seed: int
) -> None:
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    out, honest = ex.run_traced(x)
    (y,) = out.values()
    assert np.all(np.isfinite(y))
    assert float(np.max(np.abs(y - _ort(model, x)))) <= bound

    # re-verification: the model bytes and the plan (from the receipt) give the same bits
    verifier = FixedExecutor(
        model,
        precision=precision,  # type: ignore[arg-type]
        plan=QuantPlan.from_json(ex.plan.to_json()),
    )
    out2, again = verifier.run_traced(x)
    assert again.root == honest.root
    assert all(out2[k].tobytes() == out[k].tobytes() for k in out)

    # a lie about one element of a node in the second half of the model is convicted
    rng = np.random.default_rng(seed)
    index = len(ex.nodes) // 2 + int(rng.integers(0, len(ex.nodes) // 2))
    entry = ex.entry_index(index)
    fault = Fault(index, int(rng.integers(0, honest.values[entry].size)), 7)
    _, lying = ex.run_traced(x, fault=fault)
    assert lying.root != honest.root
    w = verifier.weight_commitments()
    game = DisputeGame(verifier, Claim(lying.root, w.root, w.size), inputs=x)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(again))
    assert verdict.device_convicted, verdict
    assert (verdict.entry, verdict.element) == (entry, fault.element)
    assert verdict.referee_value == int(honest.values[entry].reshape(-1)[fault.element])


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_runs_reverifies_and_convicts_a_lie(name: str) -> None:
    proto = light_model(name, seed=0)
    x = light_input(proto, seed=1)
    _runs_reverifies_and_convicts(proto.SerializeToString(), x, "int8", SOFTMAX_BOUND, len(name))


# The int8 QDQ model at int16 runs at the model's own activation scales: its softmax tracks
# onnxruntime on the same QDQ model within two output steps of 1/32767 plus the few int8
# steps of the model's own Q nodes that a 1-step difference upstream can flip (measured 0.008).
QDQ_BOUND = 0.02


def quantize_static_cnn(tmp_path: Path, fmt: str) -> bytes:
    """resnet_style (32×32, width 8) quantized by onnxruntime's quantize_static, int8.

    ``fmt`` "QDQ": QuantizeLinear/DequantizeLinear pairs around float ops. "QOperator": every
    Conv becomes a QLinearConv on uint8 activations (per-channel int8 weights, int32 bias);
    the ops onnxruntime would turn into com.microsoft contrib ops stay float.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from tests.runtime import graphs
    from tests.runtime.conftest import cnn_input

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([cnn_input(i) for i in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    src, dst = tmp_path / "float.onnx", tmp_path / f"{fmt}.onnx"
    onnx.save(graphs.resnet_style(size=32, width=8), str(src))
    if fmt == "QDQ":
        quantize_static(
            str(src),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        quantize_static(
            str(src),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MatMul"],
            per_channel=True,
        )
    return dst.read_bytes()


def test_int8_quantize_static_cnn_runs_reverifies_and_convicts_a_lie(tmp_path: Path) -> None:
    """A pre-quantized (QDQ, int8) CNN from onnxruntime's quantize_static, run at int16."""
    import onnx

    from tests.runtime.conftest import cnn_input

    model = quantize_static_cnn(tmp_path, "QDQ")
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    _runs_reverifies_and_convicts(model, cnn_input(9), "int16", QDQ_BOUND, 5)


# QLinearConv runs at the model's own scales; it differs from onnxruntime's by at most one uint8
# step per layer where a product lies on a rounding tie (half away vs half even), which nine
# layers and the float BatchNorm/Add between them carry to the softmax as a few 1/32767 steps
# plus a few model-scale steps (measured 0.0008).
QOPERATOR_BOUND = 0.01


def test_int8_qoperator_cnn_runs_reverifies_and_convicts_a_lie(tmp_path: Path) -> None:
    """QOperator format: QLinearConv with the model's uint8 activations and int8 weights."""
    import onnx

    from tests.runtime.conftest import cnn_input

    model = quantize_static_cnn(tmp_path, "QOperator")
    ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert ops.count("QLinearConv") == 9
    _runs_reverifies_and_convicts(model, cnn_input(9), "int16", QOPERATOR_BOUND, 11)


# MiniLM-L6 at int16: the unit-norm embedding tracks onnxruntime within 1e-3 per component
# (measured 8.7e-4; test_bert.py bounds the cosine, this the largest component difference).
MINILM_BOUND = 5e-3


@pytest.mark.slow
def test_minilm_int16_runs_reverifies_and_convicts_a_lie() -> None:
    """MiniLM-L6 (the packaged checkpoint, imported without torch) at int16."""
    from edgetrust.runtime import bert

    model, tok = bert.import_bert()
    x = bert.encode_texts(tok, ["A man is eating food.", "The lamp is on."])
    ex = FixedExecutor(model, precision="int16", calibration=bert.calibration_inputs(tok))
    out, honest = ex.run_traced(x)
    (y,) = out.values()
    assert float(np.max(np.abs(y - _ort(model, x)))) <= MINILM_BOUND
    verifier = FixedExecutor(model, precision="int16", plan=QuantPlan.from_json(ex.plan.to_json()))
    out2, again = verifier.run_traced(x)
    assert again.root == honest.root
    assert all(out2[k].tobytes() == out[k].tobytes() for k in out)
    entry = ex.entry_index(len(ex.nodes) // 2)
    fault = Fault(len(ex.nodes) // 2, 3, 7)
    _, lying = ex.run_traced(x, fault=fault)
    w = verifier.weight_commitments()
    game = DisputeGame(verifier, Claim(lying.root, w.root, w.size), inputs=x)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(again))
    assert verdict.device_convicted, verdict
    assert (verdict.entry, verdict.element) == (entry, 3)
