"""A `LogStore` on PostgreSQL (psycopg 3), for several node processes sharing one log.

Same layout and semantics as the SQLite store (`edgetrust.log._store_core`): one row per
entry holding its leaf hash and the complete subtrees it closes, de-duplication, group
commit, an entry acknowledged only after its batch commits. What PostgreSQL adds is several
writers: every batch transaction first takes a transaction-level advisory lock
(``pg_advisory_xact_lock``), so exactly one sequencer extends the tree at a time, and it
re-reads the tree size under that lock, picking up the right edge another process left. The
lock is released by the commit or by the death of the session (a SIGKILLed node holds nothing),
and an uncommitted batch is rolled back, so the tree never forks and no acknowledged entry is
lost. Reads come from a connection pool (psycopg_pool).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from edgetrust.errors import InvalidInputError
from edgetrust.log._store_core import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_FLUSH,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_ENTRY_BYTES,
    SequencedStore,
    StoreError,
    build_frontier,
    extend_tree,
    frontier_coords,
    leaf_hashes,
    pick_nodes,
)
from edgetrust.log.merkle import leaf_hash

__all__ = [
    "SEQUENCER_LOCK",
    "PostgresCheckpointState",
    "PostgresLogStore",
    "check_postgres_url",
]

SEQUENCER_LOCK = 0x6564_6765_7472_7573  # "edgetrus": the advisory lock key of the sequencer
"""The ``pg_advisory_xact_lock`` key every batch transaction holds while it extends the tree."""

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
        raise InvalidInputError(f"bad PostgreSQL URL: {_first_line(exc)}") from exc
    for port in str(params.get("port", "5432")).split(","):
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidInputError(f"bad PostgreSQL URL: port {port!r:.20} is not 1..65535")
    return url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dk(leaf: bytes) -> int:
    return int.from_bytes(leaf[:8], "big", signed=True)


class PostgresLogStore(SequencedStore):
    """A `LogStore` in a PostgreSQL database, safe with writers in several processes.

    Args:
        url: a libpq connection URL, ``postgresql://user@host:port/db`` (a unix socket:
            ``postgresql:///db?host=/run/postgresql``).
        pool_size: most pooled read connections.
        connect_timeout: seconds to wait for the server before `StoreError`.

    Durability is PostgreSQL's: a batch is acknowledged after its COMMIT, which with the
    default ``synchronous_commit=on`` is flushed to the WAL on disk.
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
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            max_delay=max_delay,
            idle_flush=idle_flush,
            max_entry_bytes=max_entry_bytes,
        )
        self.url = check_postgres_url(url)
        timeout = max(1, int(connect_timeout))
        try:
            self._writer = psycopg.connect(url, autocommit=True, connect_timeout=timeout)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach PostgreSQL log store: {_first_line(exc)}") from exc
        try:
            with self._writer.transaction():
                self._writer.execute("SELECT pg_advisory_xact_lock(%s)", (SEQUENCER_LOCK,))
                self._writer.execute(_SCHEMA)
            self._size = 0
            self._frontier: list[bytes] = []
            self._reload(self._db_size(self._writer))
            self._pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True, "connect_timeout": timeout},
                open=False,
                name="edgetrust-log",
            )
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._writer.close()
            raise StoreError(f"cannot open PostgreSQL log store: {_first_line(exc)}") from exc
        except BaseException:
            self._writer.close()
            raise
        self._start_sequencer("log-sequencer:postgresql")

    # -- database helpers -------------------------------------------------------------------

    @staticmethod
    def _db_size(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT max(idx) FROM log_entries").fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def _reload(self, size: int) -> None:
        """Load the right edge of the tree of `size` (another writer extended it)."""
        found = pick_nodes(frontier_coords(size), lambda rows: _rows(self._writer, rows))
        self._frontier, self._size = build_frontier(size, found), size

    def _query(
        self, sql: str, params: Sequence[object] = (), *, what: str = "log store read"
    ) -> list[tuple[Any, ...]]:
        self._check_open()
        try:
            with self._pool.connection() as conn:
                rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
                return rows
        except psycopg.Error as exc:
            raise StoreError(f"{what} failed: {_first_line(exc)}") from exc
        except Exception as exc:  # the pool's own errors (timeout, closed)
            raise StoreError(f"{what} failed: {_first_line(exc)}") from exc

    # -- writes -----------------------------------------------------------------------------

    def _write(self, entries: list[bytes]) -> list[int]:
        """Commit `entries` as one transaction under the sequencer lock; return their indices."""
        leaves = leaf_hashes(entries)
        conn = self._writer
        try:
            with conn.transaction():
                # One sequencer at a time, whichever process it runs in. The lock, the size and
                # the de-dup look-up go in one round trip (pipeline mode): the lock is held
                # until COMMIT, so every round trip under it delays the other nodes' batches.
                with conn.pipeline():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEQUENCER_LOCK,))
                    max_idx = conn.execute("SELECT max(idx) FROM log_entries")
                    dups = self._lookup_cursor(conn, leaves)
                row = max_idx.fetchone()
                size = 0 if row is None or row[0] is None else int(row[0]) + 1
                known = self._known(dups.fetchall(), leaves)
                if size != self._size:
                    self._reload(size)
                indices, size, frontier, rows = extend_tree(
                    self._size, self._frontier, entries, leaves, known
                )
                if rows:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO log_entries(idx, dk, leaf, nodes, data) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [(i, _dk(h), h, n, d) for i, h, n, d in rows],
                        )
        except psycopg.Error as exc:
            self._size = -1  # unknown after a failure: reload before the next batch
            raise StoreError(
                f"log store write failed, nothing was logged: {_first_line(exc)}"
            ) from exc
        self._size, self._frontier = size, frontier
        return indices

    @staticmethod
    def _lookup_cursor(conn: psycopg.Connection[Any], leaves: list[bytes]) -> psycopg.Cursor[Any]:
        """The rows that may be `leaves` already logged (by the dedup key): see `_known`."""
        keys = list({_dk(h) for h in leaves})
        return conn.execute("SELECT idx, leaf FROM log_entries WHERE dk = ANY(%s)", (keys,))

    @staticmethod
    def _known(rows: Sequence[tuple[Any, ...]], leaves: list[bytes]) -> dict[bytes, int]:
        """Existing indices of any of `leaves`, confirmed on the full hash."""
        wanted = set(leaves)
        return {bytes(leaf): int(idx) for idx, leaf in rows if bytes(leaf) in wanted}

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
            (_dk(h), h),
        )
        return int(rows[0][0]) if rows else None

    def checkpoint_state(self) -> PostgresCheckpointState:
        """The origin and signed checkpoints of this log, in the same database (shared)."""
        return PostgresCheckpointState(self)

    # -- lifecycle --------------------------------------------------------------------------

    def _release(self) -> None:
        self._pool.close()
        self._writer.close()

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
        # One round trip when the note is new (RETURNING), a second only when another node
        # stored one for this size first.
        rows = self._store._query(
            "INSERT INTO log_checkpoints(size, note) VALUES (%s, %s) "
            "ON CONFLICT (size) DO NOTHING RETURNING note",
            (size, note),
            what="log state write",
        )
        stored = bytes(rows[0][0]) if rows else self.note_at(size)
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
            raise StoreError(f"log state write failed: {_first_line(exc)}") from exc
        except Exception as exc:  # the pool's own errors (timeout, closed)
            raise StoreError(f"log state write failed: {_first_line(exc)}") from exc

    def close(self) -> None:
        """Nothing to release: the store owns the connections."""


def _rows(conn: psycopg.Connection[Any], indices: Sequence[int]) -> dict[int, tuple[bytes, bytes]]:
    rows = conn.execute(
        "SELECT idx, leaf, nodes FROM log_entries WHERE idx = ANY(%s)", (list(indices),)
    ).fetchall()
    return {int(i): (bytes(leaf), bytes(nodes)) for i, leaf, nodes in rows}
