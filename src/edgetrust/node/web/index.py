"""The explorer's search index: kind, signer and subject digests of every logged entry.

The log stores entries by position only; searching by DID or digest, or listing one kind
newest first, needs an index. This one is a side SQLite file next to the log, filled from
the log in order (`ExplorerIndex.catch_up`) by a background thread, so it can always be
rebuilt from the log and never decides anything: a page says how far it reaches.

Every query is keyset-paginated on the log index (``idx < before ORDER BY idx DESC LIMIT n``)
over a covering index, so a page costs the same at 1M entries as at 100; nothing counts rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from edgetrust.node.web.describe import describe_entry

__all__ = ["ExplorerIndex"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL,
                                    signer TEXT NOT NULL, summary TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_kind ON entries(kind, idx);
CREATE INDEX IF NOT EXISTS entries_signer ON entries(signer, idx);
CREATE TABLE IF NOT EXISTS subjects (digest TEXT NOT NULL, idx INTEGER NOT NULL,
                                     PRIMARY KEY (digest, idx)) WITHOUT ROWID;
"""

Row = tuple[int, str, str, str]
"""(index, kind, signer, summary)."""


class ExplorerIndex:
    """A rebuildable index of the log for the web pages (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def indexed(self) -> int:
        """How many leading log entries are indexed."""
        with self._lock:
            row = self._db.execute("SELECT MAX(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def catch_up(
        self, entries: Callable[[int, int], list[bytes]], size: int, *, chunk: int = 2048
    ) -> int:
        """Index log entries from `indexed()` up to `size`; returns the new indexed count."""
        start = self.indexed()
        while start < size and not self._stop.is_set():
            count = min(chunk, size - start)
            rows: list[Row] = []
            subjects: list[tuple[str, int]] = []
            for offset, data in enumerate(entries(start, count)):
                view = describe_entry(start + offset, data)
                rows.append((view.index, view.kind, view.signer, view.summary))
                subjects.extend((digest, view.index) for _, digest in view.subjects)
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?)", rows)
                self._db.executemany("INSERT OR IGNORE INTO subjects VALUES (?,?)", subjects)
                self._db.execute("COMMIT")
            start += count
        return start

    def follow(self, entries: Callable[[int, int], list[bytes]], size: Callable[[], int]) -> None:
        """Start (once) a daemon thread that keeps the index caught up with the log."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.catch_up(entries, size())
                except Exception:  # the log closed under us (shutdown): stop following
                    return
                self._stop.wait(0.5)

        self._thread = threading.Thread(target=run, name="explorer-index", daemon=True)
        self._thread.start()

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        with self._lock:
            return [
                (int(i), str(k), str(s), str(m)) for i, k, s, m in self._db.execute(sql, params)
            ]

    def by_kind(self, kind: str, *, before: int, limit: int) -> list[Row]:
        """Entries of `kind` with index < `before`, newest first."""
        return self._rows(
            "SELECT idx, kind, signer, summary FROM entries WHERE kind = ? AND idx < ? "
            "ORDER BY idx DESC LIMIT ?",
            (kind, before, limit),
        )

    def by_signer(self, signer: str, *, before: int, limit: int) -> list[Row]:
        """Entries whose first signature's key id is `signer`, newest first."""
        return self._rows(
            "SELECT idx, kind, signer, summary FROM entries WHERE signer = ? AND idx < ? "
            "ORDER BY idx DESC LIMIT ?",
            (signer, before, limit),
        )

    def by_digest(self, digest: str, *, before: int, limit: int) -> list[Row]:
        """Entries with a subject of sha256 `digest` (64 hex), newest first."""
        return self._rows(
            "SELECT e.idx, e.kind, e.signer, e.summary FROM subjects s "
            "JOIN entries e ON e.idx = s.idx WHERE s.digest = ? AND s.idx < ? "
            "ORDER BY s.idx DESC LIMIT ?",
            (digest, before, limit),
        )

    def close(self) -> None:
        """Stop following and close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._db.close()
