"""Review tasks and reviewer attestations: logged in-toto statements over a receipt's digest.

A task (`https://edgetrust.dev/human-task/v1`) names a receipt (its subject digest), a question,
the allowed answers and a commitment (predicate key ``gold``, 64 hex characters): to the known
answer for a gold task, to a random value never opened for any other, so the log cannot tell
them apart before a reveal (`edgetrust.human.gold`). Tasks logged before every task carried
one (the key absent) are still read, with `Task.commitment` None.

A verdict (`https://edgetrust.dev/human-review/v1`) carries the task digest, the answer, a
confidence in [0, 1], the reviewer DID, and a WebAuthn assertion whose challenge is the *review
digest* (sha256 of the canonical JSON of those four fields), so a stolen DID key alone cannot
vote: the passkey must approve that exact verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import ConflictError, InvalidInputError, VerificationError
from edgetrust.human.gold import decoy_commitment
from edgetrust.human.reviewers import ReviewerRegistry
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.profiles import check_text
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    SignedStatement,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "REVIEW_PREDICATE_TYPE",
    "TASK_PREDICATE_TYPE",
    "Task",
    "Verdict",
    "collect_verdicts",
    "make_task",
    "review_digest",
    "sign_review",
    "sign_task",
    "strict_collect",
    "task_from_statement",
    "verdict_from_statement",
    "verify_verdict",
]

TASK_PREDICATE_TYPE = "https://edgetrust.dev/human-task/v1"
REVIEW_PREDICATE_TYPE = "https://edgetrust.dev/human-review/v1"
_MAX_ANSWERS = 64
_MAX_TEXT = 2000


@dataclass(frozen=True)
class Task:
    """A question about one receipt (or batch item, or dataset sample)."""

    subject: str
    """sha256 hex of what is reviewed (a receipt's output digest or envelope digest)."""
    question: str
    answers: tuple[str, ...]
    """The allowed answers, in order; aggregation indexes classes by this order."""
    commitment: str | None = None
    """sha256 hex logged as ``gold``: a gold answer's commitment or a decoy, alike in the log.

    None only for a task read from the log in the old form (no ``gold`` key), which was
    therefore not a gold task. Whether a task is gold is known only once a reveal opens it.
    """

    @property
    def digest(self) -> str:
        """sha256 hex of the task's canonical statement: its identity in verdicts."""
        return hashlib.sha256(self.payload()).hexdigest()

    def payload(self) -> bytes:
        """The canonical in-toto statement bytes of this task."""
        predicate: dict[str, Any] = {"question": self.question, "answers": list(self.answers)}
        if self.commitment is not None:
            predicate["gold"] = self.commitment
        return encode_statement([Subject("subject", self.subject)], TASK_PREDICATE_TYPE, predicate)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise InvalidInputError(f"{what} must be a string of 1-{_MAX_TEXT} characters")
    return check_text(value, what)  # shown on the review page and in terminals as signed


def _hex64(value: object, what: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")):
        raise InvalidInputError(f"{what} must be 64 lower-case hex characters")
    return value


def make_task(
    subject: str, question: str, answers: Sequence[str], *, gold: str | None = None
) -> Task:
    """A checked `Task` carrying a commitment.

    `gold` is a gold answer's commitment (`gold.gold_commitment`); without it the task gets a
    decoy (`gold.decoy_commitment`), so both kinds of task have the same fields and lengths.
    """
    return _checked(subject, question, answers, decoy_commitment() if gold is None else gold)


def _checked(subject: str, question: str, answers: Sequence[str], commitment: str | None) -> Task:
    _hex64(subject, "task subject")
    _text(question, "task question")
    if not 2 <= len(answers) <= _MAX_ANSWERS or len(set(answers)) != len(answers):
        raise InvalidInputError(f"a task needs 2-{_MAX_ANSWERS} distinct answers")
    if commitment is not None:
        _hex64(commitment, "task gold commitment")
    return Task(subject, question, tuple(_text(a, "answer") for a in answers), commitment)


def sign_task(author: Identity, task: Task) -> Envelope:
    """The task as a DSSE envelope signed by its author, ready to log."""
    return sign_envelope(task.payload(), IN_TOTO_PAYLOAD_TYPE, author)


def task_from_statement(statement: Statement) -> Task:
    """Read a `Task` from a task statement (the old form, without ``gold``, is accepted)."""
    p = statement.predicate
    keys = set(p) - {"gold"}
    if keys != {"question", "answers"} or not isinstance(p["answers"], list):
        raise InvalidInputError(
            "task predicate needs question, answers (a list) and gold (its commitment)"
        )
    return _checked(statement.subjects[0].sha256, p["question"], p["answers"], p.get("gold"))


def _validate_task(statement: Statement, signer: str) -> None:
    task_from_statement(statement)


@dataclass(frozen=True)
class Verdict:
    """One reviewer's answer to one task."""

    task: str
    """The task digest."""
    answer: str
    confidence: float
    reviewer: str
    """The reviewer's did:key (also the DSSE signer)."""
    assertion: Mapping[str, Any]
    """The WebAuthn assertion (navigator.credentials.get JSON) over `review_digest`."""


def review_digest(task: str, answer: str, confidence: float, reviewer: str) -> bytes:
    """The 32 bytes a reviewer's passkey signs as its WebAuthn challenge."""
    body = {"task": task, "answer": answer, "confidence": confidence, "reviewer": reviewer}
    return hashlib.sha256(canonical_json(body)).digest()


def sign_review(identity: Identity, verdict: Verdict) -> Envelope:
    """The verdict as a DSSE envelope of a human-review statement, signed by the reviewer DID."""
    if identity.did != verdict.reviewer:
        raise InvalidInputError("a verdict is signed by its reviewer")
    predicate = {
        "task": verdict.task,
        "answer": verdict.answer,
        "confidence": verdict.confidence,
        "reviewer": verdict.reviewer,
        "assertion": dict(verdict.assertion),
    }
    subject = Subject("task", verdict.task)
    payload = encode_statement([subject], REVIEW_PREDICATE_TYPE, predicate)
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, identity)


def verdict_from_statement(statement: Statement) -> Verdict:
    """Read a `Verdict` from a human-review statement (structure only)."""
    p = statement.predicate
    if set(p) != {"task", "answer", "confidence", "reviewer", "assertion"}:
        raise InvalidInputError(
            "review predicate needs task, answer, confidence, reviewer, assertion"
        )
    conf = p["confidence"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
        raise InvalidInputError("review confidence must be a number in [0, 1]")
    if not isinstance(p["assertion"], dict) or len(json.dumps(p["assertion"])) > 16384:
        raise InvalidInputError("review assertion must be a WebAuthn assertion object")
    reviewer = _text(p["reviewer"], "reviewer")
    public_bytes_from_did(reviewer)
    task = _hex64(p["task"], "review task")
    if statement.subjects[0].sha256 != task:
        raise InvalidInputError("review subject is not its task digest")
    return Verdict(task, _text(p["answer"], "answer"), float(conf), reviewer, p["assertion"])


def _validate_review(statement: Statement, signer: str) -> None:
    if verdict_from_statement(statement).reviewer != signer:
        raise VerificationError("a review must be signed by the reviewer it names")


register_predicate_type(TASK_PREDICATE_TYPE, _validate_task)
register_predicate_type(REVIEW_PREDICATE_TYPE, _validate_review)


def verify_verdict(signed: SignedStatement, task: Task, registry: ReviewerRegistry) -> Verdict:
    """Check a verdict: registered reviewer, allowed answer, passkey assertion over it.

    Steps: (1) the statement is a review signed by the reviewer (already checked when opened);
    (2) it is for `task` and its answer is allowed; (3) the reviewer is registered; (4) the
    WebAuthn assertion verifies over the review digest, counter moving forward.

    Raises:
        VerificationError: any step fails (`CeremonyError` for step 4).
        NotFoundError: the reviewer or credential is not registered.
    """
    verdict = verdict_from_statement(signed.statement)
    if signed.signer != verdict.reviewer:
        raise VerificationError("review is not signed by its reviewer", step="1 signature")
    if verdict.task != task.digest:
        raise VerificationError("review is for another task", step="2 task")
    if verdict.answer not in task.answers:
        raise VerificationError(f"answer {verdict.answer!r:.40} is not allowed", step="2 task")
    if not registry.is_reviewer(verdict.reviewer):
        raise VerificationError(
            f"{verdict.reviewer:.80} is not a registered reviewer", step="3 reviewer"
        )
    challenge = review_digest(verdict.task, verdict.answer, verdict.confidence, verdict.reviewer)
    registry.verify_assertion(verdict.reviewer, verdict.assertion, challenge)
    return verdict


def collect_verdicts(verdicts: Iterable[Verdict]) -> dict[str, dict[str, Verdict]]:
    """Group verdicts by task then reviewer; the FIRST verdict of a reviewer on a task counts.

    Later ones are ignored (log order is the tie-break everyone can recompute), so a reviewer
    cannot change their vote after seeing others'. Use `strict_collect` to refuse them instead.
    """
    out: dict[str, dict[str, Verdict]] = {}
    for v in verdicts:
        out.setdefault(v.task, {}).setdefault(v.reviewer, v)
    return out


def strict_collect(verdicts: Iterable[Verdict]) -> dict[str, dict[str, Verdict]]:
    """Like `collect_verdicts`, but a second verdict by one reviewer on one task is refused."""
    out: dict[str, dict[str, Verdict]] = {}
    for v in verdicts:
        if v.reviewer in out.setdefault(v.task, {}):
            raise ConflictError(f"{v.reviewer:.60} already reviewed task {v.task[:12]}")
        out[v.task][v.reviewer] = v
    return out
