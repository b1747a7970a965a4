"""Fixtures for the runtime tests: small models, calibrated executors, an in-memory element source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgetrust.runtime.fixed import FixedExecutor, Op
from edgetrust.zoo import digits_mlp_onnx, load_digits_split
from tests.runtime import graphs


class FullSource:
    """An ElementSource over whole arrays (what the referee reads through openings)."""

    def __init__(self, op: Op, inputs: list[npt.NDArray[Any] | None]) -> None:
        self.inputs = inputs
        self.params = op.params()
        self.reads = 0

    def input_shape(self, k: int) -> tuple[int, ...]:
        v = self.inputs[k]
        assert v is not None
        return tuple(v.shape)

    def read_input(self, k: int, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        v = self.inputs[k]
        assert v is not None
        self.reads += int(np.size(flat))
        return np.asarray(v, np.int64).reshape(-1)[flat]

    def param_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.params[name].shape)

    def read_param(self, name: str, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        self.reads += int(np.size(flat))
        return np.asarray(self.params[name], np.int64).reshape(-1)[flat]


def node_io(
    ex: FixedExecutor, ints: list[np.ndarray], index: int
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Inputs (activations only; None for constants and absent) and output of node `index`."""
    by_tensor = {e.tensor: v for e, v in zip(ex.entries, ints, strict=True)}
    node = ex.nodes[index]
    ins: list[np.ndarray | None] = []
    for k, name in enumerate(node.input):
        ins.append(
            None if not name or ex.ops[index].is_const(k) else by_tensor[name].astype(np.int64)
        )
    return ins, by_tensor[node.output[0]].astype(np.int64)


@pytest.fixture(scope="session")
def digits() -> dict[str, Any]:
    onnx_bytes, acc = digits_mlp_onnx()
    x_tr, x_te, _, y_te = load_digits_split()
    return {"onnx": onnx_bytes, "acc": acc, "x_train": x_tr, "x_test": x_te, "y_test": y_te}


@pytest.fixture(scope="session")
def digits_int8(digits: dict[str, Any]) -> FixedExecutor:
    return FixedExecutor(
        digits["onnx"], precision="int8", calibration=[{"input": digits["x_train"][:256]}]
    )


@pytest.fixture(scope="session")
def cnn_models() -> dict[str, bytes]:
    return {
        "resnet": graphs.resnet_style(size=32, width=8).SerializeToString(),
        "squeezenet": graphs.squeezenet_style(size=32).SerializeToString(),
        "sink": graphs.kitchen_sink().SerializeToString(),
    }


def cnn_input(seed: int, batch: int = 2, size: int = 32) -> dict[str, np.ndarray]:
    return {
        "input": np.random.default_rng(seed)
        .standard_normal((batch, 3, size, size))
        .astype(np.float32)
    }


def sink_input(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input": rng.standard_normal((2, 4, 6)).astype(np.float32),
        "ids": rng.integers(0, 10, 2),
    }


@pytest.fixture(scope="module", params=["compiled", "numpy"])
def both_kernel_paths(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module's every test twice: through the numba kernels and through the pure-numpy
    twins (``pytestmark = pytest.mark.usefixtures("both_kernel_paths")``)."""
    from edgetrust.runtime.fixed import _kernels

    old = _kernels.ENABLED
    _kernels.ENABLED = request.param == "compiled"
    try:
        yield
    finally:
        _kernels.ENABLED = old


def ort_u8s8_exact() -> bool:
    """Whether onnxruntime's uint8 × int8 kernels are exact on this CPU. On x86 without VNNI,
    MLAS multiplies u8·s8 with vpmaddubsw, which saturates each pair's sum to int16 (here,
    an AMD EPYC with AVX2 only: MatMulInteger off by thousands, QLinearConv by 20 steps), so
    a test compares with onnxruntime only where it is exact, and with onnx's reference
    evaluator (exact integer arithmetic) everywhere."""
    import platform
    from pathlib import Path

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags
