"""The log's HTTP face: C2SP tlog-tiles reads, JSON proofs, and the signed-envelope writes.

``/healthz``, ``/v1/log``, ``/checkpoint``, ``/tile/...``, ``POST /v1/entries``,
``POST /v1/entries:batch``, ``/v1/entries/{index}``, ``/v1/proofs/consistency``. Thin: what
may be logged is `prepare_entry`, sequencing and proofs are `NodeCore` over the log.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from edgetrust.encoding import parse_json
from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.log.client import parse_tile_path
from edgetrust.node._http import ERROR_RESPONSES, read_body
from edgetrust.node.core import NodeCore, b64
from edgetrust.node.entries import prepare_entries, prepare_entry
from edgetrust.node.schemas import (
    ENVELOPE_SCHEMA,
    WRITE_ERRORS,
    BatchSubmitted,
    Consistency,
    EntryWithProof,
    Health,
    LogInfo,
    Submitted,
)
from edgetrust.node.settings import NodeSettings

__all__ = ["log_router"]

_IMMUTABLE = "public, max-age=31536000, immutable"


def _client(request: Request) -> str:
    """The rate-limit identity of a request's sender: its client address."""
    return "client:" + (request.client.host if request.client else "unknown")


def log_router(node: Callable[[], NodeCore], cfg: NodeSettings) -> APIRouter:
    """The log's routes, for the node state that `node()` returns (set at startup)."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz() -> JSONResponse:
        """Liveness: the log answers."""
        _, size = node().latest()
        return JSONResponse({"status": "ok", "size": size})

    @router.get("/v1/log", response_model=LogInfo, tags=["meta"])
    async def log_info() -> JSONResponse:
        """The log's origin, verifier key (note vkey format) and latest size."""
        n = node()
        _, size = n.latest()
        vkey = n.log.verifier_key
        return JSONResponse({"origin": vkey.split("+", 1)[0], "vkey": vkey, "size": size})

    @router.get(
        "/checkpoint",
        response_class=PlainTextResponse,
        tags=["tlog-tiles"],
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def checkpoint() -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint as a signed note)."""
        note, _ = node().latest()
        return Response(
            note,
            media_type="text/plain; charset=utf-8",
            headers={"cache-control": "no-cache, max-age=1"},
        )

    @router.get(
        "/tile/{path:path}",
        tags=["tlog-tiles"],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, **ERROR_RESPONSES},
    )
    def tile(request: Request, path: str = Path(max_length=200)) -> Response:
        """A hash tile ``<L>/<N>[.p/<W>]`` or an entry bundle ``entries/<N>[.p/<W>]``."""
        level, index, width = parse_tile_path(path)
        data = node().tile(level, index, width)
        headers = {"cache-control": _IMMUTABLE}
        # tlog-tiles: entry bundles SHOULD be compressed at the HTTP layer (hash tiles are
        # random bytes and would not shrink).
        if level is None and "gzip" in request.headers.get("accept-encoding", ""):
            data = gzip.compress(data, compresslevel=6)
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        return Response(data, media_type="application/octet-stream", headers=headers)

    @router.post(
        "/v1/entries",
        response_model=Submitted,
        responses=WRITE_ERRORS,
        tags=["entries"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ENVELOPE_SCHEMA}},
            }
        },
    )
    async def submit(request: Request) -> JSONResponse:
        """Log one DSSE envelope; answer its index, inclusion proof and a signed checkpoint."""
        n = node()
        body = await read_body(request, cfg.max_body)
        # Verified here even with verify workers: measured, a process hop per request doubles
        # the CPU an entry costs (IPC), where a batch spreads it over hundreds of entries.
        try:
            prepared = prepare_entry(body, max_entry=cfg.max_entry)
        except Error:
            n.metrics.rejected.inc()
            raise
        existing = n.existing(prepared)
        if existing is not None:
            # A replay (in any signature order or JSON form) of a logged entry: answered with that
            # entry, charged to whoever sent it, never to the issuer whose budget it would burn.
            n.limiter.take({_client(request): 1})
            return JSONResponse(await n.submit(existing))
        n.limiter.take({prepared.signer: 1})
        return JSONResponse(await n.submit(prepared.data))

    @router.post(
        "/v1/entries:batch",
        response_model=BatchSubmitted,
        responses=WRITE_ERRORS,
        tags=["entries"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {"entries": {"type": "array", "items": ENVELOPE_SCHEMA}},
                        }
                    }
                },
            }
        },
    )
    async def submit_batch(request: Request, proofs: bool = Query(True)) -> JSONResponse:
        """Log many envelopes at once: all are checked first, and all or none are logged."""
        n = node()
        body = await read_body(request, cfg.max_body)
        obj = parse_json(body, what="batch")
        if not isinstance(obj, dict) or set(obj) != {"entries"}:
            raise InvalidInputError('batch must be a JSON object {"entries": [...]}')
        items = obj["entries"]
        if not isinstance(items, list) or not items:
            raise InvalidInputError("batch entries must be a non-empty list")
        if len(items) > cfg.max_batch:
            raise InvalidInputError(f"batch has {len(items)} entries, over {cfg.max_batch}")
        try:
            if n.pool is None:
                prepared = prepare_entries(items, max_entry=cfg.max_entry)
            else:
                pool = n.pool
                prepared = await anyio.to_thread.run_sync(
                    lambda: prepare_entries(
                        items, max_entry=cfg.max_entry, pool=pool, workers=cfg.verify_workers
                    )
                )
        except Error:
            n.metrics.rejected.inc()
            raise
        counts: dict[str, int] = {}
        datas = []
        for p in prepared:
            existing = n.existing(p)
            charged = _client(request) if existing is not None else p.signer
            counts[charged] = counts.get(charged, 0) + 1
            datas.append(p.data if existing is None else existing)
        n.limiter.take(counts)
        answer = await anyio.to_thread.run_sync(n.append_batch, datas, proofs)
        return JSONResponse(answer)

    @router.get(
        "/v1/entries/{index}",
        response_model=EntryWithProof,
        responses=ERROR_RESPONSES,
        tags=["entries"],
    )
    def get_entry(index: int = Path(ge=0, le=2**63 - 1)) -> JSONResponse:
        """One logged entry with its inclusion proof against the latest checkpoint."""
        n = node()
        note, size = n.latest()
        if index >= size:
            raise NotFoundError(f"entry {index} is beyond the log's size {size}")
        data = n.log.entry(index)
        proof = n.log.inclusion_proof(index, size)
        return JSONResponse(
            {
                "index": index,
                "size": size,
                "entry": base64.b64encode(data).decode("ascii"),
                "inclusion_proof": b64(proof),
                "checkpoint": note.decode(),
            }
        )

    @router.get(
        "/v1/proofs/consistency",
        response_model=Consistency,
        responses=ERROR_RESPONSES,
        tags=["proofs"],
    )
    def consistency(
        size1: int = Query(alias="from", ge=0, le=2**63 - 1),
        size2: int = Query(alias="to", ge=0, le=2**63 - 1),
    ) -> JSONResponse:
        """RFC 9162 consistency proof between tree sizes `from` and `to` (≤ latest size)."""
        n = node()
        note, size = n.latest()
        if size1 > size2:
            raise InvalidInputError(f"from={size1} is larger than to={size2}")
        if size2 > size:
            raise NotFoundError(f"to={size2} is beyond the log's size {size}")
        proof = n.log.consistency_proof(size1, size2) if 0 < size1 < size2 else []
        return JSONResponse(
            {"size1": size1, "size2": size2, "proof": b64(proof), "checkpoint": note.decode()}
        )

    return router
