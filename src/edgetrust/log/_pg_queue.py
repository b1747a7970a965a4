"""The write path of the PostgreSQL store: a queue table every node fills, one sequencer drains.

Why a queue. When each node sequenced its own batches, every batch transaction held the
sequencer's advisory lock from its first statement to its COMMIT, WAL flush included, so two
nodes' commits took turns and two nodes logged no faster than one (BENCHMARKS.md, "The log at
scale": 1.03x). Here a node only inserts its group of verified entries as one row of
``log_queue`` (no lock, no tree work), and the one sequencer, whichever node holds the
session-level advisory lock `SEQUENCER_LOCK`, drains every node's queued rows in one
transaction per batch: it deletes them, assigns indices (de-duplicated against the log and
within the batch), stores the leaves and the subtree hashes they complete, and NOTIFYs the
drained queue ids. So the WAL is flushed once per batch of all nodes' entries, not once per
node batch.

Durability. An entry is acknowledged (its index returned) only after the sequencer's drain
transaction has committed, with ``synchronous_commit`` on, so an acknowledged entry is on disk
in ``log_entries``. The queue insert itself commits asynchronously: the drain that consumes a
row commits after it, and its WAL flush covers the insert too. A crash before that drain may
lose queued, unacknowledged rows; never an acknowledged one.

Failover. Every node runs a sequencer candidate that retries the lock every
`LEADER_RETRY` seconds. The lock dies with its session, so when the sequencer's process is
killed, another node takes over within about that time, reloads the right edge of the tree from
the committed rows, and drains what is queued, the dead node's rows included.

How a node learns its indices. The sequencer's own rows are resolved in memory after its
commit. Every other node LISTENs for the drained ids and then reads its entries' indices by
leaf hash (the de-duplication index), so a duplicate gets its first occurrence's index, as on
SQLite. A notification can be missed (a reconnect, a failover): rows still waiting after
`POLL_AFTER` seconds are looked for in the queue, and a row no longer there was drained.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from edgetrust.log._store_core import (
    StoreError,
    build_frontier,
    extend_tree,
    frontier_coords,
    leaf_hashes,
    pick_nodes,
)

SEQUENCER_LOCK = 0x6564_6765_7472_7573  # "edgetrus": the advisory lock key of the sequencer
"""The advisory lock key the sequencer holds for its whole session."""

QUEUE_CHANNEL = "edgetrust_log_queue"
"""NOTIFY channel: a node queued a row (wakes the sequencer)."""

DRAINED_CHANNEL = "edgetrust_log_drained"
"""NOTIFY channel: the sequencer drained these queue ids (payload: comma-separated ids)."""

LEADER_RETRY = 0.25
"""Seconds between a candidate's attempts to become the sequencer."""

IDLE_WAIT = 0.1
"""Longest the sequencer sleeps on an empty queue between NOTIFYs (a missed one costs this)."""

SEQUENCER_APPLICATION = "edgetrust-sequencer"
"""``application_name`` prefix of a candidate's session (``…:<pid>``): ``pg_stat_activity``
joined with ``pg_locks`` shows which node process is the sequencer."""

POLL_AFTER = 0.25
"""Seconds after which a waiting node looks in the queue itself instead of trusting NOTIFY."""

DRAIN_ROWS = 256
"""Most queued rows one drain transaction takes (each row is one node group, usually small)."""

_PAYLOAD_CHARS = 7000  # NOTIFY payloads must stay under 8000 bytes

_INSERT = (
    "WITH q AS (INSERT INTO log_queue(entries) VALUES (%s) RETURNING id) "
    f"SELECT id, pg_notify('{QUEUE_CHANNEL}', '') FROM q"
)
_DRAIN = (
    "DELETE FROM log_queue WHERE id IN (SELECT id FROM log_queue ORDER BY id LIMIT %s) "
    "RETURNING id, entries"
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (psycopg's messages run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def dedup_key(leaf: bytes) -> int:
    """The first 8 bytes of a leaf hash as a signed bigint: the ``dk`` column."""
    return int.from_bytes(leaf[:8], "big", signed=True)


def lookup_indices(conn: psycopg.Connection[Any], leaves: Sequence[bytes]) -> dict[bytes, int]:
    """The first index of each of `leaves` that is logged (by ``dk``, confirmed on the hash)."""
    keys = list({dedup_key(h) for h in leaves})
    rows = conn.execute("SELECT idx, leaf FROM log_entries WHERE dk = ANY(%s)", (keys,)).fetchall()
    wanted = set(leaves)
    found: dict[bytes, int] = {}
    for idx, leaf in rows:
        h = bytes(leaf)
        if h in wanted and (h not in found or int(idx) < found[h]):
            found[h] = int(idx)
    return found


def entry_rows(
    conn: psycopg.Connection[Any], indices: Sequence[int]
) -> dict[int, tuple[bytes, bytes]]:
    """``idx -> (leaf, nodes)`` for those of `indices` that are logged."""
    rows = conn.execute(
        "SELECT idx, leaf, nodes FROM log_entries WHERE idx = ANY(%s)", (list(indices),)
    ).fetchall()
    return {int(i): (bytes(leaf), bytes(nodes)) for i, leaf, nodes in rows}


@dataclass
class Queued:
    """One queued row: a node group of entries and the callers waiting for their indices."""

    entries: list[bytes]
    leaves: list[bytes]
    futures: list[tuple[Future[list[int]], int]]
    """Each waiting caller's future and how many of `entries` are its own, in order."""
    queued_at: float = field(default_factory=time.monotonic)

    def finish(self, indices: list[int]) -> None:
        """Hand each caller its slice of `indices`."""
        pos = 0
        for future, n in self.futures:
            future.set_result(indices[pos : pos + n])
            pos += n

    def fail(self, error: BaseException) -> None:
        """Every caller of this row hears `error`."""
        for future, _ in self.futures:
            future.set_exception(error)


class QueueWaiter:
    """Queues a node's rows and resolves them when a sequencer (any node's) has drained them.

    Args:
        url: the database.
        pool: the store's read pool (index lookups).
        ack_timeout: seconds a row may wait for a sequencer before its callers get a
            `StoreError` (the entries may still be logged later: they were not acknowledged).
    """

    def __init__(self, url: str, pool: ConnectionPool[Any], *, ack_timeout: float) -> None:
        self._url = url
        self._pool = pool
        self.ack_timeout = ack_timeout
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: dict[int, Queued] = {}
        self._stop = threading.Event()
        self._writer = psycopg.connect(url, autocommit=True)
        # Asynchronous commit for queue rows only: see the module docstring (Durability).
        self._writer.execute("SET synchronous_commit = off")
        self._listener = psycopg.connect(url, autocommit=True)
        self._listener.execute(f"LISTEN {DRAINED_CHANNEL}")
        self._thread = threading.Thread(target=self._run, name="log-queue-waiter", daemon=True)
        self._thread.start()

    def enqueue(self, queued: Queued) -> None:
        """Insert `queued` as one queue row (callers are answered later, by `resolve`)."""
        # The lock spans the insert, so the sequencer cannot resolve the row before it is known.
        with self._lock:
            try:
                row = self._writer.execute(_INSERT, (queued.entries,)).fetchone()
            except psycopg.Error as exc:
                raise StoreError(
                    f"log store write failed, nothing was logged: {first_line(exc)}"
                ) from exc
            if row is None:  # pragma: no cover - INSERT … RETURNING returns its row
                raise StoreError("log store write failed, nothing was logged: no queue id")
            self._pending[int(row[0])] = queued

    def resolve(self, drained: dict[int, list[int]]) -> None:
        """Our rows among `drained` (queue id -> indices, from this process's sequencer)."""
        done: list[tuple[Queued, list[int]]] = []
        with self._lock:
            for qid, indices in drained.items():
                queued = self._pending.pop(qid, None)
                if queued is not None:
                    done.append((queued, indices))
            if done and not self._pending:
                self._idle.notify_all()
        for queued, indices in done:
            queued.finish(indices)

    def wait_idle(self, timeout: float) -> None:
        """Block until no row of ours waits (or `timeout` seconds pass)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop listening; rows still waiting fail (the store is closing)."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            left, self._pending = list(self._pending.values()), {}
        for queued in left:
            queued.fail(StoreError("the log store closed before these entries were sequenced"))
        self._listener.close()
        self._writer.close()

    # -- the listener thread ---------------------------------------------------------------

    def _run(self) -> None:
        last_poll = time.monotonic()
        while not self._stop.is_set():
            drained: set[int] = set()
            try:
                for note in self._listener.notifies(timeout=IDLE_WAIT):
                    drained.update(int(x) for x in note.payload.split(",") if x)
                    break
            except psycopg.Error:
                drained = self._reconnect()
            now = time.monotonic()
            if now - last_poll >= POLL_AFTER:
                last_poll = now
                drained |= self._poll_stale(now)
            if drained:
                self._resolve_by_lookup(drained)

    def _reconnect(self) -> set[int]:
        try:
            self._listener.close()
            self._listener = psycopg.connect(self._url, autocommit=True)
            self._listener.execute(f"LISTEN {DRAINED_CHANNEL}")
        except psycopg.Error:
            self._stop.wait(LEADER_RETRY)
        return set()

    def _poll_stale(self, now: float) -> set[int]:
        """Ids of our rows waiting over `POLL_AFTER` s that the queue no longer holds."""
        with self._lock:
            stale = [q for q, v in self._pending.items() if now - v.queued_at >= POLL_AFTER]
            expired = [q for q in stale if now - self._pending[q].queued_at >= self.ack_timeout]
        if expired:
            self._expire(expired)
        if not stale:
            return set()
        try:
            with self._pool.connection() as conn:
                present = {
                    int(r[0])
                    for r in conn.execute(
                        "SELECT id FROM log_queue WHERE id = ANY(%s)", (stale,)
                    ).fetchall()
                }
        except Exception:  # the database is away: keep waiting, expiry still applies
            return set()
        return set(stale) - present

    def _expire(self, ids: list[int]) -> None:
        with self._lock:
            gone = [self._pending.pop(q) for q in ids if q in self._pending]
            if not self._pending:
                self._idle.notify_all()
        for queued in gone:
            queued.fail(
                StoreError(
                    f"no sequencer logged these entries within {self.ack_timeout:g} s: "
                    "they are not acknowledged (they may still be logged)"
                )
            )

    def _resolve_by_lookup(self, drained: set[int]) -> None:
        """Indices of our drained rows, read by leaf hash (what a duplicate gets, too)."""
        with self._lock:
            mine = {q: self._pending[q] for q in drained if q in self._pending}
        if not mine:
            return
        leaves = [h for queued in mine.values() for h in queued.leaves]
        try:
            with self._pool.connection() as conn:
                found = lookup_indices(conn, leaves)
        except Exception:  # retried by the next poll: the rows stay pending
            return
        resolved: dict[int, list[int]] = {}
        for qid, queued in mine.items():
            if all(h in found for h in queued.leaves):
                resolved[qid] = [found[h] for h in queued.leaves]
        self.resolve(resolved)


class QueueSequencer:
    """The sequencer candidate of one node: holds `SEQUENCER_LOCK` or waits to.

    Args:
        url: the database.
        on_drained: called after each committed drain with ``queue id -> indices``.
    """

    def __init__(self, url: str, on_drained: Callable[[dict[int, list[int]]], None]) -> None:
        self._url = url
        self._on_drained = on_drained
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self.leader = False
        """Whether this node is the sequencer now."""
        self.batches_committed = 0
        """Drain transactions this node committed as the sequencer."""
        self.last_error: str | None = None
        """The last database error the sequencer met (it retries), for diagnosis."""
        self._size = -1
        self._frontier: list[bytes] = []
        self._thread = threading.Thread(target=self._run, name="log-sequencer:pg", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop; the lock is released with the session (another node takes over)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = psycopg.connect(
                        self._url,
                        autocommit=True,
                        application_name=f"{SEQUENCER_APPLICATION}:{os.getpid()}",
                    )
                if not self.leader and not self._acquire(conn):
                    self._stop.wait(LEADER_RETRY)
                    continue
                if not self._drain(conn):
                    for _ in conn.notifies(timeout=IDLE_WAIT, stop_after=1):
                        pass
            except psycopg.Error as exc:
                self.last_error = first_line(exc)
                self._lose(conn_broken=True)
                self._stop.wait(LEADER_RETRY)
        self._lose(conn_broken=True)

    def _acquire(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SEQUENCER_LOCK,)).fetchone()
        if row is None or not row[0]:
            return False
        conn.execute(f"LISTEN {QUEUE_CHANNEL}")
        self.leader = True
        self._size = -1  # reload the right edge: another node may have extended the tree
        return True

    def _lose(self, *, conn_broken: bool) -> None:
        self.leader = False
        self._size = -1
        if conn_broken and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reload(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute("SELECT max(idx) FROM log_entries").fetchone()
        size = 0 if row is None or row[0] is None else int(row[0]) + 1
        found = pick_nodes(frontier_coords(size), lambda idx: entry_rows(conn, idx))
        self._frontier, self._size = build_frontier(size, found), size

    def _drain(self, conn: psycopg.Connection[Any]) -> bool:
        """Sequence one batch of queued rows in one transaction; False if the queue was empty."""
        if self._size < 0:
            self._reload(conn)
        try:
            with conn.transaction():
                queued = sorted(
                    (int(qid), [bytes(e) for e in entries])
                    for qid, entries in conn.execute(_DRAIN, (DRAIN_ROWS,)).fetchall()
                )
                if not queued:
                    return False
                entries = [e for _, group in queued for e in group]
                leaves = leaf_hashes(entries)
                known = lookup_indices(conn, leaves)
                indices, size, frontier, rows = extend_tree(
                    self._size, self._frontier, entries, leaves, known
                )
                if rows:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO log_entries(idx, dk, leaf, nodes, data) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [(i, dedup_key(h), h, n, d) for i, h, n, d in rows],
                        )
                for payload in _payloads([qid for qid, _ in queued]):
                    conn.execute("SELECT pg_notify(%s, %s)", (DRAINED_CHANNEL, payload))
        except BaseException:
            self._size = -1  # rolled back: reload before the next batch
            raise
        self._size, self._frontier = size, frontier
        self.batches_committed += 1
        drained: dict[int, list[int]] = {}
        pos = 0
        for qid, group in queued:
            drained[qid] = indices[pos : pos + len(group)]
            pos += len(group)
        self._on_drained(drained)
        return True


def _payloads(ids: list[int]) -> list[str]:
    """`ids` as comma-separated NOTIFY payloads, each under the server's size limit."""
    out: list[str] = []
    current = ""
    for qid in ids:
        text = str(qid)
        if current and len(current) + 1 + len(text) > _PAYLOAD_CHARS:
            out.append(current)
            current = text
        else:
            current = f"{current},{text}" if current else text
    if current:
        out.append(current)
    return out
