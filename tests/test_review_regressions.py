"""Regression tests for defects found in review: each once let a bad receipt through, made a
verifier act on a receipt's say-so, or crashed instead of failing cleanly."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.dsse import envelope_from_dict, sign_envelope
from edgetrust.encoding import canonical_tensor_bytes, digest_tensor, tensor_from_canonical_bytes
from edgetrust.errors import InvalidInputError, UnsupportedError, VerificationError
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.receipts import Bundle, issue_receipt, parse_bundles, read_receipt
from edgetrust.runtime.executors import make_executor
from edgetrust.runtime.onnx import OnnxExecutor, validate_inputs
from edgetrust.verify.verifier import Verifier
from edgetrust.zoo import digits_mlp_onnx, load_digits_split, mlp_to_onnx

DEVICE = Identity.from_seed(b"\x05" * 32)
MLP = digits_mlp_onnx()[0]
CARD = ModelCard.from_onnx_bytes(MLP)
X = load_digits_split()[1][:1]


def test_a_receipt_cannot_choose_where_a_verifier_writes(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    with pytest.raises(UnsupportedError):
        make_executor("fixed", {"home": str(victim)})  # no plan: a verifier will not plan
    assert not victim.exists()
    for bad in ([1], "abc"):
        with pytest.raises(InvalidInputError):
            make_executor("onnxruntime", bad)  # type: ignore[arg-type]
    ex = make_executor("onnxruntime", {"intra_op_num_threads": 2**40})
    assert ex.descriptor()["settings"]["intra_op_num_threads"] <= 64


def test_big_endian_input_is_committed_and_computed_as_the_same_values() -> None:
    be = X.astype(">f4")
    checked = validate_inputs(CARD, {"input": be})
    out_le = OnnxExecutor().run(CARD, MLP, {"input": X})
    out_be = OnnxExecutor().run(CARD, MLP, checked)
    np.testing.assert_array_equal(out_le["probabilities"], out_be["probabilities"])
    assert digest_tensor(be) == digest_tensor(X)


def _int_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ids",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_integer_outputs_are_compared_exactly() -> None:
    model = _int_model()
    card = ModelCard.from_onnx_bytes(model)
    x = {"x": np.array([100000], np.int64)}
    env, opening = issue_receipt(
        issuer=DEVICE,
        card=card,
        inputs=x,
        outputs={"y": np.array([100009], np.int64)},
        executor=OnnxExecutor().descriptor(),
    )
    with pytest.raises(VerificationError) as err:
        Verifier().verify(Bundle(env), model=model, inputs=x, opening=opening, reexecute=True)
    assert err.value.step == "5 re-execution"
    env, opening = issue_receipt(
        issuer=DEVICE,
        card=card,
        inputs=x,
        outputs={"y": np.array([100000], np.int32)},
        executor=OnnxExecutor().descriptor(),
    )
    with pytest.raises(VerificationError, match="int32"):
        Verifier().verify(Bundle(env), model=model, inputs=x, opening=opening, reexecute=True)


def test_float_tolerance_scales_with_the_recomputation_not_the_claim() -> None:
    w, b = [np.eye(64, 2, dtype=np.float32)], [np.zeros(2, np.float32)]
    model = mlp_to_onnx(w, b, softmax=False).SerializeToString()
    card = ModelCard.from_onnx_bytes(model)
    x = {"input": np.zeros((1, 64), np.float32)}
    env, opening = issue_receipt(
        issuer=DEVICE,
        card=card,
        inputs=x,
        outputs={"logits": np.array([[1e6, 0]], np.float32)},
        executor=OnnxExecutor().descriptor(),
    )
    with pytest.raises(VerificationError):  # claimed 1e6 for a true 0: no tolerance covers it
        Verifier().verify(Bundle(env), model=model, inputs=x, opening=opening, reexecute=True)


@pytest.mark.parametrize(
    "header",
    [
        b'{"dtype":[],"shape":[1]}',
        b'{"dtype":"float32","shape":[274177,67280421310721]}',
        b'{"dtype":"float32","shape":[18446744073709551616]}',
        b'{"dtype":"float32","shape":' + b"[1," * 40 + b"1" + b"]" * 40 + b"}",
    ],
)
def test_hostile_tensor_headers_are_typed_errors(header: bytes) -> None:
    data = b"ETT1" + struct.pack("<I", len(header)) + header + b"\x00"
    with pytest.raises(InvalidInputError):
        tensor_from_canonical_bytes(data)


def test_zero_size_tensors_encode() -> None:
    z = np.zeros((0, 64), np.float32)
    assert tensor_from_canonical_bytes(canonical_tensor_bytes(z)).shape == (0, 64)


def test_surrogates_and_huge_integers_are_typed_errors() -> None:
    env = sign_envelope(b"{}", "t", DEVICE).to_dict()
    for field, value in (("payloadType", "\ud800"),):
        bad = dict(env) | {field: value}
        with pytest.raises(InvalidInputError):
            envelope_from_dict(bad)
    bad_sig = dict(env) | {"signatures": [{"keyid": "\udfff", "sig": env["signatures"][0]["sig"]}]}  # type: ignore[index]
    with pytest.raises(InvalidInputError):
        envelope_from_dict(bad_sig)
    doc = {
        "mediaType": "https://edgetrust.dev/bundle/v1",
        "envelope": env,
        "item": {
            "index": 2**64,
            "inputCommitment": "sha256:" + "0" * 64,
            "outputDigest": "sha256:" + "0" * 64,
            "auditPath": [],
        },
    }
    with pytest.raises(InvalidInputError):
        parse_bundles(json.dumps(doc))
    doc.pop("item")
    doc["log"] = {
        "origin": "o",
        "index": 0,
        "treeSize": 1,
        "inclusionProof": [],
        "checkpoint": "\ud800",
    }
    with pytest.raises(InvalidInputError):
        parse_bundles(json.dumps(doc))


def test_signed_but_unreadable_values_are_refused_when_opened() -> None:
    raw = b"ETT1" + struct.pack("<I", 24) + b'{"dtype":[],"shape":[1]}' + b"\x00"
    env, _ = issue_receipt(
        issuer=DEVICE,
        card=CARD,
        inputs={"input": X},
        outputs={"p": np.zeros(1, np.float32)},
        executor={"name": "onnxruntime"},
    )
    stmt = json.loads(env.payload)
    import hashlib

    digest = hashlib.sha256(struct.pack(">I", 1) + b"p" + raw).hexdigest()
    stmt["subject"][0]["digest"]["sha256"] = digest
    stmt["predicate"]["output"] = {
        "digest": "sha256:" + digest,
        "values": {"p": base64.b64encode(raw).decode()},
    }
    forged = Bundle(sign_envelope(json.dumps(stmt).encode(), env.payload_type, DEVICE))
    with pytest.raises(VerificationError) as err:
        read_receipt(forged)
    assert err.value.step == "2 statement"


def test_issued_at_must_be_a_date_time_with_offset() -> None:
    for when in ("2025-01-01", "2025-01-01T00:00:00"):
        env, _ = issue_receipt(
            issuer=DEVICE,
            card=CARD,
            inputs={"input": X},
            outputs={"p": np.zeros(1, np.float32)},
            executor={"name": "x"},
            issued_at=when,
        )
        with pytest.raises(VerificationError):
            read_receipt(Bundle(env))


@pytest.fixture
def demo_files(tmp_path: Path) -> Path:
    assert run(["demo", "--export", str(tmp_path)]) == 0
    return tmp_path


def test_cli_log_proof_cannot_be_stripped_when_a_log_key_is_named(
    demo_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = demo_files
    assert (
        run(["infer", str(d / "digits.onnx"), "-i", str(d / "one.npy"), "-o", str(d / "r.json")])
        == 0
    )
    assert run(["log", "key"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    doc = json.loads((d / "r.json").read_text())
    doc.pop("log")
    (d / "stripped.json").write_text(json.dumps(doc))
    assert run(["verify", str(d / "stripped.json"), "--log-key", key]) == 1
    assert run(["verify", str(d / "stripped.json"), "--require-log"]) == 1  # the local log key
    capsys.readouterr()


def test_cli_batch_item_verifies_with_only_its_own_row(
    demo_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = demo_files
    assert (
        run(
            [
                "infer",
                str(d / "digits.onnx"),
                "-i",
                str(d / "batch.npy"),
                "--batch",
                "-o",
                str(d / "b.json"),
            ]
        )
        == 0
    )
    assert run(["reveal", str(d / "b.json"), "--item", "3", "-o", str(d / "o3.json")]) == 0
    np.save(d / "row3.npy", np.load(d / "batch.npy")[3:4])
    assert (
        run(
            [
                "verify",
                str(d / "b.json"),
                "--item",
                "3",
                "-i",
                str(d / "row3.npy"),
                "--opening",
                str(d / "o3.json"),
                "--model",
                str(d / "digits.onnx"),
                "--reexecute",
            ]
        )
        == 0
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    "args",
    [
        ["model", "add", "{d}"],
        ["verify", "{d}"],
        ["reveal", "{d}/r.json", "-o", "{d}"],
        ["infer", "{d}/digits.onnx", "-i", "{d}/one.npy", "-o", "/nonexistent/dir/x.json"],
        ["verify", "{d}/r.json", "--min-witnesses", "2"],
    ],
)
def test_cli_os_and_usage_errors_are_one_line(
    demo_files: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    d = demo_files
    assert (
        run(["infer", str(d / "digits.onnx"), "-i", str(d / "one.npy"), "-o", str(d / "r.json")])
        == 0
    )
    capsys.readouterr()
    code = run([a.format(d=d) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1
