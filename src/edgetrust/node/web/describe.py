"""What a log entry is, for people: its kind, signer, subjects and a one-line summary.

Pure functions over the exact logged bytes. Describing an entry does not verify it: the
signature and the inclusion proof are checked separately (`check_entry`), so a page shows
what it checked and never infers a check from a parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgetrust.dsse import parse_envelope, verify_envelope
from edgetrust.errors import Error
from edgetrust.log.merkle import leaf_hash, verify_inclusion
from edgetrust.statement import Statement, parse_statement

__all__ = [
    "KINDS",
    "EntryView",
    "Step",
    "check_entry",
    "describe_entry",
    "kind_of",
    "mentioned_dids",
]

KINDS: Mapping[str, str] = {
    "https://edgetrust.dev/model/v1": "model card",
    "https://edgetrust.dev/inference/v1": "receipt",
    "https://edgetrust.dev/inference-batch/v1": "batch",
    "https://edgetrust.dev/fl-round-config/v1": "FL round config",
    "https://edgetrust.dev/fl-round/v1": "FL round",
    "https://edgetrust.dev/dispute-verdict/v1": "dispute verdict",
    "https://edgetrust.dev/dataset/v1": "dataset",
    "https://edgetrust.dev/grant/v1": "grant",
    "https://edgetrust.dev/revocation/v1": "revocation",
    "https://edgetrust.dev/job/v1": "job",
    "https://edgetrust.dev/usage/v1": "usage record",
    "https://edgetrust.dev/human-reviewer/v1": "reviewer",
    "https://edgetrust.dev/human-task/v1": "review task",
    "https://edgetrust.dev/human-review/v1": "review",
    "https://edgetrust.dev/capture-root/v1": "capture root",
}
"""Display names of the predicate types; an unknown type is shown by its URI."""

_MAX_SUMMARY = 200


def kind_of(predicate_type: str) -> str:
    """The display kind of a predicate type (its URI when it is not a known one)."""
    return KINDS.get(predicate_type, predicate_type[:_MAX_SUMMARY])


@dataclass(frozen=True)
class EntryView:
    """A logged entry as the pages show it (parsed, not verified)."""

    index: int
    """Position in the log."""
    size: int
    """Length of the logged bytes."""
    kind: str
    """Display kind (`KINDS`), ``"unparseable"`` when the bytes are not a statement."""
    predicate_type: str
    signer: str
    """The key id of the first signature (a DID for edgetrust signers), unverified."""
    subjects: tuple[tuple[str, str], ...]
    """(name, sha256 hex) of each subject."""
    summary: str
    """One line: model name, round number, verdict... (plain text; templates escape it)."""
    predicate: Mapping[str, Any]
    problem: str = ""
    """Why the entry could not be parsed, if it could not."""


def _summary(st: Statement) -> str:
    p = st.predicate
    kind = KINDS.get(st.predicate_type)
    parts: list[str] = []

    def add(label: str, value: object) -> None:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            parts.append(f"{label} {value}")

    model = p.get("model")
    if kind in ("model card", "dataset"):
        add("", p.get("name"))
        add("v", p.get("version"))
    elif isinstance(model, Mapping):
        add("model", model.get("name"))
    for key in ("session", "round", "loser", "node", "action", "algorithm", "issuedAt"):
        add(key, p.get(key))
    return " · ".join(s.strip() for s in parts)[:_MAX_SUMMARY]


MAX_MENTIONS = 64
"""At most this many DIDs of one entry are indexed (an FL round names its participants)."""


def mentioned_dids(predicate: object) -> tuple[str, ...]:
    """The distinct ``did:`` strings anywhere in a predicate (up to `MAX_MENTIONS`), in order.

    An owner, grantee, requester, participant or disputed device is named in the predicate,
    not only as the signer; search by DID needs them all.
    """
    found: dict[str, None] = {}
    stack: list[object] = [predicate]
    while stack and len(found) < MAX_MENTIONS:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("did:") and len(item) <= _MAX_SUMMARY:
                found[item] = None
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return tuple(found)


def describe_entry(index: int, data: bytes) -> EntryView:
    """Parse logged bytes into an `EntryView`; bytes that are no statement still get a view."""
    try:
        env = parse_envelope(data, max_bytes=max(len(data), 1))
        st = parse_statement(env.payload)
    except Error as exc:
        return EntryView(index, len(data), "unparseable", "", "", (), "", {}, exc.diagnostics())
    signer = env.signatures[0].keyid if env.signatures else ""
    return EntryView(
        index=index,
        size=len(data),
        kind=kind_of(st.predicate_type),
        predicate_type=st.predicate_type,
        signer=signer,
        subjects=tuple((s.name, s.sha256) for s in st.subjects),
        summary=_summary(st),
        predicate=st.predicate,
    )


@dataclass(frozen=True)
class Step:
    """One numbered check a page shows: ✓ passed, ✗ failed, – not run."""

    number: int
    name: str
    status: str
    """``"pass"``, ``"fail"`` or ``"skip"``."""
    reason: str


def check_entry(index: int, data: bytes, size: int, root: bytes, proof: list[bytes]) -> list[Step]:
    """Run the checks the entry page shows, each recorded (never short-circuited silently).

    Steps: (1) the bytes are a DSSE envelope and every signature verifies; (2) the payload is
    an in-toto Statement v1; (3) the inclusion proof recomputes the checkpoint's root
    (RFC 9162 §2.1.3.2).
    """
    steps: list[Step] = []
    envelope = None
    try:
        envelope = parse_envelope(data, max_bytes=max(len(data), 1))
        signer = verify_envelope(envelope)
        steps.append(Step(1, "signature", "pass", f"signed by {signer}"))
    except Error as exc:
        steps.append(Step(1, "signature", "fail", exc.diagnostics()))
    if envelope is None:
        steps.append(Step(2, "statement", "skip", "no envelope to read"))
    else:
        try:
            st = parse_statement(envelope.payload)
            steps.append(Step(2, "statement", "pass", f"in-toto v1, {kind_of(st.predicate_type)}"))
        except Error as exc:
            steps.append(Step(2, "statement", "fail", exc.diagnostics()))
    try:
        verify_inclusion(leaf_hash(data), index, size, proof, root)
        steps.append(
            Step(3, "inclusion", "pass", f"leaf {index} is in the signed tree of {size} entries")
        )
    except Error as exc:
        steps.append(Step(3, "inclusion", "fail", exc.diagnostics()))
    return steps
