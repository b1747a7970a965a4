"""The owner's HTTP endpoints: ``POST /v1/jobs``, ``GET /v1/usage``, ``GET /v1/datasets``.

Thin: each endpoint is one `DataOwner` call. A refused grant is 403, a malformed or oversized
request 400/413, as JSON ``{"error", "message"}``; a job that is refused writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from edgetrust.data.grant import GrantError
from edgetrust.data.jobs import MAX_JOB_BYTES, DataOwner
from edgetrust.node._http import ERROR_RESPONSES, error_response, read_body

__all__ = ["create_data_app", "data_router", "node_data_router"]


def data_router(owner: DataOwner | Callable[[], DataOwner]) -> APIRouter:
    """The compute-to-data routes of one owner.

    `owner` may be a function returning the owner, called per request, for an app whose log
    opens only at startup.
    """
    router = APIRouter(tags=["data"])
    if isinstance(owner, DataOwner):
        fixed = owner

        def get() -> DataOwner:
            return fixed

    else:
        get = owner

    @router.post(
        "/v1/jobs",
        responses={**ERROR_RESPONSES, 403: {"description": "The grants refuse this job."}},
    )
    async def post_job(request: Request) -> Response:
        """Run a signed job under its grant chain; answer result, usage record, receipt."""
        body = await read_body(request, MAX_JOB_BYTES)
        try:
            answer = await run_in_threadpool(get().run_job_json, body)
        except GrantError as exc:
            return error_response(403, type(exc).__name__, exc.diagnostics())
        return Response(answer, media_type="application/json")

    @router.get("/v1/usage")
    async def get_usage(dataset: str | None = None) -> JSONResponse:
        """Every usage record the owner logged (optionally of one dataset), with log index."""
        found = await run_in_threadpool(get().usage, dataset=dataset)
        return JSONResponse(
            {"records": [{"index": i, **rec.to_predicate()} for i, rec, _ in found]}
        )

    @router.get("/v1/datasets")
    async def get_datasets() -> JSONResponse:
        """The owner's dataset cards (public: schema and count, never records)."""
        the = get()
        cards: list[dict[str, Any]] = [c.to_predicate() for c in the.store.cards()]
        return JSONResponse({"owner": the.identity.did, "datasets": cards})

    return router


def create_data_app(owner: DataOwner) -> FastAPI:
    """The node app over the owner's log, with the data routes (for ``edgetrust data serve``)."""
    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings

    app = create_app(owner.log, settings=NodeSettings(home=owner.home, rate=0))
    app.include_router(data_router(owner))
    return app


def node_data_router(log: Callable[[], Any], home: str | Path | None) -> APIRouter:
    """The data routes for ``edgetrust node serve --data``: the owner of `home`, on the node's log.

    The `DataOwner` (identity, store, ledger, crash recovery) is opened at the first request,
    once the node's log is open, and lives as long as the process.
    """
    lock = threading.Lock()
    held: list[DataOwner] = []

    def owner() -> DataOwner:
        with lock:
            if not held:
                held.append(DataOwner(home, log=log()))
            return held[0]

    return data_router(owner)
