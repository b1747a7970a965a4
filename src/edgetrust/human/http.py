"""The node's human-review endpoints under ``/v1/human``: passkey ceremonies, tasks, verdicts.

State is the log: `HumanService` replays reviewer, task and review statements from the log
(catching up on each request), so passkeys, tasks, verdicts, counters, aggregates and
reputations are all rebuilt from what is logged. The only side state is what must never be
logged: ceremony challenges (random, single use, expiring) and passkeys whose registration
ceremony passed but whose binding statement the reviewer has not yet signed.

Routes and JSON shapes are listed in docs/human.md (and /work/notes/human-http.md). Every
refusal is a 4xx ``{"error", "message"}`` body.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edgetrust.errors import ConflictError, InvalidInputError, NotFoundError, VerificationError
from edgetrust.human.gold import GoldError
from edgetrust.human.http_claims import (
    MAX_HUMAN_BODY,
    ClaimHandlers,
    _did,
    _obj,
    _statement,
)
from edgetrust.human.policy import DEFAULT_ORIGIN, DEFAULT_RP_ID, HumanRecord
from edgetrust.human.published import stale_entries
from edgetrust.human.reviewers import (
    CHALLENGE_TTL,
    REVIEWER_PREDICATE_TYPE,
    Passkey,
    b64url,
    passkey_from_statement,
)
from edgetrust.human.tasks import (
    REVIEW_PREDICATE_TYPE,
    TASK_PREDICATE_TYPE,
    Task,
    review_digest,
    task_from_statement,
    verdict_from_statement,
    verify_verdict,
)
from edgetrust.identity import public_bytes_from_did
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement
from edgetrust.statement import open_signed_statement as _open

__all__ = ["MAX_HUMAN_BODY", "HumanService", "human_router"]

RP_ID_ENV, ORIGIN_ENV = "EDGETRUST_RP_ID", "EDGETRUST_RP_ORIGIN"
_TIMEOUT_MS = int(CHALLENGE_TTL * 1000)


def _task_json(task: Task, digest: str) -> dict[str, Any]:
    return {
        "digest": digest,
        "subject": task.subject,
        "question": task.question,
        "answers": list(task.answers),
    }


class HumanService(ClaimHandlers):
    """The relying party and the log's human record, behind the node's routes."""

    def __init__(self, *, rp_id: str, origin: str, rp_name: str = "edgetrust") -> None:
        self.rp_id, self.origin, self.rp_name = rp_id, origin, rp_name
        self.record = HumanRecord.from_entries([], rp_id=rp_id, origin=origin)
        self._synced = 0
        self._applied: set[bytes] = set()
        self._pending: dict[bytes, tuple[Passkey, float]] = {}
        self._task_index: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- log replay --------------------------------------------------------------------------

    def sync(self, log: Log) -> None:
        """Replay entries logged since the last call (by this node or any other client)."""
        with self._lock:
            size = log.size()
            while self._synced < size:
                count = min(size - self._synced, 1024)
                for offset, entry in enumerate(log.entries(self._synced, count)):
                    key = hashlib.sha256(entry).digest()
                    if key in self._applied:
                        self._applied.discard(key)
                        continue
                    if self.record.apply(entry, self._synced + offset) == TASK_PREDICATE_TYPE:
                        digest = task_from_statement(_open(entry).statement).digest
                        self._task_index.setdefault(digest, self._synced + offset)
                self._synced += count

    def _log(self, log: Log, data: bytes) -> tuple[int, bool]:
        """Append `data` (already applied to the record); (index, was it already logged)."""
        existing = log.index_of(data)
        if existing is not None:
            return existing, True
        self._applied.add(hashlib.sha256(data).digest())
        return log.append(data), False

    # -- registration ------------------------------------------------------------------------

    def registration_options(self, log: Log, body: bytes) -> dict[str, Any]:
        """PublicKeyCredentialCreationOptionsJSON for `did`, with a fresh challenge."""
        did = _did(_obj(body, "registration options request"))
        self.sync(log)
        challenge = self.record.registry.start_registration(did)
        return {
            "did": did,
            "publicKey": {
                "challenge": b64url(challenge),
                "rp": {"id": self.rp_id, "name": self.rp_name},
                "user": {
                    "id": b64url(hashlib.sha256(did.encode()).digest()),
                    "name": did[:64],
                    "displayName": did[:64],
                },
                "pubKeyCredParams": [
                    {"type": "public-key", "alg": -7},
                    {"type": "public-key", "alg": -8},
                ],
                "timeout": _TIMEOUT_MS,
                "attestation": "none",
                "authenticatorSelection": {
                    "residentKey": "preferred",
                    "userVerification": "required",
                },
                "excludeCredentials": self._descriptors(did),
            },
        }

    def registration_verify(self, log: Log, body: bytes) -> dict[str, Any]:
        """Verify the create() response; answer the reviewer statement the DID must sign."""
        obj = _obj(body, "registration")
        did = _did(obj)
        self.sync(log)
        with self._lock:
            registry = self.record.registry
            passkey = registry.finish_registration(did, _credential(obj))
            # Not a reviewer until the DID signs the binding and it is logged.
            registry.remove(passkey.credential_id)
            now = time.monotonic()
            for key in [k for k, (_, exp) in self._pending.items() if exp < now]:
                del self._pending[key]
            self._pending[passkey.credential_id] = (passkey, now + CHALLENGE_TTL)
        payload = _reviewer_payload(passkey)
        return {
            "did": did,
            "credentialId": b64url(passkey.credential_id),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode("ascii"),
            "next": "POST /v1/human/reviewers with this payload signed (DSSE) by the DID",
        }

    def add_reviewer(self, log: Log, body: bytes) -> dict[str, Any]:
        """Log a reviewer statement whose passkey passed a registration ceremony here."""
        env, signed = _statement(
            body, "reviewer statement", REVIEWER_PREDICATE_TYPE, "human-reviewer"
        )
        passkey = passkey_from_statement(signed.statement)
        data = env.to_json()
        self.sync(log)
        with self._lock:
            existing = log.index_of(data)
            if existing is not None:
                return {"index": existing, "duplicate": True, "did": passkey.did}
            pending = self._pending.get(passkey.credential_id)
            if pending is None or pending[1] < time.monotonic():
                raise VerificationError(
                    "this passkey has no recent registration ceremony on this node",
                    step="webauthn",
                )
            if pending[0] != passkey:
                raise VerificationError(
                    "statement does not bind the passkey that was registered", step="webauthn"
                )
            del self._pending[passkey.credential_id]
            index, dup = self._log(log, data)
            self.record.registry.add(passkey)
        return {"index": index, "duplicate": dup, "did": passkey.did}

    # -- authentication ----------------------------------------------------------------------

    def login_options(self, log: Log, body: bytes) -> dict[str, Any]:
        """PublicKeyCredentialRequestOptionsJSON for a registered `did`."""
        did = _did(_obj(body, "login options request"))
        self.sync(log)
        challenge = self.record.registry.start_login(did)
        return {"did": did, "publicKey": self._request_options(did, challenge)}

    def _descriptors(self, did: str) -> list[dict[str, str]]:
        """The DID's passkeys as WebAuthn credential descriptors (to exclude or allow)."""
        return [
            {"type": "public-key", "id": b64url(p.credential_id)}
            for p in self.record.registry.passkeys(did)
        ]

    def _request_options(self, did: str, challenge: bytes) -> dict[str, Any]:
        return {
            "challenge": b64url(challenge),
            "rpId": self.rp_id,
            "timeout": _TIMEOUT_MS,
            "userVerification": "required",
            "allowCredentials": self._descriptors(did),
        }

    def login_verify(self, log: Log, body: bytes) -> dict[str, Any]:
        """Verify the get() response against the stored challenge."""
        obj = _obj(body, "login")
        did = _did(obj)
        self.sync(log)
        with self._lock:
            passkey = self.record.registry.finish_login(did, _credential(obj))
        return {"did": did, "credentialId": b64url(passkey.credential_id), "verified": True}

    # -- tasks and verdicts ------------------------------------------------------------------

    def add_task(self, log: Log, body: bytes) -> dict[str, Any]:
        """Log a signed task statement; a new one must carry a commitment (``gold``).

        The log still replays tasks of the old form, but none is added: without the field an
        ordinary task would stand out from its author's gold ones.
        """
        env, signed = _statement(body, "task statement", TASK_PREDICATE_TYPE, "human-task")
        task = task_from_statement(signed.statement)
        if task.commitment is None:
            raise InvalidInputError(
                "a task needs gold (64 hex): a commitment to its answer for a gold task, else a "
                "decoy (make_task adds one), so that gold tasks cannot be told apart"
            )
        self.sync(log)
        with self._lock:
            data = env.to_json()
            new = task.digest not in self.record.tasks
            index, dup = self._log(log, data)
            if self.record.add_task(task, signed.signer):
                self._task_index[task.digest] = index
        return {"index": index, "duplicate": dup or not new, **_task_json(task, task.digest)}

    def review_options(self, log: Log, body: bytes) -> dict[str, Any]:
        """The get() options whose challenge is the review digest of the proposed verdict."""
        obj = _obj(body, "review options request")
        did = _did(obj, "reviewer")
        task, answer, confidence = self._proposal(log, obj)
        challenge = review_digest(task.digest, answer, confidence, did)
        if not self.record.registry.is_reviewer(did):
            raise NotFoundError(f"{did:.80} is not a registered reviewer")
        return {
            "task": task.digest,
            "answer": answer,
            "confidence": confidence,
            "reviewer": did,
            "publicKey": self._request_options(did, challenge),
        }

    def review_statement(self, log: Log, body: bytes) -> dict[str, Any]:
        """The review statement bytes the reviewer's DID must sign, assertion included."""
        obj = _obj(body, "review statement request")
        did = _did(obj, "reviewer")
        task, answer, confidence = self._proposal(log, obj)
        assertion = obj.get("assertion")
        if not isinstance(assertion, dict):
            raise InvalidInputError("`assertion` must be the navigator.credentials.get() JSON")
        predicate = {
            "task": task.digest,
            "answer": answer,
            "confidence": confidence,
            "reviewer": did,
            "assertion": assertion,
        }
        payload = encode_statement([Subject("task", task.digest)], REVIEW_PREDICATE_TYPE, predicate)
        return {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode("ascii"),
            "next": "POST /v1/human/verdicts with this payload signed (DSSE) by the reviewer",
        }

    def _proposal(self, log: Log, obj: dict[str, Any]) -> tuple[Task, str, float]:
        digest, answer, conf = obj.get("task"), obj.get("answer"), obj.get("confidence", 1.0)
        if not isinstance(digest, str) or not isinstance(answer, str):
            raise InvalidInputError("`task` (digest) and `answer` must be strings")
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise InvalidInputError("`confidence` must be a number in [0, 1]")
        self.sync(log)
        task = self._task(digest)
        if answer not in task.answers:
            raise InvalidInputError(f"answer {answer!r:.40} is not one of {list(task.answers)}")
        return task, answer, float(conf)

    def _task(self, digest: str) -> Task:
        task = self.record.tasks.get(digest.removeprefix("sha256:"))
        if task is None:
            raise NotFoundError(f"no task {digest[:16]!r} in the log")
        return task

    def submit_verdict(self, log: Log, body: bytes) -> dict[str, Any]:
        """Verify a signed review (DID signature + passkey assertion over its digest); log it."""
        env, signed = _statement(body, "verdict", REVIEW_PREDICATE_TYPE, "human-review")
        verdict = verdict_from_statement(signed.statement)
        data = env.to_json()
        self.sync(log)
        with self._lock:
            task = self._task(verdict.task)
            if log.index_of(data) is not None:
                raise ConflictError("this verdict is already logged (a replay)")
            first = self.record.verdicts.get(task.digest, {}).get(verdict.reviewer)
            if first is not None:
                raise ConflictError(
                    f"{verdict.reviewer:.60} already judged task {task.digest[:12]} "
                    f"({first.answer!r}); the first verdict counts"
                )
            if task.digest in self.record.gold:
                raise GoldError(
                    f"task {task.digest[:12]} is a gold task whose answer is already revealed; "
                    "verdicts on it no longer count"
                )
            verify_verdict(signed, task, self.record.registry)
            index, _ = self._log(log, data)
            if self.record.add_verdict(verdict):
                self.record.indices.setdefault(task.digest, {})[verdict.reviewer] = index
        return {"index": index, "task": task.digest, "answer": verdict.answer}

    # -- reading -----------------------------------------------------------------------------

    def tasks(self, log: Log, reviewer: str | None) -> dict[str, Any]:
        """Every logged task with its verdict count; `reviewer`'s own answer when given."""
        self.sync(log)
        with self._lock:
            out = []
            for digest, task in self.record.tasks.items():
                votes = self.record.verdicts.get(digest, {})
                item = {
                    **_task_json(task, digest),
                    "index": self._task_index.get(digest),
                    "verdicts": len(votes),
                    # gold is known only once revealed: before, every task looks alike
                    "gold": digest in self.record.gold,
                    "revealed": self.record.gold.get(digest),
                }
                if reviewer is not None:
                    mine = votes.get(reviewer)
                    item["mine"] = mine.answer if mine else None
                out.append(item)
        return {"tasks": out, "refused": len(self.record.refused)}

    def aggregate(self, log: Log, digest: str | None) -> dict[str, Any]:
        """Dawid–Skene result per task (or for one task)."""
        self.sync(log)
        with self._lock:
            if digest is not None:
                self._task(digest)
            results = self.record.results()
            published = {d: self._published(d) for d in self.record.published}
        rows = [
            {
                "task": d,
                "subject": r.task.subject,
                "answer": r.answer,
                "posterior": r.posterior,
                "reviewers": list(r.reviewers),
                "published": published.get(d),
            }
            for d, r in results.items()
            if digest is None or d == digest.removeprefix("sha256:")
        ]
        if digest is not None:
            if not rows:
                raise NotFoundError("this task has no verdicts yet")
            return rows[0]
        return {"results": rows}

    def _published(self, digest: str) -> dict[str, Any]:
        """The task's latest published aggregate: where, at which logSize, and whether stale."""
        index, size = self.record.published[digest]
        later = stale_entries(self.record, digest, size)
        return {"index": index, "logSize": size, "stale": bool(later), "later": list(later)}

    def reputation(self, log: Log, did: str | None) -> dict[str, Any]:
        """Per reviewer: reviews, agreement with the aggregate, DS reliability; from the log."""
        if did is not None:
            public_bytes_from_did(did)
        self.sync(log)
        with self._lock:
            stats = self.record.reputation()
            registered = did is None or self.record.registry.is_reviewer(did)
            vouches = {k: len(v) for k, v in self.record.vouches.items()}
        rows = [
            {
                "did": s.did,
                "reviews": s.reviews,
                "agreement": s.agreement,
                "reliability": s.reliability,
                "vouchers": vouches.get(s.did, 0),
                "goldReviews": s.gold_reviews,
                "goldAccuracy": s.gold_accuracy,
            }
            for s in stats.values()
            if did is None or s.did == did
        ]
        if did is not None:
            if not registered:
                raise NotFoundError(f"{did:.80} is not a registered reviewer")
            return (
                rows[0]
                if rows
                else {
                    "did": did,
                    "reviews": 0,
                    "agreement": None,
                    "reliability": None,
                    "vouchers": vouches.get(did, 0),
                }
            )
        return {"reviewers": rows}


def _credential(obj: dict[str, Any]) -> dict[str, Any]:
    cred = obj.get("credential")
    if not isinstance(cred, dict):
        raise InvalidInputError("`credential` must be the WebAuthn PublicKeyCredential JSON")
    return cred


def _reviewer_payload(passkey: Passkey) -> bytes:
    # The same bytes `sign_reviewer_statement` signs, without needing the DID's key here.
    predicate = {
        "did": passkey.did,
        "credentialId": b64url(passkey.credential_id),
        "publicKey": b64url(passkey.public_key),
        "rpId": passkey.rp_id,
    }
    subject = Subject("passkey", hashlib.sha256(passkey.credential_id).hexdigest())
    return encode_statement([subject], REVIEWER_PREDICATE_TYPE, predicate)


def human_router(
    log: Callable[[], Log], *, rp_id: str | None = None, origin: str | None = None
) -> APIRouter:
    """The ``/v1/human`` routes over the node's log (`log` is called per request).

    The RP ID and origin default to ``$EDGETRUST_RP_ID`` / ``$EDGETRUST_RP_ORIGIN``, else
    ``edgetrust.local`` / ``https://edgetrust.local``; the origin must be exactly the one the
    review page is served from.
    """
    from edgetrust.node._http import ERROR_RESPONSES, read_body

    service = HumanService(
        rp_id=rp_id or os.environ.get(RP_ID_ENV) or DEFAULT_RP_ID,
        origin=origin or os.environ.get(ORIGIN_ENV) or DEFAULT_ORIGIN,
    )
    router = APIRouter(prefix="/v1/human", tags=["human"], responses=ERROR_RESPONSES)

    def post(path: str, method: Callable[[Log, bytes], dict[str, Any]]) -> None:
        async def handler(request: Request) -> JSONResponse:
            body = await read_body(request, MAX_HUMAN_BODY)
            return JSONResponse(await run_in_threadpool(method, log(), body))

        handler.__doc__ = method.__doc__
        router.add_api_route(path, handler, methods=["POST"], name=method.__name__)

    post("/register/options", service.registration_options)
    post("/register/verify", service.registration_verify)
    post("/reviewers", service.add_reviewer)
    post("/login/options", service.login_options)
    post("/login/verify", service.login_verify)
    post("/tasks", service.add_task)
    post("/review/options", service.review_options)
    post("/review/statement", service.review_statement)
    post("/verdicts", service.submit_verdict)
    post("/gold", service.reveal_gold)
    post("/vouch/options", service.vouch_options)
    post("/vouches", service.add_vouch)
    post("/aggregates/statement", service.aggregate_statement)
    post("/aggregates", service.publish_aggregate)

    @router.get("/tasks")
    async def list_tasks(reviewer: str | None = None) -> JSONResponse:
        """Every logged task; with ``?reviewer=did``, that reviewer's own answer as ``mine``."""
        if reviewer is not None:
            public_bytes_from_did(reviewer[:200])
        return JSONResponse(await run_in_threadpool(service.tasks, log(), reviewer))

    @router.get("/aggregate")
    async def all_results() -> JSONResponse:
        """The Dawid–Skene result of every task with verdicts."""
        return JSONResponse(await run_in_threadpool(service.aggregate, log(), None))

    @router.get("/tasks/{digest}/aggregate")
    async def task_result(digest: str = Path(max_length=80)) -> JSONResponse:
        """One task's result: answer, posterior, reviewers."""
        return JSONResponse(await run_in_threadpool(service.aggregate, log(), digest))

    @router.get("/reviewers")
    async def all_reputations() -> JSONResponse:
        """Every reviewer's record, derived from the log."""
        return JSONResponse(await run_in_threadpool(service.reputation, log(), None))

    @router.get("/reviewers/{did}")
    async def reputation(did: str = Path(max_length=200)) -> JSONResponse:
        """One reviewer's record: reviews, agreement, reliability."""
        return JSONResponse(await run_in_threadpool(service.reputation, log(), did))

    router.service = service  # type: ignore[attr-defined]
    return router
