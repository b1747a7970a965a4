"""Recording end to end: frames in, a signed session out, the root logged, the file written."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy.typing as npt

from edgetrust.capture.stream import CAPTURE_PREDICATE_TYPE, CaptureDevice, CaptureSession
from edgetrust.capture.verify import Manifest
from edgetrust.dsse import Envelope
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log.client import MAX_BUNDLE_ENTRY_BYTES
from edgetrust.log.service import Log
from edgetrust.statement import open_signed_statement

__all__ = ["log_capture", "record", "save_recording"]


def record(
    device: CaptureDevice,
    frames: Iterable[npt.ArrayLike],
    *,
    chunk_seconds: float = 1.0,
    seal_every: int = 10,
    wearer: Identity | str | None = None,
    start_ms: int | None = None,
    on_frames: Callable[[int], object] | None = None,
) -> CaptureSession:
    """Sign every frame from `frames` and finish the stream.

    `wearer` as an `Identity` co-signs the root at once; as a DID string it is named in the
    header and co-signs later (`cosign_root`). `on_frames(n)` is called after each block, for
    a progress bar.
    """
    did = wearer.did if isinstance(wearer, Identity) else wearer
    session = device.start(
        chunk_seconds=chunk_seconds, seal_every=seal_every, wearer=did, start_ms=start_ms
    )
    for block in frames:
        session.add(block)
        if on_frames is not None:
            on_frames(len(block))  # type: ignore[arg-type]
    session.finish(*([wearer] if isinstance(wearer, Identity) else []))
    return session


def log_capture(log: Log, statement: Envelope) -> int:
    """Check a signed capture root (signature, predicate) and append it to the log."""
    from edgetrust.node.entries import prepare_entry

    signed = open_signed_statement(statement)
    if signed.statement.predicate_type != CAPTURE_PREDICATE_TYPE:
        raise InvalidInputError("not a capture root statement")
    data = prepare_entry(signed.envelope, max_entry=MAX_BUNDLE_ENTRY_BYTES).data
    existing = log.index_of(data)
    return existing if existing is not None else log.append(data)


def save_recording(session: CaptureSession, path: str | os.PathLike[str]) -> Path:
    """Write a finished session as EDF+/BDF+ with its manifest beside it; return the manifest."""
    from edgetrust.capture.edf import write_recording

    chunks: Sequence[Any] = [c.samples for c in session.chunks]
    return write_recording(path, Manifest.from_session(session), list(chunks))
