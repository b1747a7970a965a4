"""Ed25519 identities named by `did:key`, and the keystore that holds their private keys.

A device, a log, a witness and a referee are all identities. Private keys live in
`$EDGETRUST_HOME/keys/<name>.pem` as PKCS#8 PEM, mode 0600, optionally passphrase-encrypted;
a key file that other users can read is refused rather than used.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgetrust.errors import InvalidInputError, KeystoreError, NotFoundError, VerificationError
from edgetrust.home import resolve_home

__all__ = [
    "DID_KEY_PREFIX",
    "Identity",
    "Keystore",
    "did_from_public_bytes",
    "public_bytes_from_did",
    "verify_signature",
]

DID_KEY_PREFIX = "did:key:z"
_ED25519_MULTICODEC = b"\xed\x01"  # varint of 0xed, the multicodec code for ed25519-pub
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def did_from_public_bytes(public: bytes) -> str:
    """Return the `did:key` of a raw 32-byte Ed25519 public key (multibase base58btc)."""
    if len(public) != 32:
        raise InvalidInputError(f"an Ed25519 public key is 32 bytes, got {len(public)}")
    return DID_KEY_PREFIX + base58.b58encode(_ED25519_MULTICODEC + public).decode("ascii")


def public_bytes_from_did(did: str) -> bytes:
    """Parse an Ed25519 `did:key` back into its raw 32-byte public key.

    Raises:
        InvalidInputError: not a did:key, not base58btc, or not an Ed25519 key.
    """
    if not isinstance(did, str) or not did.startswith(DID_KEY_PREFIX):
        raise InvalidInputError(f"not an Ed25519 did:key: {did!r:.80}")
    return _decode_did(did)


@functools.lru_cache(maxsize=4096)
def _decode_did(did: str) -> bytes:
    # Pure-Python base58 costs ~25 µs a DID, and every statement parse checks a few (grants,
    # jobs, usage records name the same parties over and over). Failures are not cached.
    try:
        raw = base58.b58decode(did[len(DID_KEY_PREFIX) :])
    except ValueError as exc:
        raise InvalidInputError(f"did:key is not valid base58btc: {did!r:.80}") from exc
    if raw[:2] != _ED25519_MULTICODEC or len(raw) != 34:
        raise InvalidInputError(f"did:key is not an Ed25519 public key: {did!r:.80}")
    return raw[2:]


@functools.lru_cache(maxsize=4096)
def _public_key(did: str) -> Ed25519PublicKey:
    # Verifiers see the same few devices over and over (a node, a monitor): decoding base58
    # and loading the key cost a third of a signature check, so keep the last few thousand.
    return Ed25519PublicKey.from_public_bytes(public_bytes_from_did(did))


def verify_signature(did: str, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 `signature` over `message` by the key named in `did`.

    Raises:
        VerificationError: the signature does not verify (or the DID is malformed).
    """
    if not isinstance(did, str):  # (unhashable values must not reach the cache)
        raise VerificationError(f"not an Ed25519 did:key: {did!r:.80}")
    try:
        public = _public_key(did)
    except InvalidInputError as exc:
        raise VerificationError(str(exc)) from exc
    try:
        public.verify(signature, message)
    except InvalidSignature as exc:
        raise VerificationError(f"signature is not valid for {did}") from exc


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing identity."""

    private_key: Ed25519PrivateKey = field(repr=False)
    """The signing key; never serialized except by the keystore."""
    name: str = "default"
    """Local name in the keystore (not part of any signature)."""

    @classmethod
    def generate(cls, name: str = "default") -> Identity:
        """Create a fresh random identity."""
        return cls(Ed25519PrivateKey.generate(), name)

    @classmethod
    def from_seed(cls, seed: bytes, name: str = "default") -> Identity:
        """Derive an identity from a 32-byte Ed25519 seed (for tests and test vectors)."""
        if len(seed) != 32:
            raise InvalidInputError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed), name)

    # Cached: every receipt names its issuer, and deriving the public key and its base58
    # form costs as much as half a signature.
    @functools.cached_property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @functools.cached_property
    def did(self) -> str:
        """The `did:key` identifier of this identity."""
        return did_from_public_bytes(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        """Sign `message` with Ed25519 (64-byte signature)."""
        return self.private_key.sign(message)


class Keystore:
    """Private keys on disk under `<home>/keys`, one PKCS#8 PEM file per identity."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(home) / "keys"

    def _path(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise InvalidInputError(
                f"key name {name!r:.80} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        return self.root / f"{name}.pem"

    def names(self) -> list[str]:
        """Names of the identities in this keystore, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.pem"))

    def exists(self, name: str) -> bool:
        """Whether an identity called `name` is stored."""
        return self._path(name).exists()

    def create(self, name: str = "default", *, passphrase: str | None = None) -> Identity:
        """Generate and store a new identity; refuses to overwrite an existing one."""
        identity = Identity.generate(name)
        self.save(identity, passphrase=passphrase)
        return identity

    def save(self, identity: Identity, *, passphrase: str | None = None) -> Path:
        """Write `identity` as PKCS#8 PEM with mode 0600 (encrypted when a passphrase is given)."""
        path = self._path(identity.name)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode())
            if passphrase
            else serialization.NoEncryption()
        )
        pem = identity.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        try:
            # O_EXCL: never replace a key silently; 0600 from the first byte written.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeystoreError(f"a key named {identity.name!r} already exists at {path}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return path

    def load(self, name: str = "default", *, passphrase: str | None = None) -> Identity:
        """Load a stored identity, refusing key files that group or others can read."""
        path = self._path(name)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"no key named {name!r} in {self.root} (run 'edgetrust init')"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeystoreError(
                f"key file {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
                f"run 'chmod 600 {path}'"
            )
        data = path.read_bytes()
        try:
            key = serialization.load_pem_private_key(
                data, password=passphrase.encode() if passphrase else None
            )
        except TypeError as exc:
            # cryptography raises TypeError for a missing or unexpected password.
            raise KeystoreError(
                f"key {name!r} is encrypted: give its passphrase"
                if passphrase is None
                else f"key {name!r} is not encrypted: do not give a passphrase"
            ) from exc
        except ValueError as exc:
            raise KeystoreError(f"cannot load key {name!r}: wrong passphrase or bad file") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeystoreError(f"key {name!r} is not an Ed25519 key")
        return Identity(key, name)

    def load_or_create(self, name: str = "default") -> Identity:
        """Load `name`, creating an unencrypted identity first if there is none."""
        if self.exists(name):
            return self.load(name)
        return self.create(name)
