"""Models built in code: the digits MLP of the demo, and CNN builders for tests and benchmarks.

Nothing here downloads anything: the digits data set ships with scikit-learn, and every graph
is written with `onnx.helper`, so the demo and the tests run offline on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "DIGITS_FEATURES",
    "DIGITS_OPSET",
    "digits_mlp_onnx",
    "load_digits_split",
    "mlp_to_onnx",
    "train_digits_mlp",
]

DIGITS_FEATURES = 64
DIGITS_OPSET = 17

FloatArray = npt.NDArray[np.float32]


def load_digits_split(
    *, seed: int = 0, test_fraction: float = 0.25
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The 8×8 digits set bundled with scikit-learn, scaled to [0, 1], split reproducibly.

    Returns ``(x_train, x_test, y_train, y_test)``; features are float32 of shape (n, 64).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_tr, x_te, y_tr, y_te


def train_digits_mlp(
    *, seed: int = 0, hidden: Sequence[int] = (32,), max_iter: int = 300
) -> tuple[list[FloatArray], list[FloatArray], float]:
    """Train the demo MLP (ReLU hidden layers, softmax output) with a fixed seed.

    Returns ``(weights, biases, test_accuracy)``; ``weights[i]`` has shape (in, out).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_tr, x_te, y_tr, y_te = load_digits_split(seed=seed)
    clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    weights = [np.asarray(w, dtype=np.float32) for w in clf.coefs_]
    biases = [np.asarray(b, dtype=np.float32) for b in clf.intercepts_]
    return weights, biases, float(clf.score(x_te, y_te))


def mlp_to_onnx(
    weights: Sequence[npt.ArrayLike],
    biases: Sequence[npt.ArrayLike],
    *,
    name: str = "digits-mlp",
    softmax: bool = True,
) -> onnx.ModelProto:
    """Export a dense ReLU network to ONNX: Gemm → Relu → … → Gemm [→ Softmax].

    Input ``input`` is float32 (batch, in) with a dynamic batch dimension; output is
    ``probabilities`` (with softmax) or ``logits``.
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of the same length")
    ws = [np.asarray(w, dtype=np.float32) for w in weights]
    bs = [np.asarray(b, dtype=np.float32) for b in biases]
    nodes, inits = [], []
    current = "input"
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        last = i == len(ws) - 1
        gemm_out = ("logits" if not softmax else "z_out") if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [gemm_out], f"gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"h{i}"], f"relu{i}"))
            current = f"h{i}"
    out_name = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z_out"], ["probabilities"], "softmax", axis=1))
        out_name = "probabilities"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", ws[0].shape[0]])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", ws[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", DIGITS_OPSET)],
        producer_name="edgetrust",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def digits_mlp_onnx(*, seed: int = 0, hidden: Sequence[int] = (32,)) -> tuple[bytes, float]:
    """Train the demo MLP and return ``(onnx_bytes, test_accuracy)``; deterministic per seed."""
    weights, biases, acc = train_digits_mlp(seed=seed, hidden=hidden)
    return mlp_to_onnx(weights, biases).SerializeToString(), acc
