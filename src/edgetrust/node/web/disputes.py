"""The disputes page: every logged dispute verdict, newest first, with the referee's work.

Verdicts are found through the explorer index (kind "dispute verdict") and read from the log;
each one's DSSE signature is verified here (the referee's key), and the page says so per row.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edgetrust.dsse import parse_envelope, verify_envelope
from edgetrust.errors import Error
from edgetrust.node.web._page import WebContext, error_page, render
from edgetrust.node.web.describe import describe_entry

__all__ = ["router", "verdict_rows"]

MAX_VERDICTS = 200


def _opt(value: object) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)[:200]


def verdict_rows(ctx: WebContext) -> list[dict[str, Any]]:
    """The newest verdicts as rows for the page, each with its signature checked."""
    rows = []
    for index, data in ctx.entries_of("dispute verdict", MAX_VERDICTS):
        view = describe_entry(index, data)
        p = view.predicate
        try:
            verify_envelope(parse_envelope(data, max_bytes=len(data)))
            signed = "pass"
        except Error:
            signed = "fail"
        raw_claim = p.get("claim")
        claim: dict[str, Any] = raw_claim if isinstance(raw_claim, dict) else {}
        rows.append(
            {
                "index": index,
                "signed": signed,
                "referee": view.signer,
                "loser": _opt(p.get("loser")),
                "reason": _opt(p.get("reason")),
                "device": _opt(p.get("device")),
                "node": _opt(p.get("node")),
                "element": _opt(p.get("element")),
                "device_value": _opt(p.get("device_value")),
                "referee_value": _opt(p.get("referee_value")),
                "rounds": _opt(p.get("rounds")),
                "bytes": _opt(p.get("bytes_exchanged")),
                "reads": _opt(p.get("referee_reads")),
                "macs": _opt(p.get("referee_macs")),
                "model": _opt(p.get("model")),
                "trace_root": _opt(claim.get("trace_root")),
                "receipt": _opt(p.get("receipt")),
            }
        )
    return rows


def router(ctx: WebContext) -> APIRouter:
    """``/disputes``."""
    r = APIRouter(include_in_schema=False)

    @r.get("/disputes", response_class=HTMLResponse)
    def disputes(request: Request) -> HTMLResponse:
        try:
            rows = verdict_rows(ctx)
        except Error as exc:
            return error_page(request, exc)
        return render(request, "disputes.html", {"title": "Disputes", "verdicts": rows})

    return r
