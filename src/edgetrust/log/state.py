"""Where a `Log` keeps its origin and every checkpoint it signed: the `CheckpointState` protocol.

The checkpoints a log hands out are part of its history: a node must never sign a smaller
checkpoint than one already handed out, and `checkpoint_at` must find any of them again. So the
state lives beside the entries: in the SQLite store's own file for the embedded log
(`SqliteCheckpointState`), and in the same PostgreSQL database as the entries for a shared log
(`edgetrust.log.store_pg.PostgresCheckpointState`), so that every node of a cluster sees the
checkpoints every other node signed, and none can hand out a checkpoint older than another's.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgetrust.log._store_core import StoreError

__all__ = ["CheckpointState", "SqliteCheckpointState", "recorded_sqlite_origin"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,     -- the tree size the note signs
    note BLOB NOT NULL            -- the signed checkpoint note, exactly as handed out
);
"""


@runtime_checkable
class CheckpointState(Protocol):
    """The origin of a log and the checkpoint notes it signed, one per tree size.

    Implementations are thread-safe and shared by every process serving the log.
    """

    def settle_origin(self, origin: str) -> str:
        """Record `origin` if none is recorded; return the recorded one."""
        ...

    def recorded_origin(self) -> str | None:
        """The recorded origin, or None."""
        ...

    def latest(self) -> tuple[int, bytes] | None:
        """The largest size a checkpoint was signed for, and its note; None if none was."""
        ...

    def add(self, size: int, note: bytes) -> bytes:
        """Store `note` for `size` unless one is stored already; return the stored note."""
        ...

    def note_at(self, size: int) -> bytes | None:
        """The note signed for `size`, or None."""
        ...

    def sizes(self) -> list[int]:
        """Sizes with a signed checkpoint, ascending."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...


class SqliteCheckpointState:
    """`CheckpointState` in a SQLite file (for the embedded log: the store's own file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open log state {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot open log state {self.path}: {exc}") from exc

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                rows: list[tuple[Any, ...]] = self._db.execute(sql, params).fetchall()
                return rows
        except sqlite3.Error as exc:
            raise StoreError(f"log state {self.path} failed: {exc}") from exc

    def settle_origin(self, origin: str) -> str:
        """Record `origin` if none is recorded; return the recorded one."""
        self._run("INSERT OR IGNORE INTO log_meta(key, value) VALUES ('origin', ?)", (origin,))
        return str(self._run("SELECT value FROM log_meta WHERE key = 'origin'")[0][0])

    def recorded_origin(self) -> str | None:
        """The recorded origin, or None."""
        rows = self._run("SELECT value FROM log_meta WHERE key = 'origin'")
        return str(rows[0][0]) if rows else None

    def latest(self) -> tuple[int, bytes] | None:
        """The largest size a checkpoint was signed for, and its note."""
        rows = self._run("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def add(self, size: int, note: bytes) -> bytes:
        """Store `note` for `size` unless one is; return the stored note."""
        # Another process may have signed this size meanwhile: keep the first note (it is the
        # same bytes anyway: Ed25519 signatures are deterministic).
        self._run("INSERT OR IGNORE INTO checkpoints(size, note) VALUES (?, ?)", (size, note))
        stored = self.note_at(size)
        if stored is None:  # pragma: no cover - just inserted
            raise StoreError(f"log state {self.path} lost checkpoint {size}")
        return stored

    def note_at(self, size: int) -> bytes | None:
        """The note signed for `size`, or None."""
        rows = self._run("SELECT note FROM checkpoints WHERE size = ?", (size,))
        return bytes(rows[0][0]) if rows else None

    def sizes(self) -> list[int]:
        """Sizes with a signed checkpoint, ascending."""
        return [int(r[0]) for r in self._run("SELECT size FROM checkpoints ORDER BY size")]

    def all_notes(self) -> list[tuple[int, bytes]]:
        """Every (size, note), ascending (to carry them into another state)."""
        return [
            (int(s), bytes(n))
            for s, n in self._run("SELECT size, note FROM checkpoints ORDER BY size")
        ]

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            self._db.close()


def recorded_sqlite_origin(path: Path) -> str | None:
    """The origin stored in an existing SQLite log state, if any (read-only peek)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        row = conn.execute("SELECT value FROM log_meta WHERE key = 'origin'").fetchone()
    except sqlite3.OperationalError:
        return None  # no state table yet
    finally:
        conn.close()
    return None if row is None else str(row[0])
