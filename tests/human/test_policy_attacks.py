"""Attacks on `HumanAttested` through gold tasks and unvouched accounts (review findings).

Each builds the log entries a real node would hold (soft passkeys, signed statements) and
checks that the policy refuses what the reviewers did not say.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgetrust.errors import VerificationError
from edgetrust.human.gold import gold_commitment, new_salt, sign_reveal
from edgetrust.human.policy import HumanAttested, HumanRecord
from edgetrust.human.reviewers import ReviewerRegistry, sign_reviewer_statement
from edgetrust.human.tasks import Task, Verdict, make_task, review_digest, sign_review, sign_task
from edgetrust.human.vouch import sign_vouch, vouch_digest
from edgetrust.identity import Identity
from tests.human.authenticator import SoftAuthenticator
from tests.human.test_http import ORIGIN, RP

ANSWERS = ["correct", "wrong"]
SUBJECT = "cd" * 32
RECEIPT: Any = SimpleNamespace(output_digest="sha256:" + SUBJECT)


class Crowd:
    def __init__(self) -> None:
        self.reg = ReviewerRegistry(rp_id=RP, origin=ORIGIN)
        self.entries: list[bytes] = []

    def person(self) -> tuple[Identity, SoftAuthenticator]:
        me, auth = Identity.generate(), SoftAuthenticator()
        pk = self.reg.finish_registration(me.did, auth.create(self.reg.start_registration(me.did)))
        self.entries.append(sign_reviewer_statement(me, pk).to_json())
        return me, auth

    def vote(self, who: tuple[Identity, SoftAuthenticator], task: Task, answer: str) -> None:
        me, auth = who
        assertion = auth.get(review_digest(task.digest, answer, 1.0, me.did))
        verdict = Verdict(task.digest, answer, 1.0, me.did, assertion)
        self.entries.append(sign_review(me, verdict).to_json())

    def record(self) -> HumanRecord:
        rec = HumanRecord.from_entries(self.entries, rp_id=RP, origin=ORIGIN)
        assert rec.refused == []
        return rec


def test_a_gold_task_on_the_receipt_is_not_a_review() -> None:
    """A task author commits to 'correct' and reveals it; the reviewers said 'wrong'."""
    crowd = Crowd()
    people = [crowd.person() for _ in range(3)]
    author, salt = Identity.generate(), new_salt()
    task = make_task(
        SUBJECT, "Is the output right?", ANSWERS, gold=gold_commitment("correct", salt)
    )
    crowd.entries.append(sign_task(author, task).to_json())
    for p in people:
        crowd.vote(p, task, "wrong")
    crowd.entries.append(sign_reveal(author, task.digest, "correct", salt).to_json())
    rec = crowd.record()
    assert rec.results()[task.digest].answer == "correct"  # the author's word, clamped
    with pytest.raises(VerificationError, match="no human review"):
        HumanAttested(rec, min_reviewers=3, min_posterior=0.9).verify(RECEIPT)


def test_a_strangers_gold_cannot_flip_a_receipt() -> None:
    """Lying gold reveals make honest reviewers look inverted unless their author is trusted."""
    crowd = Crowd()
    people = [crowd.person() for _ in range(3)]
    target = make_task(SUBJECT, "Is the output right?", ANSWERS)
    crowd.entries.append(sign_task(Identity.generate(), target).to_json())
    for p in people:
        crowd.vote(p, target, "wrong")
    attacker = Identity.generate()
    for i in range(6):
        truth, lie, salt = ANSWERS[i % 2], ANSWERS[1 - i % 2], new_salt()
        t = make_task(f"{i + 1:064x}", "obvious?", ANSWERS, gold=gold_commitment(lie, salt))
        crowd.entries.append(sign_task(attacker, t).to_json())
        for p in people:
            crowd.vote(p, t, truth)
        crowd.entries.append(sign_reveal(attacker, t.digest, lie, salt).to_json())
    rec = crowd.record()
    assert rec.results()[target.digest].answer == "correct"  # every author's gold: flipped
    with pytest.raises(VerificationError, match="judged 'wrong'"):
        HumanAttested(rec, min_reviewers=3, min_posterior=0.9).verify(RECEIPT)
    # trusting the attacker's gold is the verifier's explicit choice, and then it counts
    HumanAttested(rec, min_reviewers=3, min_posterior=0.9, gold_authors=[attacker.did]).verify(
        RECEIPT
    )


def test_unvouched_accounts_do_not_move_the_answer() -> None:
    crowd = Crowd()
    honest = [crowd.person() for _ in range(3)]
    sybils = [crowd.person() for _ in range(10)]
    task = make_task(SUBJECT, "ok?", ANSWERS)
    crowd.entries.append(sign_task(Identity.generate(), task).to_json())
    for me, auth in honest:
        for other, _ in honest:
            if other.did != me.did:
                assertion = auth.get(vouch_digest(me.did, other.did))
                crowd.entries.append(sign_vouch(me, other.did, assertion).to_json())
    for p in honest:
        crowd.vote(p, task, "wrong")
    for p in sybils:
        crowd.vote(p, task, "correct")
    rec = crowd.record()
    # without a vouch requirement the sybils win; with one, only the vouched three are heard
    HumanAttested(rec, min_reviewers=3, min_posterior=0.9).verify(RECEIPT)
    with pytest.raises(VerificationError, match="judged 'wrong'"):
        HumanAttested(rec, min_reviewers=3, min_posterior=0.9, min_vouches=2).verify(RECEIPT)
    with pytest.raises(VerificationError, match="0 reviewers vouched by 3"):
        HumanAttested(rec, min_reviewers=1, min_posterior=0.5, min_vouches=3).verify(RECEIPT)


@pytest.mark.parametrize("ceremony", ["review", "vouch"])
def test_the_client_signs_only_its_own_statement(ceremony: str) -> None:
    """A node that sends another digest as the challenge gets no assertion and no signature."""
    import base64
    import hashlib

    import httpx

    from edgetrust.human.client import HumanClient, NodeError

    other = base64.urlsafe_b64encode(hashlib.sha256(b"something else").digest()).rstrip(b"=")
    seen: list[str] = []

    def node(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"publicKey": {"challenge": other.decode()}})

    client = HumanClient(
        "http://node.test",
        Identity.generate(),
        SoftAuthenticator(),
        http=httpx.Client(transport=httpx.MockTransport(node)),
    )
    with pytest.raises(NodeError, match="something other than this statement"):
        if ceremony == "review":
            client.review("ab" * 32, "correct")
        else:
            client.vouch(Identity.generate().did)
    assert seen == [f"/v1/human/{ceremony}/options"]  # nothing signed was sent
