"""Fixtures for the verify tests.

ZK (EZKL) setups take seconds to minutes, so they are shared: every ZK test module sets up in
one session-wide home, where the second `zk_setup` of a model finds the cached artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ezkl
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.verify.zk import UnsafeLocalSrs, ZkArtifacts, ZkProof, zk_prove, zk_setup
from edgetrust.zoo import digits_mlp_onnx, load_digits_split


@dataclass(frozen=True)
class Digits:
    model: bytes
    calibration: np.ndarray[Any, Any]
    test_x: np.ndarray[Any, Any]


def tie_classifier_onnx() -> bytes:
    """A 10-class 'classifier' whose logits are its input (Gemm with the identity matrix).

    Two inputs closer than the fixed-point step (2^-7) tie after quantization, so the
    circuit's top-1 class can differ from onnxruntime's: the accuracy guard must refuse.
    """
    w = np.eye(10, dtype=np.float32)
    b = np.zeros(10, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"], "gemm")],
        "tie-classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="session")
def zk_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "zk-shared-home"


@pytest.fixture(scope="session")
def digits() -> Digits:
    model, _ = digits_mlp_onnx()
    _, x_test, _, _ = load_digits_split()
    return Digits(model, x_test[:32], x_test[32:])


def _no_download(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("ezkl.get_srs downloads the SRS; edgetrust must never call it")


@pytest.fixture(scope="session")
def zk_artifacts(zk_home: Path, digits: Digits) -> ZkArtifacts:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ezkl, "get_srs", _no_download)
        return zk_setup(
            digits.model, srs=UnsafeLocalSrs(), home=zk_home, calibration=digits.calibration
        )


@pytest.fixture(scope="session")
def zk_proof(zk_artifacts: ZkArtifacts, digits: Digits) -> ZkProof:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ezkl, "get_srs", _no_download)
        return zk_prove(zk_artifacts, digits.test_x[0])


@pytest.fixture(scope="session")
def tie_artifacts(zk_home: Path) -> ZkArtifacts:
    return zk_setup(tie_classifier_onnx(), srs=UnsafeLocalSrs(), home=zk_home, accuracy_samples=2)
