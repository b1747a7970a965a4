"""The federated rounds pages: sessions, and per session its rounds, chart, people and audit.

Rounds are found through the explorer index (kind "FL round" / "FL round config") and read
from the log; the audit is `edgetrust.collab.audit_log` for that session, the same replay as
``edgetrust fl audit``, run when the session page is opened (it reads the whole log once).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.node.web._page import WebContext, error_page, render
from edgetrust.node.web.charts import line_chart
from edgetrust.node.web.describe import describe_entry

__all__ = ["router", "session_rounds"]

MAX_ROUNDS = 2000
"""The pages read at most this many round records (and configs) from the index."""
_SESSION = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def session_rounds(ctx: WebContext) -> dict[str, dict[str, Any]]:
    """Sessions by id: their round records and configs (as logged predicates), oldest first."""
    sessions: dict[str, dict[str, Any]] = {}
    for kind, key in (("FL round config", "configs"), ("FL round", "records")):
        for index, data in reversed(ctx.entries_of(kind, MAX_ROUNDS)):
            view = describe_entry(index, data)
            session = view.predicate.get("session")
            if not isinstance(session, str):
                continue
            s = sessions.setdefault(session, {"configs": [], "records": [], "signer": view.signer})
            s[key].append({"index": index, "p": view.predicate})
    return sessions


def _lst(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def router(ctx: WebContext) -> APIRouter:
    """``/rounds`` (sessions) and ``/rounds/{session}``."""
    r = APIRouter(include_in_schema=False)
    # The audit replays the whole log: keep its outcome per (session, log size), so a page
    # viewed again before the log grows costs a lookup (the log is append-only).
    audits: dict[tuple[str, int], dict[str, Any]] = {}

    def audit_of(session: str) -> dict[str, Any]:
        log = ctx.log()
        key = (session, log.size())
        if key in audits:
            return audits[key]
        result: dict[str, Any]
        try:
            from edgetrust.collab.audit import audit_log

            home = ctx.node_home()
            if home is None:
                result = {"status": "skip", "reason": "this node has no home to read models"}
            else:
                report = audit_log(log, home=home, session=session)
                result = {
                    "status": "pass",
                    "reason": f"{len(report.rounds)} rounds replayed over {report.log_size} "
                    "entries: lineage, commitments, ε and model cards check out",
                    "rounds": report.rounds,
                }
        except Error as exc:
            result = {"status": "fail", "reason": exc.diagnostics()}
        if len(audits) >= 64:
            audits.clear()
        audits[key] = result
        return result

    @r.get("/rounds", response_class=HTMLResponse)
    def sessions(request: Request) -> HTMLResponse:
        try:
            found = session_rounds(ctx)
        except Error as exc:
            return error_page(request, exc)
        rows = []
        for sid, s in found.items():
            last = s["records"][-1]["p"] if s["records"] else {}
            rows.append(
                {
                    "session": sid,
                    "rounds": len(s["records"]),
                    "coordinator": s["signer"],
                    "accuracy": _num((last.get("metrics") or {}).get("accuracy")),
                    "epsilon": _num((last.get("privacy") or {}).get("epsilon")),
                }
            )
        return render(request, "rounds.html", {"title": "Federated rounds", "sessions": rows})

    @r.get("/rounds/{session}", response_class=HTMLResponse)
    def session(request: Request, session: str) -> HTMLResponse:
        try:
            if not _SESSION.fullmatch(session):
                raise InvalidInputError("a session id is 1-200 letters, digits or ._:-")
            s = session_rounds(ctx).get(session)
            if s is None:
                raise NotFoundError(f"no federated session {session} in this log")
            configs = {c["p"].get("round"): c for c in s["configs"]}
            rounds = []
            participants: dict[str, None] = {}
            grants: dict[str, None] = {}
            for rec in s["records"]:
                p = rec["p"]
                cfg = configs.get(p.get("round"), {"p": {}, "index": None})
                participants.update(dict.fromkeys(_lst(cfg["p"].get("participants"))))
                for src in (p, cfg["p"]):
                    grants.update(dict.fromkeys(_lst(src.get("grants"))))
                rounds.append(
                    {
                        "round": p.get("round"),
                        "index": rec["index"],
                        "config_index": cfg["index"],
                        "survivors": _lst(p.get("survivors")),
                        "dropped": _lst(p.get("dropped")),
                        "accuracy": _num((p.get("metrics") or {}).get("accuracy")),
                        "epsilon": _num((p.get("privacy") or {}).get("epsilon")),
                        "model": str((p.get("model") or {}).get("digest", "")),
                    }
                )
            acc = [(float(x["round"]), x["accuracy"]) for x in rounds if x["accuracy"] is not None]
            eps = [(float(x["round"]), x["epsilon"]) for x in rounds if x["epsilon"] is not None]
            chart = line_chart(
                "Accuracy and ε by round",
                "round",
                [("accuracy", acc, "s1")],
                y_label="accuracy",
                y2=("ε (cumulative)", eps, "s2") if eps else None,
                y2_label="ε",
            )
            audit = audit_of(session)
        except Error as exc:
            return error_page(request, exc)
        return render(
            request,
            "session.html",
            {
                "title": f"Federated session {session}",
                "session": session,
                "coordinator": s["signer"],
                "rounds": rounds,
                "chart": chart,
                "participants": list(participants),
                "grants": list(grants),
                "audit": audit,
            },
        )

    return r
