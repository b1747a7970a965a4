"""Models built in code: the digits MLP of the demo, and CNN builders for tests and benchmarks.

Nothing here downloads anything: the digits data set ships with scikit-learn, and every graph
is written with `onnx.helper`, so the demo and the tests run offline on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    "small_cnn",
    "squeezenet",
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


class _GraphBuilder:
    """Small helper to write CNN graphs with onnx.helper: names nodes and initializers."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0) -> str:
        name = self._name("conv")
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(
            np.float32
        )
        b = (self.rng.standard_normal(cout) * 0.01).astype(np.float32)
        self.inits += [
            numpy_helper.from_array(w, f"{name}_w"),
            numpy_helper.from_array(b, f"{name}_b"),
        ]
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [name],
                name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return name

    def batchnorm(self, x: str, c: int) -> str:
        name = self._name("bn")
        params = {
            "scale": 1.0 + 0.1 * self.rng.standard_normal(c),
            "bias": 0.1 * self.rng.standard_normal(c),
            "mean": 0.1 * self.rng.standard_normal(c),
            "var": 1.0 + 0.1 * np.abs(self.rng.standard_normal(c)),
        }
        for key, value in params.items():
            self.inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_{key}"))
        self.nodes.append(
            helper.make_node(
                "BatchNormalization", [x, *(f"{name}_{k}" for k in params)], [name], name
            )
        )
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        name = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [name], name, **attrs))
        return name

    def model(
        self, x_shape: list[int | str], out: str, out_shape: list[int | str], name: str
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DIGITS_OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def squeezenet(*, num_classes: int = 1000, seed: int = 0, size: int = 224) -> onnx.ModelProto:
    """A SqueezeNet 1.1 graph with random weights, for benchmarks and tests.

    Fire modules, Concat, MaxPool, GlobalAveragePool and Softmax: the size and shape of the
    real network (about 1.2M parameters).
    """
    g = _GraphBuilder(seed)
    x = g.op("Relu", [g.conv("input", 3, 64, 3, stride=2)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    cin = 64

    def fire(x: str, cin: int, squeeze: int, expand: int) -> tuple[str, int]:
        s = g.op("Relu", [g.conv(x, cin, squeeze, 1)])
        e1 = g.op("Relu", [g.conv(s, squeeze, expand, 1)])
        e3 = g.op("Relu", [g.conv(s, squeeze, expand, 3, pad=1)])
        return g.op("Concat", [e1, e3], axis=1), 2 * expand

    for i, (sq, ex) in enumerate(
        [(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)]
    ):
        x, cin = fire(x, cin, sq, ex)
        if i in (1, 3):
            x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    x = g.op("Relu", [g.conv(x, cin, num_classes, 1)])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    x = g.op("Softmax", [x], axis=1)
    return g.model(["batch", 3, size, size], x, ["batch", num_classes], "squeezenet-like")


def small_cnn(*, num_classes: int = 10, seed: int = 0, size: int = 16) -> onnx.ModelProto:
    """A small CNN for tests that want a real CNN without the cost of a large one.

    Conv, BatchNormalization, MaxPool, AveragePool, a residual Add, Gemm and Softmax.
    """
    g = _GraphBuilder(seed)
    x = g.op("Relu", [g.batchnorm(g.conv("input", 3, 8, 3, pad=1), 8)])
    y = g.op("Relu", [g.batchnorm(g.conv(x, 8, 8, 3, pad=1), 8)])
    x = g.op("Add", [x, y])
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x], axis=1)
    feat = 8 * (size // 4) * (size // 4)
    w = (g.rng.standard_normal((feat, num_classes)) * 0.1).astype(np.float32)
    g.inits.append(numpy_helper.from_array(w, "fc_w"))
    g.inits.append(numpy_helper.from_array(np.zeros(num_classes, np.float32), "fc_b"))
    x = g.op("Gemm", [x, "fc_w", "fc_b"])
    x = g.op("Softmax", [x], axis=1)
    return g.model(["batch", 3, size, size], x, ["batch", num_classes], "small-cnn")
