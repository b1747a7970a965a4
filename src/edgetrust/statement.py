"""in-toto Statement v1 payloads, and the registry of predicate types edgetrust knows.

Every entry edgetrust signs or logs (inference receipts, model cards, federated rounds, dispute
verdicts) is a DSSE envelope of an in-toto Statement whose `predicateType` names a versioned
edgetrust format. A module that defines a predicate type registers a validator for it here, so
the log node can refuse envelopes of unknown or malformed types.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edgetrust.dsse import MAX_ENVELOPE_BYTES, Envelope, pae, parse_envelope, verify_envelope
from edgetrust.encoding import canonical_json, parse_canonical_json
from edgetrust.errors import InvalidInputError, ProfileError, UnsupportedError, VerificationError
from edgetrust.profiles import check_text

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "MAX_COSIGNERS",
    "STATEMENT_TYPE",
    "COSIGNER_RULE",
    "CosignerHook",
    "PredicateValidator",
    "SignedStatement",
    "Statement",
    "Subject",
    "VerifiedCache",
    "encode_statement",
    "known_predicate_types",
    "named_cosigners",
    "open_signed_statement",
    "parse_statement",
    "register_predicate_type",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

COSIGNER_RULE = "signed by the issuer and exactly the co-signers the statement names"
"""The rule `ProfileError` names when a logged envelope's signers are not that set."""
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class Subject:
    """A statement subject: a name and its sha256 digest (hex)."""

    name: str
    sha256: str
    """64 lower-case hex characters."""


@dataclass(frozen=True)
class Statement:
    """A parsed in-toto Statement v1."""

    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: Mapping[str, Any]


PredicateValidator = Callable[[Statement, str], None]
"""Checks a statement's predicate, given the DID that signed it; raises on a bad one."""

CosignerHook = Callable[[Statement], frozenset[str]]
"""The DIDs a (validated) statement names as its co-signers, besides its issuer."""

MAX_COSIGNERS = 4
"""A statement may name at most this many co-signers (so a log entry has at most 5 signers)."""

_VALIDATORS: dict[str, PredicateValidator] = {}
_COSIGNERS: dict[str, CosignerHook] = {}


def register_predicate_type(
    uri: str, validator: PredicateValidator, *, cosigners: CosignerHook | None = None
) -> None:
    """Make `uri` a known predicate type, checked by `validator` when entries are opened.

    `cosigners`, for a type whose statements are signed by more than their issuer (a capture
    root by its wearer), names the DIDs the statement itself says co-sign it. The log takes
    such a statement only with exactly those signatures (`edgetrust.node.entries`); a type
    without the hook is logged with its issuer's signature alone.
    """
    if not re.fullmatch(r"https://edgetrust\.dev/[a-z0-9/-]+/v[0-9]+", uri):
        raise ValueError(f"predicate type {uri!r} must be https://edgetrust.dev/<name>/v<N>")
    _VALIDATORS[uri] = validator
    if cosigners is None:
        _COSIGNERS.pop(uri, None)
    else:
        _COSIGNERS[uri] = cosigners


def named_cosigners(statement: Statement, issuer: str) -> frozenset[str]:
    """The co-signers `statement` names (its type's hook), without its `issuer`.

    Call it on a statement its validator accepted. Empty for a type without a hook.

    Raises:
        ProfileError: the statement names more than `MAX_COSIGNERS` co-signers.
    """
    hook = _COSIGNERS.get(statement.predicate_type)
    named = frozenset() if hook is None else hook(statement) - {issuer}
    if len(named) > MAX_COSIGNERS:
        raise ProfileError(
            f"statement names {len(named)} co-signers, over {MAX_COSIGNERS}", rule=COSIGNER_RULE
        )
    return named


def known_predicate_types() -> tuple[str, ...]:
    """The predicate types registered so far, sorted."""
    return tuple(sorted(_VALIDATORS))


def encode_statement(
    subjects: list[Subject] | tuple[Subject, ...], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """Canonical JSON bytes of an in-toto Statement v1."""
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in subjects],
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
    )


def _hex64(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def parse_statement(payload: bytes) -> Statement:
    """Parse and structurally check an in-toto Statement v1 (not the predicate's content).

    The payload must be exactly its own RFC 8785 form: duplicate keys, whitespace or any other
    serialization are refused, since two JSON parsers could read two claims from such bytes.

    Raises:
        ProfileError: the payload is JSON but not canonical (rule ``JCS_RULE``).
        InvalidInputError / UnsupportedError: not a well-formed Statement v1.
    """
    obj = parse_canonical_json(payload, what="statement")
    if not isinstance(obj, dict):
        raise InvalidInputError("statement must be a JSON object")
    if obj.get("_type") != STATEMENT_TYPE:
        raise UnsupportedError(f"statement _type must be {STATEMENT_TYPE}")
    raw_subjects = obj.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise InvalidInputError("statement needs a non-empty subject list")
    subjects = []
    for raw in raw_subjects:
        digest = raw.get("digest") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInputError("each statement subject needs a string name")
        if not isinstance(digest, dict) or not _hex64(digest.get("sha256")):
            raise InvalidInputError("each statement subject needs a sha256 digest (64 hex)")
        subjects.append(Subject(check_text(raw["name"], "subject name"), digest["sha256"]))
    ptype = obj.get("predicateType")
    if not isinstance(ptype, str):
        raise InvalidInputError("statement predicateType must be a string")
    predicate = obj.get("predicate")
    if not isinstance(predicate, dict):
        raise InvalidInputError("statement predicate must be a JSON object")
    return Statement(tuple(subjects), ptype, MappingProxyType(predicate))


@dataclass(frozen=True)
class SignedStatement:
    """An envelope whose signatures verified and whose statement is of a known, valid type."""

    envelope: Envelope
    statement: Statement
    signer: str
    """DID of the (first) signer, verified."""


class VerifiedCache:
    """Remembers envelopes already opened, keyed by a hash of the exact signed bytes.

    Batch receipts share one envelope across thousands of items; checking its Ed25519
    signature once instead of per item is most of a batch verifier's speed. The key covers
    payload type, payload, and every (keyid, signature) pair, so any change misses the cache.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError("`maxsize` must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, SignedStatement] = OrderedDict()

    @staticmethod
    def key(envelope: Envelope) -> bytes:
        """A collision-resistant key for the envelope's exact content."""
        h = hashlib.sha256(pae(envelope.payload_type, envelope.payload))
        for s in envelope.signatures:
            keyid = s.keyid.encode("utf-8")
            h.update(b"\x00%d:%s%d:" % (len(keyid), keyid, len(s.sig)) + s.sig)
        return h.digest()

    def get(self, envelope: Envelope) -> SignedStatement | None:
        """The opened statement for an identical envelope, if seen."""
        key = self.key(envelope)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, signed: SignedStatement) -> None:
        """Remember an opened statement."""
        self._entries[self.key(signed.envelope)] = signed
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)


def open_signed_statement(
    data: bytes | str | Envelope,
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
    cache: VerifiedCache | None = None,
) -> SignedStatement:
    """Parse, verify and validate a signed statement of a registered predicate type.

    Steps: (1) the envelope parses; (2) every signature verifies; (3) the payload is an
    in-toto Statement v1; (4) its predicate type is registered and its validator accepts it.

    Raises:
        InvalidInputError: malformed envelope or statement.
        VerificationError: a signature does not verify (step "1 signature").
        UnsupportedError: unknown payload type, statement type or predicate type.
    """
    envelope = data if isinstance(data, Envelope) else parse_envelope(data, max_bytes=max_bytes)
    if cache is not None:
        hit = cache.get(envelope)
        if hit is not None:
            return hit
    try:
        signer = verify_envelope(envelope)
    except VerificationError as exc:
        raise VerificationError(exc.message, step="1 signature") from exc
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise UnsupportedError(f"unknown payloadType {envelope.payload_type!r:.80}")
    statement = parse_statement(envelope.payload)
    validator = _VALIDATORS.get(statement.predicate_type)
    if validator is None:
        raise UnsupportedError(f"unknown predicateType {statement.predicate_type!r:.100}")
    validator(statement, signer)
    signed = SignedStatement(envelope, statement, signer)
    if cache is not None:
        cache.put(signed)
    return signed
