"""DSSE envelopes (Dead Simple Signing Envelope, secure-systems-lab/dsse v1.0).

Signatures are over PAE(payloadType, payload), never over JSON, so no parser ambiguity can
change what was signed. `keyid` is the signer's `did:key`, which carries its public key.

PAE is written here rather than taken from securesystemslib: it is six lines, and that library
brings its own key and signer abstractions that we do not want beside `edgetrust.identity`. The
test suite cross-checks it against securesystemslib's implementation.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from edgetrust.encoding import canonical_json, parse_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity, verify_signature

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "Envelope",
    "Signature",
    "pae",
    "parse_envelope",
    "sign_envelope",
    "verify_envelope",
]

MAX_ENVELOPE_BYTES = 16 * 2**20
"""Default size limit for an envelope read from untrusted input (16 MiB)."""

MAX_SIGNATURES = 8
"""More signatures than this on one envelope is refused as adversarial."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding, DSSE protocol §"Signature definition".

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with LEN as ASCII decimal.
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    """One DSSE signature."""

    keyid: str
    """The signer's did:key."""
    sig: bytes
    """Raw 64-byte Ed25519 signature over PAE(payloadType, payload)."""


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the exact payload bytes that were signed, their type, signatures."""

    payload: bytes
    """The signed bytes, exactly as signed."""
    payload_type: str
    """DSSE payloadType, e.g. ``application/vnd.in-toto+json``."""
    signatures: tuple[Signature, ...]
    """At least one signature."""

    def to_json(self) -> bytes:
        """Canonical (RFC 8785) JSON serialization of the envelope."""
        return canonical_json(self.to_dict())

    def to_dict(self) -> dict[str, object]:
        """The DSSE JSON envelope as a dict (base64 standard encoding, with padding)."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    @property
    def signers(self) -> tuple[str, ...]:
        """The DIDs named by the signatures (unverified until `verify_envelope`)."""
        return tuple(s.keyid for s in self.signatures)


def sign_envelope(payload: bytes, payload_type: str, *signers: Identity) -> Envelope:
    """Sign `payload` as a DSSE envelope by each of `signers` (at least one)."""
    if not signers:
        raise InvalidInputError("an envelope needs at least one signer")
    message = pae(payload_type, payload)
    return Envelope(
        payload, payload_type, tuple(Signature(s.did, s.sign(message)) for s in signers)
    )


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"envelope {what} must be a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"envelope {what} is not valid base64") from exc
    # Refuse non-canonical base64 (non-zero padding bits): one envelope, one encoding, so the
    # log's duplicate detection and byte-level tamper checks cannot be sidestepped.
    if base64.b64encode(decoded).decode("ascii") != value:
        raise InvalidInputError(f"envelope {what} is not canonical base64")
    return decoded


def _text(value: object, what: str) -> str:
    """A string that is valid Unicode text (JSON can carry lone surrogates; UTF-8 cannot)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"envelope {what} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"envelope {what} is not valid Unicode text") from exc
    return value


def envelope_from_dict(obj: object) -> Envelope:
    """Build an `Envelope` from already-parsed JSON, checking every field's type."""
    if not isinstance(obj, dict):
        raise InvalidInputError("envelope must be a JSON object")
    extra = set(obj) - {"payload", "payloadType", "signatures"}
    if extra:
        raise InvalidInputError(f"envelope has unknown fields: {sorted(extra)}")
    payload = _b64(obj.get("payload"), "payload")
    payload_type = _text(obj.get("payloadType"), "payloadType")
    raw_sigs = obj.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise InvalidInputError("envelope must have a non-empty signatures list")
    if len(raw_sigs) > MAX_SIGNATURES:
        raise InvalidInputError(f"envelope has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for raw in raw_sigs:
        if not isinstance(raw, dict) or not isinstance(raw.get("keyid"), str):
            raise InvalidInputError("each envelope signature needs a string keyid")
        if set(raw) - {"keyid", "sig"}:
            raise InvalidInputError("envelope signature has unknown fields")
        sigs.append(Signature(_text(raw["keyid"], "keyid"), _b64(raw.get("sig"), "signature")))
    return Envelope(payload, payload_type, tuple(sigs))


def parse_envelope(data: bytes | str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Parse an untrusted DSSE JSON envelope. Does not verify signatures."""
    return envelope_from_dict(parse_json(data, what="envelope", max_bytes=max_bytes))


def verify_envelope(envelope: Envelope, *, expected_signer: str | None = None) -> str:
    """Verify every signature on `envelope`; return the (first) signer's DID.

    Strict: one bad signature fails the whole envelope, since a forged co-signature is a sign
    of tampering. With `expected_signer`, that DID must be among the signers.

    Raises:
        VerificationError: a signature does not verify, or the expected signer is missing.
    """
    message = pae(envelope.payload_type, envelope.payload)
    for s in envelope.signatures:
        verify_signature(s.keyid, s.sig, message)
    if expected_signer is not None and expected_signer not in envelope.signers:
        raise VerificationError(f"envelope is not signed by {expected_signer}")
    return envelope.signatures[0].keyid
