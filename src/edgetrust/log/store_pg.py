"""A `LogStore` on PostgreSQL (psycopg 3), for several node processes sharing one log.

Same layout and semantics as the SQLite store (`edgetrust.log._store_core`): one row per
entry holding its leaf hash and the complete subtrees it closes, de-duplication, group
commit, an entry acknowledged only after the transaction that logs it commits. What
PostgreSQL adds is several writers: each node queues its groups of entries in ``log_queue``
and one sequencer, the holder of an advisory lock, drains every node's rows in one
transaction per batch (`edgetrust.log._pg_queue` explains the write path, its durability and
its failover). Reads come from a connection pool (psycopg_pool), on every node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from edgetrust.errors import Error, InvalidInputError
from edgetrust.log._pg_queue import (
    SEQUENCER_LOCK,
    Queued,
    QueueSequencer,
    QueueWaiter,
    dedup_key,
    first_line,
)
from edgetrust.log._store_core import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_FLUSH,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_ENTRY_BYTES,
    SequencedStore,
    StoreError,
    _Request,
    check_seconds,
    leaf_hashes,
)
from edgetrust.log.merkle import leaf_hash

__all__ = [
    "SCHEMA_LOCK",
    "SEQUENCER_LOCK",
    "PostgresCheckpointState",
    "PostgresLogStore",
    "check_postgres_url",
]

SCHEMA_LOCK = SEQUENCER_LOCK + 1
"""The ``pg_advisory_xact_lock`` key under which a node creates or checks the schema."""

_URL_RE = re.compile(r"postgres(ql)?://[^\s]*")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_entries (
    idx   bigint PRIMARY KEY,         -- 0-based leaf index
    dk    bigint NOT NULL,            -- first 8 bytes of the leaf hash: the dedup key
    leaf  bytea  NOT NULL,            -- RFC 9162 leaf hash (the level-0 node)
    nodes bytea  NOT NULL,            -- the complete subtrees this leaf closes, levels 1..t
    data  bytea  NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_dk ON log_entries (dk);
CREATE TABLE IF NOT EXISTS log_queue (     -- groups of entries waiting for the sequencer
    id      bigserial PRIMARY KEY,
    entries bytea[] NOT NULL
);
CREATE TABLE IF NOT EXISTS log_meta (      -- the log's origin (PostgresCheckpointState)
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS log_checkpoints (  -- every checkpoint note any node handed out
    size  bigint PRIMARY KEY,
    note  bytea  NOT NULL
);
"""

_COLUMNS = {"data": "data", "leaf": "leaf"}  # the only column names interpolated into SQL

_ENTRY_TYPES = {"idx": "bigint", "dk": "bigint", "leaf": "bytea", "nodes": "bytea", "data": "bytea"}


def check_postgres_url(url: object) -> str:
    """`url` if it is a ``postgresql://`` (or ``postgres://``) connection URL.

    Raises:
        InvalidInputError: anything else, or a URL libpq cannot parse.
    """
    if not isinstance(url, str) or not _URL_RE.fullmatch(url):
        raise InvalidInputError(f"not a postgresql:// URL: {url!r:.80}")
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise InvalidInputError(f"bad PostgreSQL URL: {first_line(exc)}") from exc
    for port in str(params.get("port", "5432")).split(","):
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidInputError(f"bad PostgreSQL URL: port {port!r:.20} is not 1..65535")
    return url


class PostgresLogStore(SequencedStore):
    """A `LogStore` in a PostgreSQL database, safe with writers in several processes.

    Args:
        url: a libpq connection URL, ``postgresql://user@host:port/db`` (a unix socket:
            ``postgresql:///db?host=/run/postgresql``).
        pool_size: most pooled read connections.
        connect_timeout: seconds to wait for the server before `StoreError`.
        ack_timeout: seconds an append waits for a sequencer before `StoreError`.

    Durability is PostgreSQL's: an entry is acknowledged after the sequencer's drain
    transaction that logs it commits, which with the default ``synchronous_commit=on`` is
    flushed to the WAL on disk. Several stores (nodes) may open one database: any accepts
    appends, one at a time sequences them, all serve reads.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay: float = DEFAULT_MAX_DELAY,
        idle_flush: float | None = DEFAULT_IDLE_FLUSH,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            max_delay=max_delay,
            idle_flush=idle_flush,
            max_entry_bytes=max_entry_bytes,
        )
        self.url = check_postgres_url(url)
        check_seconds("ack_timeout", ack_timeout)
        self.ack_timeout = float(ack_timeout)
        timeout = max(1, int(connect_timeout))
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=timeout) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(_SCHEMA)
                    _check_schema(conn)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot reach PostgreSQL log store: {first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL log store: {first_line(exc)}") from exc
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": timeout},
            open=False,
            name="edgetrust-log",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._waiter = QueueWaiter(url, self._pool, ack_timeout=self.ack_timeout)
        except Exception as exc:
            self._pool.close()
            raise StoreError(f"cannot open PostgreSQL log store: {first_line(exc)}") from exc
        self._queue_sequencer = QueueSequencer(url, self._waiter.resolve)
        self._start_sequencer("log-batcher:postgresql")

    @property
    def is_sequencer(self) -> bool:
        """Whether this store holds the sequencer lock now (one store of a cluster does)."""
        return self._queue_sequencer.leader

    # -- database helpers -------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self._check_open()
        try:
            with self._pool.connection() as conn:
                rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
                return rows
        except psycopg.Error as exc:
            raise StoreError(f"log store read failed: {first_line(exc)}") from exc
        except Exception as exc:  # the pool's own errors (timeout, closed)
            raise StoreError(f"log store read failed: {first_line(exc)}") from exc

    # -- writes -----------------------------------------------------------------------------

    def _commit_batch(self, batch: list[_Request]) -> None:
        """Queue the batch as one row; its callers are answered once a sequencer drained it.

        Unlike the SQLite store this returns at once: the batcher gathers the next group while
        this one waits, so a node keeps several rows in flight.
        """
        entries = [e for r in batch for e in r.entries]
        queued = Queued(entries, leaf_hashes(entries), [(r.future, len(r.entries)) for r in batch])
        try:
            self._waiter.enqueue(queued)
        except Error as exc:
            queued.fail(exc)
        except Exception as exc:
            queued.fail(StoreError(f"log store write failed, nothing was logged: {exc}"))
        else:
            self.batches_committed += 1

    # -- reads ------------------------------------------------------------------------------

    def _read_size(self) -> int:
        value = self._query("SELECT max(idx) FROM log_entries")[0][0]
        return 0 if value is None else int(value) + 1

    def _read_rows(self, indices: Sequence[int]) -> dict[int, tuple[bytes, bytes]]:
        rows = self._query(
            "SELECT idx, leaf, nodes FROM log_entries WHERE idx = ANY(%s)", (list(indices),)
        )
        return {int(i): (bytes(leaf), bytes(nodes)) for i, leaf, nodes in rows}

    def _read_range(self, column: Literal["data", "leaf"], start: int, stop: int) -> list[bytes]:
        rows = self._query(
            f"SELECT {_COLUMNS[column]} FROM log_entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (start, stop),
        )
        return [bytes(r[0]) for r in rows]

    def _read_one(self, column: Literal["data", "leaf"], index: int) -> bytes | None:
        rows = self._query(f"SELECT {_COLUMNS[column]} FROM log_entries WHERE idx = %s", (index,))
        return bytes(rows[0][0]) if rows else None

    def index_of(self, entry: bytes) -> int | None:
        """The index `entry` was logged at, or None."""
        h = leaf_hash(self._check_entry(entry))
        rows = self._query(
            "SELECT idx FROM log_entries WHERE dk = %s AND leaf = %s ORDER BY idx LIMIT 1",
            (dedup_key(h), h),
        )
        return int(rows[0][0]) if rows else None

    def checkpoint_state(self) -> PostgresCheckpointState:
        """The origin and signed checkpoints of this log, in the same database (shared)."""
        return PostgresCheckpointState(self)

    # -- lifecycle --------------------------------------------------------------------------

    def _release(self) -> None:
        # Our queued rows first: the sequencer (ours or another node's) still drains them.
        self._waiter.wait_idle(self.ack_timeout)
        self._queue_sequencer.close()
        self._waiter.close()
        self._pool.close()

    def __enter__(self) -> PostgresLogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PostgresCheckpointState:
    """`edgetrust.log.state.CheckpointState` in the store's database, read through its pool.

    Every node of a cluster reads and adds checkpoints here, so a node asked for the latest
    checkpoint hands out the largest any node signed (never an older one than another node
    already handed out), and `Log.checkpoint_at` finds every note any node signed. Two nodes
    signing the same size race harmlessly: the first note stays, and it is the same bytes
    (same key, same tree, deterministic Ed25519).
    """

    def __init__(self, store: PostgresLogStore) -> None:
        self._store = store

    def settle_origin(self, origin: str) -> str:
        """Record `origin` if none is recorded; return the recorded one."""
        self._exec(
            "INSERT INTO log_meta(key, value) VALUES ('origin', %s) ON CONFLICT (key) DO NOTHING",
            (origin,),
        )
        recorded = self.recorded_origin()
        if recorded is None:  # pragma: no cover - just inserted
            raise StoreError("the log's origin could not be recorded")
        return recorded

    def recorded_origin(self) -> str | None:
        """The recorded origin, or None."""
        rows = self._store._query("SELECT value FROM log_meta WHERE key = 'origin'")
        return str(rows[0][0]) if rows else None

    def latest(self) -> tuple[int, bytes] | None:
        """The largest size any node signed a checkpoint for, and its note."""
        rows = self._store._query(
            "SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1"
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def add(self, size: int, note: bytes) -> bytes:
        """Store `note` for `size` unless a note is stored; return the stored one."""
        self._exec(
            "INSERT INTO log_checkpoints(size, note) VALUES (%s, %s) ON CONFLICT (size) DO NOTHING",
            (size, note),
        )
        stored = self.note_at(size)
        if stored is None:  # pragma: no cover - just inserted
            raise StoreError(f"checkpoint {size} could not be recorded")
        return stored

    def note_at(self, size: int) -> bytes | None:
        """The note signed for `size`, or None."""
        rows = self._store._query("SELECT note FROM log_checkpoints WHERE size = %s", (size,))
        return bytes(rows[0][0]) if rows else None

    def sizes(self) -> list[int]:
        """Sizes with a signed checkpoint, ascending."""
        return [
            int(r[0]) for r in self._store._query("SELECT size FROM log_checkpoints ORDER BY size")
        ]

    def _exec(self, sql: str, params: Sequence[object]) -> None:
        self._store._check_open()
        try:
            with self._store._pool.connection() as conn:
                conn.execute(sql, params)
        except psycopg.Error as exc:
            raise StoreError(f"log state write failed: {first_line(exc)}") from exc
        except Exception as exc:  # the pool's own errors (timeout, closed)
            raise StoreError(f"log state write failed: {first_line(exc)}") from exc

    def close(self) -> None:
        """Nothing to release: the store owns the connections."""


def _check_schema(conn: psycopg.Connection[Any]) -> None:
    """Refuse a ``log_entries`` table that is not this store's (another program's table)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'log_entries' AND table_schema = current_schema()"
    ).fetchall()
    columns = {str(name): str(kind) for name, kind in rows}
    if columns != _ENTRY_TYPES:
        raise StoreError("table log_entries in this database is not an edgetrust log")
