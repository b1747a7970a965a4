"""Each op against a slow pure-integer reference, and `element` (the referee's view) against `run`."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.runtime.fixed import FixedExecutor
from edgetrust.runtime.fixed._arith import Rescale
from tests.runtime import fixed_ref as ref
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, cnn_input, node_io, sink_input


def _executor(
    model: bytes, inputs: dict[str, np.ndarray], precision: str
) -> tuple[FixedExecutor, list[np.ndarray]]:
    ex = FixedExecutor(model, precision=precision, calibration=[inputs])  # type: ignore[arg-type]
    return ex, ex.run_integers(inputs)


def _models(
    cnn_models: dict[str, bytes], digits: dict[str, Any]
) -> list[tuple[str, bytes, dict[str, np.ndarray]]]:
    return [
        ("digits", digits["onnx"], {"input": digits["x_test"][:3]}),
        ("resnet", cnn_models["resnet"], cnn_input(1)),
        ("squeezenet", cnn_models["squeezenet"], cnn_input(2)),
        ("sink", cnn_models["sink"], sink_input(3)),
    ]


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_element_matches_run_for_every_node(
    precision: str, cnn_models: dict[str, bytes], digits: dict[str, Any]
) -> None:
    """The referee's one-element computation agrees with the executor everywhere."""
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _, model, inputs in _models(cnn_models, digits):
        ex, ints = _executor(model, inputs, precision)
        for i, op in enumerate(ex.ops):
            ins, out = node_io(ex, ints, i)
            src = FullSource(op, ins)
            assert op.out_shape(src) == out.shape, op.label
            flat = out.reshape(-1)
            picks = set(rng.integers(0, flat.size, 12).tolist()) | {0, flat.size - 1}
            for j in picks:
                assert op.element(j, out.shape, src) == int(flat[j]), (op.label, j)
            seen.add(ex.nodes[i].op_type)
    assert {
        "Conv",
        "Gemm",
        "MatMul",
        "Softmax",
        "LayerNormalization",
        "Erf",
        "Concat",
        "Gather",
    } <= seen


def _rescale_params(params: dict[str, np.ndarray]) -> Rescale:
    return Rescale.from_params(params["mult"], params["shift"])


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_gemm_and_softmax_match_reference(precision: str, digits: dict[str, Any]) -> None:
    ex, ints = _executor(digits["onnx"], {"input": digits["x_test"][:4]}, precision)
    q = ex.qmax
    for i, node in enumerate(ex.nodes):
        ins, out = node_io(ex, ints, i)
        p = ex.ops[i].params()
        if node.op_type == "Gemm":
            a, w, b = ins[0], p["w"], p["b"]
            assert a is not None
            want = [
                [
                    ref.sat(
                        ref.rescale(
                            sum(int(x) * int(y) for x, y in zip(a[m], w[n], strict=True))
                            + int(b[n]),
                            int(p["mult"][n]),
                            int(p["shift"][0]),
                        ),
                        q,
                    )
                    for n in range(w.shape[0])
                ]
                for m in range(a.shape[0])
            ]
            assert out.tolist() == want
        if node.op_type == "Softmax":
            op: Any = ex.ops[i]
            x = ins[0]
            assert x is not None
            mult, shift = int(op.to_q16.mult[0]), op.to_q16.shift
            assert out.tolist() == [ref.softmax_row(row, mult, shift, q) for row in x.tolist()]


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_conv_pool_bn_match_reference(precision: str, cnn_models: dict[str, bytes]) -> None:
    ex, ints = _executor(cnn_models["squeezenet"], cnn_input(4, batch=1), precision)
    q = ex.qmax
    checked = set()
    for i, node in enumerate(ex.nodes):
        ins, out = node_io(ex, ints, i)
        op: Any = ex.ops[i]
        x = ins[0]
        if node.op_type == "Conv" and ("Conv", op.kh, op.strides[0]) not in checked:
            assert x is not None
            p = op.params()
            pad = op.pads_attr[0]
            acc = ref.conv2d(
                x, p["w"].reshape(op.oc, op.cg, op.kh, op.kw), p["b"], op.strides[0], pad
            )
            want = np.vectorize(
                lambda v, c, p=p: ref.sat(
                    ref.rescale(int(v), int(p["mult"][c]), int(p["shift"][0])), q
                )
            )(acc, np.arange(op.oc)[None, :, None, None])
            assert out.tolist() == want.tolist(), op.label
            checked.add(("Conv", op.kh, op.strides[0]))
        if node.op_type == "MaxPool":
            assert x is not None
            h, w = x.shape[2:]
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    win = x[:, :, oy * 2 : min(oy * 2 + 3, h), ox * 2 : min(ox * 2 + 3, w)]
                    assert (out[:, :, oy, ox] == win.max(axis=(2, 3))).all()
            checked.add(("MaxPool",))
        if node.op_type == "AveragePool":
            assert x is not None
            xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            h, w = x.shape[2:]
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    ys = [y for y in range(oy * 2 - 1, oy * 2 + 2) if 0 <= y < h]
                    xs = [v for v in range(ox * 2 - 1, ox * 2 + 2) if 0 <= v < w]
                    total = xp[:, :, oy * 2 : oy * 2 + 3, ox * 2 : ox * 2 + 3].sum(axis=(2, 3))
                    count = len(ys) * len(xs)
                    want = np.vectorize(lambda t, count=count: ref.rdiv(int(t), count))(total)
                    assert (out[:, :, oy, ox] == want).all()
            checked.add(("AveragePool",))
        if node.op_type == "GlobalAveragePool":
            assert x is not None
            hw = x.shape[2] * x.shape[3]
            want = np.vectorize(lambda t, hw=hw: ref.rdiv(int(t), hw))(x.sum(axis=(2, 3)))
            assert out[:, :, 0, 0].tolist() == want.tolist()
            checked.add(("GAP",))
        if node.op_type == "Concat":
            parts = []
            for k, v in enumerate(ins):
                assert v is not None
                rs = op.rescales[k]
                if rs is not None:  # requantized to the larger input scale
                    v = np.vectorize(
                        lambda t, rs=rs: ref.sat(ref.rescale(int(t), int(rs.mult[0]), rs.shift), q)
                    )(v)
                parts.append(v)
            assert out.tolist() == np.concatenate(parts, axis=1).tolist()
            checked.add(("Concat",))
    assert len(checked) >= 6


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_batchnorm_matches_reference(precision: str, cnn_models: dict[str, bytes]) -> None:
    ex, ints = _executor(cnn_models["resnet"], cnn_input(5, batch=1), precision)
    i = next(i for i, n in enumerate(ex.nodes) if n.op_type == "BatchNormalization")
    ins, out = node_io(ex, ints, i)
    p = ex.ops[i].params()
    x = ins[0]
    assert x is not None
    want = np.vectorize(
        lambda v, c: ref.sat(
            ref.rescale(
                int(v) * int(p["a"][c]) + int(p["b"][c]), int(p["mult"][0]), int(p["shift"][0])
            ),
            ex.qmax,
        )
    )(x, np.arange(x.shape[1])[None, :, None, None])
    assert out.tolist() == want.tolist()


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_transformer_ops_match_reference(precision: str, cnn_models: dict[str, bytes]) -> None:
    ex, ints = _executor(cnn_models["sink"], sink_input(6), precision)
    q = ex.qmax
    done = set()
    for i, node in enumerate(ex.nodes):
        ins, out = node_io(ex, ints, i)
        op: Any = ex.ops[i]
        t = node.op_type
        if t == "LayerNormalization":
            p = op.params()
            x = ins[0]
            assert x is not None
            rows = x.reshape(-1, x.shape[-1]).tolist()
            scale = ex.infos[node.input[0]].scale
            want = [
                ref.layernorm_row(
                    r,
                    scale,
                    op.eps,
                    p["g"].tolist(),
                    p["b"].tolist(),
                    int(p["mult"][0]),
                    int(p["shift"][0]),
                    q,
                )
                for r in rows
            ]
            assert out.reshape(-1, x.shape[-1]).tolist() == want
        elif t == "MatMul" and not op.b_const:
            a, b = ins
            assert a is not None and b is not None
            mult, shift = int(op.params()["mult"][0]), int(op.params()["shift"][0])
            want = np.zeros(out.shape, np.int64)
            for idx in np.ndindex(out.shape):
                acc = sum(
                    int(a[idx[0], idx[1], k]) * int(b[idx[0], k, idx[2]]) for k in range(a.shape[2])
                )
                want[idx] = ref.sat(ref.rescale(acc, mult, shift), q)
            assert (out == want).all()
        elif t in ("Erf", "Sigmoid", "Tanh"):
            x = ins[0]
            assert x is not None
            fn = {"Erf": ref.erf_q30, "Sigmoid": ref.sigmoid_q30, "Tanh": ref.tanh_q30}[t]
            m, s = int(op.to_q16.mult[0]), op.to_q16.shift
            want = [
                ref.rha(
                    Fraction(fn(max(-(2**40), min(2**40, ref.rescale(int(v), m, s)))) * q, 2**30)
                )
                for v in x.reshape(-1)
            ]
            assert out.reshape(-1).tolist() == want
        elif t == "Exp":
            x = ins[0]
            assert x is not None
            m16, s16 = int(op.to_q16.mult[0]), op.to_q16.shift
            mult, shift = int(op.rs.mult[0]), op.rs.shift
            want = []
            for v in x.reshape(-1).tolist():
                mm, k = ref.exp_parts(ref.rescale(v, m16, s16))
                want.append(ref.sat(ref.rha(Fraction(mm * mult) * Fraction(2) ** (k - shift)), q))
            assert out.reshape(-1).tolist() == want
        elif t in ("Add", "Sub", "Sum", "Mul", "Div"):
            vals = [
                ins[k] if ins[k] is not None else op.params()[f"in{k}"]
                for k in range(len(node.input))
            ]
            bvals = np.broadcast_arrays(*[np.asarray(v, np.int64) for v in vals])
            mult, shift = int(op.rs.mult[0]), op.rs.shift
            want = np.zeros(out.shape, np.int64)
            for idx in np.ndindex(out.shape):
                xs = [int(v[idx]) for v in bvals]
                wide = (
                    xs[0] * xs[1]
                    if t in ("Mul", "Div")
                    else sum(x * w for x, w in zip(xs, op.weights_, strict=True))
                )
                want[idx] = ref.sat(ref.rescale(wide, mult, shift), q)
            assert (out == want).all(), op.label
        else:
            continue
        done.add(t)
    assert {
        "LayerNormalization",
        "MatMul",
        "Erf",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Add",
        "Sub",
        "Sum",
        "Mul",
        "Div",
    } <= done


@pytest.mark.parametrize(
    ("op_type", "shapes", "attrs"),
    [
        ("MaxPool", [(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (
            "MaxPool",
            [(1, 2, 8, 8)],
            {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]},
        ),
        (
            "AveragePool",
            [(1, 2, 7, 7)],
            {
                "kernel_shape": [3, 3],
                "strides": [2, 2],
                "pads": [1, 1, 1, 1],
                "count_include_pad": 1,
            },
        ),
        (
            "AveragePool",
            [(1, 2, 7, 7)],
            {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        ),
        ("AveragePool", [(1, 2, 6, 6)], {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}),
        ("GlobalMaxPool", [(2, 3, 4, 5)], {}),
        ("Softmax", [(2, 3, 4)], {"axis": 1}),
        ("Transpose", [(2, 3, 4)], {"perm": [2, 0, 1]}),
        ("Flatten", [(2, 3, 4)], {"axis": 2}),
        ("Relu", [(3, 5)], {}),
    ],
)
def test_single_ops_track_onnxruntime(
    op_type: str, shapes: list[tuple[int, ...]], attrs: dict[str, Any]
) -> None:
    model = graphs.single_op(op_type, shapes, **attrs).SerializeToString()
    rng = np.random.default_rng(0)
    x = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    want = ort.InferenceSession(model).run(None, x)[0]
    ex = FixedExecutor(model, precision="int16", calibration=[x])
    got = ex.run(x)["y"]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, float(np.max(np.abs(want))))
    ints = ex.run_integers(x)
    ins, out = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


@pytest.mark.parametrize(
    ("op_type", "consts", "attrs"),
    [
        (
            "Slice",
            {
                1: np.array([1], np.int64),
                2: np.array([100], np.int64),
                3: np.array([1], np.int64),
                4: np.array([2], np.int64),
            },
            {},
        ),
        (
            "Slice",
            {
                1: np.array([-1, 4], np.int64),
                2: np.array([-100, 0], np.int64),
                3: np.array([0, 1], np.int64),
                4: np.array([-1, -2], np.int64),
            },
            {},
        ),
        ("LpNormalization", {}, {"axis": -1, "p": 2}),
        ("LpNormalization", {}, {"axis": 0, "p": 2}),
    ],
)
def test_slice_and_lpnorm_track_onnxruntime(
    op_type: str, consts: dict[int, np.ndarray], attrs: dict[str, Any]
) -> None:
    model = graphs.single_op(op_type, [(4, 6)], consts=consts, **attrs).SerializeToString()
    x = {"x0": np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)}
    want = ort.InferenceSession(model).run(None, x)[0]
    ex = FixedExecutor(model, precision="int16", calibration=[x])
    got = ex.run(x)["y"]
    assert got.shape == want.shape and np.max(np.abs(got - want)) < 1e-3
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    assert ex.ops[0].out_shape(src) == out.shape
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


def test_conv_with_groups_dilation_and_same_padding() -> None:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 2, 3, 3)) * 0.3).astype(np.float32)
    for attrs in (
        {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]},
        {"group": 2, "auto_pad": "SAME_LOWER", "strides": [2, 2]},
    ):
        model = graphs.single_op("Conv", [(1, 4, 9, 9)], consts={1: w}, **attrs).SerializeToString()
        x = {"x0": rng.standard_normal((1, 4, 9, 9)).astype(np.float32)}
        want = ort.InferenceSession(model).run(None, x)[0]
        ex = FixedExecutor(model, precision="int16", calibration=[x])
        got = ex.run(x)["y"]
        assert np.max(np.abs(got - want)) < 2e-3 * float(np.max(np.abs(want)))
        ints = ex.run_integers(x)
        ins, out = node_io(ex, ints, 0)
        src = FullSource(ex.ops[0], ins)
        for j in range(0, out.size, 7):
            assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


def test_int8_conv_above_one_chunk_is_exact() -> None:
    """K = 256 · 9 = 2304 > 1040: the sum runs in three float32 chunks, still exact."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 256, 3, 3)).astype(np.float32)
    model = graphs.single_op(
        "Conv", [(1, 256, 5, 5)], consts={1: w}, pads=[1, 1, 1, 1]
    ).SerializeToString()
    # Inputs all at the positive bound with weights of one sign make every partial sum maximal.
    x = {"x0": np.abs(rng.standard_normal((1, 256, 5, 5))).astype(np.float32) + 10}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    ins, out = node_io(ex, ex.run_integers(x), 0)
    op: Any = ex.ops[0]
    p = op.params()
    assert ins[0] is not None
    acc = ref.conv2d(ins[0], p["w"].reshape(4, 256, 3, 3), p["b"], 1, 1)
    want = np.vectorize(
        lambda v, c: ref.sat(ref.rescale(int(v), int(p["mult"][c]), int(p["shift"][0])), 127)
    )(acc, np.arange(4)[None, :, None, None])
    assert out.tolist() == want.tolist()
