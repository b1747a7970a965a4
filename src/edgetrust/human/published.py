"""The aggregate verdict as a logged statement, and its replay check.

A published aggregate (`https://edgetrust.dev/human-aggregate/v1`) names one task (its subject)
and says: at log size `logSize`, replaying the log with RP `rpId` / `origin` and aggregating by
`method` over the verdicts at log indices `inputs` gives `result` with posterior `confidence`.
Anyone holding the log re-runs exactly that (`verify_aggregate`): every field must match, the
posterior to 1e-9. The signer (a node operator or any reviewer) vouches for nothing the log
cannot re-derive; a tampered result, input list or log prefix is refused, naming the field.

A published aggregate is fixed at its `logSize`; verdicts or a gold reveal on the same task
logged after it make it stale. `verify_aggregate(..., current=True)` replays the whole log and
refuses such an aggregate with `StaleAggregateError`, naming the aggregate's log index and the
later entries' indices (`stale_entries` gives the indices alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from edgetrust.human.policy import AGGREGATE_PREDICATE_TYPE, HumanRecord
from edgetrust.statement import (
    SignedStatement,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "AGGREGATE_PREDICATE_TYPE",
    "METHOD",
    "PublishedAggregate",
    "StaleAggregateError",
    "aggregate_payload",
    "log_prefix",
    "published_from_statement",
    "stale_entries",
    "verify_aggregate",
]

METHOD = "dawid-skene"
_TOLERANCE = 1e-9
_KEYS = {"method", "logSize", "inputs", "result", "confidence", "reviewers", "rpId", "origin"}


@dataclass(frozen=True)
class PublishedAggregate:
    """The claim of one published aggregate."""

    task: str
    method: str
    log_size: int
    inputs: tuple[int, ...]
    """Log indices of the verdicts counted for this task, ascending."""
    result: str
    confidence: float
    reviewers: tuple[str, ...]
    rp_id: str
    origin: str

    def predicate(self) -> dict[str, Any]:
        """The statement's predicate."""
        return {
            "method": self.method,
            "logSize": self.log_size,
            "inputs": list(self.inputs),
            "result": self.result,
            "confidence": self.confidence,
            "reviewers": list(self.reviewers),
            "rpId": self.rp_id,
            "origin": self.origin,
        }

    def payload(self) -> bytes:
        """Canonical statement bytes."""
        subject = Subject("task", self.task)
        return encode_statement([subject], AGGREGATE_PREDICATE_TYPE, self.predicate())


class StaleAggregateError(VerificationError):
    """A published aggregate that later verdicts or a gold reveal on its task have overtaken."""

    def __init__(self, task: str, index: int | None, log_size: int, later: tuple[int, ...]):
        at = f"at log index {index}" if index is not None else "(not in this log)"
        shown = ", ".join(map(str, later[:10])) + (", …" if len(later) > 10 else "")
        super().__init__(
            f"aggregate {at} of task {task[:12]} is stale: it counted entries below logSize "
            f"{log_size}, and log entries {shown} (verdicts or gold reveal on this task) "
            "came later; publish a new one",
            step="stale",
        )
        self.task, self.index, self.log_size, self.later = task, index, log_size, later


def stale_entries(record: HumanRecord, task: str, log_size: int) -> tuple[int, ...]:
    """Indices of counted verdicts and the gold reveal on the task at or after its logSize.

    `record` is the whole log replayed from index 0 with indices; empty if the claim is current.
    """
    later = [i for i in record.indices.get(task, {}).values() if i >= log_size]
    reveal = record.reveals.get(task)
    if reveal is not None and reveal >= log_size:
        later.append(reveal)
    return tuple(sorted(later))


def log_prefix(log: Any, size: int, chunk: int = 1024) -> Iterator[bytes]:
    """Entries [0, size) of an `edgetrust.log.service.Log`, read in chunks."""
    start = 0
    while start < size:
        count = min(chunk, size - start)
        yield from log.entries(start, count)
        start += count


def compute_aggregate(
    entries: Iterable[bytes], size: int, task: str, *, rp_id: str, origin: str
) -> PublishedAggregate:
    """Replay the first `size` entries and aggregate; the claim a publisher signs."""
    prefix = list(islice(entries, size))
    if len(prefix) != size:
        raise VerificationError(f"the log has {len(prefix)} entries, fewer than logSize {size}")
    rec = HumanRecord.from_entries(prefix, rp_id=rp_id, origin=origin)
    if task not in rec.tasks:
        raise NotFoundError(f"no task {task[:16]!r} in the first {size} log entries")
    result = rec.results().get(task)
    if result is None:
        raise NotFoundError(f"task {task[:16]} has no verdicts in the first {size} log entries")
    return PublishedAggregate(
        task,
        METHOD,
        size,
        tuple(sorted(rec.indices.get(task, {}).values())),
        result.answer,
        result.posterior,
        result.reviewers,
        rp_id,
        origin,
    )


def aggregate_payload(log: Any, task: str, *, rp_id: str, origin: str) -> bytes:
    """The statement to sign for `task` at the log's current size."""
    size = log.size()
    agg = compute_aggregate(log_prefix(log, size), size, task, rp_id=rp_id, origin=origin)
    return agg.payload()


def published_from_statement(statement: Statement) -> PublishedAggregate:
    """Read the claim out of an aggregate statement (structure checked)."""
    p = statement.predicate
    if set(p) != _KEYS:
        raise InvalidInputError(f"aggregate predicate needs exactly {sorted(_KEYS)}")
    size, inputs, conf = p["logSize"], p["inputs"], p["confidence"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError("aggregate logSize must be a non-negative integer")
    if not isinstance(inputs, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in inputs
    ):
        raise InvalidInputError("aggregate inputs must be log indices below logSize")
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
        raise InvalidInputError("aggregate confidence must be a number in [0, 1]")
    texts = [p["method"], p["result"], p["rpId"], p["origin"]]
    reviewers = p["reviewers"]
    if not all(isinstance(t, str) for t in texts) or not isinstance(reviewers, list):
        raise InvalidInputError("aggregate method, result, rpId, origin must be strings")
    if not all(isinstance(r, str) for r in reviewers):
        raise InvalidInputError("aggregate reviewers must be DIDs")
    return PublishedAggregate(
        statement.subjects[0].sha256,
        p["method"],
        size,
        tuple(inputs),
        p["result"],
        float(conf),
        tuple(reviewers),
        p["rpId"],
        p["origin"],
    )


def verify_aggregate(
    signed: SignedStatement,
    entries: Iterable[bytes],
    *,
    current: bool = False,
    index: int | None = None,
) -> PublishedAggregate:
    """Re-run the aggregation from the log (`entries` from index 0) and check every field.

    With `current`, `entries` must be the whole log: it is replayed to the end and an aggregate
    whose task has counted verdicts or a gold reveal at or after its logSize is refused.
    `index` is the aggregate's own log index, for the message; when None it is looked up
    among `entries` (the exact envelope bytes).

    Raises:
        VerificationError: the method is unknown or a field differs from the replay (named).
        StaleAggregateError: with `current`, later entries on the task (indices named).
        NotFoundError: the task or its verdicts are not in the log prefix.
        InvalidInputError: not an aggregate statement, or a malformed predicate.
    """
    if signed.statement.predicate_type != AGGREGATE_PREDICATE_TYPE:
        raise InvalidInputError("not a human-aggregate statement")
    claim = published_from_statement(signed.statement)
    if claim.method != METHOD:
        raise VerificationError(f"unknown aggregation method {claim.method!r:.40}", step="method")
    if current:
        entries = list(entries)
    again = compute_aggregate(
        iter(entries), claim.log_size, claim.task, rp_id=claim.rp_id, origin=claim.origin
    )
    for name, mine, theirs in (
        ("inputs", again.inputs, claim.inputs),
        ("result", again.result, claim.result),
        ("reviewers", again.reviewers, claim.reviewers),
    ):
        if mine != theirs:
            raise VerificationError(
                f"published {name} {theirs!r:.60} but the log gives {mine!r:.60}", step=name
            )
    if abs(again.confidence - claim.confidence) > _TOLERANCE:
        raise VerificationError(
            f"published confidence {claim.confidence:.6f} but the log gives {again.confidence:.6f}",
            step="confidence",
        )
    if current:
        whole = list(entries)
        rec = HumanRecord.from_entries(whole, rp_id=claim.rp_id, origin=claim.origin)
        later = stale_entries(rec, claim.task, claim.log_size)
        if later:
            if index is None:
                own = signed.envelope.to_json()
                index = next((i for i, e in enumerate(whole) if e == own), None)
            raise StaleAggregateError(claim.task, index, claim.log_size, later)
    return claim


def _validate(statement: Statement, signer: str) -> None:
    published_from_statement(statement)


register_predicate_type(AGGREGATE_PREDICATE_TYPE, _validate)
