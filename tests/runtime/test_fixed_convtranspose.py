"""ConvTranspose (`_convt`): the scatter definition bit for bit, and onnxruntime within a bound.

Tolerance against onnxruntime on the float input: 3e-2 of the output range at int8, 3e-4 at
int16 (input, weight and output quantization; the same bound class as Conv's tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime import fixed_ref as ref
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, node_io

CASES: list[tuple[int, int, int, dict[str, Any]]] = [
    (4, 3, 1, {}),
    (4, 3, 1, {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 0]}),
    (6, 2, 3, {"strides": [2, 1], "dilations": [1, 2]}),
    (300, 2, 1, {"strides": [2, 2]}),
]


def _case(cin: int, ocg: int, group: int, attrs: dict[str, Any], seed: int = 0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cin, ocg, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(ocg * group) * 0.1).astype(np.float32)
    model = graphs.single_op(
        "ConvTranspose", [(2, cin, 4, 5)], consts={1: w, 2: b}, group=group, **attrs
    ).SerializeToString()
    return model, {"x0": rng.standard_normal((2, cin, 4, 5)).astype(np.float32)}


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(("cin", "ocg", "group", "attrs"), CASES)
def test_matches_onnxruntime(
    cin: int, ocg: int, group: int, attrs: dict[str, Any], precision: str
) -> None:
    model, x = _case(cin, ocg, group, attrs)
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ex.run(x)["y"]
    assert got.shape == want.shape
    bound = 3e-2 if precision == "int8" else 3e-4
    assert float(np.max(np.abs(got - want))) <= bound * float(np.max(np.abs(want)))


def _scatter_ref(op: Any, q: np.ndarray, p: dict[str, np.ndarray]) -> list[int]:
    """The definition in Python integers: scatter every product, add the bias, requantize."""
    n, cin, h, w = q.shape
    (sh, sw), (dh, dw), (pt, pl) = op.strides, op.dilations, op.pads[:2]
    oh, ow = op.geometry(h, w)
    wr = p["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    acc = {
        (a, o, y, xx): int(p["b"][o])
        for a in range(n)
        for o in range(op.oc)
        for y in range(oh)
        for xx in range(ow)
    }
    for a in range(n):
        for c in range(cin):
            g, ic = divmod(c, op.cg)
            for iy in range(h):
                for ix in range(w):
                    for o in range(g * op.ocg, (g + 1) * op.ocg):
                        for i in range(op.kh):
                            for j in range(op.kw):
                                key = (a, o, iy * sh - pt + i * dh, ix * sw - pl + j * dw)
                                if key in acc:
                                    acc[key] += int(q[a, c, iy, ix]) * int(wr[o, ic, i, j])
    shift = int(p["shift"][0])
    return [
        ref.sat(ref.rescale(v, int(p["mult"][k[1]]), shift), op.qmax)
        for k, v in sorted(acc.items())
    ]


@pytest.mark.parametrize(("cin", "ocg", "group", "attrs"), CASES[:3])
def test_bits_match_the_scatter_definition_and_the_referee(
    cin: int, ocg: int, group: int, attrs: dict[str, Any]
) -> None:
    model, x = _case(cin, ocg, group, attrs, seed=1)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    ins, out = node_io(ex, ex.run_integers(x), 0)
    op: Any = ex.ops[0]
    assert ins[0] is not None
    assert out.reshape(-1).tolist() == _scatter_ref(op, ins[0], op.params())
    src = FullSource(op, ins)
    assert op.out_shape(src) == out.shape
    for j in range(0, out.size, 3):
        assert op.element(j, out.shape, src) == int(out.reshape(-1)[j])
    again = FixedExecutor(model, precision="int8", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root


def test_int8_above_one_exact_chunk() -> None:
    """1100 input channels > 1040 terms: two float32 chunks per tap, summed in int64."""
    model, x = _case(1100, 1, 1, {}, seed=2)
    x["x0"] = np.abs(x["x0"]) + 10  # every partial sum at its maximum
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    for j in range(0, out.size, 7):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


@pytest.mark.parametrize(
    ("attrs", "match"),
    [({"auto_pad": "SAME_UPPER"}, "auto_pad"), ({"output_shape": [9, 9]}, "output_shape")],
)
def test_refusals_name_the_node(attrs: dict[str, Any], match: str) -> None:
    model, x = _case(4, 3, 1, attrs)
    with pytest.raises(UnsupportedError, match=f"ConvTranspose node y: {match}"):
        FixedExecutor(model, precision="int8", calibration=[x])
