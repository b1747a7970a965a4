"""Vouching: k existing reviewers co-sign a newcomer, as logged statements.

A passkey proves presence and possession of an authenticator, not that one person holds one
account. Vouching is the optional mitigation: a vouch (`https://edgetrust.dev/human-vouch/v1`)
is signed by a registered reviewer's DID, names a registered newcomer, and carries a WebAuthn
assertion by one of the voucher's passkeys whose challenge is the *vouch digest* (as verdicts
do), so a stolen DID key alone cannot vouch. `HumanRecord` counts *distinct* registered
vouchers per newcomer; a policy can require k of them (`HumanRecord.vouched(did, k)`).
Self-vouches are refused when opened; a vouch by an unregistered DID, or for one, one without
an assertion (the old format) or with an assertion that does not verify is refused on replay
(named in `HumanRecord.refused`) and by the node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.human.reviewers import ReviewerRegistry
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    SignedStatement,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "VOUCH_PREDICATE_TYPE",
    "Vouch",
    "sign_vouch",
    "verify_vouch",
    "vouch_digest",
    "vouch_from_statement",
    "vouch_payload",
]

VOUCH_PREDICATE_TYPE = "https://edgetrust.dev/human-vouch/v1"
OLD_FORMAT = (
    "vouch carries no WebAuthn assertion (the old format): a vouch now needs the voucher's "
    "passkey; vouch again with 'edgetrust human vouch'"
)


@dataclass(frozen=True)
class Vouch:
    """One reviewer vouching for a newcomer."""

    voucher: str
    newcomer: str
    assertion: Mapping[str, Any]
    """The WebAuthn assertion (navigator.credentials.get JSON) over `vouch_digest`."""


def vouch_digest(voucher: str, newcomer: str) -> bytes:
    """The 32 bytes the voucher's passkey signs as its WebAuthn challenge.

    The statement type is in the hashed body, so a vouch digest is never a review digest.
    """
    body = {"type": VOUCH_PREDICATE_TYPE, "voucher": voucher, "newcomer": newcomer}
    return hashlib.sha256(canonical_json(body)).digest()


def vouch_payload(voucher: str, newcomer: str, assertion: Mapping[str, Any]) -> bytes:
    """The canonical statement bytes of `voucher` vouching for `newcomer`."""
    subject = Subject("reviewer", hashlib.sha256(newcomer.encode()).hexdigest())
    predicate = {"newcomer": newcomer, "voucher": voucher, "assertion": dict(assertion)}
    return encode_statement([subject], VOUCH_PREDICATE_TYPE, predicate)


def sign_vouch(voucher: Identity, newcomer: str, assertion: Mapping[str, Any]) -> Envelope:
    """A vouch for `newcomer` signed by `voucher`; `InvalidInputError` for a self-vouch.

    `assertion` is the voucher passkey's over `vouch_digest(voucher.did, newcomer)`.
    """
    public_bytes_from_did(newcomer)
    if newcomer == voucher.did:
        raise InvalidInputError("a reviewer cannot vouch for themselves")
    if not isinstance(assertion, Mapping):
        raise InvalidInputError("a vouch needs the voucher passkey's WebAuthn assertion")
    payload = vouch_payload(voucher.did, newcomer, assertion)
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, voucher)


def _parties(statement: Statement) -> tuple[str, str]:
    p = statement.predicate
    if not {"newcomer", "voucher"} <= set(p) <= {"newcomer", "voucher", "assertion"}:
        raise InvalidInputError("vouch predicate needs exactly newcomer, voucher, assertion")
    newcomer, voucher = p["newcomer"], p["voucher"]
    if not isinstance(newcomer, str) or not isinstance(voucher, str):
        raise InvalidInputError("vouch newcomer and voucher must be did:key strings")
    public_bytes_from_did(newcomer)
    public_bytes_from_did(voucher)
    if statement.subjects[0].sha256 != hashlib.sha256(newcomer.encode()).hexdigest():
        raise InvalidInputError("vouch subject is not the newcomer DID's digest")
    if newcomer == voucher:
        raise VerificationError("a reviewer cannot vouch for themselves")
    return voucher, newcomer


def vouch_from_statement(statement: Statement) -> Vouch:
    """The `Vouch` of a vouch statement, structure checked.

    An old-format vouch without an assertion is refused with a message that says so.
    """
    voucher, newcomer = _parties(statement)
    assertion = statement.predicate.get("assertion")
    if assertion is None:
        raise InvalidInputError(OLD_FORMAT)
    if not isinstance(assertion, dict) or len(json.dumps(assertion)) > 16384:
        raise InvalidInputError("vouch assertion must be a WebAuthn assertion object")
    return Vouch(voucher, newcomer, assertion)


def verify_vouch(signed: SignedStatement, registry: ReviewerRegistry) -> Vouch:
    """Check a vouch: signed by the voucher, both registered, the voucher's passkey approved it.

    Raises:
        InvalidInputError: malformed, or the old format without an assertion.
        VerificationError: a party is not a registered reviewer (`CeremonyError` when the
            assertion is over another statement, by another RP, or its counter went back).
        NotFoundError: the assertion's credential is not one of the voucher's passkeys.
    """
    vouch = vouch_from_statement(signed.statement)
    if signed.signer != vouch.voucher:
        raise VerificationError("a vouch must be signed by the voucher it names")
    for did, role in ((vouch.voucher, "voucher"), (vouch.newcomer, "newcomer")):
        if not registry.is_reviewer(did):
            hint = "" if role == "voucher" else " (they must register before being vouched)"
            raise VerificationError(f"{role} {did:.60} is not a registered reviewer{hint}")
    registry.verify_assertion(
        vouch.voucher, vouch.assertion, vouch_digest(vouch.voucher, vouch.newcomer)
    )
    return vouch


def _validate_vouch(statement: Statement, signer: str) -> None:
    # Structure only (an old-format vouch still opens, so replay can name why it is refused).
    if _parties(statement)[0] != signer:
        raise VerificationError("a vouch must be signed by the voucher it names")


register_predicate_type(VOUCH_PREDICATE_TYPE, _validate_vouch)
