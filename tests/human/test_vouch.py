"""Vouching: distinct registered vouchers counted; self, duplicate, unregistered, old-format
and passkey-less vouches refused."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.errors import InvalidInputError
from edgetrust.human.authenticator import SoftAuthenticator
from edgetrust.human.policy import HumanRecord
from edgetrust.human.vouch import VOUCH_PREDICATE_TYPE, sign_vouch, vouch_digest, vouch_payload
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement

from .test_http import ORIGIN, RP, _err, _ok, env, register

__all__ = ["env"]


def _vouch_env(voucher: tuple[Identity, SoftAuthenticator], newcomer: str) -> Envelope:
    me, auth = voucher
    return sign_vouch(me, newcomer, auth.get(vouch_digest(me.did, newcomer)))


def _vouch(voucher: tuple[Identity, SoftAuthenticator], newcomer: str) -> dict[str, object]:
    return _vouch_env(voucher, newcomer).to_dict()


def _replay(log: Log) -> HumanRecord:
    return HumanRecord.from_entries(log.entries(0, log.size()), rp_id=RP, origin=ORIGIN)


def test_k_distinct_vouchers_and_replay(env: tuple[TestClient, Log]) -> None:
    c, log = env
    newcomer, _ = register(c)
    vouchers = [register(c) for _ in range(3)]
    first = _vouch(vouchers[0], newcomer.did)
    counts = [_ok(c.post("/v1/human/vouches", json=first))]
    counts += [_ok(c.post("/v1/human/vouches", json=_vouch(v, newcomer.did))) for v in vouchers[1:]]
    assert [x["vouchers"] for x in counts] == [1, 2, 3]
    # the same vouch again is not counted twice; nor a second one by the same voucher
    again = _ok(c.post("/v1/human/vouches", json=first))
    assert again["duplicate"] is True and again["vouchers"] == 3
    twice = _ok(c.post("/v1/human/vouches", json=_vouch(vouchers[0], newcomer.did)))
    assert twice["duplicate"] is False and twice["vouchers"] == 3
    rec = _replay(log)
    assert rec.refused == [] and rec.vouched(newcomer.did, 3) and not rec.vouched(newcomer.did, 4)
    assert not rec.vouched(vouchers[0][0].did, 1)
    rep = _ok(c.get(f"/v1/human/reviewers/{newcomer.did}"))
    assert rep["vouchers"] == 3


def test_self_vouch_refused(env: tuple[TestClient, Log]) -> None:
    c, log = env
    me, auth = register(c)
    assertion = auth.get(vouch_digest(me.did, me.did))
    with pytest.raises(InvalidInputError, match="themselves"):
        sign_vouch(me, me.did, assertion)
    forged = sign_envelope(vouch_payload(me.did, me.did, assertion), IN_TOTO_PAYLOAD_TYPE, me)
    _err(c.post("/v1/human/vouches", json=forged.to_dict()), 400, "themselves")
    _err(c.post("/v1/human/vouch/options", json={"voucher": me.did, "newcomer": me.did}),
         400, "themselves")  # fmt: skip
    # a vouch signed by someone other than the voucher it names
    other, _ = register(c)
    stolen = sign_envelope(vouch_payload(other.did, me.did, assertion), IN_TOTO_PAYLOAD_TYPE, me)
    _err(c.post("/v1/human/vouches", json=stolen.to_dict()), 400, "signed by the voucher")
    assert not _replay(log).vouches


def test_unregistered_voucher_or_newcomer_refused(env: tuple[TestClient, Log]) -> None:
    c, log = env
    member = register(c)
    stranger = (Identity.generate(), SoftAuthenticator())
    _err(
        c.post("/v1/human/vouches", json=_vouch(stranger, member[0].did)),
        400,
        "not a registered reviewer",
    )
    _err(
        c.post("/v1/human/vouches", json=_vouch(member, stranger[0].did)),
        400,
        "not a registered reviewer",
    )
    req = {"voucher": member[0].did, "newcomer": stranger[0].did}
    _err(c.post("/v1/human/vouch/options", json=req), 404, "not a registered reviewer")
    # logged behind the node's back: replay refuses it too, and counts nothing
    log.append(_vouch_env(stranger, member[0].did).to_json())
    rec = _replay(log)
    assert not rec.vouched(member[0].did, 1) and "not a registered reviewer" in rec.refused[0]


def test_stolen_did_key_alone_cannot_vouch(env: tuple[TestClient, Log]) -> None:
    c, log = env
    newcomer, _ = register(c)
    me, auth = register(c)
    # the thief holds the DID key but not the passkey: a passkey of their own does not help,
    # an assertion over another statement does not either
    thief = SoftAuthenticator()
    other = thief.get(vouch_digest(me.did, newcomer.did))
    fake = sign_vouch(me, newcomer.did, other).to_dict()
    _err(c.post("/v1/human/vouches", json=fake), 404, "not a passkey")
    review_like = auth.get(b"\x00" * 32)
    moved = sign_vouch(me, newcomer.did, review_like).to_dict()
    _err(c.post("/v1/human/vouches", json=moved), 400, "another challenge")
    # a replayed assertion (same counter) logged behind the node's back is refused on replay
    good = sign_vouch(me, newcomer.did, auth.get(vouch_digest(me.did, newcomer.did)))
    _ok(c.post("/v1/human/vouches", json=good.to_dict()))
    assertion = json.loads(good.payload)["predicate"]["assertion"]
    # other bytes (a harmless extra member), the same signed assertion and counter
    replayed = {**assertion, "clientExtensionResults": {}}
    log.append(sign_vouch(me, newcomer.did, replayed).to_json())
    rec = _replay(log)
    assert rec.vouched(newcomer.did, 1) and len(rec.refused) == 1
    assert "counter" in rec.refused[0]


def test_old_format_vouch_is_refused_with_a_clear_message(env: tuple[TestClient, Log]) -> None:
    c, log = env
    newcomer, _ = register(c)
    me, _ = register(c)
    old = encode_statement(
        [Subject("reviewer", hashlib.sha256(newcomer.did.encode()).hexdigest())],
        VOUCH_PREDICATE_TYPE,
        {"newcomer": newcomer.did, "voucher": me.did},
    )
    env_ = sign_envelope(old, IN_TOTO_PAYLOAD_TYPE, me)
    _err(c.post("/v1/human/vouches", json=env_.to_dict()), 400, "no WebAuthn assertion")
    log.append(env_.to_json())
    rec = _replay(log)
    assert not rec.vouches and "old format" in rec.refused[0]


def test_malformed_vouch_is_400(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    _err(c.post("/v1/human/vouches", content=b"{not json"), 400, "json")
    _err(c.post("/v1/human/vouches", json={"payload": "x"}), 400, "")


def test_human_attested_with_min_vouches(env: tuple[TestClient, Log]) -> None:
    from types import SimpleNamespace
    from typing import Any

    from edgetrust.errors import VerificationError
    from edgetrust.human.policy import HumanAttested

    from .test_http import add_task, review

    c, log = env
    people = [register(c) for _ in range(3)]
    task = add_task(c, subject="cd" * 32)
    for p, a in people:
        _ok(review(c, p, a, task, "correct"))
    receipt: Any = SimpleNamespace(output_digest="sha256:" + "cd" * 32)
    rec = _replay(log)
    HumanAttested(rec, min_reviewers=3, min_posterior=0.5).verify(receipt)
    with pytest.raises(VerificationError, match="0 reviewers vouched by 1"):
        HumanAttested(rec, min_reviewers=1, min_posterior=0.5, min_vouches=1).verify(receipt)
    a = people[0][0]
    _ok(c.post("/v1/human/vouches", json=_vouch(people[1], a.did)))
    rec = _replay(log)
    HumanAttested(rec, min_reviewers=1, min_posterior=0.5, min_vouches=1).verify(receipt)
    with pytest.raises(VerificationError, match="1 reviewers vouched by 1"):
        HumanAttested(rec, min_reviewers=2, min_posterior=0.5, min_vouches=1).verify(receipt)
