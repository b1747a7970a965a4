"""The node's capture endpoints: ``POST /v1/captures`` logs a stream root, ``GET`` shows one.

Thin: a submitted manifest is `verify_manifest` (every seal and the root), a submitted root
envelope is checked as `open_signed_statement` plus the device-signer and consent rules; the
root is then appended to the log. Bad input is a 4xx JSON error, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edgetrust.capture.errors import ConsentError, ForeignSignatureError
from edgetrust.capture.stream import CAPTURE_PREDICATE_TYPE, StreamHeader
from edgetrust.capture.verify import MANIFEST_FORMAT, parse_manifest, verify_manifest
from edgetrust.dsse import Envelope, envelope_from_dict
from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.log.client import MAX_BUNDLE_ENTRY_BYTES
from edgetrust.log.service import Log
from edgetrust.statement import open_signed_statement

__all__ = ["MAX_CAPTURE_BODY", "capture_router", "find_capture", "submit_capture"]

MAX_CAPTURE_BODY = 16 * 2**20
SCAN_LIMIT = 100_000
"""`find_capture` looks at the most recent entries only (the log has no index by subject)."""


def _summary(statement: Envelope) -> dict[str, Any]:
    pred = open_signed_statement(statement).statement.predicate
    header = StreamHeader.from_dict(pred["header"])
    return {
        "root": "sha256:" + pred["root"],
        "stream_id": header.stream_id,
        "device": header.device,
        "wearer": header.wearer,
        "consented": header.wearer is not None and header.wearer in statement.signers,
        "kind": header.sensor.kind,
        "channels": len(header.sensor.channels),
        "sampling_rate": header.sensor.sampling_rate,
        "chunks": pred["chunks"],
        "samples": pred["samples"],
    }


def submit_capture(log: Log, body: bytes) -> dict[str, Any]:
    """Check a capture (a manifest, or a root envelope) and log its root; answer its index."""
    obj = parse_json(body, what="capture", max_bytes=MAX_CAPTURE_BODY)
    if isinstance(obj, dict) and obj.get("format") == MANIFEST_FORMAT:
        statement = verify_manifest(parse_manifest(body)).statement
    else:
        statement = envelope_from_dict(obj)
        opened = open_signed_statement(statement)
        if opened.statement.predicate_type != CAPTURE_PREDICATE_TYPE:
            raise InvalidInputError("not a capture root statement")
        header = StreamHeader.from_dict(opened.statement.predicate["header"])
        if opened.signer != header.device:
            raise ForeignSignatureError(None, opened.signer, header.device)
        if header.wearer is not None and header.wearer not in statement.signers:
            raise ConsentError(f"wearer {header.wearer:.60} did not co-sign", chunk=None)
    # The node's one logged form (issuer first, exactly the named wearer as co-signer), so a
    # replay with another signature order or an extra signer is not a second entry.
    from edgetrust.node.entries import prepare_entry

    data = prepare_entry(statement, max_entry=MAX_BUNDLE_ENTRY_BYTES).data
    existing = log.index_of(data)
    index = existing if existing is not None else log.append(data)
    return {"index": index, "duplicate": existing is not None, **_summary(statement)}


def find_capture(log: Log, root: str) -> tuple[int, Envelope]:
    """The most recent logged capture whose root is `root` (64 hex, or ``sha256:<hex>``)."""
    want = root.removeprefix("sha256:")
    if len(want) != 64 or not all(c in "0123456789abcdef" for c in want):
        raise InvalidInputError("a capture root is 64 lower-case hex characters")
    size = log.size()
    for start in range(size, max(size - SCAN_LIMIT, 0), -256):
        first = max(start - 256, size - SCAN_LIMIT, 0)
        for offset, entry in reversed(list(enumerate(log.entries(first, start - first)))):
            try:
                obj = json.loads(entry)
                payload = json.loads(base64.b64decode(obj["payload"]))
                subject = payload["subject"][0]["digest"]["sha256"]
                ptype = payload["predicateType"]
            except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
                continue
            if ptype == CAPTURE_PREDICATE_TYPE and subject == want:
                return first + offset, envelope_from_dict(obj)
    raise NotFoundError(f"no capture with root {want[:16]}… in the log")


def capture_router(log: Callable[[], Log]) -> APIRouter:
    """The capture routes over the node's log (`log` is called per request)."""
    # Imported here: the node imports this module, and capture must not import the node first.
    from edgetrust.node._http import ERROR_RESPONSES, read_body

    router = APIRouter(tags=["captures"])

    @router.post("/v1/captures", responses=ERROR_RESPONSES)
    async def post_capture(request: Request) -> JSONResponse:
        """Log a capture's root: a full manifest (seals checked) or the signed root alone."""
        body = await read_body(request, MAX_CAPTURE_BODY)
        return JSONResponse(await run_in_threadpool(submit_capture, log(), body))

    @router.get("/v1/captures/{root}", responses=ERROR_RESPONSES)
    async def get_capture(root: str = Path(max_length=80)) -> JSONResponse:
        """A logged capture by its root: index, summary and the signed root envelope."""
        index, env = await run_in_threadpool(find_capture, log(), root)
        return JSONResponse({"index": index, **_summary(env), "statement": env.to_dict()})

    return router
