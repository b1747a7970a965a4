"""Handlers for the logged claims *about* reviewers and tasks: gold reveals, vouches, aggregates.

`HumanService` (human/http.py) runs the passkey ceremonies, tasks and verdicts; these handlers
add statements that refer to what those logged (a task's gold answer, a reviewer vouching for
another, a signed Dawid–Skene result) and are mixed into `HumanService` under the same lock,
log and record. The request helpers shared by both modules live here.
"""

from __future__ import annotations

import base64
import threading
from typing import TYPE_CHECKING, Any

from edgetrust.dsse import Envelope, envelope_from_dict
from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.human.gold import GOLD_PREDICATE_TYPE, reveal_from_statement
from edgetrust.human.published import (
    AGGREGATE_PREDICATE_TYPE,
    aggregate_payload,
    log_prefix,
    published_from_statement,
    verify_aggregate,
)
from edgetrust.human.vouch import (
    VOUCH_PREDICATE_TYPE,
    verify_vouch,
    vouch_digest,
    vouch_from_statement,
)
from edgetrust.identity import public_bytes_from_did
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, SignedStatement
from edgetrust.statement import open_signed_statement as _open

if TYPE_CHECKING:
    from edgetrust.human.policy import HumanRecord
    from edgetrust.human.tasks import Task

__all__ = ["MAX_HUMAN_BODY", "ClaimHandlers"]

MAX_HUMAN_BODY = 64 * 1024
"""Every human request body is small (a WebAuthn response, one envelope); larger is a 413."""


def _obj(body: bytes, what: str) -> dict[str, Any]:
    obj = parse_json(body, what=what, max_bytes=MAX_HUMAN_BODY)
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return obj


def _did(obj: dict[str, Any], key: str = "did") -> str:
    did = obj.get(key)
    if not isinstance(did, str) or len(did) > 200:
        raise InvalidInputError(f"`{key}` must be a did:key string")
    public_bytes_from_did(did)
    return did


def _envelope(obj: dict[str, Any]) -> Envelope:
    env = obj.get("envelope", obj)
    return envelope_from_dict(env)


def _statement(body: bytes, what: str, ptype: str, name: str) -> tuple[Envelope, SignedStatement]:
    """The request's envelope and its verified statement, refused unless of type `ptype`."""
    env = _envelope(_obj(body, what))
    signed = _open(env)
    if signed.statement.predicate_type != ptype:
        raise InvalidInputError(f"not a {name} statement")
    return env, signed


class ClaimHandlers:
    """Gold, vouch and aggregate handlers; mixed into `HumanService`, which provides the rest."""

    rp_id: str
    origin: str
    record: HumanRecord
    _lock: threading.RLock

    def sync(self, log: Log) -> None:  # pragma: no cover
        """Replay new log entries (provided by `HumanService`)."""
        raise NotImplementedError

    def _log(self, log: Log, data: bytes) -> tuple[int, bool]:  # pragma: no cover
        raise NotImplementedError

    def _task(self, digest: str) -> Task:  # pragma: no cover
        raise NotImplementedError

    def _request_options(self, did: str, challenge: bytes) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def reveal_gold(self, log: Log, body: bytes) -> dict[str, Any]:
        """Log a gold reveal that opens its task's commitment (signed by the task's author)."""
        env, signed = _statement(body, "gold reveal", GOLD_PREDICATE_TYPE, "human-gold reveal")
        reveal = reveal_from_statement(signed.statement)
        data = env.to_json()
        self.sync(log)
        with self._lock:
            self._task(reveal.task)
            new = self.record.reveal(reveal, signed.signer)
            index, dup = self._log(log, data)
            if new:
                self.record.reveals[reveal.task] = index
            counted = len(self.record.verdicts.get(reveal.task, {}))
        return {
            "index": index,
            "duplicate": dup or not new,
            "task": reveal.task,
            "answer": reveal.answer,
            "verdicts": counted,
        }

    # -- vouches and published aggregates ----------------------------------------------------

    def vouch_options(self, log: Log, body: bytes) -> dict[str, Any]:
        """The get() options whose challenge is the vouch digest of `voucher` for `newcomer`."""
        obj = _obj(body, "vouch options request")
        voucher, newcomer = _did(obj, "voucher"), _did(obj, "newcomer")
        if voucher == newcomer:
            raise InvalidInputError("a reviewer cannot vouch for themselves")
        self.sync(log)
        for did, role in ((voucher, "voucher"), (newcomer, "newcomer")):
            if not self.record.registry.is_reviewer(did):
                raise NotFoundError(f"{role} {did:.60} is not a registered reviewer")
        challenge = vouch_digest(voucher, newcomer)
        return {
            "voucher": voucher,
            "newcomer": newcomer,
            "publicKey": self._request_options(voucher, challenge),
        }

    def add_vouch(self, log: Log, body: bytes) -> dict[str, Any]:
        """Log a vouch by a registered reviewer for a registered newcomer (not themselves).

        Its passkey assertion is verified over the vouch digest first.
        """
        env, signed = _statement(body, "vouch", VOUCH_PREDICATE_TYPE, "human-vouch")
        data = env.to_json()
        self.sync(log)
        with self._lock:
            existing = log.index_of(data)
            if existing is None:
                vouch = verify_vouch(signed, self.record.registry)
                index, dup = self._log(log, data)
                self.record.vouches.setdefault(vouch.newcomer, set()).add(vouch.voucher)
            else:
                vouch, index, dup = vouch_from_statement(signed.statement), existing, True
            count = len(self.record.vouches.get(vouch.newcomer, ()))
        return {"index": index, "duplicate": dup, "did": vouch.newcomer, "vouchers": count}

    def aggregate_statement(self, log: Log, body: bytes) -> dict[str, Any]:
        """The aggregate statement for `task` at the log's current size, ready to sign."""
        digest = _obj(body, "aggregate request").get("task")
        if not isinstance(digest, str) or len(digest) > 80:
            raise InvalidInputError("`task` must be a task digest")
        payload = aggregate_payload(
            log, digest.removeprefix("sha256:"), rp_id=self.rp_id, origin=self.origin
        )
        return {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "next": "sign it with your DID, then POST /v1/human/aggregates",
        }

    def publish_aggregate(self, log: Log, body: bytes) -> dict[str, Any]:
        """Re-run a signed aggregate from the log; log it if every field matches and it is current.

        One that later verdicts or a gold reveal on its task have made stale is refused (400).
        """
        env, signed = _statement(
            body, "aggregate statement", AGGREGATE_PREDICATE_TYPE, "human-aggregate"
        )
        claim = published_from_statement(signed.statement)
        if claim.log_size > log.size():
            raise InvalidInputError("aggregate logSize is beyond the log")
        verify_aggregate(signed, log_prefix(log, log.size()), current=True)
        with self._lock:
            index, dup = self._log(log, env.to_json())
            if not dup:
                self.record.published[claim.task] = (index, claim.log_size)
        return {
            "index": index,
            "duplicate": dup,
            "task": claim.task,
            "answer": claim.result,
            "posterior": claim.confidence,
            "inputs": list(claim.inputs),
            "logSize": claim.log_size,
            "signer": signed.signer,
        }
