"""Coverage: the nine light models of the onnx wheel run under the fixed-point executor.

For each (seeded random weights in place of the wheel's placeholders, one 224×224 image - the
only size their Reshape/Gemm heads accept): the executor plans and runs it, a verifier that has
only the model bytes and the plan reproduces the trace root and the output bytes, the output
tracks onnxruntime within a stated bound, and a device that lies about one number of a node's
output is convicted by the dispute game. Nothing is skipped.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_runs_reverifies_and_convicts_a_lie(name: str) -> None:
    proto = light_model(name, seed=0)
    model = proto.SerializeToString()
    x = light_input(proto, seed=1)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    out, honest = ex.run_traced(x)
    (y,) = out.values()
    assert np.all(np.isfinite(y))
    assert float(np.max(np.abs(y - _ort(model, x)))) <= SOFTMAX_BOUND

    # re-verification: the model bytes and the plan (from the receipt) give the same bits
    verifier = FixedExecutor(model, precision="int8", plan=QuantPlan.from_json(ex.plan.to_json()))
    out2, again = verifier.run_traced(x)
    assert again.root == honest.root
    assert all(out2[k].tobytes() == out[k].tobytes() for k in out)

    # a lie about one element of a node in the middle of the model is convicted
    rng = np.random.default_rng(len(name))
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
