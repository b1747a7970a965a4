"""Static C2SP tlog-tiles: write a log's checkpoint, hash tiles and entry bundles as files.

`publish_tiles` writes what an edgetrust node's tiles read API serves (``checkpoint``,
``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]``, tlog-tiles §"Merkle Tree") into a
directory, so any static web server, object store or CDN can serve the log's reads, as
Tessera's POSIX driver does. It is incremental: only tiles that are new or have grown since
the directory's checkpoint are written. Every file is written to a temporary name and renamed
into place, and the checkpoint last, so a reader never sees a checkpoint whose tiles are
missing. Partial tiles of earlier sizes are kept (a client that trusts an older checkpoint
still finds them); full tiles never change. `TilePublisher` keeps a directory up to date as the
log grows (what ``edgetrust node serve --publish DIR`` runs). Publishers of one directory on one
machine take turns (an exclusive lock on ``DIR/.publish.lock``), and none ever replaces the
directory's checkpoint with a smaller one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetrust.errors import Error, InvalidInputError, ResourceLimitError
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.client import MAX_BUNDLE_ENTRY_BYTES, TILE_HEIGHT, TILE_WIDTH, tile_path
from edgetrust.log.service import Log

__all__ = ["PublishResult", "TilePublisher", "publish_tiles"]

_logger = logging.getLogger(__name__)
_LOCK_NAME = ".publish.lock"

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


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the directory's publication lock (other publishers on this machine wait)."""
    fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _prepare_dir(directory: str | os.PathLike[str]) -> Path:
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Writable? (os.access is wrong under root and on some network file systems.)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot publish into {root}: {exc.strerror or errno.errorcode.get(exc.errno or 0)}"
        ) from exc
    return root


def publish_tiles(log: Log, directory: str | os.PathLike[str]) -> PublishResult:
    """Publish `log` as static tlog-tiles files in `directory`, incrementally.

    Steps: (1) the directory's checkpoint, if any, must be this log's and consistent with it
    (same root at its size); (2) the log signs (or returns) its latest checkpoint; (3) every
    hash tile and entry bundle that is new or has grown is written; (4) the checkpoint is
    written last.

    Raises:
        InvalidInputError: `directory` is not a writable directory, or holds another log's
            checkpoint (or a larger one than this log's tree).
        ResourceLimitError: an entry is too large for an entry bundle (over 65,535 bytes).
    """
    root = _prepare_dir(directory)
    try:
        with _locked(root):
            return _publish(log, root)
    except OSError as exc:  # e.g. the disk filled up: the old checkpoint still stands
        raise InvalidInputError(f"publishing into {root} failed: {exc}") from exc


def _publish(log: Log, root: Path) -> PublishResult:
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


class TilePublisher:
    """Keep `directory` a current static copy of `log`'s tiles, from a background thread.

    It publishes at most every `interval` seconds, and only when the log grew (`notify`, called
    after each commit, wakes it early). A failed publication is logged and retried at the next
    interval: the entries are logged whatever happens to their copy, and the directory's last
    checkpoint stays valid (its tiles are never removed). `close` publishes a last time.

    Raises (at construction, from the first publication): as `publish_tiles`.
    """

    def __init__(
        self, log: Log, directory: str | os.PathLike[str], *, interval: float = 1.0
    ) -> None:
        if not (isinstance(interval, int | float) and 0 < interval <= 3600):
            raise InvalidInputError("the publication interval must be 0..3600 seconds")
        self.log = log
        self.directory = Path(directory)
        self.interval = float(interval)
        self.last: PublishResult = publish_tiles(log, directory)
        """What the latest successful publication wrote."""
        self.failures = 0
        """Publications that failed (each logged)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tile-publisher", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """The log grew: publish at the next opportunity."""
        self._wake.set()

    def publish_now(self) -> PublishResult:
        """Publish in this thread if the log grew since the last publication."""
        if self.log.size() > self.last.size:
            self.last = publish_tiles(self.log, self.directory)
        return self.last

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self.publish_now()
            except Exception:
                self.failures += 1
                _logger.exception("publishing tiles into %s failed", self.directory)
            # At most one publication per interval, however often the log grows.
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        """Stop the thread, then publish what is left; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self.publish_now()
        except Exception:
            self.failures += 1
            _logger.exception("publishing tiles into %s failed", self.directory)
