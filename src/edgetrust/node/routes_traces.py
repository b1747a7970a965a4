"""The device's side of the dispute game over HTTP (opt-in: `NodeSettings.traces`).

``GET /v1/traces/{root}`` and ``POST /v1/traces/{root}/query``, answered by
`edgetrust.verify.remote.TraceResponders` from the traces kept in the node's home.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from edgetrust.node._http import ERROR_RESPONSES, ErrorBody, read_body
from edgetrust.node.ratelimit import RateLimiter
from edgetrust.node.settings import NodeSettings

__all__ = ["TraceHeld", "trace_router"]


_MAX_QUERY_BYTES = 4096
"""A query is five small fields; anything longer is refused (413) before it is parsed."""
_REBUILD_COST = 10.0
"""Rate-limit tokens a query costs when it has to rebuild a trace (a full model run)."""
_TRACE_ERRORS = {
    **ERROR_RESPONSES,
    409: {"model": ErrorBody, "description": "The trace is kept but cannot be rebuilt."},
    413: {"model": ErrorBody, "description": "Query body over 4 KiB."},
    429: {"model": ErrorBody, "description": "Per-client rate limit exceeded."},
}
_RootParam = Annotated[
    str,
    Path(
        min_length=64,
        max_length=64,
        pattern="^[0-9a-f]{64}$",
        description="The receipt's trace root (`traceRoot`) as 64 lower-case hex digits.",
    ),
]


class TraceHeld(BaseModel):
    """A trace this device keeps and answers queries about."""

    trace_root: str
    model: str
    plan: str
    kept_until: float
    """Unix time after which the trace is no longer answered for."""


def trace_router(cfg: NodeSettings) -> APIRouter:
    """The trace routes over the traces kept in ``cfg.home`` (`verify.remote.TraceResponders`)."""
    from edgetrust.verify.dispute import parse_query
    from edgetrust.verify.remote import TraceResponders, parse_trace_root

    traces = TraceResponders(cfg.home, window=cfg.trace_window, cache=cfg.trace_cache)
    router = APIRouter()
    limiter = RateLimiter(
        rate=cfg.trace_rate, capacity=max(10 * cfg.trace_rate, 1.0), unit="trace queries"
    )

    @router.get(
        "/v1/traces/{root}", response_model=TraceHeld, responses=_TRACE_ERRORS, tags=["disputes"]
    )
    def trace_held(root: _RootParam) -> JSONResponse:
        """Whether this device still keeps the trace (404 if not), without rebuilding it."""
        return JSONResponse(traces.describe(parse_trace_root(root)))

    @router.post(
        "/v1/traces/{root}/query",
        responses=_TRACE_ERRORS,
        tags=["disputes"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "kind": {"enum": ["split", "chunk", "open", "header"]},
                                "entry": {"type": ["integer", "null"]},
                                "lo": {"type": "integer"},
                                "hi": {"type": "integer"},
                                "element": {"type": ["integer", "null"]},
                            },
                        }
                    }
                },
            }
        },
    )
    async def trace_query(request: Request, root: _RootParam) -> JSONResponse:
        """Answer one dispute query (`edgetrust.verify.dispute.Query`) about a kept trace.

        The answer is a `SplitAnswer`, `ChunkAnswer` or `OpenAnswer` in its JSON form. The
        first query about a trace rebuilds it from the stored inputs (one model run).
        """
        trace_root = parse_trace_root(root)
        body = await read_body(request, _MAX_QUERY_BYTES)
        query = parse_query(body)
        client = request.client.host if request.client else "unknown"
        cost = 1.0 if traces.is_cached(trace_root) else _REBUILD_COST
        limiter.take({client: int(min(cost, limiter.capacity))})
        answer = await anyio.to_thread.run_sync(traces.answer, trace_root, query)
        return JSONResponse(answer.to_dict())

    return router
