"""Watch a log against its anchors: alarm on any served checkpoint the chain contradicts.

A log operator could show one history to its clients and anchor another. A watcher takes a
checkpoint the log served (a C2SP signed note), checks that the log's registered note key
signed it, and compares it with the chain: a different anchored root for the same size, an
anchored equivocation, a slashed log, or (given the log's consistency proofs) a served tree
that does not extend or is not extended by the anchored one, are alarms.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgetrust.chain.anchor import LogAnchor, note_key_public_bytes
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import did_from_public_bytes, verify_signature
from edgetrust.log.merkle import verify_consistency

__all__ = [
    "WatchReport",
    "check_served_checkpoint",
    "parse_checkpoint_body",
    "verify_checkpoint_note",
]

MAX_NOTE = 16 * 1024
ProofSource = Callable[[int, int], Sequence[bytes]]


def parse_checkpoint_body(note: bytes) -> tuple[str, int, bytes]:
    """Origin, size and root hash of a C2SP checkpoint (the note's first three lines).

    Raises:
        InvalidInputError: not a checkpoint.
    """
    if len(note) > MAX_NOTE:
        raise InvalidInputError(f"a checkpoint note is at most {MAX_NOTE} bytes")
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("checkpoint is not UTF-8") from exc
    body = text.split("\n\n", 1)[0]
    lines = body.split("\n")
    if len(lines) < 3 or not lines[0]:
        raise InvalidInputError("a checkpoint starts with origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise InvalidInputError(f"checkpoint size {size_text!r:.40} is not a decimal integer")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("checkpoint root is not base64") from exc
    if len(root) != 32:
        raise InvalidInputError("checkpoint root is not 32 bytes")
    size = int(size_text)
    if size >= 2**64:
        raise InvalidInputError("checkpoint size does not fit in 64 bits")
    return origin, size, root


def verify_checkpoint_note(note: bytes, note_key: str) -> None:
    """Check that the C2SP signed note carries a valid Ed25519 signature by `note_key`.

    C2SP signed-note: the signed message is the text up to and including the blank line's
    first newline; each signature line is ``— <key name> <base64(4-byte key hash || sig)>``.

    Raises:
        VerificationError: no valid signature by that key.
    """
    text = note.decode("utf-8", "replace")
    if "\n\n" not in text:
        raise VerificationError("checkpoint note has no signatures", step="note signature")
    body, sigs = text.split("\n\n", 1)
    name, key_hash_hex, _ = note_key.split("+", 2)
    public = note_key_public_bytes(note_key)
    did = did_from_public_bytes(public)
    for line in sigs.split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(blob) != 68 or blob[:4].hex() != key_hash_hex:
            continue
        try:
            verify_signature(did, blob[4:], (body + "\n").encode())
        except VerificationError:
            continue
        return
    raise VerificationError(
        f"checkpoint is not signed by the registered log key {name}", step="note signature"
    )


@dataclass(frozen=True)
class WatchReport:
    """What the chain says about one served checkpoint."""

    origin: str
    size: int
    root: bytes
    latest_anchored: tuple[int, bytes]
    """The latest anchored (size, root)."""
    alarms: tuple[str, ...] = field(default=())
    """Each contradiction found, one line each; empty when all is well."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "latest_anchored": {
                "size": self.latest_anchored[0],
                "root": self.latest_anchored[1].hex(),
            },
            "alarms": list(self.alarms),
            "ok": not self.alarms,
        }

    def summary(self) -> str:
        """One line per finding, for a person."""
        if not self.alarms:
            return (
                f"ok: {self.origin} size {self.size} agrees with the chain "
                f"(latest anchored size {self.latest_anchored[0]})"
            )
        return "\n".join(f"ALARM: {a}" for a in self.alarms)

    def raise_for_alarms(self) -> None:
        """Raise `VerificationError` if there is any alarm."""
        if self.alarms:
            raise VerificationError("; ".join(self.alarms), step="watch")


def check_served_checkpoint(
    anchor: LogAnchor,
    *,
    origin: str,
    size: int,
    root: bytes,
    note: bytes | None = None,
    prove: ProofSource | None = None,
) -> WatchReport:
    """Compare checkpoint (`size`, `root`) that the log served with what is anchored.

    Steps:
    1. If the signed `note` is given, it must be signed by the note key the log registered.
    2. A root anchored for the same size must be the served root.
    3. No equivocation may be recorded, and the log must not be slashed.
    4. With `prove(n1, n2)` (the log's consistency proofs), the served tree and the latest
       anchored tree must be consistent, whichever is larger.
    """
    alarms: list[str] = []
    # 1.
    if note is not None:
        verify_checkpoint_note(note, anchor.registration(origin).note_key)
    # 2.
    anchored = anchor.root_at(origin, size)
    if anchored is not None and anchored != root:
        alarms.append(
            f"size {size}: the log served root {root.hex()[:16]}… but anchored "
            f"{anchored.hex()[:16]}…"
        )
    second = anchor.conflicting_root_at(origin, size)
    if second is not None and second != root and anchored == root:
        alarms.append(f"size {size}: the operator also anchored root {second.hex()[:16]}…")
    # 3.
    for eq_size, _, _ in anchor.equivocations(origin):
        alarms.append(f"the operator anchored two roots for size {eq_size} (equivocation)")
    if anchor.is_slashed(origin):
        alarms.append("the log's operator has been slashed")
    latest = anchor.latest(origin)
    # 4.
    if prove is not None and latest[0] > 0 and size > 0 and latest[0] != size:
        n1, r1, n2, r2 = (
            (latest[0], latest[1], size, root) if latest[0] < size else (size, root, *latest)
        )
        try:
            verify_consistency(n1, n2, list(prove(n1, n2)), r1, r2)
        except VerificationError:
            alarms.append(f"the served tree and the anchored tree of size {latest[0]} fork")
    return WatchReport(origin, size, root, latest, tuple(alarms))
