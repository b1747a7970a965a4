"""Vouching: distinct registered vouchers counted; self, duplicate and unregistered refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.errors import InvalidInputError
from edgetrust.human.policy import HumanRecord
from edgetrust.human.vouch import sign_vouch, vouch_payload
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE

from .test_http import ORIGIN, RP, _err, _ok, env, register

__all__ = ["env"]


def _replay(log: Log) -> HumanRecord:
    return HumanRecord.from_entries(log.entries(0, log.size()), rp_id=RP, origin=ORIGIN)


def test_k_distinct_vouchers_and_replay(env: tuple[TestClient, Log]) -> None:
    c, log = env
    newcomer, _ = register(c)
    vouchers = [register(c)[0] for _ in range(3)]
    counts = [
        _ok(c.post("/v1/human/vouches", json=sign_vouch(v, newcomer.did).to_dict()))
        for v in vouchers
    ]
    assert [x["vouchers"] for x in counts] == [1, 2, 3]
    # the same vouch again is not counted twice
    again = _ok(c.post("/v1/human/vouches", json=sign_vouch(vouchers[0], newcomer.did).to_dict()))
    assert again["duplicate"] is True and again["vouchers"] == 3
    rec = _replay(log)
    assert rec.refused == [] and rec.vouched(newcomer.did, 3) and not rec.vouched(newcomer.did, 4)
    assert not rec.vouched(vouchers[0].did, 1)
    rep = _ok(c.get(f"/v1/human/reviewers/{newcomer.did}"))
    assert rep["vouchers"] == 3


def test_self_vouch_refused(env: tuple[TestClient, Log]) -> None:
    c, log = env
    me, _ = register(c)
    with pytest.raises(InvalidInputError, match="themselves"):
        sign_vouch(me, me.did)
    forged = sign_envelope(vouch_payload(me.did, me.did), IN_TOTO_PAYLOAD_TYPE, me)
    _err(c.post("/v1/human/vouches", json=forged.to_dict()), 400, "themselves")
    # a vouch signed by someone other than the voucher it names
    other, _ = register(c)
    stolen = sign_envelope(vouch_payload(other.did, me.did), IN_TOTO_PAYLOAD_TYPE, me)
    _err(c.post("/v1/human/vouches", json=stolen.to_dict()), 400, "signed by the voucher")
    assert not _replay(log).vouches


def test_unregistered_voucher_or_newcomer_refused(env: tuple[TestClient, Log]) -> None:
    c, log = env
    member, _ = register(c)
    stranger = Identity.generate()
    _err(
        c.post("/v1/human/vouches", json=sign_vouch(stranger, member.did).to_dict()),
        400,
        "not a registered reviewer",
    )
    _err(
        c.post("/v1/human/vouches", json=sign_vouch(member, stranger.did).to_dict()),
        400,
        "not a registered reviewer",
    )
    # logged behind the node's back: replay refuses it too, and counts nothing
    log.append(sign_vouch(stranger, member.did).to_json())
    rec = _replay(log)
    assert not rec.vouched(member.did, 1) and "not a registered reviewer" in rec.refused[0]


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
    a, b = people[0][0], people[1][0]
    _ok(c.post("/v1/human/vouches", json=sign_vouch(b, a.did).to_dict()))
    rec = _replay(log)
    HumanAttested(rec, min_reviewers=1, min_posterior=0.5, min_vouches=1).verify(receipt)
    with pytest.raises(VerificationError, match="1 reviewers vouched by 1"):
        HumanAttested(rec, min_reviewers=2, min_posterior=0.5, min_vouches=1).verify(receipt)
