"""The log as a service: a store, a signing key and an origin, handing out signed checkpoints.

`Log` is what the CLI, the node and the receipt bundles use. It appends entries to its store,
signs a C2SP checkpoint whenever the tree has grown since the last one (so every checkpoint it
hands out is for a committed tree, and two are never signed for one size), keeps every
checkpoint it signed, and serves inclusion and consistency proofs against them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from edgetrust.errors import ConflictError, InvalidInputError, NotFoundError
from edgetrust.home import resolve_home
from edgetrust.identity import Keystore
from edgetrust.log.checkpoint import (
    Checkpoint,
    NoteSigner,
    parse_checkpoint_body,
    parse_note,
    sign_checkpoint,
)
from edgetrust.log.store import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_FLUSH,
    DEFAULT_MAX_DELAY,
    LogStore,
    SqliteLogStore,
    StoreError,
)

__all__ = ["DEFAULT_ORIGIN", "LOG_KEY_NAME", "Log", "open_store"]

DEFAULT_ORIGIN = "edgetrust.local/log"
"""Origin of a log opened without one; C2SP recommends a schema-less URL naming the log."""

LOG_KEY_NAME = "log"
"""Name of the log's signing key in the keystore."""

_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,     -- the tree size the note signs
    note BLOB NOT NULL            -- the signed checkpoint note, exactly as handed out
);
"""


class Log:
    """An append-only transparency log with signed C2SP checkpoints.

    Use `Log.open` for the embedded log in an edgetrust home. The constructor takes the parts,
    so another `LogStore` backend needs no change here. The signer's key name is the log's
    origin; `state_path` is the SQLite file that records the origin and the signed checkpoints
    (for the embedded log: the store's own file).

    Raises:
        ConflictError: the state file records another origin than the signer's name.
    """

    def __init__(
        self,
        store: LogStore,
        signer: NoteSigner,
        *,
        state_path: str | os.PathLike[str],
    ) -> None:
        self.store = store
        """Where entries and tree hashes live."""
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            state_path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_STATE_SCHEMA)
            self.origin = self._settle_origin(signer.name)
            """The log's identity: the first line of its checkpoints and its key name."""
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot open log state {state_path}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise
        self.signer = signer
        """Signs checkpoints as the origin, with the log's Ed25519 key."""
        self._closed = False

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        origin: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay: float = DEFAULT_MAX_DELAY,
        idle_flush: float | None = DEFAULT_IDLE_FLUSH,
        store: str | None = None,
    ) -> Log:
        """Open (creating if needed) the embedded log at ``<home>/log/log.db``.

        `store` chooses another store (see `open_store`): a SQLite file path, or a
        ``postgresql://`` URL, whose checkpoints are then kept in ``<home>/log/state.db``
        (shared by the nodes that share the home).

        The signing key is ``log`` in the home's keystore, created on first use. The origin is
        recorded on first open (default `DEFAULT_ORIGIN`); opening with another one is refused,
        because a log that changes its name breaks every client that follows it. Batching
        options are those of `SqliteLogStore`.

        Raises:
            ConflictError: `origin` differs from the one this log was created with.
            InvalidInputError: a bad `origin`, `batch_size` or `max_delay`.
        """
        root = resolve_home(home)
        path = root / "log" / "log.db"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = Keystore(root).load_or_create(LOG_KEY_NAME)
        log_store = open_store(
            str(path) if store is None else store,
            batch_size=batch_size,
            max_delay=max_delay,
            idle_flush=idle_flush,
        )
        if isinstance(log_store, SqliteLogStore):
            path = log_store.path
        else:
            path = path.with_name("state.db")
        store_ = log_store
        try:
            name = origin if origin is not None else _recorded_origin(path) or DEFAULT_ORIGIN
            return cls(store_, NoteSigner(name, identity), state_path=path)
        except BaseException:
            store_.close()
            raise

    def _settle_origin(self, origin: str) -> str:
        """Record `origin` on first use; refuse a different one later."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM log_meta WHERE key = 'origin'").fetchone()
                if row is None:
                    recorded = origin
                    self._db.execute(
                        "INSERT INTO log_meta(key, value) VALUES ('origin', ?)", (recorded,)
                    )
                else:
                    recorded = str(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if origin != recorded:
            raise ConflictError(
                f"this log's origin is {recorded!r}; it cannot be reopened as {origin!r}"
            )
        return recorded

    # -- identity -------------------------------------------------------------------------------

    @property
    def verifier_key(self) -> str:
        """The log's verifier key in C2SP note vkey form: what clients pin to trust it."""
        return self.signer.vkey

    # -- entries --------------------------------------------------------------------------------

    def append(self, entry: bytes) -> int:
        """Log `entry` and return its index once committed (an existing index for a duplicate)."""
        return self.store.append(entry)

    def append_many(self, entries: Sequence[bytes]) -> list[int]:
        """Log `entries` atomically, in order; return their indices."""
        return self.store.append_many(entries)

    def size(self) -> int:
        """Number of entries committed."""
        return self.store.size()

    def entry(self, index: int) -> bytes:
        """The bytes of entry `index`."""
        return self.store.entry(index)

    def entries(self, start: int, count: int) -> list[bytes]:
        """Entries ``start .. start+count-1`` (for tlog-tiles entry bundles)."""
        return self.store.entries(start, count)

    def index_of(self, entry: bytes) -> int | None:
        """Where `entry` was logged, or None."""
        return self.store.index_of(entry)

    def leaf_hash(self, index: int) -> bytes:
        """The RFC 9162 leaf hash of entry `index`."""
        return self.store.leaf_hash(index)

    def hashes(self, level: int, start: int, count: int) -> list[bytes]:
        """Complete-subtree hashes at a tree level (for tlog-tiles hash tiles)."""
        return self.store.hashes(level, start, count)

    def root(self, size: int | None = None) -> bytes:
        """The RFC 9162 root of the first `size` entries (default all)."""
        return self.store.root(size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path of entry `index` in the tree of `size` entries (RFC 9162 §2.1.3.1)."""
        return self.store.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof between two tree sizes (RFC 9162 §2.1.4.1)."""
        return self.store.consistency_proof(size1, size2)

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note, signing a new one if the tree has grown.

        Checkpoints are signed on demand, at most one per tree size, and stored before they are
        returned, so every note handed out can be found again with `checkpoint_at`.
        """
        with self._lock:
            size = self.store.size()
            row = self._db.execute(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
            if row is not None and int(row[0]) >= size:
                return bytes(row[1])
            note = sign_checkpoint(
                Checkpoint(self.origin, size, self.store.root(size)), self.signer
            )
            # Another process may have signed this size meanwhile: keep the first note (it is
            # the same bytes anyway: Ed25519 signatures are deterministic).
            self._db.execute(
                "INSERT OR IGNORE INTO checkpoints(size, note) VALUES (?, ?)", (size, note)
            )
            stored = self._db.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
            return bytes(stored[0])

    def checkpoint_at(self, size: int) -> bytes:
        """The checkpoint note this log signed for tree `size`.

        Raises:
            NotFoundError: no checkpoint was signed for that size.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"size must be a non-negative integer, got {size!r}")
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no checkpoint was signed for tree size {size}")
        return bytes(row[0])

    def checkpoint_sizes(self) -> list[int]:
        """Tree sizes for which a checkpoint was signed, ascending."""
        with self._lock:
            return [
                int(r[0]) for r in self._db.execute("SELECT size FROM checkpoints ORDER BY size")
            ]

    def latest(self) -> Checkpoint:
        """The latest checkpoint, parsed (signing one if the tree has grown)."""
        return parse_checkpoint_body(parse_note(self.checkpoint()).text)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending appends and close the store and the state database; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.store.close()
        with self._lock:
            self._db.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(
    spec: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_delay: float = DEFAULT_MAX_DELAY,
    idle_flush: float | None = DEFAULT_IDLE_FLUSH,
) -> LogStore:
    """The `LogStore` that `spec` names: a ``postgresql://`` URL or a SQLite file path.

    Raises:
        InvalidInputError: an empty spec, a URL of another scheme, or a bad PostgreSQL URL.
        StoreError: the database cannot be reached or opened.
    """
    if not isinstance(spec, str) or not spec.strip() or "\x00" in spec:
        raise InvalidInputError("the log store must be a postgresql:// URL or a SQLite file path")
    if spec.startswith(("postgresql://", "postgres://")):
        try:
            from edgetrust.log.store_pg import PostgresLogStore
        except ImportError as exc:  # the `pg` extra is not installed
            raise InvalidInputError(
                "a postgresql:// store needs psycopg: pip install 'edgetrust[pg]'"
            ) from exc
        return PostgresLogStore(
            spec, batch_size=batch_size, max_delay=max_delay, idle_flush=idle_flush
        )
    if "://" in spec:
        scheme = spec.split("://", 1)[0]
        raise InvalidInputError(
            f"unknown log store scheme {scheme!r:.40}: use postgresql://… or a SQLite file path"
        )
    path = Path(spec)
    if path.is_dir():
        raise InvalidInputError(f"log store {spec!r:.80} is a directory, not a SQLite file")
    return SqliteLogStore(path, batch_size=batch_size, max_delay=max_delay, idle_flush=idle_flush)


def _recorded_origin(path: Path) -> str | None:
    """The origin stored in an existing log database, if any (read-only peek)."""
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
