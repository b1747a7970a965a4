"""Tasks and verdicts: signed, logged statements whose passkey assertion covers the verdict."""

from __future__ import annotations

import hashlib

import pytest

from edgetrust.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProfileError,
    VerificationError,
)
from edgetrust.human.reviewers import ChallengeError, CounterError, ReviewerRegistry
from edgetrust.human.tasks import (
    Verdict,
    collect_verdicts,
    make_task,
    review_digest,
    sign_review,
    sign_task,
    strict_collect,
    task_from_statement,
    verify_verdict,
)
from edgetrust.identity import Identity
from edgetrust.statement import open_signed_statement

from .authenticator import SoftAuthenticator

TASK = make_task(hashlib.sha256(b"receipt").hexdigest(), "Is the label right?", ["yes", "no"])


def _reviewer(reg: ReviewerRegistry) -> tuple[Identity, SoftAuthenticator]:
    me, auth = Identity.generate(), SoftAuthenticator()
    reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))
    return me, auth


def _vote(me: Identity, auth: SoftAuthenticator, answer: str, **kw: object) -> bytes:
    challenge = review_digest(TASK.digest, answer, 0.9, me.did)
    v = Verdict(TASK.digest, answer, 0.9, me.did, auth.get(challenge, **kw))  # type: ignore[arg-type]
    return sign_review(me, v).to_json()


@pytest.fixture
def reg() -> ReviewerRegistry:
    return ReviewerRegistry(rp_id="edgetrust.local", origin="https://edgetrust.local")


def test_task_round_trips_through_its_statement() -> None:
    author = Identity.generate()
    signed = open_signed_statement(sign_task(author, TASK).to_json())
    assert task_from_statement(signed.statement) == TASK


def test_verdict_verifies(reg: ReviewerRegistry) -> None:
    me, auth = _reviewer(reg)
    v = verify_verdict(open_signed_statement(_vote(me, auth, "yes")), TASK, reg)
    assert v.answer == "yes" and v.reviewer == me.did


def test_assertion_over_another_statement_is_refused(reg: ReviewerRegistry) -> None:
    me, auth = _reviewer(reg)
    other = review_digest(TASK.digest, "no", 0.9, me.did)
    forged = Verdict(TASK.digest, "yes", 0.9, me.did, auth.get(other))
    with pytest.raises(ChallengeError, match="another"):
        verify_verdict(open_signed_statement(sign_review(me, forged).to_json()), TASK, reg)


def test_stolen_did_key_alone_cannot_vote(reg: ReviewerRegistry) -> None:
    me, _ = _reviewer(reg)
    thief_device = SoftAuthenticator()
    with pytest.raises(NotFoundError):
        verify_verdict(open_signed_statement(_vote(me, thief_device, "yes")), TASK, reg)


def test_unregistered_reviewer_is_refused(reg: ReviewerRegistry) -> None:
    stranger, auth = Identity.generate(), SoftAuthenticator()
    with pytest.raises(VerificationError, match="not a registered reviewer"):
        verify_verdict(open_signed_statement(_vote(stranger, auth, "yes")), TASK, reg)


def test_replayed_verdict_is_refused_by_the_counter(reg: ReviewerRegistry) -> None:
    me, auth = _reviewer(reg)
    vote = _vote(me, auth, "yes")
    verify_verdict(open_signed_statement(vote), TASK, reg)
    with pytest.raises(CounterError):
        verify_verdict(open_signed_statement(vote), TASK, reg)


def test_disallowed_answer_and_other_task_are_refused(reg: ReviewerRegistry) -> None:
    me, auth = _reviewer(reg)
    with pytest.raises(VerificationError, match="not allowed"):
        verify_verdict(open_signed_statement(_vote(me, auth, "maybe")), TASK, reg)
    other = make_task("a" * 64, "q", ["yes", "no"])
    with pytest.raises(VerificationError, match="another task"):
        verify_verdict(open_signed_statement(_vote(me, auth, "yes")), other, reg)


def test_second_verdict_by_one_reviewer_first_counts() -> None:
    a = Verdict("a" * 64, "yes", 1.0, "did:key:x", {})
    b = Verdict("a" * 64, "no", 1.0, "did:key:x", {})
    assert collect_verdicts([a, b])["a" * 64]["did:key:x"].answer == "yes"
    with pytest.raises(ConflictError):
        strict_collect([a, b])


@pytest.mark.parametrize(
    ("subject", "question", "answers"),
    [
        ("x", "q", ["a", "b"]),
        ("a" * 64, "", ["a", "b"]),
        ("a" * 64, "q", ["a"]),
        ("a" * 64, "q", ["a", "a"]),
        ("a" * 64, "q" * 3000, ["a", "b"]),
        ("a" * 64, "q", ["a", 1]),
    ],
)
def test_bad_tasks_are_refused(subject: str, question: str, answers: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        make_task(subject, question, answers)


@pytest.mark.parametrize("confidence", [-0.1, 1.5, True, "1", None])
def test_bad_confidence_is_refused(confidence: object, reg: ReviewerRegistry) -> None:
    me = Identity.generate()
    v = Verdict(TASK.digest, "yes", confidence, me.did, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        open_signed_statement(sign_review(me, v).to_json())


def test_review_signed_by_someone_else_is_refused() -> None:
    me, other = Identity.generate(), Identity.generate()
    v = Verdict(TASK.digest, "yes", 0.5, other.did, {})
    with pytest.raises(InvalidInputError):
        sign_review(me, v)


@pytest.mark.parametrize(
    ("question", "answers"),
    [
        ("Is the label\u202e right?", ["yes", "no"]),  # bidi override: reads as other text
        ("Is the label right?\x1b[2J", ["yes", "no"]),  # a terminal escape
        ("Is the label right?", ["yes", "n\u0301o"]),  # not NFC
    ],
)
def test_task_text_outside_the_text_profile_is_refused(question: str, answers: list[str]) -> None:
    with pytest.raises(ProfileError):
        make_task(hashlib.sha256(b"receipt").hexdigest(), question, answers)
