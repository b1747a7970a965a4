"""Gold tasks: a known answer committed with the task, revealed later, only then used.

Every task statement carries ``gold``, 64 hex characters. A gold task's is the commitment
``sha256(JCS({"answer": a, "salt": s}))`` (`gold_commitment`), where `s` is 32 random bytes
in hex kept by the task's author, so reviewers reading the log cannot tell the gold answer
(the salt makes guessing over the few allowed answers useless). Any other task's is a decoy,
the sha256 of 32 random bytes nobody keeps (`decoy_commitment`), so reviewers cannot tell
which tasks are gold either, until a reveal. Once reviewers have answered, the author logs a
reveal (`https://edgetrust.dev/human-gold/v1`: subject = the task digest, predicate
``{task, answer, salt}``). `HumanRecord` checks it against the commitment,
and only from then on clamps the task to its answer in Dawid–Skene, anchoring every reviewer's
reliability. A reveal that does not match, is not by the task's author or is for a task with no
commitment is refused; a verdict on a gold task logged after its reveal is refused too (the
reviewer could have read the answer).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "GOLD_PREDICATE_TYPE",
    "GoldError",
    "GoldReveal",
    "check_reveal",
    "decoy_commitment",
    "gold_commitment",
    "new_salt",
    "reveal_from_statement",
    "reveal_payload",
    "sign_reveal",
]

GOLD_PREDICATE_TYPE = "https://edgetrust.dev/human-gold/v1"
_STEP = "gold"


class GoldError(VerificationError):
    """A gold reveal was refused (no commitment, wrong author, does not match)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step=_STEP)


def _hex(value: object, n: int, what: str) -> str:
    if not (isinstance(value, str) and len(value) == n and set(value) <= set("0123456789abcdef")):
        raise InvalidInputError(f"{what} must be {n} lower-case hex characters")
    return value


def new_salt() -> str:
    """32 random bytes, hex: the secret half of a gold commitment."""
    return secrets.token_hex(32)


def gold_commitment(answer: str, salt: str) -> str:
    """sha256 hex of JCS({answer, salt}): what a gold task's statement carries as ``gold``."""
    if not isinstance(answer, str) or not answer:
        raise InvalidInputError("gold answer must be a non-empty string")
    _hex(salt, 64, "gold salt")
    return hashlib.sha256(canonical_json({"answer": answer, "salt": salt})).hexdigest()


def decoy_commitment() -> str:
    """What a task that is not gold carries as ``gold``: sha256 hex of 32 random bytes.

    The preimage is not kept, so it can never be opened; it has the shape and length of a
    `gold_commitment`, and, sha256 being a random function to anyone without the preimage,
    no test on its value tells it from one.
    """
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


@dataclass(frozen=True)
class GoldReveal:
    """The opening of one gold task's commitment."""

    task: str
    answer: str
    salt: str


def reveal_payload(reveal: GoldReveal) -> bytes:
    """Canonical statement bytes of a reveal."""
    predicate = {"task": reveal.task, "answer": reveal.answer, "salt": reveal.salt}
    return encode_statement([Subject("task", reveal.task)], GOLD_PREDICATE_TYPE, predicate)


def sign_reveal(author: Identity, task: str, answer: str, salt: str) -> Envelope:
    """A reveal of `task`'s gold answer, signed by the task's author."""
    reveal = GoldReveal(_hex(task, 64, "gold task"), answer, _hex(salt, 64, "gold salt"))
    return sign_envelope(reveal_payload(reveal), IN_TOTO_PAYLOAD_TYPE, author)


def reveal_from_statement(statement: Statement) -> GoldReveal:
    """Read a `GoldReveal` (structure only)."""
    p = statement.predicate
    if set(p) != {"task", "answer", "salt"}:
        raise InvalidInputError("gold reveal predicate needs exactly task, answer, salt")
    task = _hex(p["task"], 64, "gold task")
    if not isinstance(p["answer"], str) or not p["answer"] or len(p["answer"]) > 2000:
        raise InvalidInputError("gold answer must be a string of 1-2000 characters")
    if statement.subjects[0].sha256 != task:
        raise InvalidInputError("gold reveal subject is not its task digest")
    return GoldReveal(task, p["answer"], _hex(p["salt"], 64, "gold salt"))


def check_reveal(
    reveal: GoldReveal,
    signer: str,
    *,
    commitment: str | None,
    author: str,
    answers: tuple[str, ...],
) -> None:
    """Refuse a reveal that does not open the task's commitment.

    Raises:
        GoldError: the task has no commitment, the signer is not its author, the answer is
            not allowed, or sha256(answer, salt) is not the commitment.
    """
    short = reveal.task[:12]
    if commitment is None:
        raise GoldError(f"task {short} is not a gold task (it was logged without a commitment)")
    if signer != author:
        raise GoldError(f"a gold reveal of task {short} must be signed by the task's author")
    if reveal.answer not in answers:
        raise GoldError(f"revealed answer {reveal.answer!r:.40} is not one of the task's answers")
    if gold_commitment(reveal.answer, reveal.salt) != commitment:
        raise GoldError(f"gold reveal of task {short} does not match its logged commitment")


def _validate(statement: Statement, signer: str) -> None:
    reveal_from_statement(statement)


register_predicate_type(GOLD_PREDICATE_TYPE, _validate)
