"""A software WebAuthn authenticator (ES256, 'none' attestation) for scripted reviewers.

It answers ``navigator.credentials.create`` and ``.get`` exactly as a platform authenticator
would (authenticatorData with UP and UV flags, a signature counter that goes up with each
assertion), so the CLI, the demo and the tests run real ceremonies without a browser. It proves
possession of a key file, not presence of a person: a relying party that needs more should
accept only attested hardware authenticators.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError
from edgetrust.human.reviewers import b64url, b64url_decode

__all__ = ["SoftAuthenticator"]

UP, UV, AT = 0x01, 0x04, 0x40
_FORMAT = "edgetrust-soft-authenticator/v1"


@dataclass
class SoftAuthenticator:
    """One ES256 credential; `sign_count` goes up with each assertion."""

    rp_id: str = "edgetrust.local"
    origin: str = "https://edgetrust.local"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    sign_count: int = 0
    flags: int = UP | UV

    def cose_key(self) -> bytes:
        """The credential public key as a COSE_Key (EC2, P-256, ES256)."""
        nums = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
        )

    def _client(self, kind: str, challenge: bytes, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": b64url(challenge),
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def create(
        self, challenge: bytes, *, origin: str | None = None, rp_id: str | None = None
    ) -> dict[str, Any]:
        """The response to navigator.credentials.create()."""
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        attested = (
            bytes(16)
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self.cose_key()
        )
        auth_data = (
            rp_hash + bytes([self.flags | AT]) + self.sign_count.to_bytes(4, "big") + attested
        )
        att = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(self._client("webauthn.create", challenge, origin)),
                "attestationObject": b64url(att),
            },
        }

    def get(
        self,
        challenge: bytes,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        count: int | None = None,
    ) -> dict[str, Any]:
        """The response to navigator.credentials.get(); bumps the counter unless `count` given."""
        if count is None:
            self.sign_count += 1
            count = self.sign_count
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        auth_data = rp_hash + bytes([self.flags]) + count.to_bytes(4, "big")
        client = self._client("webauthn.get", challenge, origin)
        sig = self.key.sign(auth_data + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(sig),
            },
        }

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The authenticator's state (private key included: keep the file private)."""
        der = self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "format": _FORMAT,
            "rpId": self.rp_id,
            "origin": self.origin,
            "credentialId": b64url(self.credential_id),
            "key": b64url(der),
            "signCount": self.sign_count,
        }

    @classmethod
    def from_dict(cls, obj: object) -> SoftAuthenticator:
        """Rebuild from `to_dict` output; `InvalidInputError` on anything else."""
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise InvalidInputError(f"not an authenticator file (format {_FORMAT})")
        try:
            key = serialization.load_der_private_key(b64url_decode(obj["key"], "key"), None)
            count, rp_id, origin = obj["signCount"], obj["rpId"], obj["origin"]
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInputError(f"authenticator file is damaged: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(count, int):
            raise InvalidInputError("authenticator file is damaged: key or counter")
        if not isinstance(rp_id, str) or not isinstance(origin, str):
            raise InvalidInputError("authenticator file is damaged: rpId or origin")
        cred = b64url_decode(obj["credentialId"], "credentialId")
        return cls(rp_id, origin, key, cred, count)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to `path` (mode 0600), atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_dict(), fh)
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SoftAuthenticator:
        """Read a state file written by `save`."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read authenticator {path}: {exc.strerror}") from exc
        return cls.from_dict(parse_json(data, what="authenticator file", max_bytes=65536))
