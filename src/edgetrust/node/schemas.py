"""The node's request and response schemas, for its OpenAPI document.

Documentation only: handlers build their JSON directly (for speed) in these shapes, and the
schemathesis test checks the answers against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgetrust.node._http import ERROR_RESPONSES, ErrorBody

__all__ = [
    "ENVELOPE_SCHEMA",
    "WRITE_ERRORS",
    "BatchItem",
    "BatchSubmitted",
    "Consistency",
    "EntryWithProof",
    "Health",
    "LogInfo",
    "Submitted",
]


class Submitted(BaseModel):
    """Where one entry was logged, with a proof against a signed checkpoint."""

    index: int
    size: int
    inclusion_proof: list[str]
    checkpoint: str


class BatchItem(BaseModel):
    """One entry of a batch answer."""

    index: int
    inclusion_proof: list[str] | None = None


class BatchSubmitted(BaseModel):
    """Where each entry of a batch was logged, in submission order."""

    size: int
    checkpoint: str
    entries: list[BatchItem]


class EntryWithProof(BaseModel):
    """A logged entry (base64 of its exact bytes) with its inclusion proof."""

    index: int
    size: int
    entry: str
    inclusion_proof: list[str]
    checkpoint: str


class Consistency(BaseModel):
    """An RFC 9162 consistency proof between two tree sizes."""

    size1: int
    size2: int
    proof: list[str]
    checkpoint: str


class LogInfo(BaseModel):
    """What a client needs to follow this log."""

    origin: str
    vkey: str
    size: int


class Health(BaseModel):
    """Liveness."""

    status: str
    size: int


ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["payload", "payloadType", "signatures"],
    "properties": {
        "payload": {"type": "string", "description": "base64 of the statement bytes"},
        "payloadType": {"type": "string", "example": "application/vnd.in-toto+json"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["keyid", "sig"],
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}
WRITE_ERRORS = {
    **ERROR_RESPONSES,
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    429: {"model": ErrorBody, "description": "Per-identity rate limit exceeded."},
}
