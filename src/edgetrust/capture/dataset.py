"""A directory of signed EDF/BDF captures as a dataset whose card cites them as provenance.

Each file is verified against its manifest first (a file that is not exactly its signed stream
is refused), then its signed frames become records: column ``x`` (the digital frame, one value
per channel), ``capture`` (which file, in name order) and ``frame`` (index within it). The
`DatasetCard`'s ``provenance`` lists each capture's root (``sha256:<root>``), and its ``extra``
names each root's device and stream, so anyone can find the logged roots (`find_capture`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.capture.edf import file_chunks, read_recording, verify_recording
from edgetrust.capture.errors import CaptureError
from edgetrust.capture.verify import VerifiedCapture
from edgetrust.data.dataset import DatasetCard, Table
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.log.service import Log

__all__ = ["capture_table", "describe_captures", "verify_capture_provenance"]

MAX_CAPTURES = 256
"""A card's provenance holds at most 256 digests (`DatasetCard`)."""


def capture_table(directory: str | os.PathLike[str]) -> tuple[Table, list[VerifiedCapture]]:
    """Verify every ``*.bdf``/``*.edf`` in `directory` and stack their signed frames."""
    root = Path(directory)
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a directory of captures")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".bdf", ".edf"))
    if not files:
        raise NotFoundError(f"no .bdf or .edf captures in {root}")
    if len(files) > MAX_CAPTURES:
        raise InvalidInputError(f"a dataset cites at most {MAX_CAPTURES} captures")
    xs: list[npt.NDArray[np.int32]] = []
    caps: list[npt.NDArray[np.int64]] = []
    idx: list[npt.NDArray[np.int64]] = []
    verified: list[VerifiedCapture] = []
    for n, path in enumerate(files):
        v = verify_recording(path)
        frames = np.concatenate(list(file_chunks(read_recording(path), v)))
        if xs and frames.shape[1] != xs[0].shape[1]:
            raise InvalidInputError(
                f"{path.name} has {frames.shape[1]} channels, others {xs[0].shape[1]}"
            )
        xs.append(frames.astype(np.int32))
        caps.append(np.full(len(frames), n, dtype=np.int64))
        idx.append(np.arange(len(frames), dtype=np.int64))
        verified.append(v)
    table: Table = {
        "x": np.concatenate(xs),
        "capture": np.concatenate(caps),
        "frame": np.concatenate(idx),
    }
    return table, verified


def describe_captures(
    directory: str | os.PathLike[str],
    *,
    name: str,
    owner: str,
    licence: str = "all-rights-reserved",
    description: str = "",
) -> tuple[DatasetCard, Table]:
    """The card (signed by the owner later, `DatasetCard.sign`) of a directory of captures."""
    table, verified = capture_table(directory)
    card = DatasetCard.describe(
        table,
        name=name,
        owner=owner,
        licence=licence,
        provenance=[v.root_digest for v in verified],
        description=description,
    )
    cited: list[dict[str, Any]] = [
        {
            "root": v.root_digest,
            "device": v.header.device,
            "stream_id": v.header.stream_id,
            "consented": v.consented,
        }
        for v in verified
    ]
    card = dataclasses.replace(card, extra={"captures": cited})
    return DatasetCard.from_predicate(card.to_predicate()), table


def verify_capture_provenance(card: DatasetCard, log: Log) -> None:
    """Check that every capture a card cites has its root in `log`, signed by the named device.

    Raises:
        CaptureError: a cited root is not logged, or was signed by another device.
    """
    from edgetrust.capture.http import find_capture
    from edgetrust.statement import open_signed_statement

    cited = card.extra.get("captures", [])
    if not isinstance(cited, list) or not cited:
        raise CaptureError("the card cites no captures", chunk=None, step="provenance")
    for entry in cited:
        root = entry.get("root") if isinstance(entry, dict) else None
        if not isinstance(root, str) or root not in card.provenance:
            raise CaptureError(
                f"cited capture {root!r:.30} is not in the card's provenance",
                chunk=None,
                step="provenance",
            )
        try:
            _, env = find_capture(log, root)
        except NotFoundError as exc:
            raise CaptureError(
                f"capture {root[:23]}… is not in the log", chunk=None, step="provenance"
            ) from exc
        if open_signed_statement(env).signer != entry.get("device"):
            raise CaptureError(
                f"capture {root[:23]}… was logged by another device", chunk=None, step="provenance"
            )
