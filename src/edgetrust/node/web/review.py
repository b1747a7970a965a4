"""The review queue (``/review``): tasks with the AI output they ask about, and their results.

The page is rendered from the node's `HumanService` (``app.state.human``, the same state the
``/v1/human`` routes answer from), so it shows exactly what those routes would. Signing in,
registering a passkey and answering run in the browser (``static/review.js``) against the
``/v1/human`` ceremony endpoints: every verdict carries its own passkey assertion over that
exact verdict and the reviewer DID's signature, which the node checks before logging it. No
form on this page changes state by itself (the JSON endpoints are not cookie-authenticated,
so there is nothing for a cross-site form to ride on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edgetrust.errors import Error, NotFoundError
from edgetrust.node.web._page import NAV, WebContext, error_page, render
from edgetrust.node.web.receipt import _top_classes, bundle_for_entry

__all__ = ["TaskView", "router"]

NAV.append(("/review", "Review queue"))

_CONTEXT_KINDS = ("receipt", "batch", "dataset", "capture root")


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

    @r.get("/review", response_class=HTMLResponse)
    def review(request: Request) -> HTMLResponse:
        try:
            service = getattr(request.app.state, "human", None)
            if service is None:
                raise NotFoundError("this node serves no review queue")
            log = ctx.log()
            listing = service.tasks(log, None)
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
                "rp_id": service.rp_id,
                "origin": service.origin,
            },
        )

    return r
