"""Resize / Upsample in linear mode (`_movement.ResizeLinear`).

Tolerance: against onnxruntime on the executor's own dequantized input, half an output step
(the one rounding) plus d · max|q| · 2**-16 steps (Q16 weights, d interpolated axes) plus
1e-5 of the range (float32).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor
from tests.runtime import graphs
from tests.runtime.conftest import FullSource, node_io

SHAPE = (1, 2, 5, 6)
COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
SCALES = ([1, 1, 2, 2], [1, 1, 1.5, 0.5], [1, 1, 0.6, 3])


def _resize(coord: str, scales: list[float] | None, sizes: list[int] | None = None) -> bytes:
    consts = {1: np.array([], np.float32), 2: np.array(scales or [], np.float32)}
    if sizes is not None:
        consts[3] = np.array(sizes, np.int64)
    return graphs.single_op(
        "Resize",
        [SHAPE],
        consts=consts,
        opset=13,
        mode="linear",
        coordinate_transformation_mode=coord,
    ).SerializeToString()


def _check(model: bytes, precision: str, seed: int = 0) -> FixedExecutor:
    x = {"x0": np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)}
    ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
    q = ex.run_integers(x)[0].astype(np.float64)
    s = ex.infos["x0"].scale
    assert s is not None
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x0": (q * s).astype(np.float32)}
    )[0]
    got = ex.run(x)["y"].astype(np.float64)
    assert got.shape == want.shape
    tol = s * (0.5 + 2 * float(np.max(np.abs(q))) * 2.0**-16) + 1e-5 * float(np.max(np.abs(want)))
    assert float(np.max(np.abs(got - want))) <= tol
    return ex


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("scales", SCALES)
@pytest.mark.parametrize("coord", COORDS)
def test_matches_onnxruntime(coord: str, scales: list[float], precision: str) -> None:
    _check(_resize(coord, scales), precision)


def test_sizes_and_upsample() -> None:
    _check(_resize("half_pixel", None, [1, 2, 9, 4]), "int16")
    up = graphs.single_op(
        "Upsample", [SHAPE], consts={1: np.array([1, 1, 2, 3], np.float32)}, opset=9, mode="linear"
    ).SerializeToString()
    _check(up, "int16")


@pytest.mark.parametrize("coord", COORDS)
def test_deterministic_and_element_agrees(coord: str) -> None:
    model = _resize(coord, [1, 1, 1.5, 0.6])
    ex = _check(model, "int8", seed=3)
    x = {"x0": np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)}
    again = FixedExecutor(model, precision="int8", plan=ex.plan)
    assert ex.run_traced(x)[1].root == again.run_traced(x)[1].root
    ins, out = node_io(ex, ex.run_integers(x), 0)
    src = FullSource(ex.ops[0], ins)
    assert ex.ops[0].out_shape(src) == out.shape
    for j in range(out.size):
        assert ex.ops[0].element(j, out.shape, src) == int(out.reshape(-1)[j])


def test_refusals_name_the_node() -> None:
    x = {"x0": np.ones(SHAPE, np.float32)}
    three = _resize("half_pixel", [1, 2, 2, 2])
    with pytest.raises(UnsupportedError, match="Resize node y: linear interpolation over more"):
        FixedExecutor(three, precision="int8", calibration=[x])
    cubic = graphs.single_op(
        "Resize",
        [SHAPE],
        consts={1: np.array([], np.float32), 2: np.array([1, 1, 2, 2], np.float32)},
        opset=13,
        mode="cubic",
    ).SerializeToString()
    with pytest.raises(UnsupportedError, match="Resize node y: mode=cubic"):
        FixedExecutor(cubic, precision="int8", calibration=[x])
