"""LSTM and GRU (`_recurrent`): the integer definitions, agreement with onnx.reference, disputes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import Fault, FixedExecutor, QuantPlan
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.verify.dispute import Claim, DeviceResponder, DisputeGame, HonestChallenger, play
from tests.runtime.conftest import FullSource, node_io

S, B, IN, H = 5, 2, 3, 4
RNG = np.random.default_rng(1)
W = (RNG.standard_normal((1, 4 * H, IN)) * 0.5).astype(np.float32)
R = (RNG.standard_normal((1, 4 * H, H)) * 0.5).astype(np.float32)
BIAS = (RNG.standard_normal((1, 8 * H)) * 0.3).astype(np.float32)
H0 = (RNG.standard_normal((1, B, H)) * 0.5).astype(np.float32)
C0 = (RNG.standard_normal((1, B, H)) * 0.5).astype(np.float32)
X = {"X": RNG.standard_normal((S, B, IN)).astype(np.float32)}


def _model(initial: bool = False, inputs: list[str] | None = None, **attrs: Any) -> bytes:
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    inits += [numpy_helper.from_array(BIAS, "B")]
    ins = inputs or (["X", "W", "R", "B", "", "h0", "c0"] if initial else ["X", "W", "R", "B"])
    if initial:
        inits += [numpy_helper.from_array(H0, "h0"), numpy_helper.from_array(C0, "c0")]
    node = helper.make_node("LSTM", ins, ["Y", "Yh"], "lstm", hidden_size=H, **attrs)
    return _wrap(node, inits)


def _wrap(node: Any, inits: list[Any]) -> bytes:
    """A model of `node` whose Y is an output and whose Y_h feeds a Relu (so both are read)."""
    relu = helper.make_node("Relu", ["Yh"], ["r"], "relu")
    graph = helper.make_graph(
        [node, relu],
        node.name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, IN])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "r")],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m.SerializeToString()


def _rs(x: int, mult: int, shift: int) -> int:
    """round_half_away(x · mult / 2**shift) in Python integers."""
    num = abs(x) * mult
    q = (num + (1 << (shift - 1))) >> shift if shift > 0 else num << -shift
    return q if x >= 0 else -q


def _shift(x: int, k: int) -> int:
    q = (abs(x) + (1 << (k - 1))) >> k
    return q if x >= 0 else -q


def _sat(x: int, qmax: int) -> int:
    return max(-qmax, min(qmax, x))


def _sig(g: int) -> int:
    return int(nl.sigmoid_q30(np.array([g], np.int64))[0])


def _tanh(g: int) -> int:
    return int(nl.tanh_q30(np.array([g], np.int64))[0])


def _reference(ex: FixedExecutor, x: np.ndarray, h0: Any, c0: Any) -> tuple[list, list]:
    """The docs/fixed.md definition, element by element in Python integers."""
    op = ex.ops[0]
    p = {k: v.tolist() for k, v in op.params().items()}
    qmax, bits = ex.qmax, 7 if ex.qmax == 127 else 15
    xm, xs = p["x_mult"], int(p["x_shift"][0])
    hm, hs = p["h_mult"], int(p["h_shift"][0])

    def m(v: list, r: int) -> int:
        return int(v[r] if len(v) > 1 else v[0])

    h = [[0] * H for _ in range(B)]
    c = [[0] * H for _ in range(B)]
    if h0 is not None:
        h = [
            [
                _sat(_rs(int(h0[b][j]), m(p["h0_mult"], 0), int(p["h0_shift"][0])), qmax)
                for j in range(H)
            ]
            for b in range(B)
        ]
        c = [
            [_rs(int(c0[b][j]), m(p["c0_mult"], 0), int(p["c0_shift"][0])) for j in range(H)]
            for b in range(B)
        ]
    ys = []
    for t in range(S):
        new_h = []
        for b in range(B):
            g = []
            for r in range(4 * H):
                sx = sum(int(x[t][b][k]) * p["w"][r][k] for k in range(IN))
                sh = sum(h[b][k] * p["r"][r][k] for k in range(H))
                g.append(_rs(sx, m(xm, r), xs) + _rs(sh, m(hm, r), hs) + p["b16"][r])
            row = []
            for j in range(H):
                i, o, f = _sig(g[j]), _sig(g[H + j]), _sig(g[2 * H + j])
                ct = _shift(_tanh(g[3 * H + j]), 14)
                c[b][j] = _shift(f * c[b][j] + i * ct, 30)
                row.append(_sat(_shift(_shift(o * _tanh(c[b][j]), 30), 30 - bits), qmax))
            new_h.append(row)
        h = new_h
        ys.append(h)
    return ys, h


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("initial", [False, True])
def test_lstm_is_the_integer_definition(precision: str, initial: bool) -> None:
    ex = FixedExecutor(_model(initial), precision=precision, calibration=[X])  # type: ignore[arg-type]
    ints = ex.run_integers(X)
    entry = ex.entry_index("lstm")
    xq = ints[0].astype(np.int64).tolist()
    h0 = c0 = None
    if initial:
        p = ex.ops[0].params()
        h0, c0 = p["in5"].reshape(B, H).tolist(), p["in6"].reshape(B, H).tolist()
    ys, yh = _reference(ex, xq, h0, c0)
    assert ints[entry].reshape(S, B, H).tolist() == ys
    assert ints[ex.entry_index("lstm", 1)].reshape(B, H).tolist() == yh
    ins, _ = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    for k in (0, 1):
        out = ints[ex.entry_index("lstm", k)]
        assert ex.ops[0].out_shape_of(k, src) == out.shape
        for j in range(0, out.size, 7):
            assert ex.ops[0].element_of(k, j, out.shape, src) == int(out.reshape(-1)[j])


@pytest.mark.parametrize(("precision", "bound"), [("int8", 1.5 * 2**-7), ("int16", 2**-12)])
@pytest.mark.parametrize("initial", [False, True])
def test_lstm_tracks_the_reference_evaluator(precision: str, bound: float, initial: bool) -> None:
    """Within 1.5 output steps at int8 (x and W rounding carried through 5 steps), 2**-12 at
    int16 (the tables are exact to 2**-19; W rounding at int16 dominates)."""
    model = _model(initial)
    ex = FixedExecutor(model, precision=precision, calibration=[X])  # type: ignore[arg-type]
    got = ex.run(X)
    y, yh = ReferenceEvaluator(model).run(None, X)[:2]
    assert float(np.max(np.abs(got["Y"] - y))) <= bound
    assert float(np.max(np.abs(got["r"] - np.maximum(yh, 0)))) <= bound


def test_a_lie_in_an_lstm_is_convicted() -> None:
    model = _model(True)
    ex = FixedExecutor(model, precision="int16", calibration=[X])
    _, honest = ex.run_traced(X)
    verifier = FixedExecutor(model, precision="int16", plan=QuantPlan.from_json(ex.plan.to_json()))
    _, again = verifier.run_traced(X)
    assert again.root == honest.root
    _, lying = ex.run_traced(X, fault=Fault("lstm", 11, 5))
    w = verifier.weight_commitments()
    game = DisputeGame(verifier, Claim(lying.root, w.root, w.size), inputs=X)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(again))
    assert verdict.device_convicted, verdict
    assert (verdict.entry, verdict.element) == (ex.entry_index("lstm"), 11)


@pytest.mark.parametrize(
    ("attrs", "inputs", "what"),
    [
        ({"direction": "bidirectional"}, None, "direction"),
        ({"direction": "reverse"}, None, "direction"),
        ({"clip": 1.0}, None, "clip"),
        ({"activations": ["Relu", "Tanh", "Tanh"]}, None, "activations"),
        ({"input_forget": 1}, None, "input_forget"),
        ({"layout": 1}, None, "layout"),
        ({}, ["X", "W", "R", "B", "X"], "sequence_lens"),
        ({}, ["X", "W", "R", "B", "", "", "", "W"], "peepholes"),
    ],
)
def test_unsupported_lstm_features_name_the_node(
    attrs: dict[str, Any], inputs: list[str] | None, what: str
) -> None:
    with pytest.raises(UnsupportedError) as exc:
        FixedExecutor(_model(inputs=inputs, **attrs), precision="int8", calibration=[X])
    msg = str(exc.value)
    assert "\n" not in msg and "lstm" in msg and what in msg, msg


def test_reading_y_c_is_refused() -> None:
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y", "", "Yc"], "lstm", hidden_size=H)
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, IN])],
        [helper.make_tensor_value_info("Yc", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    with pytest.raises(UnsupportedError, match="lstm: only the first output"):
        FixedExecutor(m.SerializeToString(), precision="int8", calibration=[X])


# -- GRU ------------------------------------------------------------------------------------

GW = (RNG.standard_normal((1, 3 * H, IN)) * 0.5).astype(np.float32)
GR = (RNG.standard_normal((1, 3 * H, H)) * 0.5).astype(np.float32)
GB = (RNG.standard_normal((1, 6 * H)) * 0.3).astype(np.float32)


def _gru(lbr: int = 0, initial: bool = False, **attrs: Any) -> bytes:
    inits = [numpy_helper.from_array(a, n) for a, n in ((GW, "W"), (GR, "R"), (GB, "B"))]
    ins = ["X", "W", "R", "B", "", "h0"] if initial else ["X", "W", "R", "B"]
    if initial:
        inits.append(numpy_helper.from_array(H0, "h0"))
    node = helper.make_node(
        "GRU", ins, ["Y", "Yh"], "gru", hidden_size=H, linear_before_reset=lbr, **attrs
    )
    return _wrap(node, inits)


def _gru_reference(ex: FixedExecutor, x: list, h0: Any, lbr: int) -> list:
    op = ex.ops[0]
    p = {k: v.tolist() for k, v in op.params().items()}
    qmax, bits = ex.qmax, 7 if ex.qmax == 127 else 15
    xm, xs = p["x_mult"], int(p["x_shift"][0])
    hm, hs = p["h_mult"], int(p["h_shift"][0])
    h = [[0] * H for _ in range(B)]
    if h0 is not None:
        mult, shift = int(p["h0_mult"][0]), int(p["h0_shift"][0])
        h = [[_sat(_rs(int(h0[b][j]), mult, shift), qmax) for j in range(H)] for b in range(B)]
    ys = []
    for t in range(S):
        new_h = []
        for b in range(B):

            def gx(r: int, b: int = b, t: int = t) -> int:
                return _rs(sum(int(x[t][b][k]) * p["w"][r][k] for k in range(IN)), xm[r], xs)

            def gh(r: int, hv: list[int]) -> int:
                return _rs(sum(hv[k] * p["r"][r][k] for k in range(H)), hm[r], hs)

            z = [_sig(gx(j) + gh(j, h[b]) + p["b16"][j]) for j in range(H)]
            rr = [_sig(gx(H + j) + gh(H + j, h[b]) + p["b16"][H + j]) for j in range(H)]
            row = []
            for j in range(H):
                c = 2 * H + j
                if lbr:
                    cand = gx(c) + p["wb16"][c] + _shift(rr[j] * (gh(c, h[b]) + p["rb16"][c]), 30)
                else:
                    rh = [_sat(_shift(rr[k] * h[b][k], 30), qmax) for k in range(H)]
                    cand = gx(c) + gh(c, rh) + p["wb16"][c] + p["rb16"][c]
                ht = _shift(_tanh(cand), 30 - bits)
                row.append(_sat(_shift(((1 << 30) - z[j]) * ht + z[j] * h[b][j], 30), qmax))
            new_h.append(row)
        h = new_h
        ys.append(h)
    return ys


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(("lbr", "initial"), [(0, False), (0, True), (1, False), (1, True)])
def test_gru_is_the_integer_definition(precision: str, lbr: int, initial: bool) -> None:
    ex = FixedExecutor(_gru(lbr, initial), precision=precision, calibration=[X])  # type: ignore[arg-type]
    ints = ex.run_integers(X)
    h0 = ex.ops[0].params()["in5"].reshape(B, H).tolist() if initial else None
    ys = _gru_reference(ex, ints[0].astype(np.int64).tolist(), h0, lbr)
    assert ints[ex.entry_index("gru")].reshape(S, B, H).tolist() == ys
    assert ints[ex.entry_index("gru", 1)].reshape(B, H).tolist() == ys[-1]
    ins, _ = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    out = ints[ex.entry_index("gru")]
    for j in range(0, out.size, 5):
        assert ex.ops[0].element_of(0, j, out.shape, src) == int(out.reshape(-1)[j])


@pytest.mark.parametrize(("precision", "bound"), [("int8", 2.5 * 2**-7), ("int16", 2**-12)])
@pytest.mark.parametrize(("lbr", "initial"), [(0, False), (0, True), (1, False), (1, True)])
def test_gru_tracks_the_reference_evaluator(
    precision: str, bound: float, lbr: int, initial: bool
) -> None:
    """Within 2.5 output steps at int8 (measured ≤ 0.016 = 2 steps), 2**-12 at int16
    (measured ≤ 3.9e-5)."""
    model = _gru(lbr, initial)
    ex = FixedExecutor(model, precision=precision, calibration=[X])  # type: ignore[arg-type]
    got = ex.run(X)
    y, yh = ReferenceEvaluator(model).run(None, X)[:2]
    assert float(np.max(np.abs(got["Y"] - y))) <= bound
    assert float(np.max(np.abs(got["r"] - np.maximum(yh, 0)))) <= bound


def test_a_lie_in_a_gru_is_convicted() -> None:
    model = _gru(1, True)
    ex = FixedExecutor(model, precision="int8", calibration=[X])
    _, honest = ex.run_traced(X)
    verifier = FixedExecutor(model, precision="int8", plan=QuantPlan.from_json(ex.plan.to_json()))
    _, again = verifier.run_traced(X)
    assert again.root == honest.root
    _, lying = ex.run_traced(X, fault=Fault("gru", 3, -2, output=1))
    w = verifier.weight_commitments()
    game = DisputeGame(verifier, Claim(lying.root, w.root, w.size), inputs=X)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(again))
    assert verdict.device_convicted, verdict
    assert (verdict.entry, verdict.element) == (ex.entry_index("gru", 1), 3)


@pytest.mark.parametrize(
    ("attrs", "what"),
    [
        ({"direction": "bidirectional"}, "direction"),
        ({"clip": 2.0}, "clip"),
        ({"activations": ["Sigmoid", "Relu"]}, "activations"),
        ({"layout": 1}, "layout"),
    ],
)
def test_unsupported_gru_features_name_the_node(attrs: dict[str, Any], what: str) -> None:
    with pytest.raises(UnsupportedError) as exc:
        FixedExecutor(_gru(**attrs), precision="int8", calibration=[X])
    msg = str(exc.value)
    assert "\n" not in msg and "gru" in msg and what in msg, msg


def test_a_computed_initial_state_is_read_like_any_activation() -> None:
    """initial_h / initial_c as graph inputs (not constants): rescaled from their own scales."""
    node = helper.make_node(
        "LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Yh"], "lstm", hidden_size=H
    )
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, IN])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B, H]) for n in ("h0", "c0")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Yh")],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (BIAS, "B"))],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    model = m.SerializeToString()
    feeds = {**X, "h0": H0, "c0": C0}
    ex = FixedExecutor(model, precision="int16", calibration=[feeds])
    ints = ex.run_integers(feeds)
    k = ex.entry_index("lstm")
    ins, _ = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    out = ints[k]
    for j in range(0, out.size, 3):
        assert ex.ops[0].element_of(0, j, out.shape, src) == int(out.reshape(-1)[j])
    got = ex.run(feeds)
    y, yh = ReferenceEvaluator(model).run(None, feeds)[:2]
    assert float(np.max(np.abs(got["Y"] - y))) <= 2**-12
    assert float(np.max(np.abs(got["Yh"] - yh))) <= 2**-12
