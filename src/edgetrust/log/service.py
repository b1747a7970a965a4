"""The log as a service: a store, a signing key and an origin, handing out signed checkpoints.

`Log` is what the CLI, the node and the receipt bundles use. It appends entries to its store,
signs a C2SP checkpoint whenever the tree has grown since the last one (so every checkpoint it
hands out is for a committed tree, and two are never signed for one size), keeps every
checkpoint it signed, and serves inclusion and consistency proofs against them.
"""

from __future__ import annotations

import os
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
from edgetrust.log.state import CheckpointState, SqliteCheckpointState, recorded_sqlite_origin
from edgetrust.log.store import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_FLUSH,
    DEFAULT_MAX_DELAY,
    LogStore,
    SqliteLogStore,
)

__all__ = ["DEFAULT_ORIGIN", "LOG_KEY_NAME", "Log", "open_store"]

DEFAULT_ORIGIN = "edgetrust.local/log"
"""Origin of a log opened without one; C2SP recommends a schema-less URL naming the log."""

LOG_KEY_NAME = "log"
"""Name of the log's signing key in the keystore."""


class Log:
    """An append-only transparency log with signed C2SP checkpoints.

    Use `Log.open` for the embedded log in an edgetrust home. The constructor takes the parts,
    so another `LogStore` backend needs no change here. The signer's key name is the log's
    origin. Where the origin and the signed checkpoints are kept: `state` (a `CheckpointState`,
    e.g. `PostgresLogStore.checkpoint_state()`, which the log then owns), or the SQLite file
    `state_path` (for the embedded log: the store's own file).

    Raises:
        ConflictError: the state records another origin than the signer's name.
        InvalidInputError: neither or both of `state` and `state_path`.
    """

    def __init__(
        self,
        store: LogStore,
        signer: NoteSigner,
        *,
        state_path: str | os.PathLike[str] | None = None,
        state: CheckpointState | None = None,
    ) -> None:
        if (state is None) == (state_path is None):
            raise InvalidInputError("give a Log exactly one of `state` and `state_path`")
        self.store = store
        """Where entries and tree hashes live."""
        self._lock = threading.Lock()
        if state is None:
            assert state_path is not None  # checked above
            state = SqliteCheckpointState(state_path)
        self._state: CheckpointState = state
        try:
            self.origin = self._settle_origin(signer.name)
            """The log's identity: the first line of its checkpoints and its key name."""
        except BaseException:
            self._state.close()
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
        ``postgresql://`` URL. With PostgreSQL the origin and the signed checkpoints live in the
        same database as the entries, so every node sharing it hands out the same checkpoints
        (a ``<home>/log/state.db`` left by an earlier version is carried over once).

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
        try:
            if isinstance(log_store, SqliteLogStore):
                name = (
                    origin
                    if origin is not None
                    else recorded_sqlite_origin(log_store.path) or DEFAULT_ORIGIN
                )
                return cls(log_store, NoteSigner(name, identity), state_path=log_store.path)
            state = _shared_state(log_store, path.with_name("state.db"))
            try:
                name = origin if origin is not None else state.recorded_origin() or DEFAULT_ORIGIN
                return cls(log_store, NoteSigner(name, identity), state=state)
            except BaseException:
                state.close()
                raise
        except BaseException:
            log_store.close()
            raise

    def _settle_origin(self, origin: str) -> str:
        """Record `origin` on first use; refuse a different one later."""
        recorded = self._state.settle_origin(origin)
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

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """Audit paths of many entries in the tree of `size` (one store read when it can)."""
        batched = getattr(self.store, "inclusion_proofs", None)
        if batched is not None:
            proofs: list[list[bytes]] = batched(indices, size)
            return proofs
        return [self.store.inclusion_proof(i, size) for i in indices]

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
            latest = self._state.latest()
            if latest is not None and latest[0] >= size:
                # Another node of a shared log may have signed a larger one: hand that out.
                return latest[1]
            note = sign_checkpoint(
                Checkpoint(self.origin, size, self.store.root(size)), self.signer
            )
            return self._state.add(size, note)

    def checkpoint_at(self, size: int) -> bytes:
        """The checkpoint note this log signed for tree `size`.

        Raises:
            NotFoundError: no checkpoint was signed for that size.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"size must be a non-negative integer, got {size!r}")
        note = self._state.note_at(size)
        if note is None:
            raise NotFoundError(f"no checkpoint was signed for tree size {size}")
        return note

    def checkpoint_sizes(self) -> list[int]:
        """Tree sizes for which a checkpoint was signed, ascending."""
        return self._state.sizes()

    def latest(self) -> Checkpoint:
        """The latest checkpoint, parsed (signing one if the tree has grown)."""
        return parse_checkpoint_body(parse_note(self.checkpoint()).text)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending appends and close the store and the state database; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.store.close()
        finally:
            self._state.close()

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


def _shared_state(store: LogStore, legacy: Path) -> CheckpointState:
    """The checkpoint state of a non-SQLite store, with a legacy ``state.db`` carried over."""
    make = getattr(store, "checkpoint_state", None)
    if make is None:
        raise InvalidInputError(f"{type(store).__name__} keeps no checkpoint state")
    state: CheckpointState = make()
    try:
        if legacy.exists():
            # An earlier version kept a PostgreSQL log's checkpoints in <home>/log/state.db.
            old = SqliteCheckpointState(legacy)
            try:
                recorded = recorded_sqlite_origin(legacy)
                if recorded is not None:
                    state.settle_origin(recorded)
                size_now = store.size()
                for size, note in old.all_notes():
                    # Only notes of this very tree (a home reused with another database's
                    # state.db must not poison this one).
                    body = parse_checkpoint_body(parse_note(note).text)
                    if size <= size_now and body.root == store.root(size):
                        state.add(size, note)
            finally:
                old.close()
            legacy.rename(legacy.with_name("state.db.imported"))
    except BaseException:
        state.close()
        raise
    return state
