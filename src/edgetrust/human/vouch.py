"""Vouching: k existing reviewers co-sign a newcomer, as logged statements.

A passkey proves presence and possession of an authenticator, not that one person holds one
account. Vouching is the optional mitigation: a vouch (`https://edgetrust.dev/human-vouch/v1`)
is signed by a registered reviewer's DID and names a registered newcomer. `HumanRecord` counts
*distinct* registered vouchers per newcomer; a policy can require k of them
(`HumanRecord.vouched(did, k)`). Self-vouches are refused when opened; a vouch by an unregistered
DID, or for one, is refused on replay (named in `HumanRecord.refused`).
"""

from __future__ import annotations

import hashlib

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = ["VOUCH_PREDICATE_TYPE", "sign_vouch", "vouch_from_statement"]

VOUCH_PREDICATE_TYPE = "https://edgetrust.dev/human-vouch/v1"


def vouch_payload(voucher: str, newcomer: str) -> bytes:
    """The canonical statement bytes of `voucher` vouching for `newcomer`."""
    subject = Subject("reviewer", hashlib.sha256(newcomer.encode()).hexdigest())
    predicate = {"newcomer": newcomer, "voucher": voucher}
    return encode_statement([subject], VOUCH_PREDICATE_TYPE, predicate)


def sign_vouch(voucher: Identity, newcomer: str) -> Envelope:
    """A vouch for `newcomer` signed by `voucher`; `InvalidInputError` for a self-vouch."""
    public_bytes_from_did(newcomer)
    if newcomer == voucher.did:
        raise InvalidInputError("a reviewer cannot vouch for themselves")
    return sign_envelope(vouch_payload(voucher.did, newcomer), IN_TOTO_PAYLOAD_TYPE, voucher)


def vouch_from_statement(statement: Statement) -> tuple[str, str]:
    """(voucher, newcomer) of a vouch statement, structure checked."""
    p = statement.predicate
    if set(p) != {"newcomer", "voucher"}:
        raise InvalidInputError("vouch predicate needs exactly newcomer and voucher")
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


def _validate_vouch(statement: Statement, signer: str) -> None:
    if vouch_from_statement(statement)[0] != signer:
        raise VerificationError("a vouch must be signed by the voucher it names")


register_predicate_type(VOUCH_PREDICATE_TYPE, _validate_vouch)
