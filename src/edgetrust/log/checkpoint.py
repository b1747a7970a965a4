r"""C2SP checkpoints, signed notes and witness cosignatures.

* ``tlog-checkpoint``: the note body that names a log's tree head (origin, size, root).
* ``signed-note``: text plus ``— <name> base64(keyID || signature)`` lines, Ed25519 (type 0x01),
  verifier keys as ``<name>+<keyID hex>+base64(0x01 || public key)``.
* ``tlog-cosignature`` v1: a witness's timestamped Ed25519 signature (type 0x04) over
  ``cosignature/v1\ntime <t>\n`` plus the checkpoint body.

Written against c2sp.org/signed-note, c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature,
and tested on the examples in those specs and in golang.org/x/mod/sumdb/note. The formats are
small and byte-exact, and none of our dependencies implements them, so they are here, with
strict parsing: anything not exactly in the format is refused before a signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.log.merkle import HASH_SIZE

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "cosign_checkpoint",
    "cosignature_line",
    "cosignature_timestamp",
    "key_id",
    "parse_checkpoint_body",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_cosignatures",
    "verify_note",
]

SIG_ED25519 = 0x01
"""signed-note §"Signature types": Ed25519 signatures over the note text."""

SIG_COSIGNATURE_V1 = 0x04
"""signed-note §"Signature types": timestamped Ed25519 witness cosignatures (tlog-cosignature)."""

MAX_NOTE_BYTES = 256 * 1024
"""Largest note accepted. signed-note asks verifiers to accept 16 signatures of up to ~5 kB."""

MAX_SIGNATURES = 100
"""Most signature lines accepted on one note (signed-note: at least 16; Go's note uses 100)."""

_DASH = "\u2014 "  # em dash, space: the start of every signature line
_COSIG_HEADER = b"cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: "It MUST NOT exceed 2^63 - 1"
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")  # ASCII decimal, no leading zeroes
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, canonical, nothing else."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInputError(f"{what} is not canonical base64")
    return raw


def _check_key_name(name: object) -> str:
    """signed-note §Format: non-empty, no Unicode spaces, no '+'; and no control characters."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError("a key name must be a non-empty string")
    if "+" in name or any(c.isspace() for c in name) or _CONTROL_RE.search(name):
        raise InvalidInputError(
            f"key name {name!r:.80} must not contain spaces, '+' or control characters"
        )
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4] (signed-note §Signatures)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[
        :4
    ]


# --- tlog-checkpoint -------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as a C2SP tlog-checkpoint note body (§"Note text")."""

    origin: str
    """The log's unique identity, e.g. ``edgetrust.local/log``; the first line."""
    size: int
    """Number of leaves in the tree."""
    root: bytes
    """The RFC 9162 root hash of the tree of `size` leaves (32 bytes)."""
    extensions: tuple[str, ...] = ()
    """Optional, opaque, non-empty extension lines (NOT RECOMMENDED by the spec)."""

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise InvalidInputError("checkpoint origin must be a non-empty string")
        if "\n" in self.origin or _CONTROL_RE.search(self.origin):
            raise InvalidInputError("checkpoint origin must be one line without control characters")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise InvalidInputError("checkpoint size must be an integer")
        if not 0 <= self.size <= _MAX_TIMESTAMP:
            raise InvalidInputError(f"checkpoint size {self.size} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise InvalidInputError(f"checkpoint root must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line or _CONTROL_RE.search(line):
                raise InvalidInputError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> bytes:
        """The note text: origin, size and base64 root, one per line, then any extensions."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return ("\n".join([*lines, *self.extensions]) + "\n").encode("utf-8")


def parse_checkpoint_body(body: bytes | str) -> Checkpoint:
    """Parse a tlog-checkpoint note text, exactly: three lines or more, each as the spec says.

    Raises:
        InvalidInputError: not UTF-8, no final newline, a missing or empty line, a size with
            leading zeroes or signs, or a root that is not canonical base64 of 32 bytes.
    """
    text = _decode_text(body, "checkpoint")
    if not text.endswith("\n"):
        raise InvalidInputError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise InvalidInputError(f"checkpoint body has {len(lines)} lines, at least 3 are needed")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.match(size_text):
        raise InvalidInputError(f"checkpoint size {size_text!r:.40} is not a plain decimal")
    root = _b64decode(root_text, "checkpoint root")
    if len(root) != HASH_SIZE:
        raise InvalidInputError(f"checkpoint root is {len(root)} bytes, not {HASH_SIZE}")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


# --- signed-note -----------------------------------------------------------------------------


def _decode_text(data: bytes | str, what: str, *, max_bytes: int = MAX_NOTE_BYTES) -> str:
    """signed-note §Format: valid UTF-8, no ASCII control characters except newline."""
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="surrogatepass")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise InvalidInputError(f"{what} must be bytes or text, got {type(data).__name__}")
    if len(raw) > max_bytes:
        raise InvalidInputError(f"{what} is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid UTF-8") from exc
    if _CONTROL_RE.search(text):
        raise InvalidInputError(f"{what} contains control characters")
    return text


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note."""

    name: str
    """The signer's key name."""
    key_id: bytes
    """The 4-byte key ID that, with the name, picks the verifier key."""
    signature: bytes
    """The signature bytes after the key ID (for type 0x04: 8-byte timestamp, then Ed25519)."""

    def line(self) -> bytes:
        """``— <name> base64(keyID || signature)`` and a newline."""
        b64 = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {b64}\n".encode()


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its text and signature lines, none of them verified yet."""

    text: bytes
    """The signed text, including its final newline, exactly as received."""
    signatures: tuple[NoteSignature, ...]
    """The signature lines, in order."""

    def to_bytes(self) -> bytes:
        """The note as sent: text, a blank line, the signature lines."""
        return self.text + b"\n" + b"".join(s.line() for s in self.signatures)


def parse_note(
    data: bytes | str, *, max_bytes: int = MAX_NOTE_BYTES, max_signatures: int = MAX_SIGNATURES
) -> Note:
    """Parse a signed note strictly (signed-note §Format); no signature is checked here.

    Raises:
        InvalidInputError: oversized, not UTF-8, control characters, no blank line before the
            signatures, a signature block not ending in a newline, a malformed line or key
            name, bad base64, fewer than 5 signature bytes, or too many signatures.
    """
    text = _decode_text(data, "note", max_bytes=max_bytes)
    split = text.rfind("\n\n")
    if split < 0:
        raise InvalidInputError("note has no blank line before its signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block or not block.endswith("\n"):
        raise InvalidInputError("note signatures must be non-empty and end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > max_signatures:
        raise InvalidInputError(
            f"note has {len(lines)} signatures, over the {max_signatures} limit"
        )
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise InvalidInputError("note signature line does not start with an em dash and space")
        name, sep, b64 = line[len(_DASH) :].partition(" ")
        if not sep or not b64:
            raise InvalidInputError("note signature line has no signature")
        _check_key_name(name)
        raw = _b64decode(b64, "note signature")
        if len(raw) < 5:
            raise InvalidInputError("note signature is shorter than a key ID and one byte")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return Note(body.encode("utf-8"), tuple(signatures))


def _check_text(body: bytes) -> bytes:
    if not isinstance(body, bytes | bytearray):
        raise InvalidInputError("note text must be bytes")
    body = bytes(body)
    _decode_text(body, "note text")
    if not body.endswith(b"\n"):
        raise InvalidInputError("note text must end with a newline")
    return body


class NoteSigner:
    """Signs notes as `name` with an Ed25519 `identity` (the log key, or a witness key)."""

    def __init__(self, name: str, identity: Identity) -> None:
        self.name = _check_key_name(name)
        """The key name written on every signature line (for a log: its origin)."""
        self.identity = identity
        """The Ed25519 key that signs."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self.identity.public_bytes

    @property
    def key_id(self) -> bytes:
        """Key ID of this key as a note signer (type 0x01)."""
        return key_id(self.name, SIG_ED25519, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key, ``name+keyid+base64(0x01 || pub)``, as a client configures it."""
        return _vkey(self.name, SIG_ED25519, self.public_key)

    @property
    def cosignature_vkey(self) -> str:
        """The verifier key of this key as a witness (tlog-cosignature, type 0x04)."""
        return _vkey(self.name, SIG_COSIGNATURE_V1, self.public_key)

    def sign(self, text: bytes) -> NoteSignature:
        """An Ed25519 signature line over the note `text` (signed-note §"Ed25519 signatures")."""
        text = _check_text(text)
        return NoteSignature(self.name, self.key_id, self.identity.sign(text))

    def cosign(self, text: bytes, timestamp: int) -> NoteSignature:
        """A tlog-cosignature v1 line over the checkpoint `text` at POSIX time `timestamp`."""
        text = _check_text(text)
        if not isinstance(timestamp, int) or not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise InvalidInputError(f"`timestamp` must be an integer in [0, 2^63), got {timestamp}")
        message = _cosignature_message(timestamp, text)
        return NoteSignature(
            self.name,
            key_id(self.name, SIG_COSIGNATURE_V1, self.public_key),
            timestamp.to_bytes(8, "big") + self.identity.sign(message),
        )

    def __repr__(self) -> str:
        return f"NoteSigner({self.vkey!r})"


def _vkey(name: str, sig_type: int, public_key: bytes) -> str:
    kid = key_id(name, sig_type, public_key).hex()
    return f"{name}+{kid}+{base64.b64encode(bytes([sig_type]) + public_key).decode('ascii')}"


def _cosignature_message(timestamp: int, text: bytes) -> bytes:
    """tlog-cosignature §"Ed25519 signed message": header line, time line, checkpoint body."""
    return _COSIG_HEADER + b"time %d\n" % timestamp + text


@dataclass(frozen=True)
class NoteVerifier:
    """A verifier key: name, key ID, signature type and Ed25519 public key."""

    name: str
    """The key name signature lines must carry."""
    key_id: bytes
    """The 4-byte key ID signature lines must carry."""
    sig_type: int
    """SIG_ED25519 (a log or other note signer) or SIG_COSIGNATURE_V1 (a witness)."""
    public_key: bytes
    """The raw 32-byte Ed25519 public key."""

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+keyid+base64(type || pub)``, checking that the key ID matches.

        Raises:
            InvalidInputError: wrong shape, bad name, key ID not 8 lower-case hex digits, bad
                base64, an unsupported signature type, a key of the wrong length, or a key ID
                that is not the hash of the rest.
        """
        if not isinstance(vkey, str) or len(vkey) > 1024:
            raise InvalidInputError("a verifier key must be a string of at most 1024 characters")
        parts = vkey.split("+", 2)  # the base64 key may itself contain '+'
        if len(parts) != 3:
            raise InvalidInputError("a verifier key has the form name+keyid+base64(key)")
        name, kid_hex, key_b64 = parts
        _check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
            raise InvalidInputError("verifier key ID must be 8 lower-case hex digits")
        raw = _b64decode(key_b64, "verifier key")
        if not raw or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise InvalidInputError(
                "verifier key type must be 0x01 (Ed25519) or 0x04 (Ed25519 cosignature v1)"
            )
        if len(raw) != 33:
            raise InvalidInputError("an Ed25519 verifier key is 32 bytes after the type byte")
        verifier = cls(name, bytes.fromhex(kid_hex), raw[0], raw[1:])
        if key_id(name, raw[0], raw[1:]) != verifier.key_id:
            raise InvalidInputError(f"verifier key ID {kid_hex} does not match the key")
        return verifier

    @property
    def vkey(self) -> str:
        """This verifier in vkey form."""
        return _vkey(self.name, self.sig_type, self.public_key)

    def matches(self, sig: NoteSignature) -> bool:
        """Whether `sig` claims this key: same name and key ID (signed-note §Signatures)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, text: bytes, sig: NoteSignature) -> None:
        """Check `sig` over note `text`; a cosignature's timestamp is checked to be in range.

        Raises:
            VerificationError: `sig` is not by this key, or does not verify.
        """
        if not self.matches(sig):
            raise VerificationError(f"signature is not by {self.name}+{self.key_id.hex()}")
        if self.sig_type == SIG_COSIGNATURE_V1:
            if len(sig.signature) != 8 + 64:
                raise VerificationError(f"cosignature by {self.name} is not 72 bytes")
            timestamp = int.from_bytes(sig.signature[:8], "big")
            if timestamp > _MAX_TIMESTAMP:
                raise VerificationError(f"cosignature by {self.name} has an invalid timestamp")
            message, signature = _cosignature_message(timestamp, text), sig.signature[8:]
        else:
            if len(sig.signature) != 64:
                raise VerificationError(f"signature by {self.name} is not 64 bytes")
            message, signature = text, sig.signature
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError) as exc:
            raise VerificationError(
                f"invalid signature by {self.name}+{self.key_id.hex()}", step="signature"
            ) from exc


def _verifiers(keys: Sequence[NoteVerifier | str]) -> list[NoteVerifier]:
    if isinstance(keys, str | NoteVerifier):
        keys = [keys]
    out = [k if isinstance(k, NoteVerifier) else NoteVerifier.from_vkey(k) for k in keys]
    ids = [(v.name, v.key_id) for v in out]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("two verifier keys share a name and key ID")
    return out


def sign_note(body: bytes, *signers: NoteSigner) -> bytes:
    """A signed note: `body` (ending in a newline), a blank line, one line per signer."""
    if not signers:
        raise InvalidInputError("a note needs at least one signer")
    body = _check_text(body)
    note = Note(body, tuple(s.sign(body) for s in signers))
    return note.to_bytes()


def verify_note(data: bytes | str, verifiers: Sequence[NoteVerifier | str]) -> bytes:
    """Verify a signed note against known keys and return its text.

    signed-note §Signatures: lines from unknown keys are ignored; a line from a known key that
    fails to verify rejects the whole note; at least one known key must have signed.

    Raises:
        InvalidInputError: the note or a verifier key is malformed.
        VerificationError: a known key's signature is invalid, or no known key signed.
    """
    keys = _verifiers(verifiers)
    note = parse_note(data)
    verified = 0
    for sig in note.signatures:
        for key in keys:
            if key.matches(sig):
                key.verify(note.text, sig)
                verified += 1
    if not verified:
        raise VerificationError("note is not signed by any trusted key", step="signature")
    return note.text


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> bytes:
    """The checkpoint as a note signed by the log key (tlog-checkpoint §Signatures)."""
    return sign_note(checkpoint.body(), signer)


def verify_checkpoint(note: bytes | str, vkey: str, *, origin: str | None = None) -> Checkpoint:
    """Verify a checkpoint note signed by the log key `vkey` and return the checkpoint.

    Steps: (1) parse the note strictly; (2) the log key (type 0x01) must have signed it, and
    any other line by that key must verify too; (3) the text must be a tlog-checkpoint body;
    (4) if `origin` is given, the checkpoint must be for that log.

    Raises:
        InvalidInputError: the note, body or vkey is malformed.
        VerificationError: the log's signature is missing or invalid, or the origin differs.
    """
    verifier = NoteVerifier.from_vkey(vkey)
    if verifier.sig_type != SIG_ED25519:
        raise InvalidInputError("a log's verifier key must be of type 0x01 (Ed25519)")
    text = verify_note(note, [verifier])
    checkpoint = parse_checkpoint_body(text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(
            f"checkpoint is for log {checkpoint.origin!r:.80}, not {origin!r:.80}", step="origin"
        )
    return checkpoint


def cosignature_line(note: bytes | str, witness: NoteSigner, timestamp: int) -> bytes:
    """The tlog-cosignature v1 line a witness adds to `note` (what tlog-witness returns).

    The caller (the witness) must already have verified the log's signature and the
    consistency of the checkpoint; this only requires that the text is a checkpoint.
    """
    parsed = parse_note(note)
    parse_checkpoint_body(parsed.text)
    return witness.cosign(parsed.text, timestamp).line()


def cosign_checkpoint(note: bytes | str, witness: NoteSigner, timestamp: int) -> bytes:
    """`note` with the witness's cosignature line added (replacing an older one by that key)."""
    parsed = parse_note(note)
    parse_checkpoint_body(parsed.text)
    sig = witness.cosign(parsed.text, timestamp)
    kept = tuple(s for s in parsed.signatures if (s.name, s.key_id) != (sig.name, sig.key_id))
    if len(kept) + 1 > MAX_SIGNATURES:
        raise InvalidInputError(f"note already has {len(kept)} signatures")
    return Note(parsed.text, (*kept, sig)).to_bytes()


def cosignature_timestamp(sig: NoteSignature) -> int:
    """The POSIX time a tlog-cosignature v1 line was made (no signature check).

    Raises:
        InvalidInputError: the line is not 8 + 64 signature bytes or the time is out of range.
    """
    if len(sig.signature) != 72:
        raise InvalidInputError("not a cosignature v1 (72 signature bytes)")
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise InvalidInputError("cosignature timestamp is beyond 2^63 - 1")
    return timestamp


def verify_cosignatures(
    note: bytes | str, witness_vkeys: Sequence[NoteVerifier | str], min_count: int
) -> list[str]:
    """Check witness cosignatures on a checkpoint note; return the names that verified.

    Only witnesses in `witness_vkeys` (type 0x04 keys) count, each once; a cosignature by one
    of them that fails to verify rejects the note (signed-note §Signatures). The log's own
    signature is not checked here: use `verify_checkpoint` for that.

    Raises:
        InvalidInputError: malformed note or keys, a key not of type 0x04, or a `min_count`
            that no set of the given witnesses could reach.
        VerificationError: a known witness's cosignature is invalid, or fewer than
            `min_count` witnesses cosigned.
    """
    keys = _verifiers(witness_vkeys)
    if any(k.sig_type != SIG_COSIGNATURE_V1 for k in keys):
        raise InvalidInputError("witness keys must be cosignature keys (type 0x04)")
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise InvalidInputError(f"`min_count` must be a positive integer, got {min_count!r}")
    if min_count > len(keys):
        raise InvalidInputError(
            f"`min_count` is {min_count} but only {len(keys)} witness keys were given"
        )
    parsed = parse_note(note)
    parse_checkpoint_body(parsed.text)
    names: list[str] = []
    for key in keys:
        sigs = [s for s in parsed.signatures if key.matches(s)]
        for sig in sigs:
            key.verify(parsed.text, sig)
        if sigs:
            names.append(key.name)
    if len(names) < min_count:
        raise VerificationError(
            f"{len(names)} of the required {min_count} witnesses cosigned", step="witnesses"
        )
    return names
