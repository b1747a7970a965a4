from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope as SslibEnvelope

from edgetrust.dsse import Envelope, pae, parse_envelope, sign_envelope, verify_envelope
from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.identity import Identity

SIGNER = Identity.from_seed(bytes(range(32)))


def test_pae_known_answer_from_dsse_spec() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@given(st.text(max_size=40), st.binary(max_size=200))
def test_pae_matches_securesystemslib(ptype: str, payload: bytes) -> None:
    ref = SslibEnvelope(payload=payload, payload_type=ptype, signatures={}).pae()
    assert pae(ptype, payload) == ref


def test_round_trip_and_verify() -> None:
    env = sign_envelope(b'{"x":1}', "application/test", SIGNER)
    back = parse_envelope(env.to_json())
    assert back == env
    assert verify_envelope(back) == SIGNER.did
    verify_envelope(back, expected_signer=SIGNER.did)
    with pytest.raises(VerificationError):
        verify_envelope(back, expected_signer=Identity.generate().did)


def test_signature_by_other_key_under_signers_did_fails() -> None:
    env = sign_envelope(b"data", "t", Identity.generate())
    forged = Envelope(
        env.payload,
        env.payload_type,
        ((env.signatures[0].__class__)(SIGNER.did, env.signatures[0].sig),),
    )
    with pytest.raises(VerificationError):
        verify_envelope(forged)


ENVELOPE_BYTES = sign_envelope(b'{"hello":"world"}', "application/test", SIGNER).to_json()


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=len(ENVELOPE_BYTES) - 1), st.integers(1, 255))
def test_every_single_byte_mutation_is_rejected(pos: int, xor: int) -> None:
    data = bytearray(ENVELOPE_BYTES)
    data[pos] ^= xor
    try:
        env = parse_envelope(bytes(data))
        verify_envelope(env)
    except Error:
        return
    pytest.fail(f"mutation at {pos} accepted")


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"[]",
        b"{",
        b'{"payload": "@@", "payloadType": "t", "signatures": [{"keyid": "k", "sig": ""}]}',
        b'{"payload": "", "payloadType": "", "signatures": [{"keyid": "k", "sig": ""}]}',
        b'{"payload": "", "payloadType": "t", "signatures": []}',
        b'{"payload": "", "payloadType": "t", "signatures": [{"keyid": 5, "sig": ""}]}',
        b'{"payload": "", "payloadType": "t", "signatures": [{}], "extra": 1}',
        ENVELOPE_BYTES[: len(ENVELOPE_BYTES) // 2],
    ],
)
def test_malformed_envelopes(bad: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_envelope(bad)


def test_too_many_signatures_and_oversize() -> None:
    obj = json.loads(ENVELOPE_BYTES)
    obj["signatures"] = obj["signatures"] * 9
    with pytest.raises(InvalidInputError, match="more than"):
        parse_envelope(json.dumps(obj))
    with pytest.raises(InvalidInputError, match="limit"):
        parse_envelope(ENVELOPE_BYTES, max_bytes=10)


def test_payload_is_kept_exactly() -> None:
    payload = b'{"b":1,  "a":2}'  # not canonical: the exact bytes must still verify
    env = parse_envelope(sign_envelope(payload, "t", SIGNER).to_json())
    assert env.payload == payload
    assert base64.b64decode(json.loads(env.to_json())["payload"]) == payload
    verify_envelope(env)
