"""The nine "light" models bundled with the onnx wheel, with seeded random weights.

The wheel ships real architectures (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) whose weights are `ConstantOfShape` placeholders (a
constant 0.02 everywhere). `light_model` replaces every placeholder by an initializer of seeded
random values shaped for its role (He-normal conv/Gemm weights, small biases, positive
BatchNormalization variances, a small γ on the last BatchNormalization of a residual branch), and
re-draws the few real float initializers the same way (they only fit the real weights), so activations neither vanish nor explode and every op sees
realistic data. Nothing is trained: the bytes are a deterministic function of the wheel's file
and the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"

LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def _value(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    consumer: onnx.NodeProto | None,
    k: int,
    residual: bool,
) -> np.ndarray:
    op = consumer.op_type if consumer is not None else ""
    if op == "BatchNormalization":
        if k == 1 and residual:  # last BN of a residual branch: small γ (Goyal et al. 2017)
            return rng.uniform(0.1, 0.3, shape)
        if k in (1, 4):  # scale, variance
            return rng.uniform(0.5, 1.5, shape)
        return rng.normal(0.0, 0.1, shape)  # bias, mean
    if op in ("Conv", "Gemm", "MatMul") and k == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(min(shape))
        if op == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)  # type: ignore[union-attr]
            fan_in = shape[1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    if op == "Mul":  # per-channel scales after a BatchNormalization
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 0.05, shape)  # biases, shifts


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """Model `name` of `LIGHT_MODELS` with its placeholders replaced by seeded weights."""
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, tuple[onnx.NodeProto, int]] = {}
    feeds_sum: set[str] = set()
    for node in graph.node:
        for k, inp in enumerate(node.input):
            consumers.setdefault(inp, (node, k))
            if node.op_type in ("Sum", "Add") and len(node.input) > 1:
                feeds_sum.add(inp)
    rng = np.random.default_rng(seed)
    keep: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    used_shapes: set[str] = set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
            consumer, k = consumers.get(node.output[0], (None, 0))
            residual = consumer is not None and consumer.output[0] in feeds_sum
            arr = _value(rng, shape, consumer, k, residual).astype(np.float32)
            new_inits.append(numpy_helper.from_array(arr, node.output[0]))
            used_shapes.add(node.input[0])
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    # the few real float initializers (some first-layer BatchNormalization statistics, with
    # variances near 1e-14) only make sense with the real weights: re-draw them too
    remaining = []
    for t in graph.initializer:
        if t.name in used_shapes:
            continue
        if t.data_type == onnx.TensorProto.FLOAT and t.name in consumers:
            consumer, k = consumers[t.name]
            residual = consumer.output[0] in feeds_sum
            arr = _value(rng, tuple(t.dims), consumer, k, residual).astype(np.float32)
            t = numpy_helper.from_array(arr, t.name)
        remaining.append(t)
    del graph.initializer[:]
    graph.initializer.extend(remaining + new_inits)
    kept_inputs = [i for i in graph.input if i.name not in used_shapes]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    # IR version 3 wants every initializer listed among the graph inputs too
    graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in new_inits
    )
    return model


def light_input(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded standard-normal sample for every (image) input of `model`."""
    rng = np.random.default_rng(seed)
    out = {}
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        out[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return out
