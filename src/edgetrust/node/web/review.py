"""The review queue (``/review``): tasks with the AI output they ask about, and their results.

The page is rendered from the node's `HumanService` (``app.state.human``, the same state the
``/v1/human`` routes answer from), so it shows exactly what those routes would. Registering a
passkey and answering run in the browser (``static/review.js``) against the ``/v1/human``
ceremony endpoints: every verdict carries its own passkey assertion over that exact verdict
and the reviewer DID's signature, which the node checks before logging it.

Signing in is ``POST /review/session``: the page's passkey login (``login/options`` then
``get()``), verified here by the same `HumanService.login_verify`, opens a passkey session, an
``HttpOnly; SameSite=Strict`` cookie holding the DID, its expiry and an HMAC under a key
this process made at start (so a restart signs everyone out). The review queue's answer
controls and the reviewer's own answers are rendered only within such a session; a forged,
expired or altered cookie is no session. Session and logout posts carry the CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.node._http import error_response, read_body, status_for
from edgetrust.node.web._page import (
    NAV,
    CsrfError,
    WebContext,
    check_csrf,
    check_did,
    error_page,
    render,
)
from edgetrust.node.web.receipt import _top_classes, bundle_for_entry

__all__ = [
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Sessions",
    "TaskView",
    "published_text",
    "router",
]

NAV.append(("/review", "Review queue"))

_CONTEXT_KINDS = ("receipt", "batch", "dataset", "capture root")
_MAX_LATER = 10
"""Later entries named in a stale aggregate's line; the rest are counted."""
SESSION_COOKIE = "et_review"
SESSION_SECONDS = 3600
"""A passkey session lasts an hour; then the reviewer signs in again."""
MAX_SESSION_BODY = 64 * 1024


class Sessions:
    """Passkey sessions as MACed cookies: ``<did b64url>.<expiry>.<hmac-sha256 b64url>``."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, text: str) -> str:
        mac = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, did: str, now: float | None = None) -> str:
        """A cookie value for `did`, valid `SESSION_SECONDS` from `now`."""
        expiry = int(now if now is not None else time.time()) + SESSION_SECONDS
        head = f"{base64.urlsafe_b64encode(did.encode()).decode().rstrip('=')}.{expiry}"
        return f"{head}.{self._mac(head)}"

    def did(self, cookie: str | None, now: float | None = None) -> str | None:
        """The DID of a valid, unexpired cookie; None for anything else."""
        if not cookie or len(cookie) > 600 or cookie.count(".") != 2:
            return None
        head, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(self._mac(head).encode(), mac.encode()):
            return None
        raw, expiry = head.split(".")
        if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
            return None
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class TaskView:
    """One task as the review page shows it."""

    digest: str
    subject: str
    question: str
    answers: tuple[str, ...]
    index: int | None
    verdicts: int
    context: dict[str, Any] | None
    """What the subject digest names in the log: entry index, kind, model, output."""
    result: dict[str, Any] | None
    """The aggregated (Dawid–Skene) answer, posterior and reviewers, once there are verdicts."""
    mine: str | None = None
    """The signed-in reviewer's own answer, if any."""
    revealed: str | None = None
    """A gold task's answer, once its reveal is logged (before that no task looks gold)."""


def published_text(published: dict[str, Any] | None) -> str:
    """One line on a task's latest published aggregate (``published`` of an HTTP row).

    ``static/review.js`` words it the same way when it refreshes a task after a verdict.
    """
    if published is None:
        return "not published"
    head = f"published at entry {published['index']}"
    later = [str(i) for i in published["later"]]
    if not published["stale"]:
        return head + ": current"
    more = len(later) - _MAX_LATER
    shown = ", ".join(later[:_MAX_LATER]) + (f" and {more} more" if more > 0 else "")
    return f"{head}: stale (later: {shown})"


def _context(ctx: WebContext, subject: str) -> dict[str, Any] | None:
    """The logged entry the task's subject digest names, with the AI output when public."""
    index, indexed, _ = ctx.synced_index()
    rows = [r for r in index.by_digest(subject, before=indexed, limit=20)]
    rows = [r for r in rows if r.kind in _CONTEXT_KINDS] or rows
    rows = [r for r in rows if r.kind not in ("review task", "review")]
    if not rows:
        return None
    row = rows[-1]  # the oldest: the entry that first named this digest
    out: dict[str, Any] = {"index": row.index, "kind": row.kind, "summary": row.summary}
    out["fields"], out["top"] = [], []
    if row.kind == "receipt":
        from edgetrust.receipts import read_receipt

        try:
            receipt = read_receipt(bundle_for_entry(ctx.log(), row.index))
        except Error as exc:
            out["fields"] = [("Problem", exc.message)]
            return out
        out["fields"] = [
            ("Model", receipt.model_digest),
            ("Issuer", receipt.issuer),
            ("Issued at", receipt.issued_at),
            ("Output digest", receipt.output_digest),
        ]
        out["top"] = _top_classes(receipt.outputs)
        if receipt.outputs is None:
            out["fields"].append(("Output", "private (only its digest is in the receipt)"))
    return out


def router(ctx: WebContext) -> APIRouter:
    """``GET /review``: the queue, the sign-in controls and the aggregated results."""
    r = APIRouter(include_in_schema=False)
    sessions = Sessions()

    def human(request: Request) -> Any:
        service = getattr(request.app.state, "human", None)
        if service is None:
            raise NotFoundError("this node serves no review queue")
        return service

    @r.post("/review/session")
    async def sign_in(request: Request) -> Response:
        """Verify a passkey login (``{did, credential, csrf}``) and open a passkey session."""
        try:
            body = await read_body(request, MAX_SESSION_BODY)
            try:
                obj = json.loads(body)
            except ValueError as exc:
                raise InvalidInputError("the sign-in body must be JSON") from exc
            if not isinstance(obj, dict):
                raise InvalidInputError("the sign-in body must be a JSON object")
            check_csrf(request, obj.get("csrf"))
            check_did(str(obj.get("did", ""))[:200])
            answer = await run_in_threadpool(human(request).login_verify, ctx.log(), body)
        except CsrfError as exc:
            return error_response(403, type(exc).__name__, exc.diagnostics())
        except Error as exc:
            return error_response(status_for(exc), type(exc).__name__, exc.diagnostics())
        resp = JSONResponse({"did": answer["did"], "session": True})
        resp.set_cookie(
            SESSION_COOKIE,
            sessions.issue(answer["did"]),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            path="/",
        )
        return resp

    @r.post("/review/logout")
    async def sign_out(request: Request) -> Response:
        """End the passkey session (CSRF token in the JSON body)."""
        try:
            body = await read_body(request, 4096)
            obj = json.loads(body) if body else {}
            check_csrf(request, obj.get("csrf") if isinstance(obj, dict) else None)
        except CsrfError as exc:
            return error_response(403, type(exc).__name__, exc.diagnostics())
        except (Error, ValueError):
            return error_response(400, "InvalidInputError", "the sign-out body must be JSON")
        resp = JSONResponse({"session": False})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @r.get("/review", response_class=HTMLResponse)
    def review(request: Request) -> HTMLResponse:
        try:
            service = human(request)
            log = ctx.log()
            reviewer = sessions.did(request.cookies.get(SESSION_COOKIE))
            if reviewer is not None and not service.record.registry.is_reviewer(reviewer):
                reviewer = None
            listing = service.tasks(log, reviewer)
            results = {row["task"]: row for row in service.aggregate(log, None)["results"]}
            tasks = [
                TaskView(
                    digest=t["digest"],
                    subject=t["subject"],
                    question=t["question"],
                    answers=tuple(t["answers"]),
                    index=t["index"],
                    verdicts=t["verdicts"],
                    context=_context(ctx, t["subject"]),
                    result=results.get(t["digest"]),
                    mine=t.get("mine"),
                    revealed=t["revealed"],
                )
                for t in listing["tasks"]
            ]
            reviewers = service.reputation(log, None)["reviewers"]
        except Error as exc:
            return error_page(request, exc)
        return render(
            request,
            "review.html",
            {
                "title": "Review queue",
                "tasks": tasks[::-1],
                "refused": listing["refused"],
                "reviewers": reviewers,
                "reviewer": reviewer,
                "rp_id": service.rp_id,
                "origin": service.origin,
                "published_text": published_text,
            },
        )

    return r
