from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.receipts import (
    Bundle,
    Opening,
    commit_inputs,
    issue_batch,
    issue_receipt,
    parse_bundle,
    parse_bundles,
    parse_opening,
    read_receipt,
    tensors_digest,
    write_batch_file,
)
from edgetrust.runtime.onnx import OnnxExecutor
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

DEVICE = Identity.from_seed(b"\x02" * 32)
MLP = digits_mlp_onnx()[0]
CARD = ModelCard.from_onnx_bytes(MLP)
X = load_digits_split()[1][:32]
EXEC = OnnxExecutor()
OUT = EXEC.run(CARD, MLP, {"input": X[:1]})


def single(**kw: object) -> tuple[Envelope, Opening]:
    return issue_receipt(
        issuer=DEVICE,
        card=CARD,
        inputs={"input": X[:1]},
        outputs=OUT,
        executor=EXEC.descriptor(),
        **kw,  # type: ignore[arg-type]
    )


def test_single_receipt_reads_back() -> None:
    env, opening = single()
    r = read_receipt(parse_bundle(Bundle(env).to_json()))
    assert r.issuer == DEVICE.did and r.model_digest == CARD.digest
    assert r.output_digest == tensors_digest(OUT)
    assert r.outputs is not None
    np.testing.assert_array_equal(r.outputs["probabilities"], OUT["probabilities"])
    assert r.input_commitment == opening.commitment
    opening.verify({"input": X[:1]})
    with pytest.raises(VerificationError):
        opening.verify({"input": X[1:2]})
    assert parse_opening(opening.to_json()) == opening


def test_private_output_and_salt_hides_input() -> None:
    env, opening = single(output_private=True)
    assert read_receipt(Bundle(env)).outputs is None
    _, opening2 = single(output_private=True)
    assert opening.commitment != opening2.commitment  # fresh salt every time
    assert commit_inputs({"input": X[:1]}, opening.salt) == opening.commitment


def test_statement_is_in_toto_v1() -> None:
    env, _ = single()
    stmt = json.loads(env.payload)
    assert env.payload_type == "application/vnd.in-toto+json"
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://edgetrust.dev/inference/v1"
    assert stmt["subject"][0]["digest"]["sha256"] == tensors_digest(OUT)[7:]


def _resign(payload: dict[str, object], signer: Identity = DEVICE) -> Bundle:
    data = canonical_json(payload)
    return Bundle(sign_envelope(data, "application/vnd.in-toto+json", signer))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(predicateType="https://edgetrust.dev/inference/v2"),
        lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"),
        lambda s: s["predicate"].pop("executor"),
        lambda s: s["predicate"].update(surprise=1),
        lambda s: s["predicate"]["input"].update(scheme="plain"),
        lambda s: s["predicate"].update(issuedAt="yesterday"),
        lambda s: s["subject"][0]["digest"].update(sha256="0" * 64),
        lambda s: s["predicate"]["output"].update(values={"probabilities": "AAAA"}),
    ],
)
def test_malformed_or_unknown_predicates_rejected_at_step_2(mutate: object) -> None:
    env, _ = single()
    stmt = json.loads(env.payload)
    mutate(stmt)  # type: ignore[operator]
    with pytest.raises(VerificationError) as err:
        read_receipt(_resign(stmt))
    assert err.value.step == "2 statement"


def test_issuer_must_be_signer() -> None:
    env, _ = single()
    with pytest.raises(VerificationError) as err:
        read_receipt(_resign(json.loads(env.payload), Identity.generate()))
    assert err.value.step == "1 signature"


BUNDLE_BYTES = Bundle(single()[0]).to_json()


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(BUNDLE_BYTES) - 1), st.integers(1, 255))
def test_any_single_byte_mutation_of_a_bundle_is_rejected(pos: int, xor: int) -> None:
    data = bytearray(BUNDLE_BYTES)
    data[pos] ^= xor
    try:
        read_receipt(parse_bundle(bytes(data)))
    except Error:
        return
    pytest.fail(f"mutation at {pos} (xor {xor}) accepted")


PAYLOAD = single()[0].payload


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PAYLOAD) - 1), st.integers(1, 255))
def test_any_single_byte_mutation_of_the_payload_is_rejected(pos: int, xor: int) -> None:
    env = single()[0]
    data = bytearray(env.payload)
    data[pos] ^= xor
    with pytest.raises(Error):
        read_receipt(Bundle(Envelope(bytes(data), env.payload_type, env.signatures)))


def test_batch_items_verify_and_open() -> None:
    outs = EXEC.run(CARD, MLP, {"input": X})
    batch = issue_batch(
        issuer=DEVICE, card=CARD, inputs={"input": X}, outputs=outs, executor=EXEC.descriptor()
    )
    bundles = parse_bundles(write_batch_file(batch))
    assert len(bundles) == len(X)
    for i, b in enumerate(bundles):
        r = read_receipt(b)
        assert r.output_digest == tensors_digest(
            {"probabilities": outs["probabilities"][i : i + 1]}
        )
        Opening(r.input_commitment, batch.salt(i)).verify({"input": X[i : i + 1]})
    # a salt opens only its own item
    with pytest.raises(VerificationError):
        Opening(read_receipt(bundles[0]).input_commitment, batch.salt(1)).verify({"input": X[:1]})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_batch_audit_paths_verify_and_detect_tampering(n: int, data: st.DataObject) -> None:
    x = np.random.default_rng(n).random((n, 64), dtype=np.float32)
    outs = EXEC.run(CARD, MLP, {"input": x})
    batch = issue_batch(
        issuer=DEVICE,
        card=CARD,
        inputs={"input": x},
        outputs=outs,
        executor=EXEC.descriptor(),
        output_private=True,
    )
    i = data.draw(st.integers(0, n - 1))
    bundle = batch.bundle(i)
    read_receipt(bundle)
    item = bundle.item
    assert item is not None
    other = data.draw(st.integers(0, n - 1))
    if other != i:  # moving an item to another index breaks its path
        moved = Bundle(
            bundle.envelope,
            item=type(item)(other, item.input_commitment, item.output_digest, item.audit_path),
        )
        with pytest.raises(VerificationError):
            read_receipt(moved)
    swapped = type(item)(i, item.output_digest, item.input_commitment, item.audit_path)
    with pytest.raises(VerificationError):
        read_receipt(Bundle(bundle.envelope, item=swapped))


def test_batch_needs_consistent_axis0() -> None:
    with pytest.raises(InvalidInputError):
        issue_batch(
            issuer=DEVICE,
            card=CARD,
            inputs={"input": X[:3]},
            outputs={"p": np.zeros((2, 10))},
            executor={"name": "x"},
        )


def test_batch_receipt_without_item_and_single_with_item_are_rejected() -> None:
    outs = EXEC.run(CARD, MLP, {"input": X[:2]})
    batch = issue_batch(
        issuer=DEVICE, card=CARD, inputs={"input": X[:2]}, outputs=outs, executor=EXEC.descriptor()
    )
    with pytest.raises(VerificationError):
        read_receipt(Bundle(batch.envelope))
    with pytest.raises(VerificationError):
        read_receipt(Bundle(single()[0], item=batch.items[0]))


@pytest.mark.parametrize(
    "bad",
    [
        b"{}",
        b'{"mediaType": "https://edgetrust.dev/bundle/v9"}',
        b'{"mediaType": "https://edgetrust.dev/bundle/v1", "envelope": 5}',
        b'{"mediaType": "https://edgetrust.dev/bundle-batch/v1", "envelope": {}, "items": []}',
        BUNDLE_BYTES[:-10],
        BUNDLE_BYTES.replace(b'"mediaType"', b'"extra":1,"mediaType"'),
    ],
)
def test_malformed_bundles(bad: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_bundles(bad)


@pytest.mark.parametrize(
    "bad",
    [
        b"{}",
        b'{"mediaType": "https://edgetrust.dev/opening/v1", "scheme": "sha256-salted/v1", "salt": "zz", "commitment": "x"}',
    ],
)
def test_malformed_openings(bad: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_opening(bad)


def test_verified_cache_hits_only_identical_envelopes() -> None:
    from edgetrust.statement import VerifiedCache

    outs = EXEC.run(CARD, MLP, {"input": X[:4]})
    batch = issue_batch(
        issuer=DEVICE, card=CARD, inputs={"input": X[:4]}, outputs=outs, executor=EXEC.descriptor()
    )
    cache = VerifiedCache()
    for i in range(4):
        read_receipt(batch.bundle(i), cache=cache)
    assert len(cache._entries) == 1
    env = batch.envelope
    sig = env.signatures[0]
    forged = Envelope(env.payload, env.payload_type, (type(sig)(sig.keyid, bytes(64)),))
    with pytest.raises(
        VerificationError
    ):  # a forged signature on a cached payload misses the cache
        read_receipt(Bundle(forged, item=batch.items[0]), cache=cache)


def test_non_canonical_output_encoding_is_rejected_even_if_signed() -> None:
    import base64
    import hashlib
    import struct

    header = b'{"dtype": "float32", "shape": [1]}'  # valid JSON, not RFC 8785
    raw = b"ETT1" + struct.pack("<I", len(header)) + header + np.float32(0.5).tobytes()
    name = b"p"
    digest = hashlib.sha256(struct.pack(">I", len(name)) + name + raw).hexdigest()
    env, _ = single()
    stmt = json.loads(env.payload)
    stmt["subject"][0]["digest"]["sha256"] = digest
    stmt["predicate"]["output"] = {
        "digest": "sha256:" + digest,
        "values": {"p": base64.b64encode(raw).decode()},
    }
    with pytest.raises(VerificationError, match="canonical"):
        read_receipt(_resign(stmt))
