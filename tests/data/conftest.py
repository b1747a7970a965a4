"""Shared fixtures for the data protocol tests: an owner with two datasets, a researcher."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.data.jobs import DataOwner
from edgetrust.identity import Identity


def linear_onnx(n_in: int, n_out: int, *, seed: int = 0) -> bytes:
    """A Gemm model N×n_in -> N×n_out (runs on the fixed-point executor)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(n_out, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_people(path: Path, n: int = 60, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["age,score,group"]
    for i in range(n):
        lines.append(f"{int(rng.integers(20, 70))},{rng.uniform(0, 10):.3f},{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_features(path: Path, n: int = 40, width: int = 16) -> Path:
    buf = io.BytesIO()
    x = np.random.default_rng(1).normal(size=(n, width)).astype(np.float32)
    np.savez(buf, x=x)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def researcher() -> Identity:
    return Identity.from_seed(b"\x07" * 32, "researcher")


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[DataOwner]:
    o = DataOwner(tmp_path / "owner", identity="owner")
    yield o
    o.close()
