from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.models import ModelCard
from edgetrust.runtime.onnx import OnnxExecutor, load_inputs, validate_inputs
from edgetrust.zoo import digits_mlp_onnx, small_cnn


@pytest.fixture(scope="module")
def mlp() -> tuple[ModelCard, bytes]:
    data = digits_mlp_onnx()[0]
    return ModelCard.from_onnx_bytes(data), data


def test_validate_accepts_dynamic_batch(mlp: tuple[ModelCard, bytes]) -> None:
    card, _ = mlp
    for n in (1, 7):
        validate_inputs(card, {"input": np.zeros((n, 64), np.float32)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"input": np.zeros((1, 63), np.float32)}, "expected shape"),
        ({"input": np.zeros((64,), np.float32)}, "expected shape"),
        ({"input": np.zeros((1, 64), np.float64)}, "expected dtype float32, got float64"),
        ({"input": np.full((1, 64), np.nan, np.float32)}, "NaN"),
        ({"input": np.full((1, 64), np.inf, np.float32)}, "NaN or Inf"),
        ({"nope": np.zeros((1, 64), np.float32)}, "no input 'nope'"),
        ({}, "missing"),
    ],
)
def test_validate_rejects(
    mlp: tuple[ModelCard, bytes], inputs: dict[str, np.ndarray], message: str
) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInputError, match=message):
        validate_inputs(mlp[0], inputs)


def test_nonfinite_allowed_on_request_and_size_limit(mlp: tuple[ModelCard, bytes]) -> None:
    card, _ = mlp
    validate_inputs(card, {"input": np.full((1, 64), np.nan, np.float32)}, allow_nonfinite=True)
    with pytest.raises(ResourceLimitError):
        validate_inputs(card, {"input": np.zeros((100, 64), np.float32)}, max_bytes=1000)


def test_load_inputs_formats(mlp: tuple[ModelCard, bytes], tmp_path: Path) -> None:
    card, _ = mlp
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", input=x)
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    (tmp_path / "named.json").write_text(json.dumps({"input": x.tolist()}))
    for name in ("x.npy", "x.npz", "x.json", "named.json"):
        got = load_inputs(tmp_path / name, card)
        np.testing.assert_array_equal(got["input"], x)
        assert got["input"].dtype == np.float32


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", b"{not json", "not valid JSON"),
        ("ragged.json", b"[[1, 2], [3]]", "rectangular"),
        ("strings.json", b'[["a", "b"]]', "numbers"),
        ("scalar.json", b"5", "object or array"),
        ("trunc.npy", b"\x93NUMPY\x01\x00", "not a valid .npy"),
        ("bad.npz", b"PK\x03\x04garbage", "not a valid .npz"),
        ("x.csv", b"1,2,3", "unsupported type"),
    ],
)
def test_load_inputs_rejects(
    mlp: tuple[ModelCard, bytes], tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        load_inputs(tmp_path / name, mlp[0])


def test_load_inputs_missing_and_oversized(mlp: tuple[ModelCard, bytes], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_inputs(tmp_path / "nope.npy", mlp[0])
    (tmp_path / "big.json").write_bytes(b" " * 2000)
    with pytest.raises(ResourceLimitError):
        load_inputs(tmp_path / "big.json", mlp[0], max_bytes=1000)


def test_executor_runs_mlp_and_cnn(mlp: tuple[ModelCard, bytes]) -> None:
    card, data = mlp
    ex = OnnxExecutor()
    out = ex.run(card, data, {"input": np.zeros((3, 64), np.float32)})
    assert out["probabilities"].shape == (3, 10)
    cnn = small_cnn().SerializeToString()
    ccard = ModelCard.from_onnx_bytes(cnn)
    x = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    (probs,) = ex.run(ccard, cnn, validate_inputs(ccard, {"input": x})).values()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert ex.descriptor()["name"] == "onnxruntime"
