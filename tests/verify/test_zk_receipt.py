"""ZK receipts: a signed receipt carrying a proof, its binding, and the no-setup second proof."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.receipts import Bundle, issue_receipt, parse_bundle, read_receipt, tensors_digest
from edgetrust.runtime.executors import make_executor
from edgetrust.verify.verifier import Verifier
from edgetrust.verify.zk import (
    STEP_KEY,
    STEP_PROOF,
    STEP_RECEIPT,
    STEP_SRS,
    UnsafeLocalSrs,
    ZkArtifacts,
    ZkProof,
    ZkReceipt,
    card_with_zk,
    find_zk_key,
    issue_zk_receipt,
    verify_zk_bundle,
    verify_zk_receipt,
    zk_claim,
    zk_setup,
)
from edgetrust.verify.zk.executor import ZK_EXECUTOR

from .conftest import Digits
from .test_zk_setup import forbid_ezkl

pytestmark = pytest.mark.slow

SETUP_WORK = (
    "gen_settings",
    "calibrate_settings",
    "compile_circuit",
    "gen_srs",
    "get_srs",
    "setup",
)


@dataclass(frozen=True)
class Issued:
    receipt: ZkReceipt
    issuer: Identity
    card: ModelCard
    x: np.ndarray[Any, Any]
    setup_calls: list[str]
    mtimes_before: dict[Path, int]
    mtimes_after: dict[Path, int]


def mtimes(directory: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def issued(zk_artifacts: ZkArtifacts, digits: Digits, zk_home: Path) -> Issued:
    """The second proof of the session, with every setup function made to fail if called."""
    issuer = Identity.generate()
    card = card_with_zk(ModelCard.from_onnx_bytes(digits.model), zk_artifacts)
    before = mtimes(zk_artifacts.directory)
    x = digits.test_x[2:3].astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        calls = forbid_ezkl(mp, SETUP_WORK)
        art = zk_setup(
            digits.model, srs=UnsafeLocalSrs(), home=zk_home, calibration=digits.calibration
        )
        zr = issue_zk_receipt(
            issuer=issuer,
            card=card,
            artifacts=art,
            inputs={"input": x},
        )
    return Issued(zr, issuer, card, x, calls, before, mtimes(zk_artifacts.directory))


def test_second_proof_pays_no_setup(issued: Issued) -> None:
    assert issued.setup_calls == []
    assert issued.mtimes_after == issued.mtimes_before


def test_zk_receipt_verifies(issued: Issued, zk_artifacts: ZkArtifacts, zk_home: Path) -> None:
    bundle = parse_bundle(issued.receipt.bundle.to_json())
    receipt = read_receipt(bundle)
    assert receipt.executor["name"] == ZK_EXECUTOR
    pred = receipt.predicate["zk"]
    assert pred["inputHash"] == issued.receipt.proof.input_hash
    assert pred["vkDigest"] == zk_artifacts.key.vk_digest
    assert pred["srs"]["kind"] == "unsafe_test_srs"
    assert receipt.outputs is not None
    assert np.array_equal(receipt.outputs["probabilities"], issued.receipt.proof.outputs)
    proof = verify_zk_receipt(receipt, key=zk_artifacts, card=issued.card, allow_unsafe_srs=True)
    assert proof == issued.receipt.proof
    assert find_zk_key(receipt, home=zk_home) == zk_artifacts.key
    r2, p2 = verify_zk_bundle(bundle, home=zk_home, card=issued.card, allow_unsafe_srs=True)
    assert r2.issuer == issued.issuer.did and p2 == proof
    # The receipt's ordinary input commitment opens with the input, as for any receipt.
    issued.receipt.opening.verify({"input": issued.x})


def test_unsafe_srs_receipt_rejected_by_default(issued: Issued, zk_artifacts: ZkArtifacts) -> None:
    receipt = read_receipt(issued.receipt.bundle)
    with pytest.raises(VerificationError) as info:
        verify_zk_receipt(receipt, key=zk_artifacts, card=issued.card)
    assert info.value.step == STEP_SRS


def relabel(
    issued: Issued,
    *,
    claim: dict[str, Any] | None = None,
    outputs: Any = None,
    proof: ZkProof | None = None,
) -> Bundle:
    """A receipt signed by the same issuer, with some part of it lying."""
    zr = issued.receipt
    proof = proof or zr.proof
    envelope, _ = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs={"input": np.zeros((1, 64), np.float32)},
        outputs=outputs if outputs is not None else zr.outputs,
        executor={"name": ZK_EXECUTOR},
        extra={"zk": claim if claim is not None else zk_claim(zr.proof, "probabilities")},
    )
    return Bundle(envelope, zk=proof.to_dict())


def step_of(bundle: Bundle, key: Any, card: ModelCard | None = None) -> str | None:
    receipt = read_receipt(parse_bundle(bundle.to_json()))
    with pytest.raises(VerificationError) as info:
        verify_zk_receipt(receipt, key=key, card=card, allow_unsafe_srs=True)
    return info.value.step


def test_receipt_whose_input_hash_differs_from_its_proof(
    issued: Issued, zk_artifacts: ZkArtifacts
) -> None:
    claim = zk_claim(issued.receipt.proof, "probabilities")
    claim["inputHash"] = "0x" + "1" * 64
    assert step_of(relabel(issued, claim=claim), zk_artifacts) == STEP_RECEIPT


def test_receipt_claiming_another_output(issued: Issued, zk_artifacts: ZkArtifacts) -> None:
    lie = {"probabilities": np.roll(issued.receipt.outputs["probabilities"], 1, axis=1)}
    assert step_of(relabel(issued, outputs=lie), zk_artifacts) == STEP_RECEIPT


def test_bundle_with_another_proof(
    issued: Issued, zk_artifacts: ZkArtifacts, zk_proof: ZkProof
) -> None:
    # A valid proof (of another input), but not the one the receipt signed.
    bundle = Bundle(issued.receipt.bundle.envelope, zk=zk_proof.to_dict())
    assert step_of(bundle, zk_artifacts) == STEP_RECEIPT
    # Without the proof, or with garbage in its place.
    assert step_of(Bundle(issued.receipt.bundle.envelope), zk_artifacts) == STEP_RECEIPT
    longer = issued.receipt.proof.proof + b"\x00" * 32  # same statement, other bytes
    extended = {**issued.receipt.proof.to_dict(), "proof": base64.b64encode(longer).decode()}
    assert step_of(Bundle(issued.receipt.bundle.envelope, zk=extended), zk_artifacts) == (
        STEP_RECEIPT
    )
    junk = {**issued.receipt.proof.to_dict(), "proof": base64.b64encode(b"x").decode()}
    assert step_of(Bundle(issued.receipt.bundle.envelope, zk=junk), zk_artifacts) == STEP_RECEIPT


def test_tampered_proof_bytes_with_matching_claim(
    issued: Issued, zk_artifacts: ZkArtifacts
) -> None:
    """A lying issuer signs the digest of a tampered proof: the SNARK itself must fail."""
    raw = bytearray(issued.receipt.proof.proof)
    raw[200] ^= 1
    bad = dataclasses.replace(issued.receipt.proof, proof=bytes(raw))
    claim = zk_claim(bad, "probabilities")
    assert step_of(relabel(issued, claim=claim, proof=bad), zk_artifacts) == STEP_PROOF


def test_card_naming_another_vk(
    issued: Issued, zk_artifacts: ZkArtifacts, tie_artifacts: ZkArtifacts
) -> None:
    other = issued.card.with_extra(
        "zk", {**issued.card.extra["zk"], "vkDigest": tie_artifacts.key.vk_digest}
    )
    assert step_of(issued.receipt.bundle, zk_artifacts, card=other) == STEP_KEY
    # And the key of another model, whatever the card says.
    assert step_of(issued.receipt.bundle, tie_artifacts) == STEP_KEY


def test_receipt_without_zk_claim(issued: Issued, zk_artifacts: ZkArtifacts) -> None:
    envelope, _ = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs={"input": np.zeros((1, 64), np.float32)},
        outputs=issued.receipt.outputs,
        executor={"name": "onnxruntime"},
    )
    assert step_of(Bundle(envelope), zk_artifacts) == STEP_RECEIPT
    with pytest.raises(VerificationError) as info:
        find_zk_key(read_receipt(Bundle(envelope)))
    assert info.value.step == STEP_RECEIPT


def test_issue_refuses_mismatched_card(
    issued: Issued, tie_artifacts: ZkArtifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = forbid_ezkl(monkeypatch, ("prove",))
    with pytest.raises(InvalidInputError, match="artifacts are for model"):
        issue_zk_receipt(
            issuer=issued.issuer,
            card=issued.card,
            artifacts=tie_artifacts,
            inputs={"input": np.zeros((1, 64), np.float32)},
        )
    with pytest.raises(InvalidInputError):
        issue_zk_receipt(
            issuer=issued.issuer,
            card=card_with_zk(
                ModelCard.from_onnx_bytes(tie_artifacts.model_path.read_bytes()), tie_artifacts
            ),
            artifacts=tie_artifacts,
            inputs={"x": np.zeros((1, 9), np.float32)},
        )
    assert calls == []


def test_zk_receipt_reexecutes_exactly(
    issued: Issued, digits: Digits, zk_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `ezkl` executor recomputes the circuit's output bit for bit (EZKL's witness)."""
    monkeypatch.setenv("EDGETRUST_HOME", str(zk_home))  # the executor uses this home's setup
    receipt = read_receipt(issued.receipt.bundle)
    executor = make_executor(ZK_EXECUTOR, receipt.executor["settings"])
    assert executor.exact
    got = executor.run(issued.card, digits.model, {"input": issued.x})
    assert tensors_digest(got) == receipt.output_digest
    verified = Verifier(zk_home=zk_home, allow_unsafe_srs=True).verify(
        issued.receipt.bundle,
        model=digits.model,
        inputs={"input": issued.x},
        opening=issued.receipt.opening,
        reexecute=True,
    )
    assert "5 re-execution" in verified.checked and "8 zk" in verified.checked
    # A receipt claiming another output for the same input is caught by re-execution.
    lie = {"probabilities": np.roll(issued.receipt.outputs["probabilities"], 1, axis=1)}
    envelope, opening = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs={"input": issued.x},
        outputs=lie,
        executor=receipt.executor,
    )
    with pytest.raises(VerificationError) as info:
        Verifier().verify(
            Bundle(envelope),
            model=digits.model,
            inputs={"input": issued.x},
            opening=opening,
            reexecute=True,
        )
    assert info.value.step == "5 re-execution"
    other = dict(receipt.executor["settings"], compiledDigest="sha256:" + "0" * 64)
    with pytest.raises(InvalidInputError, match="another circuit"):
        make_executor(ZK_EXECUTOR, other).run(issued.card, digits.model, {"input": issued.x})


def test_an_opened_input_must_be_the_proven_input(
    issued: Issued, digits: Digits, zk_home: Path
) -> None:
    """The salted commitment and the proof's Poseidon hash must name the same input."""
    verifier = Verifier(zk_home=zk_home, allow_unsafe_srs=True)
    honest = verifier.verify(
        issued.receipt.bundle, inputs={"input": issued.x}, opening=issued.receipt.opening
    )
    assert "4 opening" in honest.checked and "8 zk" in honest.checked
    # A device commits (sha256) to one input but attaches the proof it made on another.
    other = digits.test_x[9:10].astype(np.float32)
    receipt = read_receipt(issued.receipt.bundle)
    envelope, opening = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs={"input": other},
        outputs=issued.receipt.outputs,
        executor=receipt.executor,
        extra={"zk": receipt.predicate["zk"]},
    )
    mixed = Bundle(envelope, zk=issued.receipt.bundle.zk)
    assert "8 zk" in verifier.verify(mixed).checked  # without the input nothing tells
    with pytest.raises(VerificationError, match="Poseidon") as info:
        verifier.verify(mixed, inputs={"input": other}, opening=opening)
    assert info.value.step == "8 zk input"
    # Nor can an extra opened tensor stand beside the circuit's input to dodge the check.
    padded = {"input": other, "pad": np.zeros(1, np.float32)}
    envelope, opening = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs=padded,
        outputs=issued.receipt.outputs,
        executor=receipt.executor,
        extra={"zk": receipt.predicate["zk"]},
    )
    with pytest.raises(VerificationError, match="exactly the circuit's input") as info:
        verifier.verify(
            Bundle(envelope, zk=issued.receipt.bundle.zk), inputs=padded, opening=opening
        )
    assert info.value.step == "8 zk input"


def test_a_proof_the_receipt_does_not_sign_is_not_ignored(issued: Issued, zk_home: Path) -> None:
    receipt = read_receipt(issued.receipt.bundle)
    predicate_without_zk, _ = issue_receipt(
        issuer=issued.issuer,
        card=issued.card,
        inputs={"input": issued.x},
        outputs=issued.receipt.outputs,
        executor=receipt.executor,
    )
    with pytest.raises(VerificationError, match="does not sign") as info:
        Verifier(zk_home=zk_home, allow_unsafe_srs=True).verify(
            Bundle(predicate_without_zk, zk=issued.receipt.bundle.zk)
        )
    assert info.value.step == "8 zk"


def test_reexecution_uses_the_verifiers_own_zk_home(
    issued: Issued, digits: Digits, zk_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETRUST_HOME", str(tmp_path / "elsewhere"))  # holds no setup
    verified = Verifier(zk_home=zk_home, allow_unsafe_srs=True).verify(
        issued.receipt.bundle,
        model=digits.model,
        inputs={"input": issued.x},
        opening=issued.receipt.opening,
        reexecute=True,
    )
    assert "5 re-execution" in verified.checked and "8 zk" in verified.checked
