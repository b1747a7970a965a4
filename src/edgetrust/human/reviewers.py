"""Reviewers: a `did:key` bound to WebAuthn passkeys, and the two ceremonies that bind and use them.

The ceremonies follow WebAuthn Level 3 (§7.1 registration, §7.2 authentication) through
py_webauthn: the relying party issues a random challenge (single use, expiring), and accepts
only a response whose clientDataJSON names that challenge, the expected origin and type, whose
authenticatorData carries the RP ID hash with user presence *and* user verification, and (for
an assertion) whose signature counter moved forward. Every refusal is a typed
`CeremonyError` subclass that names what failed.

A registered passkey is a logged statement (predicate `https://edgetrust.dev/human-reviewer/v1`)
signed by the reviewer's DID, so anyone can rebuild the reviewer set from the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, WebAuthnException

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "CHALLENGE_TTL",
    "MAX_CREDENTIAL_BYTES",
    "REVIEWER_PREDICATE_TYPE",
    "CeremonyError",
    "ChallengeError",
    "ChallengeStore",
    "CounterError",
    "OriginError",
    "Passkey",
    "ReviewerRegistry",
    "RpIdError",
    "SignatureError",
    "b64url",
    "b64url_decode",
    "passkey_from_statement",
    "sign_reviewer_statement",
]

REVIEWER_PREDICATE_TYPE = "https://edgetrust.dev/human-reviewer/v1"
CHALLENGE_TTL = 300.0
"""Seconds a ceremony challenge stays valid (WebAuthn §13.4.3 recommends a short timeout)."""
MAX_CREDENTIAL_BYTES = 64 * 1024
"""A WebAuthn response larger than this is refused before parsing."""
_STEP = "webauthn"


class CeremonyError(VerificationError):
    """A WebAuthn registration or authentication response was refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step=_STEP)


class ChallengeError(CeremonyError):
    """The challenge is unknown, already used (a replay), expired, or for another ceremony."""


class OriginError(CeremonyError):
    """clientDataJSON names another origin (or type) than the relying party expects."""


class RpIdError(CeremonyError):
    """authenticatorData carries the hash of another RP ID."""


class CounterError(CeremonyError):
    """The signature counter did not move forward: a cloned authenticator or a replay."""


class SignatureError(CeremonyError):
    """The assertion signature does not verify, or flags (UP/UV) are missing."""


def b64url(data: bytes) -> str:
    """base64url without padding, as WebAuthn JSON uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: object, what: str) -> bytes:
    """Decode unpadded base64url; `InvalidInputError` on anything else."""
    if not isinstance(value, str) or len(value) > MAX_CREDENTIAL_BYTES:
        raise InvalidInputError(f"{what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{what} is not valid base64url") from exc


def _classify(exc: WebAuthnException) -> CeremonyError:
    """Turn py_webauthn's one exception type into ours, by what it says failed."""
    text = str(exc)
    low = text.lower()
    if "sign count" in low:
        return CounterError(f"signature counter went back or stood still: {text}")
    if "origin" in low or ("type" in low and "client data" in low):
        return OriginError(f"wrong origin or ceremony type: {text}")
    if "rp id" in low:
        return RpIdError(f"wrong RP ID: {text}")
    if "challenge" in low:
        return ChallengeError(f"challenge mismatch: {text}")
    if isinstance(exc, InvalidAuthenticationResponse) and "signature" in low:
        return SignatureError(f"assertion signature does not verify: {text}")
    return SignatureError(f"webauthn response refused: {text}")


@dataclass(frozen=True)
class _Pending:
    purpose: str
    did: str
    expires: float


class ChallengeStore:
    """Challenges issued by the relying party: random, bound to a purpose and DID, single use.

    In memory on purpose: a challenge lives for minutes and must never survive to be replayed;
    a node with several processes gives each ceremony to one process (sticky session).
    """

    def __init__(
        self, *, ttl: float = CHALLENGE_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl <= 0:
            raise ValueError("`ttl` must be positive")
        self.ttl, self._clock = ttl, clock
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()

    def issue(self, purpose: str, did: str) -> bytes:
        """A fresh 32-byte challenge for `purpose` (``register`` or ``login``) by `did`."""
        challenge = secrets.token_bytes(32)
        now = self._clock()
        with self._lock:
            for key in [k for k, p in self._pending.items() if p.expires < now]:
                del self._pending[key]
            self._pending[challenge] = _Pending(purpose, did, now + self.ttl)
        return challenge

    def consume(self, challenge: bytes, purpose: str, did: str) -> None:
        """Use up `challenge`; refuse an unknown, replayed, expired or misbound one.

        Raises:
            ChallengeError: what is wrong with it.
        """
        with self._lock:
            pending = self._pending.pop(challenge, None)
        if pending is None:
            raise ChallengeError("challenge is unknown or was already used (replay)")
        if pending.expires < self._clock():
            raise ChallengeError("challenge expired")
        if pending.purpose != purpose or not hmac.compare_digest(pending.did, did):
            raise ChallengeError("challenge was issued for another ceremony or reviewer")


@dataclass(frozen=True)
class Passkey:
    """One WebAuthn credential bound to a reviewer DID."""

    did: str
    """The reviewer's did:key."""
    credential_id: bytes
    """The authenticator's credential id."""
    public_key: bytes
    """The credential public key, COSE_Key CBOR bytes (ES256 or EdDSA)."""
    rp_id: str
    """The relying party the credential is scoped to."""


def sign_reviewer_statement(identity: Identity, passkey: Passkey) -> Envelope:
    """The logged statement binding `passkey` to `identity`'s DID, signed by that DID."""
    if identity.did != passkey.did:
        raise InvalidInputError("a passkey is bound by the DID it names")
    predicate = {
        "did": passkey.did,
        "credentialId": b64url(passkey.credential_id),
        "publicKey": b64url(passkey.public_key),
        "rpId": passkey.rp_id,
    }
    subject = Subject("passkey", hashlib.sha256(passkey.credential_id).hexdigest())
    payload = encode_statement([subject], REVIEWER_PREDICATE_TYPE, predicate)
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, identity)


def passkey_from_statement(statement: Statement) -> Passkey:
    """Read the `Passkey` out of a reviewer statement (structure checked)."""
    p = statement.predicate
    if set(p) != {"did", "credentialId", "publicKey", "rpId"}:
        raise InvalidInputError(
            "reviewer predicate needs exactly did, credentialId, publicKey, rpId"
        )
    did, rp_id = p["did"], p["rpId"]
    if not isinstance(did, str) or not isinstance(rp_id, str) or not rp_id or len(rp_id) > 253:
        raise InvalidInputError("reviewer did and rpId must be strings")
    public_bytes_from_did(did)
    cred = b64url_decode(p["credentialId"], "credentialId")
    key = b64url_decode(p["publicKey"], "publicKey")
    if not 1 <= len(cred) <= 1023:
        raise InvalidInputError("credentialId must be 1-1023 bytes")
    try:
        cose = cbor2.loads(key)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise InvalidInputError("publicKey is not a COSE key") from exc
    if not isinstance(cose, dict) or cose.get(1) not in (1, 2):
        raise InvalidInputError("publicKey is not an EC2 or OKP COSE key")
    if statement.subjects[0].sha256 != hashlib.sha256(cred).hexdigest():
        raise InvalidInputError("reviewer subject is not the credential id's digest")
    return Passkey(did, cred, key, rp_id)


def _validate_reviewer(statement: Statement, signer: str) -> None:
    passkey = passkey_from_statement(statement)
    if passkey.did != signer:
        raise VerificationError("a reviewer statement must be signed by the DID it binds")


register_predicate_type(REVIEWER_PREDICATE_TYPE, _validate_reviewer)


def _credential_json(credential: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(credential, (str, bytes)):
        obj = parse_json(credential, what="webauthn credential", max_bytes=MAX_CREDENTIAL_BYTES)
    else:
        obj = dict(credential)
    if not isinstance(obj, dict) or not isinstance(obj.get("response"), dict):
        raise InvalidInputError("webauthn credential must be a JSON object with a response")
    return obj


def _client_challenge(obj: Mapping[str, Any]) -> bytes:
    raw = b64url_decode(obj["response"].get("clientDataJSON"), "clientDataJSON")
    client = parse_json(raw, what="clientDataJSON", max_bytes=MAX_CREDENTIAL_BYTES)
    if not isinstance(client, dict):
        raise InvalidInputError("clientDataJSON must be a JSON object")
    return b64url_decode(client.get("challenge"), "clientDataJSON challenge")


class ReviewerRegistry:
    """The relying party: runs ceremonies and remembers passkeys and their counters.

    Args:
        rp_id: the WebAuthn RP ID (a registrable domain, e.g. ``edgetrust.local``).
        origin: the exact origin pages are served from (``https://edgetrust.local``).
    """

    def __init__(
        self, *, rp_id: str, origin: str, challenges: ChallengeStore | None = None
    ) -> None:
        if not rp_id or not origin:
            raise ValueError("`rp_id` and `origin` must be non-empty")
        self.rp_id, self.origin = rp_id, origin
        self.challenges = challenges or ChallengeStore()
        self._passkeys: dict[bytes, Passkey] = {}
        self._counters: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def add(self, passkey: Passkey, sign_count: int = 0) -> None:
        """Know `passkey` (e.g. rebuilt from the log), with the last counter seen."""
        with self._lock:
            self._passkeys[passkey.credential_id] = passkey
            self._counters[passkey.credential_id] = max(
                sign_count, self._counters.get(passkey.credential_id, 0)
            )

    def remove(self, credential_id: bytes) -> None:
        """Forget a passkey (e.g. one whose binding statement was never logged)."""
        with self._lock:
            self._passkeys.pop(credential_id, None)
            self._counters.pop(credential_id, None)

    def passkeys(self, did: str) -> tuple[Passkey, ...]:
        """The passkeys bound to `did`."""
        return tuple(p for p in self._passkeys.values() if p.did == did)

    def is_reviewer(self, did: str) -> bool:
        """Whether `did` has at least one passkey."""
        return any(p.did == did for p in self._passkeys.values())

    def start_registration(self, did: str) -> bytes:
        """Begin registration for `did`: the challenge for ``navigator.credentials.create``."""
        public_bytes_from_did(did)
        return self.challenges.issue("register", did)

    def finish_registration(self, did: str, credential: str | bytes | Mapping[str, Any]) -> Passkey:
        """Verify a registration response (WebAuthn §7.1); return the new passkey.

        Raises:
            InvalidInputError: the response is malformed.
            CeremonyError: a check failed (challenge, origin, RP ID, flags).
        """
        obj = _credential_json(credential)
        challenge = _client_challenge(obj)
        self.challenges.consume(challenge, "register", did)
        try:
            verified = verify_registration_response(
                credential=obj,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
        except WebAuthnException as exc:
            raise _classify(exc) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInputError(f"malformed registration response: {exc}") from exc
        if verified.credential_id in self._passkeys:
            raise CeremonyError("this credential is already registered")
        passkey = Passkey(did, verified.credential_id, verified.credential_public_key, self.rp_id)
        self.add(passkey, verified.sign_count)
        return passkey

    def start_login(self, did: str) -> bytes:
        """Begin authentication: the challenge for ``navigator.credentials.get``."""
        if not self.is_reviewer(did):
            raise NotFoundError(f"{did:.80} is not a registered reviewer")
        return self.challenges.issue("login", did)

    def finish_login(self, did: str, credential: str | bytes | Mapping[str, Any]) -> Passkey:
        """Verify an assertion against a challenge from `start_login` (WebAuthn §7.2)."""
        obj = _credential_json(credential)
        challenge = _client_challenge(obj)
        self.challenges.consume(challenge, "login", did)
        return self.verify_assertion(did, obj, challenge)

    def verify_assertion(
        self, did: str, credential: str | bytes | Mapping[str, Any], challenge: bytes
    ) -> Passkey:
        """Verify an assertion by one of `did`'s passkeys over `challenge`; advance its counter.

        Attestations use this with the statement digest as the challenge: the assertion then
        proves the passkey holder approved *that* verdict.

        Raises:
            NotFoundError: the credential is not one of `did`'s passkeys.
            CeremonyError: challenge, origin, RP ID, flags, counter or signature refused.
        """
        obj = _credential_json(credential)
        cred_id = b64url_decode(obj.get("rawId", obj.get("id")), "credential rawId")
        passkey = self._passkeys.get(cred_id)
        if passkey is None or passkey.did != did:
            raise NotFoundError("credential is not a passkey of this reviewer")
        if not hmac.compare_digest(_client_challenge(obj), challenge):
            raise ChallengeError("assertion is over another challenge (another statement)")
        with self._lock:
            try:
                verified = verify_authentication_response(
                    credential=obj,
                    expected_challenge=challenge,
                    expected_rp_id=self.rp_id,
                    expected_origin=self.origin,
                    credential_public_key=passkey.public_key,
                    credential_current_sign_count=self._counters[cred_id],
                    require_user_verification=True,
                )
            except WebAuthnException as exc:
                raise _classify(exc) from exc
            except (ValueError, TypeError, KeyError) as exc:
                raise InvalidInputError(f"malformed assertion: {exc}") from exc
            self._counters[cred_id] = verified.new_sign_count
        return passkey
