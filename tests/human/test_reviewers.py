"""Real WebAuthn ceremonies against a software authenticator: accepted and every refusal."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.human.reviewers import (
    ChallengeError,
    ChallengeStore,
    CounterError,
    OriginError,
    ReviewerRegistry,
    RpIdError,
    SignatureError,
    b64url,
    passkey_from_statement,
    sign_reviewer_statement,
)
from edgetrust.identity import Identity
from edgetrust.statement import open_signed_statement

from .authenticator import UP, SoftAuthenticator


def _registry(**kw: object) -> ReviewerRegistry:
    return ReviewerRegistry(rp_id="edgetrust.local", origin="https://edgetrust.local", **kw)  # type: ignore[arg-type]


def _registered() -> tuple[ReviewerRegistry, Identity, SoftAuthenticator]:
    reg, me, auth = _registry(), Identity.generate(), SoftAuthenticator()
    reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))
    return reg, me, auth


def test_registration_and_login_succeed_and_statement_round_trips() -> None:
    reg, me, auth = _registered()
    assert reg.is_reviewer(me.did)
    (passkey,) = reg.passkeys(me.did)
    assert passkey.credential_id == auth.credential_id
    reg.finish_login(me.did, json.dumps(auth.get(reg.start_login(me.did))))
    signed = open_signed_statement(sign_reviewer_statement(me, passkey).to_json())
    assert passkey_from_statement(signed.statement) == passkey


def test_replayed_registration_challenge_is_refused() -> None:
    reg, me, auth = _registry(), Identity.generate(), SoftAuthenticator()
    response = auth.create(reg.start_registration(me.did))
    reg.finish_registration(me.did, response)
    with pytest.raises(ChallengeError, match="already used"):
        reg.finish_registration(me.did, response)


def test_replayed_login_is_refused() -> None:
    reg, me, auth = _registered()
    response = auth.get(reg.start_login(me.did))
    reg.finish_login(me.did, response)
    with pytest.raises(ChallengeError):
        reg.finish_login(me.did, response)


def test_stale_challenge_is_refused() -> None:
    now = [0.0]
    reg, me, auth = (
        _registry(challenges=ChallengeStore(ttl=10, clock=lambda: now[0])),
        Identity.generate(),
        SoftAuthenticator(),
    )
    challenge = reg.start_registration(me.did)
    now[0] = 11.0
    with pytest.raises(ChallengeError, match="expired"):
        reg.finish_registration(me.did, auth.create(challenge))


def test_challenge_for_another_reviewer_is_refused() -> None:
    reg, me, other = _registry(), Identity.generate(), Identity.generate()
    with pytest.raises(ChallengeError, match="another"):
        reg.finish_registration(
            other.did, SoftAuthenticator().create(reg.start_registration(me.did))
        )


def test_unknown_challenge_is_refused() -> None:
    reg, me, auth = _registered()
    with pytest.raises(ChallengeError):
        reg.finish_login(me.did, auth.get(b"\x01" * 32))


def test_wrong_origin_is_refused() -> None:
    reg, me, auth = _registered()
    with pytest.raises(OriginError):
        reg.finish_login(me.did, auth.get(reg.start_login(me.did), origin="https://evil.example"))
    reg2, me2 = _registry(), Identity.generate()
    with pytest.raises(OriginError):
        reg2.finish_registration(
            me2.did,
            SoftAuthenticator().create(reg2.start_registration(me2.did), origin="https://x.y"),
        )


def test_wrong_rp_id_is_refused() -> None:
    reg, me, auth = _registered()
    with pytest.raises(RpIdError):
        reg.finish_login(me.did, auth.get(reg.start_login(me.did), rp_id="evil.example"))


def test_counter_going_back_is_refused() -> None:
    reg, me, auth = _registered()
    reg.finish_login(me.did, auth.get(reg.start_login(me.did)))
    reg.finish_login(me.did, auth.get(reg.start_login(me.did)))
    with pytest.raises(CounterError):
        reg.finish_login(me.did, auth.get(reg.start_login(me.did), count=1))


def test_tampered_signature_is_refused() -> None:
    reg, me, auth = _registered()
    response = auth.get(reg.start_login(me.did))
    resp = response["response"]
    assert isinstance(resp, dict)
    resp["signature"] = b64url(auth.key.sign(b"other", ec.ECDSA(hashes.SHA256())))
    with pytest.raises(SignatureError):
        reg.finish_login(me.did, response)


def test_user_verification_is_required() -> None:
    reg, me = _registry(), Identity.generate()
    auth = SoftAuthenticator(flags=UP)
    with pytest.raises(SignatureError):
        reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))


def test_another_reviewers_passkey_is_not_found() -> None:
    reg, _me, _auth = _registered()
    other = Identity.generate()
    with pytest.raises(NotFoundError):
        reg.start_login(other.did)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{",
        b"[]",
        b'{"response": 1}',
        b'{"response": {"clientDataJSON": "!!!"}}',
        b'{"response": {"clientDataJSON": "e30"}}',
        json.dumps({"response": {"clientDataJSON": "x" * 70000}}).encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_responses_are_invalid_input(bad: bytes) -> None:
    reg, me, _ = _registered()
    with pytest.raises(InvalidInputError):
        reg.finish_login(me.did, bad)


def test_truncated_attestation_object_is_refused_cleanly() -> None:
    reg, me, auth = _registry(), Identity.generate(), SoftAuthenticator()
    response = auth.create(reg.start_registration(me.did))
    resp = response["response"]
    assert isinstance(resp, dict)
    resp["attestationObject"] = resp["attestationObject"][:20]
    with pytest.raises((InvalidInputError, SignatureError)):
        reg.finish_registration(me.did, response)
    assert not reg.is_reviewer(me.did)
