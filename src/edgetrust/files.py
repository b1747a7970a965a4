"""Files a user names, and the private files edgetrust writes.

Reads check the size limit before a byte is read, with one-line errors; private writes are
mode 0600 from the first byte and atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError

__all__ = ["checked_size", "read_limited", "write_private"]


def checked_size(path: str | os.PathLike[str], what: str, *, max_bytes: int) -> int:
    """The size of the file at `path`, or a typed error when it is missing or over `max_bytes`.

    `what` names the file in the message ("model file", "recording", ...).

    Raises:
        NotFoundError: the file cannot be stat'ed. ResourceLimitError: larger than `max_bytes`.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise NotFoundError(f"cannot read {what} {p}: {exc.strerror}") from exc
    if size > max_bytes:
        raise ResourceLimitError(
            f"{what} {p} is {size} bytes, over the {max_bytes}-byte limit", limit=max_bytes
        )
    return size


def read_limited(path: str | os.PathLike[str], what: str, *, max_bytes: int) -> bytes:
    """The bytes of the file at `path`, refused before reading when over `max_bytes`.

    Raises:
        NotFoundError, ResourceLimitError: as `checked_size`. InvalidInputError: unreadable.
    """
    checked_size(path, what, max_bytes=max_bytes)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write `data` atomically with mode 0600 from the first byte (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
