"""Watch a log against its anchors: alarm on any served checkpoint the chain contradicts.

A log operator could show one history to its clients and anchor another. A watcher takes a
checkpoint the log served (a C2SP signed note), checks that the log's registered note key
signed it, and compares it with the chain: a different anchored root for the same size, an
anchored equivocation, a slashed log, or (given the log's consistency proofs) a served tree
that does not extend or is not extended by the anchored one, are alarms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgetrust.chain.anchor import LogAnchor
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.merkle import verify_consistency

__all__ = [
    "LogSource",
    "WatchReport",
    "check_served_checkpoint",
    "client_source",
    "watch_log",
]

ProofSource = Callable[[int, int], Sequence[bytes]]


class LogSource(Protocol):
    """Where a watcher reads a log: its latest signed checkpoint and consistency proofs.

    `edgetrust.log.service.Log` (the embedded log) is one; `client_source` wraps a remote
    tlog-tiles log read with `edgetrust.log.client.LogClient`.
    """

    def checkpoint(self) -> bytes:
        """The latest checkpoint note the log serves."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes."""
        ...


@dataclass(frozen=True)
class _ClientSource:
    client: Any

    def checkpoint(self) -> bytes:
        _, note = self.client.fetch_checkpoint()
        return bytes(note)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return list(self.client.consistency_proof(size1, size2))


def client_source(client: Any) -> LogSource:
    """A `LogSource` over an `edgetrust.log.client.LogClient` (a remote log's tiles)."""
    return _ClientSource(client)


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


def watch_log(anchor: LogAnchor, origin: str, source: LogSource) -> WatchReport:
    """Check the checkpoint `source` serves now against the anchors of `origin` (all steps)."""
    note = source.checkpoint()
    checkpoint = verify_checkpoint(note, anchor.registration(origin).note_key, origin=origin)
    return check_served_checkpoint(
        anchor,
        origin=origin,
        size=checkpoint.size,
        root=checkpoint.root,
        note=note,
        prove=source.consistency_proof,
    )


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
    1. If the signed `note` is given, it must be signed by the note key the log registered
       (C2SP signed-note, `edgetrust.log.checkpoint.verify_checkpoint`) and be this checkpoint.
    2. A root anchored for the same size must be the served root.
    3. No equivocation may be recorded, and the log must not be slashed.
    4. With `prove(n1, n2)` (the log's consistency proofs), the served tree and the latest
       anchored tree must be consistent, whichever is larger.
    """
    alarms: list[str] = []
    # 1.
    if note is not None:
        served = verify_checkpoint(note, anchor.registration(origin).note_key, origin=origin)
        if (served.size, served.root) != (size, root):
            raise InvalidInputError("the note is not the checkpoint (size, root) given")
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
