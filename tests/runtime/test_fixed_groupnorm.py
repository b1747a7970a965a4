"""InstanceNormalization and GroupNormalization (`_groupnorm`).

Tolerance: onnxruntime on the executor's own dequantized input; the fixed output is within one
output step (half a step of rounding plus the Q16 normalized value and 21-bit γ, far below a
step) plus 1e-5 of the output range (float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, node_io

C = 6
CASES: list[tuple[str, int, dict[str, Any], int]] = [
    ("InstanceNormalization", C, {}, 13),
    ("GroupNormalization", 3, {"num_groups": 3}, 18),  # γ, β per group
    ("GroupNormalization", C, {"num_groups": 2}, 21),  # γ, β per channel
    ("GroupNormalization", C, {"num_groups": 1, "epsilon": 0.5}, 21),
]


def _case(op: str, n_g: int, attrs: dict[str, Any], opset: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    consts = {
        1: rng.uniform(0.5, 1.5, n_g).astype(np.float32),
        2: (rng.standard_normal(n_g) * 0.2).astype(np.float32),
    }
    model = graphs.single_op(op, [(2, C, 5, 4)], consts=consts, opset=opset, **attrs)
    x = {"x0": (rng.standard_normal((2, C, 5, 4)) * 2 + 0.5).astype(np.float32)}
    return model.SerializeToString(), x


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize(("op", "n_g", "attrs", "opset"), CASES)
def test_matches_onnxruntime(
    op: str, n_g: int, attrs: dict[str, Any], opset: int, precision: str
) -> None:
    model, x = _case(op, n_g, attrs, opset)
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    s_in, s_out = ex.infos["x0"].scale, ex.infos["y"].scale
    assert s_in is not None and s_out is not None
    xhat = {"x0": (ex.run_integers(x)[0].astype(np.float64) * s_in).astype(np.float32)}
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, xhat)[0]
    got = ex.run(x)["y"].astype(np.float64)
    assert float(np.max(np.abs(got - want))) <= s_out + 1e-5 * float(np.max(np.abs(want)))


@pytest.mark.parametrize(("op", "n_g", "attrs", "opset"), CASES)
def test_deterministic_and_element_agrees(
    op: str, n_g: int, attrs: dict[str, Any], opset: int
) -> None:
    model, x = _case(op, n_g, attrs, opset)
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    again = FixedExecutor(model, precision="int8", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    assert ex.ops[0].out_shape(src) == out.shape
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


def test_bad_groupings_are_refused() -> None:
    model, x = _case("GroupNormalization", 4, {"num_groups": 4}, 18)
    with pytest.raises(InvalidInputError, match="GroupNormalization node y: 6 channels"):
        FixedExecutor(model, precision="int8", calibration=[x])
    model, x = _case("GroupNormalization", 3, {"num_groups": 2}, 18)
    with pytest.raises(UnsupportedError, match="GroupNormalization node y: scale has 3 values"):
        FixedExecutor(model, precision="int8", calibration=[x])
