"""ZK proofs: end to end on the digits MLP, and every way a proof must be rejected."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import ezkl
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.verify.zk import (
    STEP_KEY,
    STEP_PROOF,
    STEP_PUBLIC,
    STEP_SRS,
    QuantizationMismatchError,
    ZkArtifacts,
    ZkProof,
    parse_zk_proof,
    verify_zk_proof,
    zk_input_hash,
    zk_prove,
)
from edgetrust.verify.zk._common import (
    FIELD_MODULUS,
    felt_to_hex_be,
    felt_to_int,
    hex_be_to_felt,
    int_to_felt,
)

from .conftest import Digits

pytestmark = pytest.mark.slow

ONE_SECOND_OF_EXAMPLES = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rejected(proof: ZkProof, key: Any, step: str, **kwargs: Any) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verify_zk_proof(proof, key=key, **kwargs)
    assert info.value.step == step, info.value.diagnostics()
    return info.value


def test_end_to_end(zk_artifacts: ZkArtifacts, zk_proof: ZkProof, digits: Digits) -> None:
    verify_zk_proof(zk_proof, key=zk_artifacts, allow_unsafe_srs=True)
    # The public output is the model's answer (to fixed-point precision).
    sess = ort.InferenceSession(digits.model, providers=["CPUExecutionProvider"])
    x = digits.test_x[0].reshape(1, 64)
    ref = sess.run(None, {"input": x})[0]
    assert zk_proof.outputs.shape == (1, 10)
    assert int(np.argmax(zk_proof.outputs)) == int(np.argmax(ref))
    assert np.max(np.abs(zk_proof.outputs - ref)) < 0.05
    # The public input hash is EZKL's Poseidon of the quantized input, recomputed outside.
    assert zk_proof.input_hash == zk_input_hash(zk_artifacts, x)
    assert zk_proof.input_hash != zk_input_hash(zk_artifacts, digits.test_x[1])
    assert 1000 < len(zk_proof.proof) < 64 * 1024
    # The scratch copies of the private input (EZKL reads files) are gone.
    assert not any((zk_artifacts.directory.parent / "tmp").iterdir())
    assert zk_proof.srs_kind == "unsafe_test_srs"
    # The wire form round-trips exactly.
    assert parse_zk_proof(zk_proof.to_json()) == zk_proof
    assert verify_zk_proof(zk_proof, key=zk_artifacts.key, allow_unsafe_srs=True) is None


def test_unsafe_srs_rejected_by_default(zk_artifacts: ZkArtifacts, zk_proof: ZkProof) -> None:
    err = rejected(zk_proof, zk_artifacts, STEP_SRS)
    assert "unsafe_test_srs" in err.message


def test_unsafe_srs_allowed_logs_a_warning(
    zk_artifacts: ZkArtifacts, zk_proof: ZkProof, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgetrust.verify.zk.proof"):
        verify_zk_proof(zk_proof, key=zk_artifacts, allow_unsafe_srs=True)
    assert any("UNSAFE" in r.getMessage() for r in caplog.records)


@ONE_SECOND_OF_EXAMPLES
@given(data=st.data())
def test_tampered_proof_rejected(
    zk_artifacts: ZkArtifacts, zk_proof: ZkProof, data: st.DataObject
) -> None:
    raw = bytearray(zk_proof.proof)
    index = data.draw(st.integers(0, len(raw) - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    raw[index] ^= flip
    tampered = dataclasses.replace(zk_proof, proof=bytes(raw))
    rejected(tampered, zk_artifacts, STEP_PROOF, allow_unsafe_srs=True)


def test_truncated_proofs_rejected(zk_artifacts: ZkArtifacts, zk_proof: ZkProof) -> None:
    for proof in (zk_proof.proof[:100], zk_proof.proof[:-1], zk_proof.proof[:-32]):
        tampered = dataclasses.replace(zk_proof, proof=proof)
        rejected(tampered, zk_artifacts, STEP_PROOF, allow_unsafe_srs=True)


def test_trailing_bytes_do_not_change_the_statement(
    zk_artifacts: ZkArtifacts, zk_proof: ZkProof
) -> None:
    """Halo2's verifier ignores bytes after the transcript: the statement is unchanged (so this
    is not a forgery), but the bytes differ, which is why receipts sign the proof's digest
    (see test_zk_receipt: such a proof is refused at step "zk 1 receipt")."""
    extended = dataclasses.replace(zk_proof, proof=zk_proof.proof + b"\x00" * 32)
    verify_zk_proof(extended, key=zk_artifacts, allow_unsafe_srs=True)
    assert extended.digest != zk_proof.digest


def test_swapped_public_output_rejected(zk_artifacts: ZkArtifacts, zk_proof: ZkProof) -> None:
    inst = list(zk_proof.instances)
    top = 1 + int(np.argmax(zk_proof.outputs))
    other = 1 if top != 1 else 2
    inst[top], inst[other] = inst[other], inst[top]
    swapped = dataclasses.replace(zk_proof, instances=tuple(inst))
    assert int(np.argmax(swapped.outputs)) != int(np.argmax(zk_proof.outputs))
    rejected(swapped, zk_artifacts, STEP_PROOF, allow_unsafe_srs=True)
    # A claimed output that is not the proof's is caught before the SNARK.
    claimed = zk_proof.outputs.copy()
    claimed[0, 0] += 1.0
    rejected(zk_proof, zk_artifacts, STEP_PUBLIC, allow_unsafe_srs=True, expected_outputs=claimed)


def test_input_hash_binding(zk_artifacts: ZkArtifacts, zk_proof: ZkProof, digits: Digits) -> None:
    other_hash = zk_input_hash(zk_artifacts, digits.test_x[1])
    rejected(
        zk_proof, zk_artifacts, STEP_PUBLIC, allow_unsafe_srs=True, expected_input_hash=other_hash
    )
    # Replacing the hash instance itself breaks the SNARK.
    forged = dataclasses.replace(
        zk_proof, instances=(hex_be_to_felt(other_hash, "h"), *zk_proof.instances[1:])
    )
    assert forged.input_hash == other_hash
    rejected(forged, zk_artifacts, STEP_PROOF, allow_unsafe_srs=True)


def test_proof_for_another_models_vk(
    tie_artifacts: ZkArtifacts, zk_proof: ZkProof, zk_artifacts: ZkArtifacts
) -> None:
    assert tie_artifacts.key.vk_digest != zk_artifacts.key.vk_digest
    err = rejected(zk_proof, tie_artifacts, STEP_KEY, allow_unsafe_srs=True)
    assert "model" in err.message
    # Even with every digest rewritten to the other model's, the SNARK fails under its VK.
    k = tie_artifacts.key
    relabeled = dataclasses.replace(
        zk_proof,
        model_digest=k.model_digest,
        settings_digest=k.settings_digest,
        vk_digest=k.vk_digest,
        srs_digest=k.srs_digest,
    )
    rejected(relabeled, tie_artifacts, STEP_PROOF, allow_unsafe_srs=True)


def test_wrong_instance_count_rejected(zk_artifacts: ZkArtifacts, zk_proof: ZkProof) -> None:
    short = dataclasses.replace(zk_proof, instances=zk_proof.instances[:-1], output_shape=(1, 9))
    rejected(short, zk_artifacts, STEP_PUBLIC, allow_unsafe_srs=True)


def test_quantization_mismatch_refused(tie_artifacts: ZkArtifacts) -> None:
    x = np.full((1, 10), 0.25, dtype=np.float32)
    x[0, 3] = 0.5
    x[0, 7] = 0.5 + 2**-10  # float picks 7; at scale 2^-7 both round to 64: the circuit picks 3
    with pytest.raises(QuantizationMismatchError) as info:
        zk_prove(tie_artifacts, x)
    assert (info.value.float_top1, info.value.zk_top1) == (7, 3)
    assert info.value.step == "zk accuracy"


@pytest.mark.parametrize(
    "value",
    [np.zeros((1, 63), np.float32), np.zeros((2, 64), np.float32), [[float("nan")] * 64], "x"],
)
def test_prove_rejects_bad_input(zk_artifacts: ZkArtifacts, value: Any) -> None:
    with pytest.raises(InvalidInputError):
        zk_prove(zk_artifacts, value)


# -- wire format -----------------------------------------------------------------------------


def test_parse_rejects_malformed(zk_proof: ZkProof) -> None:
    good = zk_proof.to_dict()

    def variant(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    bad: list[Any] = [
        b"",
        b"{",
        b"[]",
        json.dumps(good)[:-5],
        variant(mediaType="x"),
        variant(modelDigest="sha256:zz"),
        variant(srs={"kind": "trusted", "digest": good["srs"]["digest"], "logrows": 15}),
        variant(srs={**good["srs"], "logrows": True}),
        variant(outputScale=-1),
        variant(outputShape=[1, 11]),
        variant(instances=good["instances"][:1]),
        variant(instances=[*good["instances"][:-1], "g" * 64]),
        variant(instances=[*good["instances"][:-1], int_to_felt(0)[:-2]]),
        variant(instances=[*good["instances"][:-1], (FIELD_MODULUS).to_bytes(32, "little").hex()]),
        variant(proof="!!"),
        variant(proof=""),
        variant(proof="A" * (3 * 2**20)),
        b"x" * (5 * 2**20),
    ]
    for item in bad:
        with pytest.raises(InvalidInputError):
            parse_zk_proof(item if isinstance(item, bytes | str) else json.dumps(item))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12))  # fmt: skip
def test_parse_never_crashes(obj: Any) -> None:
    try:
        parse_zk_proof(json.dumps(obj))
    except InvalidInputError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(-(FIELD_MODULUS // 2), FIELD_MODULUS // 2))
def test_felt_round_trip(value: int) -> None:
    felt = int_to_felt(value)
    assert felt_to_int(felt) == value
    assert hex_be_to_felt(felt_to_hex_be(felt), "x") == felt


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**127) + 1, 2**127 - 1))
def test_felt_encoding_matches_ezkl(value: int) -> None:
    # ezkl.felt_to_int converts to i128, so the cross-check covers EZKL's own integer range.
    felt = int_to_felt(value)
    assert ezkl.felt_to_int(felt) == value
    assert felt_to_hex_be(felt) == ezkl.felt_to_big_endian(felt)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1000, 1000, allow_nan=False), st.integers(0, 16))
def test_dequantization_matches_ezkl(x: float, scale: int) -> None:
    felt = ezkl.float_to_felt(x, scale, ezkl.PyInputType.F64)
    assert felt_to_int(felt) / 2**scale == ezkl.felt_to_float(felt, scale)
    assert abs(felt_to_int(felt) / 2**scale - x) <= 2 ** -(scale + 1) + 1e-9
