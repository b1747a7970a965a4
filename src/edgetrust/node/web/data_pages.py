"""The data page: an owner's datasets, grants, revocations, usage records and who used what.

Read from the log entries the data package writes (`edgetrust.data`: dataset cards, grants,
revocations, usage records), found through the explorer index by the owner's DID; each entry
is opened with the data package's own reader (`read_dataset_card`, `read_usage`...), which
verifies its signature, so a row is shown only when it verifies.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.node.web._page import WebContext, check_did, error_page, render, str_param
from edgetrust.node.web.charts import bar_chart

__all__ = ["owner_data", "router"]

MAX_ROWS = 2000


def owner_data(ctx: WebContext, owner: str) -> dict[str, Any]:
    """Datasets, grants, revocations and usage of `owner`, newest first, each verified."""
    from edgetrust.data.dataset import read_dataset_card
    from edgetrust.data.grant import read_grant, read_revocation
    from edgetrust.data.records import read_usage
    from edgetrust.dsse import parse_envelope, verify_envelope

    index, indexed, _ = ctx.synced_index()
    log = ctx.log()
    out: dict[str, Any] = {"datasets": [], "grants": [], "revocations": [], "usage": [], "bad": 0}
    fl_rounds: dict[str, set[object]] = defaultdict(set)
    for row in index.by_did(owner, before=indexed, limit=MAX_ROWS):
        if row.kind == "FL round config":
            _fl_round(log.entry(row.index), owner, fl_rounds)
            continue
        if row.kind not in ("dataset", "grant", "revocation", "usage record"):
            continue
        data = log.entry(row.index)
        try:
            signer = verify_envelope(parse_envelope(data, max_bytes=len(data)))
            if signer != owner:
                continue  # named in someone else's entry (e.g. as a grantee): not the owner's
            if row.kind == "dataset":
                out["datasets"].append((row.index, read_dataset_card(data)))
            elif row.kind == "grant":
                out["grants"].append((row.index, read_grant(data)))
            elif row.kind == "revocation":
                out["revocations"].append((row.index, read_revocation(data)))
            else:
                out["usage"].append((row.index, read_usage(data)[0]))
        except Error:
            out["bad"] += 1
    uses: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    cited: dict[str, int] = defaultdict(int)
    names = {card.digest: card.name for _, card in out["datasets"]}
    for _, rec in out["usage"]:
        key = f"{names.get(rec.dataset, rec.dataset[7:19])[:14]} · {rec.requester[8:20]}…"
        uses[key][0] += 1
        uses[key][1] += rec.epsilon
        for g in rec.chain:
            cited[g] += 1
    ranked = sorted(uses.items(), key=lambda kv: -kv[1][0])
    out["uses_chart"] = bar_chart([(k, v[0], f"{v[0]:g} uses") for k, v in ranked], width=320)
    out["eps_chart"] = bar_chart([(k, v[1], f"ε {v[1]:.3g}") for k, v in ranked], width=320)
    out["cited"] = sorted(cited.items(), key=lambda kv: -kv[1])
    out["attribution"] = attribution(out["usage"], fl_rounds)
    out["indexed"] = indexed
    return out


def _fl_round(data: bytes, owner: str, found: dict[str, set[object]]) -> None:
    """Count a verified FL round config that names `owner` among its participants."""
    from edgetrust.dsse import parse_envelope, verify_envelope
    from edgetrust.node.web.describe import describe_entry

    try:
        verify_envelope(parse_envelope(data, max_bytes=len(data)))
    except Error:
        return
    p = describe_entry(0, data).predicate
    participants = p.get("participants")
    if isinstance(participants, list) and owner in participants:
        found[str(p.get("session", "?"))[:40]].add(p.get("round"))


def attribution(usage: list[tuple[int, Any]], fl_rounds: dict[str, set[object]]) -> dict[str, Any]:
    """What the owner's data is attributed to, from the log.

    Each requester's share of the logged uses (and of the ε spent), and the federated rounds
    that trained on it (configs naming the owner as a participant), per session.
    """
    uses: dict[str, int] = defaultdict(int)
    eps: dict[str, float] = defaultdict(float)
    for _, rec in usage:
        uses[rec.requester] += 1
        eps[rec.requester] += rec.epsilon
    total, total_eps = sum(uses.values()), sum(eps.values())
    ranked = sorted(uses, key=lambda r: -uses[r])
    share = [
        (
            f"{r[8:24]}…",
            100.0 * uses[r] / total,
            f"{100.0 * uses[r] / total:.0f}% of uses"
            + (f", {100.0 * eps[r] / total_eps:.0f}% of ε" if total_eps > 0 else ""),
        )
        for r in ranked
    ]
    rounds = sorted(((s, len(r)) for s, r in fl_rounds.items()), key=lambda kv: -kv[1])
    return {
        "share_chart": bar_chart(share, width=260),
        "requesters": [(r, uses[r], eps[r]) for r in ranked],
        "fl_chart": bar_chart(
            [(s[:16], float(n), f"{n} round{'s' if n != 1 else ''}") for s, n in rounds], width=260
        ),
        "fl": rounds,
    }


def router(ctx: WebContext) -> APIRouter:
    """``/data`` (owners) and ``/data?owner=did:...``."""
    r = APIRouter(include_in_schema=False)

    @r.get("/data", response_class=HTMLResponse)
    def data(request: Request) -> HTMLResponse:
        try:
            owner = str_param(request, "owner")
            if owner and not owner.startswith("did:"):
                raise InvalidInputError("owner must be a DID (did:key:...)")
            if owner:
                check_did(owner, "owner DID")
                found = owner_data(ctx, owner)
                kinds = ("datasets", "grants", "revocations", "usage")
                if not any(found[k] for k in kinds) and not found["bad"]:
                    raise NotFoundError(f"no dataset, grant or usage record of {owner} in this log")
                owners: list[tuple[str, int]] = []
            else:
                found = {}
                counts: dict[str, int] = defaultdict(int)
                index, indexed, _ = ctx.synced_index()
                for row in index.by_kind("dataset", before=indexed, limit=MAX_ROWS):
                    counts[row.signer] += 1
                owners = sorted(counts.items())
        except Error as exc:
            return error_page(request, exc)
        return render(
            request,
            "data.html",
            {"title": "Data", "owner": owner, "d": found, "owners": owners},
        )

    return r
