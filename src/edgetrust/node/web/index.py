"""The explorer's search index: kind, signer, DIDs and digests of every logged entry.

The log stores entries by position only; searching by DID or digest, or listing one kind
newest first (FL rounds, dispute verdicts, an owner's datasets), needs an index. This one is a
side SQLite file next to the log, filled from the log in order (`ExplorerIndex.catch_up`), so
it can always be rebuilt from the log and never decides anything: pages read the entries it
points at from the log itself, and say how far the index reaches.

Every query is keyset-paginated on the log index (``idx < before ORDER BY idx DESC LIMIT n``)
over a covering index, so a query costs the same at 1M entries as at 100; nothing counts rows.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgetrust.errors import InvalidInputError
from edgetrust.node.web.describe import MAX_MENTIONS, describe_entry, mentioned_dids

__all__ = ["ExplorerIndex", "Row", "parse_digest_query"]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL,
                                    signer TEXT NOT NULL, summary TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_kind ON entries(kind, idx);
CREATE TABLE IF NOT EXISTS digests (digest TEXT NOT NULL, idx INTEGER NOT NULL,
                                    PRIMARY KEY (digest, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dids (did TEXT NOT NULL, idx INTEGER NOT NULL,
                                 PRIMARY KEY (did, idx)) WITHOUT ROWID;
"""
_DROP = "DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS subjects; DROP TABLE IF EXISTS "
_DROP += "digests; DROP TABLE IF EXISTS dids;"
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class Row:
    """One indexed entry (enough to list it; the page reads the entry itself for more)."""

    index: int
    kind: str
    signer: str
    summary: str
    problem: str = ""
    """Always empty: rows share the entry-list template with `describe.EntryView`."""


def parse_digest_query(text: str) -> str | None:
    """The lower-case hex of ``sha256:<hex>`` or ``<hex>`` (64 digits), else None."""
    m = _DIGEST.fullmatch(text.strip())
    return m.group(1).lower() if m else None


def _digests_in(predicate: object, found: dict[str, None]) -> None:
    stack: list[object] = [predicate]
    while stack and len(found) < MAX_MENTIONS:
        item = stack.pop()
        if isinstance(item, str):
            digest = parse_digest_query(item) if item.startswith("sha256:") else None
            if digest:
                found[digest] = None
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class ExplorerIndex:
    """A rebuildable index of the log for the web pages (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A lost write is re-indexed from the log, which is the source of truth.
        self._db.execute("PRAGMA synchronous=OFF")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            self._db.executescript(_DROP)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._catching = threading.Lock()
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
        with self._catching:  # one indexer at a time: the follower or a page catching up
            start = self.indexed()
            while start < size and not self._stop.is_set():
                count = min(chunk, size - start)
                rows: list[tuple[int, str, str, str]] = []
                digests: list[tuple[str, int]] = []
                dids: list[tuple[str, int]] = []
                for offset, data in enumerate(entries(start, count)):
                    view = describe_entry(start + offset, data)
                    rows.append((view.index, view.kind, view.signer, view.summary))
                    found = {hashlib.sha256(data).hexdigest(): None}
                    for _, digest in view.subjects:
                        found[digest.lower()] = None
                    _digests_in(view.predicate, found)
                    digests.extend((d, view.index) for d in found)
                    named = dict.fromkeys([view.signer] if view.signer else [])
                    named.update(dict.fromkeys(mentioned_dids(view.predicate)))
                    dids.extend((d, view.index) for d in named)
                with self._lock:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?)", rows)
                    self._db.executemany("INSERT OR IGNORE INTO digests VALUES (?,?)", digests)
                    self._db.executemany("INSERT OR IGNORE INTO dids VALUES (?,?)", dids)
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
                except Exception:  # the log or the index closed under us (shutdown): stop
                    return
                self._stop.wait(0.5)

        self._thread = threading.Thread(target=run, name="explorer-index", daemon=True)
        self._thread.start()

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [Row(int(i), str(k), str(s), str(m)) for i, k, s, m in rows]

    def by_kind(self, kind: str, *, before: int, limit: int) -> list[Row]:
        """Entries of display kind `kind` (`describe.KINDS`) with index < `before`, newest first."""
        return self._rows(
            "SELECT idx, kind, signer, summary FROM entries WHERE kind = ? AND idx < ? "
            "ORDER BY idx DESC LIMIT ?",
            (kind, before, limit),
        )

    def by_did(self, did: str, *, before: int, limit: int) -> list[Row]:
        """Entries signed by `did` or naming it in their predicate, newest first."""
        return self._rows(
            "SELECT e.idx, e.kind, e.signer, e.summary FROM dids d JOIN entries e "
            "ON e.idx = d.idx WHERE d.did = ? AND d.idx < ? ORDER BY d.idx DESC LIMIT ?",
            (did, before, limit),
        )

    def by_digest(self, digest: str, *, before: int, limit: int) -> list[Row]:
        """Entries whose own sha256, a subject or a ``sha256:`` value in the predicate is `digest`.

        `digest` is ``sha256:<hex>`` or the 64 hex digits.

        Raises:
            InvalidInputError: `digest` is not a sha256 digest.
        """
        hexd = parse_digest_query(digest)
        if hexd is None:
            raise InvalidInputError("a digest is sha256:<64 hex digits>")
        return self._rows(
            "SELECT e.idx, e.kind, e.signer, e.summary FROM digests s JOIN entries e "
            "ON e.idx = s.idx WHERE s.digest = ? AND s.idx < ? ORDER BY s.idx DESC LIMIT ?",
            (hexd, before, limit),
        )

    def close(self) -> None:
        """Stop following and close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._db.close()
