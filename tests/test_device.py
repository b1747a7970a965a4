"""Device.infer: the salt is kept while the model runs, and dropped if the inference fails."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.device import Device
from edgetrust.errors import InvalidInputError
from edgetrust.models import ModelCard
from edgetrust.receipts import read_receipt
from edgetrust.runtime.onnx import OnnxExecutor
from edgetrust.zoo import digits_mlp_onnx


class _Failing(OnnxExecutor):
    def run(self, card: ModelCard, model_bytes: bytes, inputs: Mapping[str, Any]) -> Any:
        raise InvalidInputError("the model failed on this input")


@pytest.fixture(scope="module")
def model() -> bytes:
    return digits_mlp_onnx()[0]


def test_infer_keeps_exactly_the_salt_of_the_receipt(tmp_path: Path, model: bytes) -> None:
    with Device(tmp_path) as device:
        card, _ = device.registry.add_bytes(model, publisher=device.identity, name="digits")
        x = np.zeros((1, 64), np.float32)
        result = device.infer(card.digest, {"input": x}, log=False)
        salts = list((tmp_path / "openings").glob("*.salt"))
        assert len(salts) == 1
        opening = device.reveal(result.bundle)
        assert opening.commitment == read_receipt(result.bundle).input_commitment
        opening.verify({"input": x})


def test_a_failed_inference_leaves_no_salt(tmp_path: Path, model: bytes) -> None:
    with Device(tmp_path) as device:
        card, _ = device.registry.add_bytes(model, publisher=device.identity, name="digits")
        with pytest.raises(InvalidInputError, match="failed"):
            device.infer(card.digest, {"input": np.zeros((1, 64), np.float32)}, executor=_Failing())
        device.infer(card.digest, {"input": np.ones((1, 64), np.float32)}, log=False)
        assert len(list((tmp_path / "openings").glob("*.salt"))) == 1


def test_openings_survive_their_directory_being_removed(tmp_path: Path, model: bytes) -> None:
    with Device(tmp_path) as device:
        card, _ = device.registry.add_bytes(model, publisher=device.identity, name="digits")
        device.infer(card.digest, {"input": np.zeros((1, 64), np.float32)}, log=False)
        for f in (tmp_path / "openings").iterdir():
            f.unlink()
        (tmp_path / "openings").rmdir()
        result = device.infer(card.digest, {"input": np.ones((1, 64), np.float32)}, log=False)
        device.reveal(result.bundle)
