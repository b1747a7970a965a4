"""What the log node and the witness share: error bodies, error-to-status mapping, body limits.

Every error a client causes is answered with a 4xx status and the same JSON body,
``{"error": <type>, "message": <one line>}``, so that no malformed request ever shows a
traceback or a 5xx.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from edgetrust.errors import (
    ConflictError,
    Error,
    InvalidInputError,
    NotFoundError,
    ResourceLimitError,
    UnsupportedError,
    VerificationError,
)

_logger = logging.getLogger("edgetrust.node")
_disconnects = 0
_disconnects_lock = threading.Lock()


def client_disconnects() -> int:
    """How many requests ended because their client went away mid-body (this process)."""
    return _disconnects


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    error: str
    """The error type, e.g. ``InvalidInputError``."""
    message: str
    """One line saying what is wrong."""


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed, unsigned or unknown input."},
    404: {"model": ErrorBody, "description": "Not found."},
}


class RateLimitedError(ResourceLimitError):
    """An identity submitted faster than the node's per-identity rate (HTTP 429)."""


class BodyTooLargeError(ResourceLimitError):
    """A request body over the configured limit (HTTP 413)."""


def status_for(exc: Error) -> int:
    """The HTTP status for an edgetrust error raised while handling a request.

    A failing store (disk full, damaged database) is the server's fault, not the client's, and
    is the one error answered 503.
    """
    from edgetrust.log.store import StoreError

    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, RateLimitedError):
        return 429
    if isinstance(exc, BodyTooLargeError):
        return 413
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ResourceLimitError):
        return 413
    if isinstance(exc, InvalidInputError | VerificationError | UnsupportedError):
        return 400
    return 400


def error_response(status: int, error: str, message: str, **headers: str) -> JSONResponse:
    """A JSON error response in the shared shape."""
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map edgetrust errors, request validation and routing errors to JSON 4xx answers."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Error)
        status = status_for(exc)
        headers = {"retry-after": "1"} if status == 429 else {}
        return error_response(status, type(exc).__name__, exc.diagnostics(), **headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "bad request"
        return error_response(400, "InvalidInputError", message[:300])

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        name = {404: "NotFoundError", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, name, str(exc.detail))

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # Not the client's fault, so not a 4xx; but still the JSON shape, never a traceback.
        return error_response(500, "InternalError", "the node failed to handle this request")

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # The client aborted its upload: nobody is left to answer, and it is not a bug.
        global _disconnects
        with _disconnects_lock:
            _disconnects += 1
        _logger.debug("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=499)

    app.add_exception_handler(Exception, on_bug)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Error, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


async def read_body(request: Request, limit: int) -> bytes:
    """Read a request body, refusing (413) as soon as it passes `limit` bytes.

    The Content-Length header is checked first, and the stream is counted too, since a
    chunked body has no length header.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInputError("content-length header is not a number")
        if int(declared) > limit:
            raise BodyTooLargeError(
                f"request body of {declared} bytes is over the {limit}-byte limit", limit=limit
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"request body is over the {limit}-byte limit", limit=limit)
    return bytes(body)
