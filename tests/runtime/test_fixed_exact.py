"""Pow, Sqrt, Elu, Floor, Ceil, Gelu (`_exact`): per-integer definitions.

Tolerance, stated once: onnxruntime run on the executor's own dequantized input (q · s) is the
real function; the fixed output is that value rounded to the output grid, so it must lie within
half an output step (plus float32 error, 1e-5 of the largest output). Input quantization error
is thereby excluded: it belongs to the plan, not to the op.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, node_io

CASES: list[tuple[str, dict[int, np.ndarray], dict[str, Any], int]] = [
    ("Pow", {1: np.array(3.0, np.float32)}, {}, 13),
    ("Pow", {1: np.array(2.0, np.float32)}, {}, 13),
    ("Pow", {1: np.array(0.0, np.float32)}, {}, 13),
    ("Sqrt", {}, {}, 13),
    ("Elu", {}, {"alpha": 0.7}, 13),
    ("Floor", {}, {}, 13),
    ("Ceil", {}, {}, 13),
    ("Gelu", {}, {}, 20),
    ("Gelu", {}, {"approximate": "tanh"}, 20),
]
SHAPE = (2, 3, 6, 6)


def _case(op: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], opset: int, seed: int):
    model = graphs.single_op(op, [SHAPE], consts=consts, opset=opset, **attrs).SerializeToString()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE) * (0.9 if op in ("Floor", "Ceil") else 2.0)
    if op == "Sqrt":
        x = np.abs(x)
    return model, {"x0": x.astype(np.float32)}


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(("op", "consts", "attrs", "opset"), CASES)
def test_matches_onnxruntime_on_the_dequantized_input(
    op: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], opset: int, precision: str
) -> None:
    model, x = _case(op, consts, attrs, opset, 0)
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    q = ex.run_integers(x)[0].astype(np.float64)
    s_in, s_out = ex.infos["x0"].scale, ex.infos["y"].scale
    assert s_in is not None and s_out is not None
    xhat = {"x0": (q * s_in).astype(np.float32)}
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, xhat)[0]
    got = ex.run(x)["y"]
    tol = 0.5 * s_out * (1 + 1e-6) + 1e-5 * float(np.max(np.abs(want)))
    assert float(np.max(np.abs(got.astype(np.float64) - want))) <= tol


@pytest.mark.parametrize(("op", "consts", "attrs", "opset"), CASES)
def test_deterministic_and_element_agrees(
    op: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], opset: int
) -> None:
    """Same plan → same trace root whatever was seen before (lazy tables); referee = run."""
    model, x = _case(op, consts, attrs, opset, 1)
    _, other = _case(op, consts, attrs, opset, 2)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    fresh = FixedExecutor(model, precision="int8", plan=ex.plan)
    fresh.run(other)  # fills its table in another order
    _, t1 = ex.run_traced(x)
    _, t2 = fresh.run_traced(x)
    assert t1.root == t2.root
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    referee = FixedExecutor(model, precision="int8", plan=ex.plan).ops[0]
    for j in range(0, out.size, 5):
        assert referee.element(j, out.shape, src) == int(out.reshape(-1)[j])


def test_extreme_integers_use_the_definition() -> None:
    """-qmax-1 (storable in int8, never produced) and ±qmax go through the same definition."""
    model, x = _case("Pow", {1: np.array(3.0, np.float32)}, {}, 13, 0)
    op: Any = FixedExecutor(model, precision="int8", calibration=[x]).ops[0]
    q = np.array([-128, -127, 0, 127], np.int64)
    assert op.combine([q]).tolist() == [op.entry(int(v)) for v in q]
    assert op.combine([q * 3]).tolist() == [op.entry(int(v)) for v in q * 3]


@pytest.mark.parametrize(
    ("op", "consts", "attrs", "scale", "match"),
    [
        ("Pow", {1: np.array(0.5, np.float32)}, {}, 1.0, "exponent"),
        ("Pow", {1: np.array(17.0, np.float32)}, {}, 1.0, "exponent"),
        ("Floor", {}, {}, 200.0, "not be exact"),
        ("Gelu", {}, {"approximate": "erf"}, 1.0, "approximate"),
    ],
)
def test_refused_with_the_node_named(
    op: str, consts: dict[int, np.ndarray], attrs: dict[str, Any], scale: float, match: str
) -> None:
    model = graphs.single_op(
        op, [SHAPE], consts=consts, opset=20 if op == "Gelu" else 13, **attrs
    ).SerializeToString()
    x = {"x0": (np.random.default_rng(0).standard_normal(SHAPE) * scale).astype(np.float32)}
    with pytest.raises(UnsupportedError, match=f"{op} node y: .*{match}"):
        FixedExecutor(model, precision="int8", calibration=[x])


def test_pow_with_a_variable_exponent_is_refused() -> None:
    model = graphs.single_op("Pow", [SHAPE, SHAPE], opset=13).SerializeToString()
    x = {f"x{i}": np.ones(SHAPE, np.float32) for i in range(2)}
    with pytest.raises(UnsupportedError, match="Pow node y: the exponent must be a constant"):
        FixedExecutor(model, precision="int8", calibration=[x])
