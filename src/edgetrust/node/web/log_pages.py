"""The log pages: overview with the latest checkpoint, entries newest first, one entry.

Entries are listed by keyset pagination on the log index (``?before=N``): a page reads
exactly the entries it shows, so its cost does not grow with the log.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.node.web._page import WebContext, error_page, int_param, render
from edgetrust.node.web.describe import check_entry, describe_entry

__all__ = ["router"]

PAGE_SIZE = 50


def router(ctx: WebContext) -> APIRouter:
    """The log overview (``/``), entry list (``/entries``) and entry (``/entries/{index}``)."""
    r = APIRouter(include_in_schema=False)

    @r.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        log = ctx.log()
        note = log.checkpoint()
        cp = log.latest()
        start = max(cp.size - 10, 0)
        recent = [
            describe_entry(start + i, d) for i, d in enumerate(log.entries(start, cp.size - start))
        ]
        return render(
            request,
            "log.html",
            {
                "title": "Log",
                "checkpoint": cp,
                "note": note.decode("utf-8", "replace"),
                "recent": recent[::-1],
            },
        )

    @r.get("/entries", response_class=HTMLResponse)
    def entries(request: Request) -> HTMLResponse:
        try:
            log = ctx.log()
            size = log.size()
            before = min(int_param(request, "before", size) or 0, size)
            start = max(before - PAGE_SIZE, 0)
            views = [
                describe_entry(start + i, d)
                for i, d in enumerate(log.entries(start, before - start))
            ]
        except Error as exc:
            return error_page(request, exc)
        return render(
            request,
            "entries.html",
            {
                "title": "Entries",
                "entries": views[::-1],
                "size": size,
                "older": start if start > 0 else None,
                "newer": min(before + PAGE_SIZE, size) if before < size else None,
            },
        )

    @r.get("/entries/{index}", response_class=HTMLResponse)
    def entry(request: Request, index: str) -> HTMLResponse:
        try:
            if not index.isdigit() or len(index) > 19:
                raise InvalidInputError("entry index must be a non-negative integer")
            i = int(index)
            log = ctx.log()
            cp = log.latest()
            if i >= cp.size:
                raise NotFoundError(f"entry {i} is beyond the log's size {cp.size}")
            data = log.entry(i)
            proof = log.inclusion_proof(i, cp.size)
            view = describe_entry(i, data)
            steps = check_entry(i, data, cp.size, cp.root, proof)
        except Error as exc:
            return error_page(request, exc)
        return render(
            request,
            "entry.html",
            {
                "title": f"Entry {i}",
                "e": view,
                "steps": steps,
                "checkpoint": cp,
                "proof": [h.hex() for h in proof],
                "raw": data.decode("utf-8", "replace"),
            },
        )

    return r
