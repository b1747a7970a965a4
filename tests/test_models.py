from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError, VerificationError
from edgetrust.identity import Identity
from edgetrust.models import ModelCard, ModelRegistry, read_model_card
from edgetrust.zoo import digits_mlp_onnx, small_cnn

PUBLISHER = Identity.from_seed(b"\x01" * 32)


@pytest.fixture(scope="module")
def mlp() -> bytes:
    return digits_mlp_onnx()[0]


def test_card_describes_graph(mlp: bytes) -> None:
    card = ModelCard.from_onnx_bytes(mlp, name="digits")
    assert card.name == "digits" and card.size == len(mlp) and card.opset == 17
    assert [(s.name, s.dtype, s.shape) for s in card.inputs] == [
        ("input", "float32", ("batch", 64))
    ]
    assert [(s.name, s.shape) for s in card.outputs] == [("probabilities", ("batch", 10))]


def test_old_style_weights_listed_as_inputs_are_not_real_inputs() -> None:
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    card = ModelCard.from_onnx_bytes(model.SerializeToString())
    assert [s.name for s in card.inputs] == ["x"]


@pytest.mark.parametrize("data", [b"", b"not onnx at all", b"\x08\x07" + b"\xff" * 50])
def test_not_onnx_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="ONNX"):
        ModelCard.from_onnx_bytes(data)


def test_checker_failure_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidInputError, match=r"onnx\.checker"):
        ModelCard.from_onnx_bytes(model.SerializeToString())


def test_signed_card_round_trip_and_tamper(mlp: bytes) -> None:
    card = ModelCard.from_onnx_bytes(mlp)
    env = card.sign(PUBLISHER)
    back, signer = read_model_card(env.to_json())
    assert back == card and signer == PUBLISHER.did
    assert card.digest[7:].encode() in env.payload
    forged = Envelope(
        env.payload.replace(card.digest[7:15].encode(), b"00000000"),
        env.payload_type,
        env.signatures,
    )
    assert forged.payload != env.payload
    with pytest.raises(VerificationError):
        read_model_card(forged.to_json())
    other = ModelCard.from_onnx_bytes(small_cnn().SerializeToString())
    with pytest.raises(InvalidInputError):  # subject and predicate digests must agree
        read_model_card(
            sign_envelope(
                env.payload.replace(card.digest[7:].encode(), other.digest[7:].encode(), 1),
                env.payload_type,
                PUBLISHER,
            )
        )


def test_registry_add_resolve_list(mlp: bytes, tmp_path: Path) -> None:
    reg = ModelRegistry()
    path = tmp_path / "digits.onnx"
    path.write_bytes(mlp)
    card, _ = reg.add_file(path, publisher=PUBLISHER)
    assert card.name == "digits"
    again, _ = reg.add_file(path, publisher=PUBLISHER)  # idempotent
    assert again == card
    cnn = small_cnn().SerializeToString()
    reg.add_bytes(cnn, publisher=PUBLISHER, name="cnn")
    assert [c.name for c in reg.cards()] == ["cnn", "digits"]
    for ref in ["digits", card.digest, card.digest[7:19], str(path)]:
        found, data = reg.resolve(ref)
        assert found.digest == card.digest and data == mlp
    with pytest.raises(NotFoundError):
        reg.resolve("nothing-like-this")


def test_registry_detects_corrupted_store(mlp: bytes) -> None:
    reg = ModelRegistry()
    card, _ = reg.add_bytes(mlp, publisher=PUBLISHER, name="digits")
    stored = reg.root / f"{card.digest[7:]}.onnx"
    stored.write_bytes(mlp[:-1] + bytes([mlp[-1] ^ 1]))
    with pytest.raises(InvalidInputError, match="corrupted"):
        reg.resolve("digits")


def test_registry_size_limit(mlp: bytes, tmp_path: Path) -> None:
    reg = ModelRegistry(max_bytes=100)
    with pytest.raises(ResourceLimitError):
        reg.add_bytes(mlp, publisher=PUBLISHER)
    path = tmp_path / "m.onnx"
    path.write_bytes(mlp)
    with pytest.raises(ResourceLimitError):
        reg.add_file(path, publisher=PUBLISHER)
    with pytest.raises(NotFoundError):
        reg.add_file(tmp_path / "missing.onnx", publisher=PUBLISHER)
    assert not reg.root.exists() or not os.listdir(reg.root)


def test_onnx_roundtrip_of_cnn_card() -> None:
    card = ModelCard.from_onnx_bytes(small_cnn().SerializeToString())
    assert card.inputs[0].shape == ("batch", 3, 16, 16)
    assert onnx.load_from_string(small_cnn().SerializeToString()).graph.name == "small-cnn"
