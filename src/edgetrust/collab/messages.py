"""The secure aggregation protocol's messages, their wire format and their signatures.

Every message is ``"ETSA" 0x01 || u32be(len(header)) || header || body``: the header is
RFC 8785 JSON naming the message `kind` and the round, the body is raw bytes (only a masked
input has one: its uint32 vector, little-endian). Messages a client sends are signed with its
Ed25519 identity over ``"edgetrust/secagg/v1" 0x00 kind 0x00 canonical_json(fields)``, where
`fields` is the header without its signature, so a message cannot be replayed in another
round, at another stage or under another sender. Messages the server sends are not signed:
the server is the adversary secure aggregation defends against, and clients check what it
forwards through the peers' own signatures and authenticated encryption instead.

Parsing is strict (exact field sets, exact sizes) because every byte here comes from the
network: a malformed message raises `InvalidInputError`, a bad signature `VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgetrust.encoding import canonical_json, parse_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity, public_bytes_from_did

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "PROTOCOL",
    "AdvertiseKeys",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShare",
    "ForwardedShares",
    "KeyDirectory",
    "MaskedInput",
    "RevealedShare",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "survivors_digest",
    "verify_commitment",
]

PROTOCOL = "edgetrust/secagg/v1"
MAGIC = b"ETSA\x01"
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
"""Messages larger than this are refused before parsing (a 1M-parameter input is 4 MiB)."""

_MAX_HEADER_BYTES = 64 * 2**20
_MAX_LIST = 100_000


# --- field helpers -------------------------------------------------------------------------


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64d(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{what} is not valid base64") from exc
    if _b64e(raw) != value:
        raise InvalidInputError(f"{what} is not canonical base64")
    if size is not None and len(raw) != size:
        raise InvalidInputError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise InvalidInputError(f"{what} must be 64 hex characters")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise InvalidInputError(f"{what} must be 64 hex characters") from exc
    if raw.hex() != value:
        raise InvalidInputError(f"{what} must be lower-case hex")
    return raw


def _did(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a did:key string")
    public_bytes_from_did(value)  # raises InvalidInputError on anything but an Ed25519 did:key
    return value


def _dids(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise InvalidInputError(f"{what} must be a list of DIDs")
    out = tuple(_did(v, what) for v in value)
    if list(out) != sorted(set(out)):
        raise InvalidInputError(f"{what} must be sorted and without duplicates")
    return out


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise InvalidInputError(f"{what} must be a list")
    return value


def _obj(value: object, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    if set(value) != keys:
        raise InvalidInputError(f"{what} must have exactly the fields {sorted(keys)}")
    return value


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidInputError(f"{what} must be an integer in {lo}..{hi}")
    return value


def survivors_digest(round_id: bytes, survivors: Sequence[str]) -> str:
    """The digest clients sign in the consistency check: one value per view of the round."""
    return hashlib.sha256(canonical_json([round_id.hex(), list(survivors)])).hexdigest()


def _canonical(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a header, by `json.dumps`.

    Header values are ASCII strings (hex, base64, did:key, kinds), integers and lists and
    objects of those, for which sorted-key compact `json.dumps` output *is* the RFC 8785 form;
    the tests check this against `encoding.canonical_json`. It is ~10x faster, which matters
    when a round signs and checks thousands of messages.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _tbs(kind: str, fields: Mapping[str, Any]) -> bytes:
    return PROTOCOL.encode() + b"\x00" + kind.encode() + b"\x00" + _canonical(fields)


@lru_cache(maxsize=4096)
def _verifier(did: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_bytes_from_did(did))


def _frame(header: Mapping[str, Any], body: bytes = b"") -> bytes:
    h = _canonical(header)
    return MAGIC + struct.pack(">I", len(h)) + h + body


def _unframe(data: bytes, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInputError("a protocol message must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise InvalidInputError(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    if len(data) < len(MAGIC) + 4 or data[: len(MAGIC)] != MAGIC:
        raise InvalidInputError("not an edgetrust secure aggregation message (bad magic)")
    (hlen,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if hlen > _MAX_HEADER_BYTES or start + hlen > len(data):
        raise InvalidInputError("message header is truncated or too large")
    header = parse_json(data[start : start + hlen], what="message header")
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise InvalidInputError("message header must be an object with a kind")
    return header, data[start + hlen :]


# --- base classes --------------------------------------------------------------------------


class _Message:
    KIND: ClassVar[str]
    round_id: bytes

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _header(self) -> dict[str, Any]:
        return self._fields()

    def _body(self) -> bytes:
        return b""

    def to_bytes(self) -> bytes:
        """The wire encoding of this message."""
        return _frame(self._header(), self._body())

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Self:
        """Parse one message of this kind from untrusted bytes (signatures not yet checked)."""
        header, body = _unframe(data, max_bytes)
        if header["kind"] != cls.KIND:
            raise InvalidInputError(f"expected a {cls.KIND} message, got {header['kind']!r:.40}")
        return cls._from_header(header, body)


class _Signed(_Message):
    sender: str
    signature: bytes

    def _header(self) -> dict[str, Any]:
        return {**self._fields(), "sig": _b64e(self.signature)}

    def signed_bytes(self) -> bytes:
        """The exact bytes the sender signs: protocol, kind and the canonical fields."""
        return _tbs(self.KIND, self._fields())

    def sign(self, identity: Identity) -> Self:
        """Return this message signed by `identity`, which must be its sender."""
        if identity.did != self.sender:
            raise InvalidInputError("a message must be signed by its sender")
        return replace(self, signature=identity.sign(self.signed_bytes()))  # type: ignore[type-var]

    def verify(self) -> None:
        """Check the sender's signature; raise `VerificationError` if it does not verify."""
        try:
            _verifier(self.sender).verify(self.signature, self.signed_bytes())
        except InvalidSignature as exc:
            raise VerificationError(
                f"{self.KIND} message from {self.sender} has a bad signature", step="signature"
            ) from exc


def _sig(header: dict[str, Any]) -> bytes:
    return _b64d(header.get("sig"), "signature", 64)


# --- the messages, in protocol order -------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseKeys(_Signed):
    """Stage 0, client → server: two fresh X25519 public keys, signed by the client's DID.

    `cipher_public_key` encrypts the shares sent to this client; `mask_public_key` derives its
    pairwise masks. They must differ: if the masking key is reconstructed after a dropout, the
    share-encryption key must stay secret (Bonawitz et al. 2017, §4).
    """

    KIND: ClassVar[str] = "advertise-keys"
    round_id: bytes
    sender: str
    cipher_public_key: bytes
    mask_public_key: bytes
    signature: bytes = b""

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "sender": self.sender,
            "cipherKey": _b64e(self.cipher_public_key),
            "maskKey": _b64e(self.mask_public_key),
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(
            header, "advertise-keys", {"kind", "round", "sender", "cipherKey", "maskKey", "sig"}
        )
        if body:
            raise InvalidInputError("advertise-keys has no body")
        return cls(
            _hex32(h["round"], "round"),
            _did(h["sender"], "sender"),
            _b64d(h["cipherKey"], "cipherKey", 32),
            _b64d(h["maskKey"], "maskKey", 32),
            _sig(h),
        )


@dataclass(frozen=True)
class KeyDirectory(_Message):
    """Stage 0 → 1, server → clients: the signed key advertisements it received (U1)."""

    KIND: ClassVar[str] = "key-directory"
    round_id: bytes
    entries: tuple[AdvertiseKeys, ...]

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "entries": [e._header() for e in self.entries],
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "key-directory", {"kind", "round", "entries"})
        if body:
            raise InvalidInputError("key-directory has no body")
        entries = tuple(AdvertiseKeys._from_header(e, b"") for e in _list(h["entries"], "entries"))
        return cls(_hex32(h["round"], "round"), entries)


@dataclass(frozen=True)
class EncryptedShare:
    """A client's shares of its two secrets for one peer, sealed for that peer."""

    peer: str
    """The receiver (in `ShareKeys`) or the sender (in `ForwardedShares`)."""
    ciphertext: bytes


def _encrypted_shares(value: object, role: str) -> tuple[EncryptedShare, ...]:
    out = []
    for item in _list(value, "shares"):
        h = _obj(item, "share item", {role, "ct"})
        out.append(EncryptedShare(_did(h[role], role), _b64d(h["ct"], "ct")))
    peers = [e.peer for e in out]
    if peers != sorted(set(peers)):
        raise InvalidInputError("share items must be sorted by peer without duplicates")
    return tuple(out)


@dataclass(frozen=True)
class ShareKeys(_Signed):
    """Stage 1, client → server: encrypted Shamir shares for each peer, and a seed commitment.

    `self_mask_commitment` is a hiding, binding commitment to the self-mask seed, so the server
    can tell a wrongly reconstructed seed (a bad share) from a good one.
    """

    KIND: ClassVar[str] = "share-keys"
    round_id: bytes
    sender: str
    self_mask_commitment: bytes
    shares: tuple[EncryptedShare, ...]
    signature: bytes = b""

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "sender": self.sender,
            "commitment": self.self_mask_commitment.hex(),
            "shares": [{"receiver": s.peer, "ct": _b64e(s.ciphertext)} for s in self.shares],
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "share-keys", {"kind", "round", "sender", "commitment", "shares", "sig"})
        if body:
            raise InvalidInputError("share-keys has no body")
        return cls(
            _hex32(h["round"], "round"),
            _did(h["sender"], "sender"),
            _hex32(h["commitment"], "commitment"),
            _encrypted_shares(h["shares"], "receiver"),
            _sig(h),
        )


@dataclass(frozen=True)
class ForwardedShares(_Message):
    """Stage 1 → 2, server → one client: the shares addressed to it, by sender (U2)."""

    KIND: ClassVar[str] = "forwarded-shares"
    round_id: bytes
    receiver: str
    shares: tuple[EncryptedShare, ...]

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "receiver": self.receiver,
            "shares": [{"sender": s.peer, "ct": _b64e(s.ciphertext)} for s in self.shares],
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "forwarded-shares", {"kind", "round", "receiver", "shares"})
        if body:
            raise InvalidInputError("forwarded-shares has no body")
        return cls(
            _hex32(h["round"], "round"),
            _did(h["receiver"], "receiver"),
            _encrypted_shares(h["shares"], "sender"),
        )


@dataclass(frozen=True)
class MaskedInput(_Signed):
    """Stage 2, client → server: the masked vector, with a signed commitment to it.

    The signature covers the vector's sha256 `digest` (not the vector), so the commitment can be
    logged in the round record and checked without the vector.
    """

    KIND: ClassVar[str] = "masked-input"
    round_id: bytes
    sender: str
    vector: npt.NDArray[np.uint32]
    signature: bytes = b""

    @cached_property
    def digest(self) -> str:
        """sha256 (hex) of the vector's little-endian bytes."""
        return hashlib.sha256(self._body()).hexdigest()

    def _body(self) -> bytes:
        return np.ascontiguousarray(self.vector, dtype="<u4").tobytes()

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "sender": self.sender,
            "length": int(self.vector.size),
            "digest": self.digest,
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "masked-input", {"kind", "round", "sender", "length", "digest", "sig"})
        length = _int(h["length"], "length", 1, 2**31)
        if len(body) != 4 * length:
            raise InvalidInputError(
                f"masked input body is {len(body)} bytes, expected {4 * length}"
            )
        if hashlib.sha256(body).hexdigest() != h["digest"]:
            raise VerificationError("masked input does not match its digest", step="digest")
        vector = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        return cls(_hex32(h["round"], "round"), _did(h["sender"], "sender"), vector, _sig(h))


@dataclass(frozen=True)
class ConsistencyRequest(_Message):
    """Stage 2 → 3, server → clients: who it claims sent masked inputs (U3)."""

    KIND: ClassVar[str] = "consistency-request"
    round_id: bytes
    survivors: tuple[str, ...]

    def _fields(self) -> dict[str, Any]:
        return {"kind": self.KIND, "round": self.round_id.hex(), "survivors": list(self.survivors)}

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "consistency-request", {"kind", "round", "survivors"})
        if body:
            raise InvalidInputError("consistency-request has no body")
        return cls(_hex32(h["round"], "round"), _dids(h["survivors"], "survivors"))


@dataclass(frozen=True)
class ConsistencySignature(_Signed):
    """Stage 3, client → server: the client's signature on the survivor list it was shown.

    Before revealing any share a client checks that `threshold` of its peers signed the same
    list, so the server cannot call a client "dropped" to some peers and "alive" to others and
    collect both of its secrets (Bonawitz et al. 2017, §4, ConsistencyCheck).
    """

    KIND: ClassVar[str] = "consistency-signature"
    round_id: bytes
    sender: str
    digest: str
    signature: bytes = b""

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "sender": self.sender,
            "survivors": self.digest,
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "consistency-signature", {"kind", "round", "sender", "survivors", "sig"})
        if body:
            raise InvalidInputError("consistency-signature has no body")
        _hex32(h["survivors"], "survivors digest")
        return cls(
            _hex32(h["round"], "round"), _did(h["sender"], "sender"), h["survivors"], _sig(h)
        )


@dataclass(frozen=True)
class UnmaskRequest(_Message):
    """Stage 3 → 4, server → clients: survivors (U3), dropped (U2 minus U3) and the signatures."""

    KIND: ClassVar[str] = "unmask-request"
    round_id: bytes
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: tuple[ConsistencySignature, ...] = ()

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "signatures": [s._header() for s in self.signatures],
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        h = _obj(header, "unmask-request", {"kind", "round", "survivors", "dropped", "signatures"})
        if body:
            raise InvalidInputError("unmask-request has no body")
        sigs = tuple(
            ConsistencySignature._from_header(s, b"") for s in _list(h["signatures"], "signatures")
        )
        return cls(
            _hex32(h["round"], "round"),
            _dids(h["survivors"], "survivors"),
            _dids(h["dropped"], "dropped"),
            sigs,
        )


@dataclass(frozen=True)
class RevealedShare:
    """One share a client reveals in the unmask stage: whose secret, and the share bytes."""

    owner: str
    share: bytes


def _revealed(value: object, what: str) -> tuple[RevealedShare, ...]:
    out = []
    for item in _list(value, what):
        h = _obj(item, what, {"owner", "share"})
        out.append(RevealedShare(_did(h["owner"], "owner"), _b64d(h["share"], "share")))
    owners = [r.owner for r in out]
    if owners != sorted(set(owners)):
        raise InvalidInputError(f"{what} must be sorted by owner without duplicates")
    return tuple(out)


@dataclass(frozen=True)
class UnmaskResponse(_Signed):
    """Stage 4, client → server: self-mask shares of survivors, key shares of the dropped."""

    KIND: ClassVar[str] = "unmask-response"
    round_id: bytes
    sender: str
    self_mask_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]
    signature: bytes = b""

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "round": self.round_id.hex(),
            "sender": self.sender,
            "selfMaskShares": [
                {"owner": r.owner, "share": _b64e(r.share)} for r in self.self_mask_shares
            ],
            "keyShares": [{"owner": r.owner, "share": _b64e(r.share)} for r in self.key_shares],
        }

    @classmethod
    def _from_header(cls, header: dict[str, Any], body: bytes) -> Self:
        keys = {"kind", "round", "sender", "selfMaskShares", "keyShares", "sig"}
        h = _obj(header, "unmask-response", keys)
        if body:
            raise InvalidInputError("unmask-response has no body")
        return cls(
            _hex32(h["round"], "round"),
            _did(h["sender"], "sender"),
            _revealed(h["selfMaskShares"], "selfMaskShares"),
            _revealed(h["keyShares"], "keyShares"),
            _sig(h),
        )


_KINDS: dict[str, type[_Message]] = {
    c.KIND: c
    for c in (
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ForwardedShares,
        MaskedInput,
        ConsistencyRequest,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def verify_commitment(
    *, round_id: bytes, sender: str, length: int, digest: str, signature: bytes
) -> None:
    """Check a masked-input signature from its logged parts, without the vector itself."""
    fields = {
        "kind": MaskedInput.KIND,
        "round": round_id.hex(),
        "sender": sender,
        "length": length,
        "digest": digest,
    }
    try:
        _verifier(sender).verify(signature, _tbs(MaskedInput.KIND, fields))
    except (InvalidSignature, InvalidInputError, ValueError) as exc:
        raise VerificationError(f"commitment of {sender} is not validly signed") from exc


def decode_message(data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> _Message:
    """Parse any protocol message by its `kind` (for transports that multiplex them)."""
    header, body = _unframe(data, max_bytes)
    cls = _KINDS.get(header["kind"])
    if cls is None:
        raise InvalidInputError(f"unknown message kind {header['kind']!r:.40}")
    return cls._from_header(header, body)
