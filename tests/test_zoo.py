from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from edgetrust.zoo import digits_mlp_onnx, load_digits_split


def test_digits_mlp_is_deterministic_accurate_and_runs_in_onnxruntime() -> None:
    first, acc = digits_mlp_onnx(seed=0)
    second, _ = digits_mlp_onnx(seed=0)
    assert first == second
    assert acc > 0.9
    onnx.checker.check_model(onnx.load_from_string(first))
    _, x_te, _, y_te = load_digits_split(seed=0)
    sess = ort.InferenceSession(first, providers=["CPUExecutionProvider"])
    (probs,) = sess.run(None, {"input": x_te})
    assert probs.shape == (len(x_te), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y_te).mean() > 0.9
