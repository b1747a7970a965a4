"""The log pages: overview, entries newest first, one entry, search by index, digest or DID.

The overview shows the latest checkpoint with its signature lines, the size over time and
the anchor status.

Entries are listed by keyset pagination on the log index (``?before=N``): a page reads
exactly the entries it shows, so its cost does not grow with the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.log.checkpoint import (
    NoteVerifier,
    cosignature_timestamp,
    parse_checkpoint_body,
    parse_note,
)
from edgetrust.log.service import Log
from edgetrust.node.web._page import (
    WebContext,
    check_did,
    error_page,
    int_param,
    render,
    str_param,
)
from edgetrust.node.web.charts import line_chart, proof_path
from edgetrust.node.web.describe import check_entry, describe_entry
from edgetrust.node.web.index import parse_digest_query
from edgetrust.node.web.witnesses import book

__all__ = ["NoteLine", "note_lines", "router"]

PAGE_SIZE = 50
CHART_POINTS = 120
"""The size chart samples at most this many checkpoints (the newest always included)."""


@dataclass(frozen=True)
class NoteLine:
    """One signature line of the checkpoint note, as the log page shows it."""

    name: str
    key_id: str
    role: str
    """``"log"`` (a type 0x01 Ed25519 line) or ``"witness"`` (a 72-byte cosignature line)."""
    status: str
    """``"pass"``, ``"fail"`` or ``"skip"`` (a witness this node has no key for)."""
    detail: str
    key: str = ""
    """The verifier key (note vkey) the line was checked with, when this node knows it."""


def note_lines(note: bytes, log_vkey: str, witness_vkeys: tuple[str, ...] = ()) -> list[NoteLine]:
    """Every signature line of `note`, each checked against the key it claims when known."""
    parsed = parse_note(note)
    keys = (log_vkey, *witness_vkeys)
    verifiers = [NoteVerifier.from_vkey(k) for k in keys]
    out = []
    for sig in parsed.signatures:
        role = "witness" if len(sig.signature) == 72 else "log"
        detail = ""
        if role == "witness":
            try:
                detail = f"cosigned at {cosignature_timestamp(sig)} (Unix time)"
            except Error as exc:
                detail = exc.message
        known = [v for v in verifiers if v.matches(sig)]
        key = next((k for k, v in zip(keys, verifiers, strict=True) if v.matches(sig)), "")
        if not known:
            status, detail = "skip", (detail + "; " if detail else "") + "no key for it here"
        else:
            try:
                known[0].verify(parsed.text, sig)
                status = "pass"
            except Error as exc:
                status, detail = "fail", exc.message
        out.append(NoteLine(sig.name, sig.key_id.hex(), role, status, detail, key))
    return out


def _size_chart(log: Log) -> Any:
    sizes = log.checkpoint_sizes()
    step = max(len(sizes) // CHART_POINTS, 1)
    picked = list(enumerate(sizes))[::-1][::step][::-1]
    points = [(float(i + 1), float(s)) for i, s in picked]
    chart = line_chart(
        "Log size at each signed checkpoint",
        "checkpoint (in signing order)",
        [("entries", points, "s1")],
        y_label="entries",
    )
    return chart, picked[-8:][::-1]


def _anchor(ctx: WebContext) -> dict[str, Any] | None:
    auto = ctx.anchor
    if auto is None or not hasattr(auto, "every") or not hasattr(auto, "last_size"):
        return None  # not an AutoAnchor (another append hook)
    contract = getattr(auto, "anchor", None)
    return {
        "size": getattr(auto, "last_size", None),
        "every": getattr(auto, "every", None),
        "contract": getattr(contract, "address", ""),
        "chain": getattr(getattr(contract, "chain", None), "chain_id", ""),
    }


def router(ctx: WebContext) -> APIRouter:
    """The log overview (``/``), entries (``/entries``, ``/entries/{index}``), ``/search``."""
    r = APIRouter(include_in_schema=False)

    @r.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        log = ctx.log()
        witnesses = book(ctx)
        note = log.checkpoint()
        cp = parse_note(note)
        checkpoint = parse_checkpoint_body(cp.text)
        start = max(checkpoint.size - 10, 0)
        recent = [
            describe_entry(start + i, d)
            for i, d in enumerate(log.entries(start, checkpoint.size - start))
        ]
        chart, last_sizes = _size_chart(log)
        return render(
            request,
            "log.html",
            {
                "title": "Log",
                "checkpoint": checkpoint,
                "note": note.decode("utf-8", "replace"),
                "lines": note_lines(note, log.verifier_key, witnesses.vkeys()),
                "cosignatures": witnesses.listing(),
                "vkey": log.verifier_key,
                "chart": chart,
                "last_sizes": last_sizes,
                "anchor": _anchor(ctx),
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
                "levels": proof_path(data, i, cp.size, proof),
                "raw": data.decode("utf-8", "replace"),
            },
        )

    @r.get("/search", response_class=HTMLResponse)
    def search(request: Request) -> Response:
        """``?q=``: a log index opens the entry; a digest or a DID lists the entries naming it."""
        try:
            q = str_param(request, "q")
            before = int_param(request, "before", None)
            if q.isdigit() and len(q) <= 19:
                return RedirectResponse(f"/entries/{int(q)}", status_code=303)
            rows: list[Any] = []
            what = ""
            if q:
                index, indexed, size = ctx.synced_index()
                limit_before = indexed if before is None else min(before, indexed)
                if q.lower().startswith("sha256:") and not parse_digest_query(q):
                    raise InvalidInputError("malformed digest: sha256: and 64 hex digits")
                if parse_digest_query(q):
                    what = "digest"
                    rows = index.by_digest(q, before=limit_before, limit=PAGE_SIZE)
                elif q.startswith("did:"):
                    check_did(q)
                    what = "DID"
                    rows = index.by_did(q, before=limit_before, limit=PAGE_SIZE)
                else:
                    raise InvalidInputError(
                        "search for a log index (digits), a digest (sha256:<64 hex>) or a DID "
                        "(did:...)"
                    )
            else:
                indexed = size = 0
        except Error as exc:
            return error_page(request, exc)
        # Nothing in the whole log names it: a 404 page (still the search page, with its box).
        missing = bool(q) and not rows and before is None and indexed >= size
        return render(
            request,
            "search.html",
            {
                "title": "Search",
                "q": q,
                "what": what,
                "rows": rows,
                "indexed": indexed,
                "size": size,
                "older": rows[-1].index if len(rows) == PAGE_SIZE else None,
            },
            status=404 if missing else 200,
        )

    return r
