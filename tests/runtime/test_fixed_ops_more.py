"""Ops added for real models (Dropout, LRN, ...): a pure-integer reference, bit for bit; the
referee's `element` against `run`; agreement with `onnx.reference.ReferenceEvaluator` (an
independent float implementation) within a stated bound; bad attributes refused naming the node.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgetrust.cli import run as cli_run
from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime import fixed_ref as ref
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, node_io


def _float_ref(model: onnx.ModelProto, x: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ReferenceEvaluator(model).run(None, x)[0])


def _check_elements(ex: FixedExecutor, x: dict[str, np.ndarray], index: int = 0) -> np.ndarray:
    ins, out = node_io(ex, ex.run_integers(x), index)
    op = ex.ops[index]
    src = FullSource(op, ins)
    assert op.out_shape(src) == out.shape
    for j in range(out.size):
        assert op.element(j, out.shape, src) == int(out.reshape(-1)[j]), j
    return out


# -- Dropout ---------------------------------------------------------------------------------


def _dropout_model(opset: int, *, mask: bool, training: bool | None = None) -> onnx.ModelProto:
    inputs = ["x0"]
    inits = []
    if opset >= 12:
        inits.append(helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.3]))
        inputs.append("ratio")
        if training is not None:
            inits.append(helper.make_tensor("train", TensorProto.BOOL, [], [training]))
            inputs.append("train")
    outs = ["d", "mask"] if mask else ["d"]
    nodes = [
        helper.make_node("Dropout", inputs, outs, name="drop"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "dropout",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("opset", "mask"), [(9, False), (9, True), (13, True), (13, False)])
def test_dropout_is_the_identity_at_inference(opset: int, mask: bool) -> None:
    model = _dropout_model(opset, mask=mask, training=False if opset >= 13 else None)
    x = {"x0": np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int16", calibration=[x])
    ints = ex.run_integers(x)
    assert ints[1].tolist() == ints[0].tolist()  # the integers pass through unchanged
    out = _check_elements(ex, x)
    assert out.tolist() == ints[0].tolist()
    want = _float_ref(model, x)
    assert np.max(np.abs(ex.run(x)["y"] - want)) <= ex.infos["x0"].scale  # type: ignore[operator]


def test_dropout_in_training_mode_or_with_a_read_mask_is_refused() -> None:
    with pytest.raises(UnsupportedError, match=r"Dropout node drop: training_mode=true"):
        FixedExecutor(_dropout_model(13, mask=False, training=True).SerializeToString())
    model = _dropout_model(9, mask=True)
    model.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 5]))
    with pytest.raises(UnsupportedError, match=r"Dropout node drop: only the first output"):
        FixedExecutor(model.SerializeToString())


# -- LRN -------------------------------------------------------------------------------------


def _rha(x: Fraction) -> int:
    return ref.rha(x)


def lrn_reference(q: np.ndarray, op: Any, mult: int, shift: int, qmax: int) -> np.ndarray:
    """LRN's integer definition in Python ints: loops, math.isqrt, exact Fractions."""
    n, c, *_ = q.shape
    flat = q.reshape(n, c, -1).tolist()
    out = np.zeros((n, c, len(flat[0][0])), np.int64)
    kmult, kshift = int(op.k_rs.mult.reshape(-1)[0]), op.k_rs.shift
    half = 2 ** (op.f // 2)
    for b in range(n):
        for ch in range(c):
            lo = max(0, ch - (op.size - 1) // 2)
            hi = min(c - 1, ch + op.size // 2)
            for p in range(len(flat[b][ch])):
                s = sum(flat[b][k][p] ** 2 for k in range(lo, hi + 1))
                d = _rha(Fraction(s * 2**op.pre * kmult, 2**kshift)) + op.b_fp
                r = max(1, math.isqrt(math.isqrt(d) * half))
                p1 = _rha(Fraction(2**30 * half, r))
                pw = p1
                for _ in range(op.power - 1):
                    pw = _rha(Fraction(pw * p1, 2**30))
                v = flat[b][ch][p] * pw
                out[b, ch, p] = ref.sat(ref.rescale(v, mult, shift), qmax)
    return out.reshape(q.shape)


@pytest.mark.parametrize(
    ("precision", "attrs", "shape"),
    [
        ("int8", {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}, (1, 7, 3, 3)),
        ("int16", {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}, (1, 7, 3, 3)),
        ("int16", {"size": 3, "alpha": 0.5, "beta": 0.5, "bias": 2.0}, (2, 4, 2, 3)),
        ("int16", {"size": 1, "alpha": 0.2, "beta": 1.0, "bias": 0.5}, (1, 3, 4)),
        ("int16", {"size": 7, "alpha": 2.0, "beta": 1.75, "bias": 1.0}, (1, 9, 2, 2)),
    ],
)
def test_lrn_matches_integer_reference_and_float(
    precision: str, attrs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    model = graphs.single_op("LRN", [shape], **attrs)
    x = {"x0": (np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    op: Any = ex.ops[0]
    p = op.params()
    want = lrn_reference(
        ints[0].astype(np.int64), op, int(p["mult"][0]), int(p["shift"][0]), ex.qmax
    )
    assert ints[1].tolist() == want.tolist()
    _check_elements(ex, x)
    # float agreement: int16 within 3e-4 of the output range, int8 within 3e-2 (a few steps).
    # onnx.reference's LRN (onnx 1.x) loops over the batch axis instead of the channels, so
    # only channel 0 is normalised there; the float references are the spec's formula in
    # float64 and onnxruntime.
    got = ex.run(x)["y"]
    fl = lrn_float(x["x0"], **attrs)
    bound = (3e-4 if precision == "int16" else 3e-2) * float(np.max(np.abs(fl)))
    assert float(np.max(np.abs(got - fl))) <= bound
    if len(shape) == 4:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert float(np.max(np.abs(got - sess.run(None, x)[0]))) <= bound


def lrn_float(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX definition of LRN in float64."""
    v = x.astype(np.float64)
    sq = np.zeros_like(v)
    for c in range(v.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(v.shape[1] - 1, c + size // 2)
        sq[:, c] = np.sum(v[:, lo : hi + 1] ** 2, axis=1)
    out: np.ndarray = v / (bias + alpha / size * sq) ** beta
    return out


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"size": 4}, "size=4 is not supported"),
        ({"size": 3, "beta": 0.6}, "beta=0.6 is not supported"),
        ({"size": 3, "bias": 0.0}, "bias=0"),
        ({}, "attribute size is required"),
    ],
)
def test_lrn_attributes_outside_the_definition_are_refused(
    attrs: dict[str, Any], message: str
) -> None:
    model = graphs.single_op("LRN", [(1, 4, 2, 2)], **attrs)
    with pytest.raises(UnsupportedError, match=rf"LRN node .*{message}"):
        FixedExecutor(model.SerializeToString())


# -- unsupported ops, and the CLI --------------------------------------------------------------


def test_unsupported_op_names_node_opset_and_attributes() -> None:
    model = graphs.single_op("Hardmax", [(2, 3)], axis=1)
    with pytest.raises(UnsupportedError) as info:
        FixedExecutor(model.SerializeToString())
    text = str(info.value)
    assert "op Hardmax" in text and "node " in text and "opset" in text and "axis=1" in text


@pytest.mark.parametrize(
    ("op_type", "attrs", "needle"),
    [("LRN", {"size": 2}, "size=2 is not supported"), ("Hardmax", {"axis": 1}, "axis=1")],
)
def test_cli_refuses_with_exit_2_and_logs_nothing(
    tmp_path: Path,
    edgetrust_home: Path,
    capsys: pytest.CaptureFixture[str],
    op_type: str,
    attrs: dict[str, Any],
    needle: str,
) -> None:
    shape = (1, 4, 2, 2)
    path = tmp_path / "m.onnx"
    model = graphs.single_op(op_type, [shape], out_shape=list(shape), **attrs)
    path.write_bytes(model.SerializeToString())
    np.save(tmp_path / "x.npy", np.ones(shape, np.float32))
    assert cli_run(["init"]) == 0
    before = {p for p in edgetrust_home.rglob("*") if p.is_file()}
    capsys.readouterr()
    argv = ["infer", str(path), "-i", str(tmp_path / "x.npy"), "--executor", "fixed"]
    argv += ["-o", str(tmp_path / "r.json")]
    assert cli_run(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
    # no receipt, no log entry (the model is registered in the home's store, and the input
    # commitment's salt is kept: both written before the executor refuses)
    new = {p for p in edgetrust_home.rglob("*") if p.is_file()} - before
    assert all(p.parent.name in ("models", "openings") for p in new), new
    assert not any(p.suffix == ".json" and p.parent.name == "openings" for p in new), new


# -- element-wise extras -----------------------------------------------------------------------


def _int_reference(
    op_type: str, qs: list[list[int]], ex: FixedExecutor, attrs: dict[str, Any]
) -> list[int]:
    """The integer definitions of _extra.py, element by element in Python ints."""
    qmax = ex.qmax
    s = [ex.infos[f"x{i}"].scale for i in range(len(qs))]
    out = []
    for vals in zip(*qs, strict=True):
        q = vals[0]
        if op_type == "Neg":
            out.append(-q)
        elif op_type == "Abs":
            out.append(abs(q))
        elif op_type in ("LeakyRelu", "PRelu"):
            alpha = attrs.get("alpha", 0.01) if op_type == "LeakyRelu" else 0.25
            a = ref.rha(Fraction(float(np.float32(alpha))) * 2**30)  # as the model stores it
            out.append(q if q >= 0 else ref.sat(ref.rha(Fraction(q * a, 2**30)), qmax))
        elif op_type in ("Max", "Min"):
            op: Any = ex.ops[0]
            moved = [
                ref.rescale(v, int(rs.mult.reshape(-1)[0]), rs.shift)
                for v, rs in zip(vals, op.rescales, strict=True)
            ]
            out.append(max(moved) if op_type == "Max" else min(moved))
        elif op_type == "HardSigmoid":
            op = ex.ops[0]
            r = ref.rescale(q, int(op.rs.mult.reshape(-1)[0]), op.rs.shift)
            out.append(
                min(
                    qmax,
                    max(0, r + ref.rha(Fraction(float(np.float32(attrs.get("beta", 0.5)))) * qmax)),
                )
            )
        elif op_type == "HardSwish":
            op = ex.ops[0]
            h = min(
                2**15, max(0, ref.rescale(q, int(op.rs.mult.reshape(-1)[0]), op.rs.shift) + 2**14)
            )
            out.append(ref.rha(Fraction(q * h, 2**15)))
    assert s  # scales are used through the ops' multipliers
    return out


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(
    ("op_type", "n_inputs", "attrs"),
    [
        ("Neg", 1, {}),
        ("Abs", 1, {}),
        ("LeakyRelu", 1, {"alpha": 0.1}),
        ("LeakyRelu", 1, {}),
        ("PRelu", 1, {}),
        ("Max", 2, {}),
        ("Min", 3, {}),
        ("HardSigmoid", 1, {"alpha": 0.3, "beta": 0.4}),
        ("HardSigmoid", 1, {}),
        ("HardSwish", 1, {}),
    ],
)
def test_elementwise_extras(
    precision: str, op_type: str, n_inputs: int, attrs: dict[str, Any]
) -> None:
    shape = (2, 3, 4)
    consts = {1: np.full((3, 1), 0.25, np.float32)} if op_type == "PRelu" else None
    model = graphs.single_op(op_type, [shape] * n_inputs, consts=consts, **attrs)
    rng = np.random.default_rng(5)
    x = {
        f"x{i}": (rng.standard_normal(shape) * (i + 2)).astype(np.float32) for i in range(n_inputs)
    }
    ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    qs = [v.reshape(-1).astype(np.int64).tolist() for v in ints[:n_inputs]]
    assert ints[n_inputs].reshape(-1).tolist() == _int_reference(op_type, qs, ex, attrs)
    _check_elements(ex, x)
    got, fl = ex.run(x)["y"], _float_ref(model, x)
    # input quantization (half a step of the largest input scale) plus one output step
    step = max(float(ex.infos[f"x{i}"].scale or 0) for i in range(n_inputs))
    out_step = 1.0 / ex.qmax if op_type == "HardSigmoid" else step
    assert float(np.max(np.abs(got - fl))) <= step + out_step


def test_prelu_needs_a_constant_broadcastable_slope() -> None:
    model = graphs.single_op("PRelu", [(2, 3), (2, 3)])
    with pytest.raises(UnsupportedError, match=r"PRelu node .*slope must be a constant"):
        FixedExecutor(model.SerializeToString())
    bad = graphs.single_op("PRelu", [(2, 3)], consts={1: np.ones((4,), np.float32)})
    with pytest.raises(UnsupportedError, match=r"PRelu node .*does not broadcast"):
        FixedExecutor(bad.SerializeToString())


# -- Pad, Expand, Tile -------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(
    ("op_type", "consts", "attrs", "opset"),
    [
        ("Pad", {1: np.array([0, 1, 2, 0, 2, 1], np.int64)}, {}, 13),
        (
            "Pad",
            {1: np.array([1, 0, 2, 1, 1, 3], np.int64), 2: np.array(0.7, np.float32)},
            {},
            13,
        ),
        ("Pad", {1: np.array([0, 1, 2, 0, 1, 3], np.int64)}, {"mode": "edge"}, 13),
        ("Pad", {1: np.array([0, 1, 2, 0, 2, 3], np.int64)}, {"mode": "reflect"}, 13),
        ("Pad", {1: np.array([0, 2, 3, 0, 1, 5], np.int64)}, {"mode": "wrap"}, 19),
        ("Pad", {}, {"pads": [0, 1, 1, 0, 1, 1], "value": -0.5}, 9),
        ("Expand", {1: np.array([2, 1, 3, 4], np.int64)}, {}, 13),
        ("Tile", {1: np.array([2, 1, 3], np.int64)}, {}, 13),
    ],
)
def test_movement_ops_are_exact_copies(
    precision: str, op_type: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], opset: int
) -> None:
    shape = (2, 3, 4)
    model = graphs.single_op(op_type, [shape], consts=consts, opset=opset, **attrs)
    x = {"x0": np.random.default_rng(7).standard_normal(shape).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    q = ints[0].astype(np.int64)
    out = _check_elements(ex, x)
    op: Any = ex.ops[0]
    if op_type == "Pad":  # pure-integer reference: index mapping per axis
        w = op.widths(3, {1: consts[1].tolist()} if 1 in consts else {})
        mode = op.mode
        want = np.empty(out.shape, np.int64)
        for idx in np.ndindex(*out.shape):
            src = []
            for i, d, (b, _) in zip(idx, q.shape, w, strict=True):
                j = i - b
                if mode == "edge":
                    j = min(max(j, 0), d - 1)
                elif mode == "wrap":
                    j %= d
                elif mode == "reflect":
                    while not 0 <= j < d:
                        j = -j if j < 0 else 2 * (d - 1) - j
                src.append(j)
            inside = all(0 <= j < d for j, d in zip(src, q.shape, strict=True))
            want[idx] = q[tuple(src)] if inside else op.fill
        assert out.tolist() == want.tolist()
        value = float(consts[2]) if 2 in consts else float(attrs.get("value", 0.0))
        assert op.fill == ref.sat(
            ref.rha(Fraction(float(np.float32(value))) / Fraction(ex.infos["x0"].scale)), ex.qmax
        )
    elif op_type == "Expand":
        assert out.tolist() == np.broadcast_to(q, (2, 2, 3, 4)).tolist()
    else:
        assert out.tolist() == np.tile(q, (2, 1, 3)).tolist()
    got = ex.run(x)["y"]
    if opset < 19 or op_type != "Pad":
        fl = _float_ref(model, x)
        assert got.shape == fl.shape
        step = float(ex.infos["x0"].scale or 0)
        assert float(np.max(np.abs(got - fl))) <= step  # half a step of input + pad value


def test_pad_refuses_what_it_does_not_define() -> None:
    pads = {1: np.array([0, -1, 0, 0], np.int64)}
    with pytest.raises(UnsupportedError, match=r"Pad node .*negative pads"):
        FixedExecutor(graphs.single_op("Pad", [(2, 3)], consts=pads).SerializeToString())
    with pytest.raises(UnsupportedError, match=r"Pad node .*mode=symmetric"):
        graph = graphs.single_op(
            "Pad", [(2, 3)], consts={1: np.zeros(4, np.int64)}, mode="symmetric"
        )
        FixedExecutor(graph.SerializeToString())


# -- reductions --------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(
    ("op_type", "attrs", "consts", "opset"),
    [
        ("ReduceMean", {"axes": [1], "keepdims": 1}, {}, 13),
        ("ReduceMean", {"axes": [0, 2], "keepdims": 0}, {}, 13),
        ("ReduceMean", {}, {1: np.array([-1], np.int64)}, 18),
        ("ReduceMax", {"axes": [2]}, {}, 13),
        ("ReduceMin", {"axes": [1, 2], "keepdims": 0}, {}, 13),
        ("ReduceMin", {}, {}, 13),
        ("ReduceSum", {}, {1: np.array([1, 2], np.int64)}, 13),
        ("ReduceSum", {"keepdims": 0}, {1: np.array([0], np.int64)}, 13),
        ("ArgMax", {"axis": 1}, {}, 13),
        ("ArgMax", {"axis": -1, "keepdims": 0, "select_last_index": 1}, {}, 13),
        ("ArgMin", {"axis": 0}, {}, 13),
    ],
)
def test_reductions(
    precision: str, op_type: str, attrs: dict[str, Any], consts: dict[int, np.ndarray], opset: int
) -> None:
    shape = (3, 4, 5)
    model = graphs.single_op(op_type, [shape], consts=consts, opset=opset, **attrs)
    x = {"x0": np.random.default_rng(9).standard_normal(shape).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    q = ints[0].astype(np.int64)
    out = _check_elements(ex, x)
    op: Any = ex.ops[0]
    keep = bool(attrs.get("keepdims", 1))
    if op_type.startswith("Arg"):
        axis = attrs["axis"] % 3
        want_list = []
        rows = np.moveaxis(q, axis, -1).reshape(-1, shape[axis]).tolist()
        for row in rows:
            best = max(row) if op_type == "ArgMax" else min(row)
            hits = [i for i, v in enumerate(row) if v == best]
            want_list.append(hits[-1] if attrs.get("select_last_index") else hits[0])
        assert out.reshape(-1).tolist() == want_list
        assert np.array_equal(out.reshape(-1), np.asarray(_float_ref(model, x)).reshape(-1)) or (
            precision == "int8"  # quantization may tie two nearly equal floats
        )
        return
    axes = op.axes(3)
    moved = np.moveaxis(q, axes, range(len(axes))).reshape(
        int(np.prod([shape[a] for a in axes])), -1
    )
    cols = moved.T.tolist()
    if op_type == "ReduceMean":
        want_list = [ref.rdiv(sum(c), len(c)) for c in cols]
    elif op_type == "ReduceMax":
        want_list = [max(c) for c in cols]
    elif op_type == "ReduceMin":
        want_list = [min(c) for c in cols]
    else:
        p = op.params()
        want_list = [
            ref.sat(ref.rescale(sum(c), int(p["mult"][0]), int(p["shift"][0])), ex.qmax)
            for c in cols
        ]
    assert out.reshape(-1).tolist() == want_list
    fl = _float_ref(model, x)
    got = ex.run(x)["y"]
    assert got.shape == fl.shape and (keep or got.ndim < 3)
    s_in = float(ex.infos["x0"].scale or 0)
    n = len(cols[0])
    bound = s_in * (n if op_type == "ReduceSum" else 1) + float(ex.infos["y"].scale or 0)
    assert float(np.max(np.abs(got - fl))) <= bound


# -- comparisons and Where ---------------------------------------------------------------------


def _cmp_where_model(cmp: str) -> onnx.ModelProto:
    nodes = [
        helper.make_node(cmp, ["x0", "x1"], ["c"], name="cmp"),
        helper.make_node("Where", ["c", "x0", "x1"], ["y"], name="where"),
        helper.make_node("Cast", ["c"], ["ci"], name="cast", to=TensorProto.INT64),
    ]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        nodes,
        "cmp-where",
        [vi("x0", TensorProto.FLOAT, [3, 4]), vi("x1", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [3, 4]), vi("ci", TensorProto.INT64, [3, 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("cmp", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons_and_where(precision: str, cmp: str) -> None:
    model = _cmp_where_model(cmp)
    rng = np.random.default_rng(11)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = (rng.standard_normal(4) * 3).astype(np.float32)
    a[0, :2] = b[:2]  # float ties: decided on the integers (q_a · W_a against q_b · W_b)
    x = {"x0": a, "x1": b}
    ex = FixedExecutor(model.SerializeToString(), precision=precision, calibration=[x])  # type: ignore[arg-type]
    ints = ex.run_integers(x)
    qa, qb = ints[0].astype(np.int64), ints[1].astype(np.int64)
    op: Any = ex.ops[0]
    wa, wb = op.w
    sa, sb = ex.infos["x0"].scale, ex.infos["x1"].scale
    assert (sa, sb) != (None, None)
    smax = max(float(sa or 0), float(sb or 0))
    assert [wa, wb] == [ref.rha(Fraction(s) / (Fraction(smax) / 2**30)) for s in (sa, sb)]
    fn = {"Equal": "__eq__", "Less": "__lt__", "Greater": "__gt__"}
    fn.update({"LessOrEqual": "__le__", "GreaterOrEqual": "__ge__"})
    want_c = [
        [int(getattr(int(qa[i, j]) * wa, fn[cmp])(int(qb[j]) * wb)) for j in range(4)]
        for i in range(3)
    ]
    assert ints[2].tolist() == want_c
    w_op: Any = ex.ops[1]
    moved = [
        [ref.rescale(int(v), int(rs.mult.reshape(-1)[0]), rs.shift) for v in row]
        for row, rs in ((qa.reshape(-1), w_op.rescales[0]), (np.tile(qb, 3), w_op.rescales[1]))
    ]
    want_y = [moved[0][k] if want_c[k // 4][k % 4] else moved[1][k] for k in range(12)]
    assert ints[3].reshape(-1).tolist() == want_y
    for i in range(3):
        _check_elements(ex, x, i)
    # float agreement wherever the two values are more than a quantization step apart
    fl = ReferenceEvaluator(model).run(None, x)
    got = ex.run(x)
    clear = np.abs(a - b[None, :]) > 2 * smax
    assert np.array_equal(got["ci"][clear], fl[1][clear])
    assert float(np.max(np.abs(got["y"] - fl[0]))) <= smax


def test_where_and_comparisons_refuse_mixed_kinds() -> None:
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Where", ["x0", "x1", "x1"], ["y"], name="w")]
    g = helper.make_graph(
        nodes,
        "w",
        [vi("x0", TensorProto.FLOAT, [2]), vi("x1", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    with pytest.raises(UnsupportedError, match=r"Where node w: the condition must be"):
        FixedExecutor(m.SerializeToString())


# -- Resize / Upsample (nearest) ---------------------------------------------------------------

_EMPTY = np.array([], np.float32)


@pytest.mark.parametrize(
    ("op_type", "consts", "attrs", "opset"),
    [
        ("Resize", {1: _EMPTY, 2: np.array([1, 1, 2, 2], np.float32)}, {}, 13),
        (
            "Resize",
            {1: _EMPTY, 2: np.array([1, 1, 1.5, 0.6], np.float32)},
            {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
            13,
        ),
        (
            "Resize",
            {1: _EMPTY, 2: _EMPTY, 3: np.array([1, 2, 7, 3], np.int64)},
            {
                "coordinate_transformation_mode": "align_corners",
                "nearest_mode": "round_prefer_ceil",
            },
            13,
        ),
        (
            "Resize",
            {1: _EMPTY, 2: np.array([1, 1, 3, 1.75], np.float32)},
            {"coordinate_transformation_mode": "pytorch_half_pixel", "nearest_mode": "ceil"},
            19,
        ),
        (
            "Resize",
            {1: _EMPTY, 2: np.array([1, 1, 2.5, 2], np.float32)},
            {"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
            13,
        ),
        ("Upsample", {1: np.array([1, 1, 2, 3], np.float32)}, {"mode": "nearest"}, 9),
    ],
)
def test_resize_nearest_copies_the_elements_float_picks(
    op_type: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], opset: int
) -> None:
    shape = (1, 2, 4, 5)
    model = graphs.single_op(op_type, [shape], consts=consts, opset=opset, **attrs)
    x = {"x0": np.random.default_rng(13).standard_normal(shape).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int8", calibration=[x])
    _check_elements(ex, x)
    # nearest resizing only copies: on the dequantized input, the float reference picks the
    # very same elements, so the outputs agree exactly
    s = float(ex.infos["x0"].scale or 0)
    deq = {"x0": (ex.run_integers(x)[0].astype(np.float64) * s).astype(np.float32)}
    got = ex.run(x)["y"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = [sess.run(None, deq)[0]]
    if attrs.get("coordinate_transformation_mode") != "tf_half_pixel_for_nn":
        refs.append(_float_ref(model, deq))  # onnx.reference lacks this (deprecated) mode
    for want in refs:
        assert got.shape == want.shape
        assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["cubic"])  # linear: test_fixed_resize_linear.py
def test_resize_modes_outside_the_definition_are_refused(mode: str) -> None:
    consts = {1: _EMPTY, 2: np.array([1, 1, 2, 2], np.float32)}
    model = graphs.single_op("Resize", [(1, 1, 2, 2)], consts=consts, opset=13, mode=mode)
    with pytest.raises(UnsupportedError, match=rf"Resize node .*mode={mode} is not supported"):
        FixedExecutor(model.SerializeToString())
