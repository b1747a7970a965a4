"""Static C2SP tlog-tiles: write a log's checkpoint, hash tiles and entry bundles as files.

`publish_tiles` writes what an edgetrust node's tiles read API serves (``checkpoint``,
``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]``, tlog-tiles §"Merkle Tree") into a
directory, so any static web server, object store or CDN can serve the log's reads, as
Tessera's POSIX driver does. It is incremental: only tiles that are new or have grown since
the directory's checkpoint are written. Every file is written to a temporary name and renamed
into place, and the checkpoint last, so a reader never sees a checkpoint whose tiles are
missing. Partial tiles of earlier sizes are kept (a client that trusts an older checkpoint
still finds them); full tiles never change.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgetrust.errors import Error, InvalidInputError, ResourceLimitError
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.client import MAX_BUNDLE_ENTRY_BYTES, TILE_HEIGHT, TILE_WIDTH, tile_path
from edgetrust.log.service import Log

__all__ = ["PublishResult", "publish_tiles"]

_MAX_CHECKPOINT_BYTES = 64 * 1024


@dataclass(frozen=True)
class PublishResult:
    """What one `publish_tiles` call wrote."""

    size: int
    """Tree size of the checkpoint now published."""
    previous_size: int
    """Tree size the directory held before (0 for a new directory)."""
    tiles: int
    """Hash tiles written (full and partial)."""
    bundles: int
    """Entry bundles written."""
    bytes_written: int
    """Bytes of every file written, the checkpoint included."""


def _published_size(directory: Path, log: Log) -> int:
    path = directory / "checkpoint"
    if not path.exists():
        return 0
    if not path.is_file() or path.stat().st_size > _MAX_CHECKPOINT_BYTES:
        raise InvalidInputError(f"{path} is not a checkpoint file")
    note = path.read_bytes()
    try:
        checkpoint = verify_checkpoint(note, log.verifier_key)
    except Error as exc:
        raise InvalidInputError(
            f"{directory} holds a checkpoint this log did not sign ({exc.message}); "
            "publish into an empty directory"
        ) from exc
    if checkpoint.size > log.size():
        raise InvalidInputError(
            f"{directory} holds a checkpoint of size {checkpoint.size}, beyond this log's "
            f"{log.size()} entries"
        )
    if checkpoint.root != log.root(checkpoint.size):
        raise InvalidInputError(f"{directory} holds a checkpoint that contradicts this log")
    return checkpoint.size


def _write_file(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _tile_range(old: int, new: int) -> range:
    """Indices of the tiles over `new` nodes of a level that are new or grew since `old`."""
    return range(old // TILE_WIDTH, -(-new // TILE_WIDTH))


def publish_tiles(log: Log, directory: str | os.PathLike[str]) -> PublishResult:
    """Publish `log` as static tlog-tiles files in `directory`, incrementally.

    Steps: (1) the directory's checkpoint, if any, must be this log's and consistent with it
    (same root at its size); (2) the log signs (or returns) its latest checkpoint; (3) every
    hash tile and entry bundle that is new or has grown is written; (4) the checkpoint is
    written last.

    Raises:
        InvalidInputError: `directory` is not a directory, or holds another log's checkpoint.
        ResourceLimitError: an entry is too large for an entry bundle (over 65,535 bytes).
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    # 1. What the directory holds already.
    old = _published_size(root, log)
    # 2. The checkpoint to publish; its size bounds everything written.
    note = log.checkpoint()
    size = verify_checkpoint(note, log.verifier_key).size
    written = tiles = bundles = 0
    # 3a. Entry bundles.
    for t in _tile_range(old, size):
        width = min(TILE_WIDTH, size - t * TILE_WIDTH)
        chunks = []
        for data in log.entries(t * TILE_WIDTH, width):
            if len(data) > MAX_BUNDLE_ENTRY_BYTES:
                raise ResourceLimitError(
                    f"an entry of {len(data)} bytes does not fit in an entry bundle",
                    limit=MAX_BUNDLE_ENTRY_BYTES,
                )
            chunks.append(len(data).to_bytes(2, "big") + data)
        written += _write_file(root / tile_path("entries", t, width), b"".join(chunks))
        bundles += 1
    # 3b. Hash tiles, level by level, while the level has a node.
    level = 0
    while size >> (TILE_HEIGHT * level):
        nodes_new = size >> (TILE_HEIGHT * level)
        nodes_old = old >> (TILE_HEIGHT * level)
        for t in _tile_range(nodes_old, nodes_new):
            width = min(TILE_WIDTH, nodes_new - t * TILE_WIDTH)
            hashes = log.hashes(TILE_HEIGHT * level, t * TILE_WIDTH, width)
            written += _write_file(root / tile_path(level, t, width), b"".join(hashes))
            tiles += 1
        level += 1
    # 4. The checkpoint, last.
    written += _write_file(root / "checkpoint", note)
    return PublishResult(size, old, tiles, bundles, written)
