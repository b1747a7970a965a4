"""ZK receipts: an inference receipt that carries an EZKL proof, and its verification.

The signed predicate (`https://edgetrust.dev/inference/v1`) gets a ``zk`` field::

    {"system": "ezkl/halo2-kzg-bn254", "ezklVersion": …, "proofDigest": sha256 of the proof,
     "inputHash": Poseidon hash "0x…", "outputName": …, "settingsDigest": …, "vkDigest": …,
     "srs": {"kind": "ppot" | "unsafe_test_srs", "digest": …, "logrows": …}}

and the proof itself travels in the bundle's ``zk`` member (outside the signature, bound to it
by ``proofDigest``), which keeps the logged envelope small. The receipt's output is the
circuit's public output (dequantized, exactly representable as float32), so the subject digest
covers what the proof proves. The receipt also keeps the usual salted sha256 commitment of the
input: the Poseidon hash is EZKL's own commitment, in-circuit; see docs/zk.md for how they
relate.

`verify_zk_receipt` adds step ``zk 1 receipt`` (proof ↔ receipt binding: digest, model,
input hash, output digest) in front of `verify_zk_proof`'s steps 2-5, and checks the VK
against the model card's ``zk`` entry when a card is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetrust.errors import Error, InvalidInputError, UnsupportedError, VerificationError
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.receipts import (
    Bundle,
    LogProof,
    Opening,
    Receipt,
    issue_receipt,
    read_receipt,
    tensors_digest,
)
from edgetrust.runtime.onnx import Tensors, validate_inputs
from edgetrust.verify.zk._common import ProgressFn, no_progress
from edgetrust.verify.zk.executor import ZK_EXECUTOR
from edgetrust.verify.zk.proof import (
    STEP_KEY,
    STEP_RECEIPT,
    ZkProof,
    parse_zk_proof,
    verify_zk_proof,
    zk_prove,
)
from edgetrust.verify.zk.setup import ZkArtifacts, ZkVerifierKey, load_zk_artifacts

__all__ = [
    "ZK_EXECUTOR",
    "ZkReceipt",
    "card_with_zk",
    "find_zk_artifacts",
    "find_zk_key",
    "issue_zk_receipt",
    "verify_zk_bundle",
    "verify_zk_receipt",
    "zk_claim",
]


@dataclass(frozen=True)
class ZkReceipt:
    """A ZK receipt as issued: the bundle to hand out, the input's opening, the proof."""

    bundle: Bundle
    opening: Opening
    proof: ZkProof
    outputs: Tensors
    """The public output as float32, named as the model names it."""


def zk_claim(proof: ZkProof, output_name: str) -> dict[str, Any]:
    """The receipt predicate's ``zk`` field for `proof`."""
    return {
        "system": "ezkl/halo2-kzg-bn254",
        "ezklVersion": proof.ezkl_version,
        "proofDigest": proof.digest,
        "inputHash": proof.input_hash,
        "outputName": output_name,
        "settingsDigest": proof.settings_digest,
        "vkDigest": proof.vk_digest,
        "srs": {"kind": proof.srs_kind, "digest": proof.srs_digest, "logrows": proof.logrows},
    }


def card_with_zk(card: ModelCard, artifacts: ZkArtifacts) -> ModelCard:
    """The model card with its ``zk`` entry: digests of settings, circuit and VK, SRS, accuracy.

    Sign and log the result, so that verifiers know which VK belongs to the model.
    """
    if card.digest != artifacts.model_digest:
        raise InvalidInputError("the ZK artifacts are for another model than this card")
    return card.with_extra("zk", artifacts.card_entry())


def _public_outputs(proof: ZkProof, name: str) -> Tensors:
    values = proof.outputs
    as32 = values.astype(np.float32)
    if not np.array_equal(as32.astype(np.float64), values):
        raise UnsupportedError("the circuit's output is not exactly representable as float32")
    return {name: as32}


def issue_zk_receipt(
    *,
    issuer: Identity,
    card: ModelCard,
    artifacts: ZkArtifacts,
    inputs: Mapping[str, Any],
    issued_at: str | None = None,
    submit: Callable[[bytes], LogProof] | None = None,
    memory_budget: int | None = None,
    progress: ProgressFn = no_progress,
) -> ZkReceipt:
    """Prove the inference and sign a receipt carrying the proof.

    `submit`, when given, appends the signed envelope to a log (e.g. a device's log writer)
    and the returned bundle holds the log proof.

    Raises:
        InvalidInputError: the artifacts are for another model, or the input is malformed.
        QuantizationMismatchError: the circuit's top-1 class differs from onnxruntime's.
    """
    if card.digest != artifacts.model_digest:
        raise InvalidInputError(
            f"ZK artifacts are for model {artifacts.model_digest}, the card is {card.digest}"
        )
    checked = validate_inputs(card, inputs)
    x = checked[artifacts.input_name]
    proof = zk_prove(artifacts, x, memory_budget=memory_budget, progress=progress)
    outputs = _public_outputs(proof, artifacts.output_name)
    executor = {
        "name": ZK_EXECUTOR,
        "version": proof.ezkl_version,
        "settings": {
            "settingsDigest": proof.settings_digest,
            "vkDigest": proof.vk_digest,
            "compiledDigest": artifacts.compiled_digest,
        },
    }
    envelope, opening = issue_receipt(
        issuer=issuer,
        card=card,
        inputs={artifacts.input_name: x},
        outputs=outputs,
        executor=executor,
        extra={"zk": zk_claim(proof, artifacts.output_name)},
        issued_at=issued_at,
    )
    log = submit(envelope.to_json()) if submit is not None else None
    return ZkReceipt(Bundle(envelope, log=log, zk=proof.to_dict()), opening, proof, outputs)


def _claim(receipt: Receipt) -> Mapping[str, Any]:
    claim = receipt.predicate.get("zk")
    if not isinstance(claim, Mapping):
        raise VerificationError("the receipt carries no zk claim", step=STEP_RECEIPT)
    for key in ("proofDigest", "inputHash", "outputName", "settingsDigest", "vkDigest"):
        if not isinstance(claim.get(key), str):
            raise VerificationError(f"the receipt's zk claim lacks {key!r}", step=STEP_RECEIPT)
    if not isinstance(claim.get("srs"), Mapping):
        raise VerificationError("the receipt's zk claim lacks 'srs'", step=STEP_RECEIPT)
    return claim


def verify_zk_receipt(
    receipt: Receipt,
    *,
    key: ZkVerifierKey | ZkArtifacts,
    card: ModelCard | None = None,
    allow_unsafe_srs: bool = False,
) -> ZkProof:
    """Verify the proof a receipt carries; return it, or raise naming the failed step.

    Steps: ``zk 1 receipt`` (the bundle's proof is the one the signed predicate names, for
    the receipt's model, input hash and output), ``zk 2 key`` (the key is the one the model
    card names, when `card` is given, then `verify_zk_proof`'s steps 2-5).

    The receipt itself (signature, statement) must already be read with `read_receipt`.
    """
    if isinstance(key, ZkArtifacts):
        key = key.key
    # Step 1: the proof belongs to this receipt.
    claim = _claim(receipt)
    if receipt.bundle.zk is None:
        raise VerificationError("the bundle carries no zk proof", step=STEP_RECEIPT)
    try:
        proof = parse_zk_proof(receipt.bundle.zk)
    except Error as exc:
        raise VerificationError(f"malformed zk proof: {exc.message}", step=STEP_RECEIPT) from exc
    if proof.digest != claim["proofDigest"]:
        raise VerificationError(
            "the bundle's proof is not the one the receipt signs (proof digest differs)",
            step=STEP_RECEIPT,
        )
    if proof.model_digest != receipt.model_digest:
        raise VerificationError(
            "the proof is for another model than the receipt's", step=STEP_RECEIPT
        )
    if proof.input_hash != claim["inputHash"]:
        raise VerificationError(
            f"the receipt's input hash {claim['inputHash'][:18]}… is not the proof's "
            f"{proof.input_hash[:18]}…",
            step=STEP_RECEIPT,
        )
    for name in ("settingsDigest", "vkDigest"):
        ours = proof.settings_digest if name == "settingsDigest" else proof.vk_digest
        if claim[name] != ours:
            raise VerificationError(f"the receipt's {name} is not the proof's", step=STEP_RECEIPT)
    try:
        outputs = _public_outputs(proof, str(claim["outputName"]))
    except UnsupportedError as exc:
        raise VerificationError(exc.message, step=STEP_RECEIPT) from exc
    if tensors_digest(outputs) != receipt.output_digest:
        raise VerificationError(
            "the receipt's output is not the output the proof proves", step=STEP_RECEIPT
        )

    # Step 2 (card): the verifying key is the one the signed model card names.
    if card is not None:
        entry = card.extra.get("zk")
        if card.digest != receipt.model_digest:
            raise VerificationError("the model card is for another model", step=STEP_KEY)
        if not isinstance(entry, Mapping):
            raise VerificationError("the model card names no ZK verifying key", step=STEP_KEY)
        if entry.get("vkDigest") != key.vk_digest or entry.get("settingsDigest") != (
            key.settings_digest
        ):
            raise VerificationError(
                "the verifying key is not the one the model card names", step=STEP_KEY
            )

    verify_zk_proof(
        proof, key=key, allow_unsafe_srs=allow_unsafe_srs, expected_input_hash=claim["inputHash"]
    )
    return proof


def find_zk_artifacts(receipt: Receipt, *, home: str | Path | None = None) -> ZkArtifacts:
    """This home's setup of a receipt's model with the VK its proof names.

    Raises:
        VerificationError: the receipt carries no zk claim (step ``zk 1 receipt``).
        NotFoundError: no setup of that model with that VK in this home.
    """
    claim = _claim(receipt)
    return load_zk_artifacts(receipt.model_digest, home=home, vk_digest=str(claim["vkDigest"]))


def find_zk_key(receipt: Receipt, *, home: str | Path | None = None) -> ZkVerifierKey:
    """The verifying key for a receipt's proof (see `find_zk_artifacts`)."""
    return find_zk_artifacts(receipt, home=home).key


def verify_zk_bundle(
    bundle: Bundle,
    *,
    home: str | Path | None = None,
    card: ModelCard | None = None,
    allow_unsafe_srs: bool = False,
) -> tuple[Receipt, ZkProof]:
    """Read a bundle's receipt (signature, statement) and verify its proof with this home's key.

    The key is the cached setup of the receipt's model with the VK the receipt names; `card`
    (e.g. from the registry) pins which VK is acceptable.
    """
    receipt = read_receipt(bundle)
    key = find_zk_key(receipt, home=home)
    return receipt, verify_zk_receipt(
        receipt, key=key, card=card, allow_unsafe_srs=allow_unsafe_srs
    )
