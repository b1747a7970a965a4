"""ONNX graphs built with onnx.helper for the fixed-point executor's tests and benchmark.

ResNet-style (stem conv 7×7/2 or 3×3, BatchNormalization, MaxPool, basic residual blocks with
projection shortcuts, GlobalAveragePool, Gemm, Softmax) and SqueezeNet-style (fire modules:
1×1 squeeze, 1×1 and 3×3 expand, Concat; ceil-mode MaxPool; AveragePool; 1×1 classifier conv)
graphs with random He-initialized weights and a fixed seed, plus single-op graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def const(self, value: np.ndarray, kind: str = "c") -> str:
        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], *, name: str | None = None, **attrs: Any
    ) -> str:
        out = name or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], out, **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        pad: int = 0,
        bias: bool = True,
    ) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        inputs = [x, self.const(w.astype(np.float32), "w")]
        if bias:
            inputs.append(
                self.const((self.rng.standard_normal(cout) * 0.05).astype(np.float32), "b")
            )
        return self.op(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4
        )

    def bn(self, x: str, c: int) -> str:
        params = [
            1.0 + 0.1 * self.rng.standard_normal(c),
            0.1 * self.rng.standard_normal(c),
            0.1 * self.rng.standard_normal(c),
            1.0 + 0.2 * np.abs(self.rng.standard_normal(c)),
        ]
        names = [self.const(p.astype(np.float32), "bn") for p in params]
        return self.op("BatchNormalization", [x, *names], epsilon=1e-5)

    def model(
        self,
        inputs: Sequence[tuple[str, int, Sequence[int | str]]],
        outputs: Sequence[tuple[str, int, Sequence[int | str] | None]],
        name: str = "g",
        opset: int = OPSET,
        check: bool = True,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        if check:
            onnx.checker.check_model(m)
        return m


def resnet_style(
    *,
    size: int = 32,
    width: int = 16,
    classes: int = 10,
    seed: int = 0,
    imagenet_stem: bool | None = None,
) -> onnx.ModelProto:
    """A ResNet-style CNN: stem, 3 stages of basic blocks (the later two downsampling)."""
    b = Builder(seed)
    stem = imagenet_stem if imagenet_stem is not None else size >= 128
    if stem:
        x = b.op("Relu", [b.bn(b.conv("input", 3, width, 7, stride=2, pad=3, bias=False), width)])
        x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    else:
        x = b.op("Relu", [b.bn(b.conv("input", 3, width, 3, pad=1, bias=False), width)])
    c = width
    for stage in range(3):
        cout = width * (2**stage)
        stride = 1 if stage == 0 else 2
        y = b.op("Relu", [b.bn(b.conv(x, c, cout, 3, stride=stride, pad=1, bias=False), cout)])
        y = b.bn(b.conv(y, cout, cout, 3, pad=1, bias=False), cout)
        short = (
            x
            if stride == 1 and c == cout
            else b.bn(b.conv(x, c, cout, 1, stride=stride, bias=False), cout)
        )
        x = b.op("Relu", [b.op("Add", [y, short])])
        c = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    w = (b.rng.standard_normal((c, classes)) * np.sqrt(1.0 / c)).astype(np.float32)
    x = b.op("Gemm", [x, b.const(w, "fc"), b.const(np.zeros(classes, np.float32), "fcb")])
    x = b.op("Softmax", [x], axis=1, name="prob")
    return b.model(
        [("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [(x, TensorProto.FLOAT, ["batch", classes])],
        "resnet-style",
    )


def squeezenet_style(*, size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A SqueezeNet-style CNN: fire modules with Concat, ceil-mode pooling, conv classifier."""
    b = Builder(seed)
    x = b.op("Relu", [b.conv("input", 3, 32, 3, stride=2, pad=1)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    c = 32

    def fire(x: str, c: int, s: int, e: int) -> str:
        sq = b.op("Relu", [b.conv(x, c, s, 1)])
        e1 = b.op("Relu", [b.conv(sq, s, e, 1)])
        e3 = b.op("Relu", [b.conv(sq, s, e, 3, pad=1)])
        return b.op("Concat", [e1, e3], axis=1)

    x = fire(x, c, 8, 16)
    x = fire(x, 32, 8, 16)
    x = b.op(
        "AveragePool",
        [x],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=0,
    )
    x = fire(x, 32, 16, 32)
    x = b.op("Relu", [b.conv(x, 64, classes, 1)])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    x = b.op("Softmax", [x], axis=1, name="prob")
    return b.model(
        [("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [(x, TensorProto.FLOAT, ["batch", classes])],
        "squeezenet-style",
    )


def kitchen_sink(*, seed: int = 0) -> onnx.ModelProto:
    """One graph using every other supported op, on a (2, 4, 6) float input and int ids."""
    b = Builder(seed)
    r = b.rng
    x = b.op(
        "LayerNormalization",
        [
            "input",
            b.const(r.uniform(0.5, 1.5, 6).astype(np.float32)),
            b.const(r.normal(0, 0.1, 6).astype(np.float32)),
        ],
        axis=-1,
        epsilon=1e-5,
    )
    t = b.op("Transpose", [x], perm=[0, 2, 1])  # (2, 6, 4)
    mm = b.op("MatMul", [x, t])  # (2, 4, 4) activation × activation
    sm = b.op("Softmax", [mm], axis=-1)
    wm = b.op("MatMul", [sm, b.const(r.normal(0, 0.5, (4, 5)).astype(np.float32))])  # (2, 4, 5)
    sig = b.op("Sigmoid", [wm])
    th = b.op("Tanh", [wm])
    er = b.op("Erf", [b.op("Div", [wm, b.const(np.array(1.41421356, np.float32))])])
    ex = b.op(
        "Exp",
        [
            b.op(
                "Clip",
                [wm, b.const(np.array(-3.0, np.float32)), b.const(np.array(2.0, np.float32))],
            )
        ],
    )
    s = b.op("Sum", [sig, th, er])
    d = b.op("Sub", [s, b.op("Mul", [ex, b.const(np.array(0.25, np.float32))])])
    flat = b.op("Reshape", [d, b.const(np.array([0, -1], np.int64))])  # (2, 20)
    un = b.op("Unsqueeze", [flat, b.const(np.array([1], np.int64))])  # (2, 1, 20)
    sq = b.op("Squeeze", [un, b.const(np.array([1], np.int64))])
    emb = b.op(
        "Gather", [b.const(r.normal(0, 1, (10, 20)).astype(np.float32)), "ids"], axis=0
    )  # (2, 20)
    mask = b.op("Cast", ["ids"], to=TensorProto.FLOAT)
    cat = b.op(
        "Concat",
        [
            sq,
            emb,
            b.op(
                "Mul",
                [
                    b.op("Unsqueeze", [mask, b.const(np.array([1], np.int64))]),
                    b.const(np.array(0.5, np.float32)),
                ],
            ),
        ],
        axis=1,
    )  # (2, 41)
    shape = b.op("Shape", [cat])
    zeros = b.op(
        "ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
    )
    k = b.op(
        "Constant",
        [],
        value=helper.make_tensor(
            "k", TensorProto.FLOAT, [41], r.normal(0, 1, 41).astype(np.float32).tolist()
        ),
    )
    y = b.op("Add", [b.op("Add", [cat, zeros]), k])
    y = b.op("Relu", [y])
    y = b.op(
        "Gemm",
        [
            y,
            b.const(r.normal(0, 0.3, (7, 41)).astype(np.float32)),
            b.const(r.normal(0, 0.1, 7).astype(np.float32)),
        ],
        transB=1,
        name="out",
    )
    return b.model(
        [("input", TensorProto.FLOAT, [2, 4, 6]), ("ids", TensorProto.INT64, [2])],
        [(y, TensorProto.FLOAT, [2, 7])],
        "kitchen-sink",
    )


def single_op(
    op_type: str,
    input_shapes: Sequence[Sequence[int]],
    *,
    consts: dict[int, np.ndarray] | None = None,
    opset: int = OPSET,
    out_shape: Sequence[int] | None = None,
    **attrs: Any,
) -> onnx.ModelProto:
    """A one-node graph: activations x0, x1, ... (float) and constant inputs at given positions."""
    b = Builder()
    consts = consts or {}
    names = []
    ins = []
    total = len(input_shapes) + len(consts)
    act = iter(enumerate(input_shapes))
    for pos in range(total):
        if pos in consts:
            names.append(b.const(consts[pos]))
        else:
            i, shape = next(act)
            names.append(f"x{i}")
            ins.append((f"x{i}", TensorProto.FLOAT, list(shape)))
    b.op(op_type, names, name="y", **attrs)
    return b.model(
        ins,
        [("y", TensorProto.FLOAT, out_shape)],
        f"single-{op_type}",
        opset=opset,
        check=out_shape is not None,
    )
