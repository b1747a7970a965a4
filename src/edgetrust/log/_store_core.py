"""What every `LogStore` backend shares: validation, the batching sequencer, the tree maths.

A backend subclasses `SequencedStore` and supplies the database side: committing a batch
(`_write`), and four reads (`_read_size`, `_read_rows`, `_read_range`, `_read_one`). The
sequencer thread, group commit, entry checks and every root, proof and tile read are here,
computed from stored complete-subtree hashes the same way for SQLite and PostgreSQL.

Where the tree lives. Appending leaf i completes the subtrees whose last leaf is i: one per
trailing 1-bit of i (levels 1..t). Their hashes are stored in leaf i's own row, in level
order, so the node at (level L >= 1, index j) is bytes 32(L-1)..32L of `nodes` in row
(j+1)·2^L - 1. Every complete subtree hash is stored exactly once, an append writes one row
(not one row per node: measured on SQLite, that second table cost ~15% of the append rate),
and any set of nodes is one ``idx IN (...)`` query on the primary key.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

from edgetrust.errors import Error, InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.log.merkle import (
    EMPTY_ROOT,
    complete_subtrees,
    consistency_proof_ranges,
    fold_subtrees,
    inclusion_proof_ranges,
)

DEFAULT_BATCH_SIZE = 256
"""Entries per batch, Tessera's default."""

DEFAULT_MAX_DELAY = 0.25
"""Seconds the first entry of a batch may wait for more, Tessera's default."""

DEFAULT_IDLE_FLUSH = 0.0
"""Seconds without a new entry after which a partial batch is committed anyway (0: at once)."""

DEFAULT_MAX_ENTRY_BYTES = 16 * 2**20
"""Largest entry accepted (16 MiB, the size limit of a DSSE envelope)."""

MAX_READ_COUNT = 1 << 16
"""Most entries or hashes one range read returns; a tile is 256."""

MAX_LEVEL = 62
"""No tree here reaches 2^62 leaves; levels above are refused as out of range."""

Row = tuple[int, bytes, bytes, bytes]
"""An entry row as written: ``(idx, leaf hash, closed-subtree hashes, data)``."""

ReadRows = Callable[[Sequence[int]], dict[int, tuple[bytes, bytes]]]
"""Reads ``idx -> (leaf, nodes)`` for the entry rows asked for (those that exist)."""


class StoreError(Error):
    """The store cannot serve the request: it is closed, or its database failed or is damaged."""


def node_row(level: int, index: int) -> int:
    """The entry row that stores the node at (`level` >= 1, `index`)."""
    return ((index + 1) << level) - 1


def pick_node(level: int, leaf: bytes, nodes: bytes) -> bytes | None:
    """The node at `level` from an entry row's leaf hash and closed-subtree hashes."""
    if level == 0:
        return leaf
    h = nodes[32 * (level - 1) : 32 * level]
    return h if len(h) == 32 else None


def frontier_coords(size: int) -> list[tuple[int, int]]:
    """The right edge of a tree of `size`: the pending left node at each set bit's level."""
    return [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]


def build_frontier(size: int, found: dict[tuple[int, int], bytes]) -> list[bytes]:
    """The sequencer's right-edge list (index = level) from `frontier_coords` hashes."""
    frontier: list[bytes] = [b""] * size.bit_length()
    for level, index in frontier_coords(size):
        frontier[level] = found[(level, index)]
    return frontier


def extend_tree(
    size: int,
    frontier: list[bytes],
    entries: list[bytes],
    leaves: list[bytes],
    known: dict[bytes, int],
) -> tuple[list[int], int, list[bytes], list[Row]]:
    """Sequence `entries` after a tree of `size`: their indices, the new size, right edge, rows.

    `known` maps leaf hashes already logged to their index (duplicates get it back); a
    duplicate inside `entries` gets its first occurrence's index. Pure: nothing is written.
    """
    frontier = list(frontier)
    seen = dict(known)
    indices: list[int] = []
    rows: list[Row] = []
    # Bound locals and inlined node_hash: this loop runs once per entry.
    sha = hashlib.sha256
    add_index, add_row, get = indices.append, rows.append, seen.get
    for data, h in zip(entries, leaves, strict=True):
        idx = get(h)
        if idx is None:
            idx = size
            seen[h] = idx
            # Append to the compact range: every trailing 1-bit of the index closes a
            # subtree with the pending left node at that level (RFC 9162's tree is this
            # carry chain); the closed subtrees' hashes go in this leaf's row.
            node, level, i = h, 0, idx
            closed = b""
            while i & 1:
                node = sha(b"\x01" + frontier[level] + node).digest()
                closed += node
                i >>= 1
                level += 1
            if level == len(frontier):
                frontier.append(node)
            else:
                frontier[level] = node
            add_row((idx, h, closed, data))
            size += 1
        add_index(idx)
    return indices, size, frontier, rows


def leaf_hashes(entries: list[bytes]) -> list[bytes]:
    """RFC 9162 leaf hashes of `entries` (`merkle.leaf_hash`, inlined for the hot loop)."""
    sha = hashlib.sha256
    return [sha(b"\x00" + e).digest() for e in entries]


def check_count(name: str, value: object) -> int:
    """`value` as a non-negative int, or `InvalidInputError` naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(f"{name} must not be negative, got {value}")
    return value


def check_positive_int(name: str, value: object) -> None:
    """Refuse anything but a positive int for the option `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"`{name}` must be a positive integer, got {value!r}")


def check_seconds(name: str, value: object) -> None:
    """Refuse anything but a finite, non-negative number of seconds for the option `name`."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInputError(f"`{name}` must be a finite number of seconds >= 0, got {value!r}")


@dataclass
class _Request:
    entries: list[bytes]
    future: Future[list[int]] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class SequencedStore:
    """Base of the `LogStore` backends: a background sequencer over a database.

    Batching: a batch is committed when it holds `batch_size` entries, when its oldest entry
    has waited `max_delay` seconds (Tessera's rule), or when no new entry has arrived for
    `idle_flush` seconds (0: as soon as the sequencer is free, i.e. group commit). An append
    returns only after its batch has committed. See `SqliteLogStore` for the measurements.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_delay: float,
        idle_flush: float | None,
        max_entry_bytes: int,
    ) -> None:
        check_positive_int("batch_size", batch_size)
        check_seconds("max_delay", max_delay)
        if idle_flush is not None:
            check_seconds("idle_flush", idle_flush)
        check_positive_int("max_entry_bytes", max_entry_bytes)
        self.batch_size = batch_size
        self.max_delay = float(max_delay)
        self.idle_flush = None if idle_flush is None else float(idle_flush)
        self.max_entry_bytes = max_entry_bytes
        self._closed = False
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._pending_count = 0
        self._last_arrival = 0.0
        self._closing = False
        self.batches_committed = 0
        """Transactions the sequencer has run (a statistic: entries / batches = batching)."""
        self._known_size = 0
        # A lower bound of the committed size (the tree only grows): a size at or below it
        # needs no query to check, which saves the proof and root reads of a just-committed
        # batch two round trips to PostgreSQL. Racing updates can only leave it lower.
        self._sequencer: threading.Thread | None = None

    def _start_sequencer(self, name: str) -> None:
        self._sequencer = threading.Thread(target=self._run, name=name, daemon=True)
        self._sequencer.start()

    # -- what a backend provides -----------------------------------------------------------

    def _write(self, entries: list[bytes]) -> list[int]:
        """Commit `entries` as one transaction (de-duplicated) and return their indices."""
        raise NotImplementedError

    def _read_size(self) -> int:
        """Committed entries, read from the database (other writers count)."""
        raise NotImplementedError

    def _read_rows(self, indices: Sequence[int]) -> dict[int, tuple[bytes, bytes]]:
        """``idx -> (leaf, nodes)`` for those of `indices` that exist."""
        raise NotImplementedError

    def _read_range(self, column: Literal["data", "leaf"], start: int, stop: int) -> list[bytes]:
        """`column` of rows ``start <= idx < stop``, in order (only those that exist)."""
        raise NotImplementedError

    def _read_one(self, column: Literal["data", "leaf"], index: int) -> bytes | None:
        """`column` of row `index`, or None."""
        raise NotImplementedError

    def _release(self) -> None:
        """Close the backend's connections (the sequencer has stopped)."""
        raise NotImplementedError

    # -- writes ----------------------------------------------------------------------------

    def _check_entry(self, entry: object) -> bytes:
        if not isinstance(entry, bytes | bytearray | memoryview):
            raise InvalidInputError(f"a log entry must be bytes, got {type(entry).__name__}")
        data = bytes(entry)
        if len(data) > self.max_entry_bytes:
            raise ResourceLimitError(
                f"log entry is {len(data)} bytes, over the {self.max_entry_bytes}-byte limit",
                limit=self.max_entry_bytes,
            )
        return data

    def append(self, entry: bytes) -> int:
        """Append one entry; block until its batch commits; return its (or its twin's) index."""
        return self._submit([self._check_entry(entry)])[0]

    def append_many(self, entries: Sequence[bytes]) -> list[int]:
        """Append `entries` in order, all in one transaction: all are logged or none is.

        Duplicates (of logged entries or within `entries`) get the existing index.
        """
        if isinstance(entries, bytes | bytearray | memoryview | str):
            raise InvalidInputError("append_many takes a sequence of entries, not one entry")
        checked = [self._check_entry(e) for e in entries]
        if not checked:
            return []
        return self._submit(checked)

    def _submit(self, entries: list[bytes]) -> list[int]:
        request = _Request(entries)
        with self._cond:
            if self._closing:
                raise StoreError("the log store is closed")
            self._pending.append(request)
            self._pending_count += len(entries)
            self._last_arrival = request.arrived
            self._cond.notify_all()
        return request.future.result()

    def _run(self) -> None:
        """The sequencer: gather a batch, commit it, acknowledge it; until closed and drained."""
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return  # closing and drained
                deadline = self._pending[0].arrived + self.max_delay
                while self._pending_count < self.batch_size and not self._closing:
                    now = time.monotonic()
                    remaining = deadline - now
                    if self.idle_flush is not None:
                        remaining = min(remaining, self._last_arrival + self.idle_flush - now)
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = [self._pending.popleft()]
                taken = len(batch[0].entries)
                while self._pending and taken + len(self._pending[0].entries) <= self.batch_size:
                    request = self._pending.popleft()
                    batch.append(request)
                    taken += len(request.entries)
                self._pending_count -= taken
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Request]) -> None:
        entries = [e for r in batch for e in r.entries]
        try:
            indices = self._write(entries)
        except BaseException as exc:  # every waiter must hear about a failed batch
            error = (
                exc
                if isinstance(exc, Error)
                else StoreError(f"log store write failed, nothing was logged: {exc}")
            )
            for r in batch:
                r.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches_committed += 1
        if indices:
            self._known_size = max(self._known_size, max(indices) + 1)
        pos = 0
        for r in batch:
            r.future.set_result(indices[pos : pos + len(r.entries)])
            pos += len(r.entries)

    # -- reads -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the log store is closed")

    def size(self) -> int:
        """Number of committed entries (read from the database, so other writers count)."""
        self._check_open()
        size = self._read_size()
        self._known_size = max(self._known_size, size)
        return size

    def entry(self, index: int) -> bytes:
        """The bytes of entry `index`."""
        index = check_count("index", index)
        self._check_open()
        data = self._read_one("data", index)
        if data is None:
            raise NotFoundError(f"no entry {index}: the log has {self.size()} entries")
        return data

    def entries(self, start: int, count: int) -> list[bytes]:
        """Entries ``start .. start+count-1``, all of which must exist."""
        start, count = self._check_range(start, count)
        if count and start + count > self.size():
            raise NotFoundError(
                f"entries {start}..{start + count - 1} are beyond the log's {self.size()}"
            )
        self._check_open()
        return self._read_range("data", start, start + count)

    def leaf_hash(self, index: int) -> bytes:
        """The RFC 9162 leaf hash of entry `index`."""
        index = check_count("index", index)
        self._check_open()
        leaf = self._read_one("leaf", index)
        if leaf is None:
            raise NotFoundError(f"no entry {index}: the log has {self.size()} entries")
        return leaf

    def _check_size(self, size: object) -> int:
        size = check_count("size", size)
        if size <= self._known_size:
            self._check_open()
            return size
        current = self.size()
        if size > current:
            raise NotFoundError(f"tree size {size} is beyond the log's {current} entries")
        return size

    @staticmethod
    def _check_range(start: object, count: object) -> tuple[int, int]:
        start = check_count("start", start)
        count = check_count("count", count)
        if count > MAX_READ_COUNT:
            raise InvalidInputError(f"count {count} is over the {MAX_READ_COUNT} read limit")
        return start, count

    def _subtree_hashes(self, coords: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Fetch complete-subtree hashes by (level, index), in one query."""
        self._check_open()
        return pick_nodes(coords, self._read_rows)

    def _range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        parts = [complete_subtrees(a, b) for a, b in ranges]
        found = self._subtree_hashes([c for p in parts for c in p])
        return [fold_subtrees([found[c] for c in p]) for p in parts]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` entries (RFC 9162 §2.1.1); default the whole log."""
        size = self.size() if size is None else self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._range_hashes([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) from stored hashes (RFC 9162 §2.1.3.1)."""
        index = check_count("index", index)
        size = self._check_size(size)
        if index >= size:
            raise InvalidInputError(f"leaf index {index} is not in a tree of size {size}")
        return self._range_hashes(inclusion_proof_ranges(index, size))

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """`inclusion_proof` of each of `indices` in the tree of `size`, in one read.

        The proofs of a group of entries share most of their nodes: every complete subtree
        they need is fetched in one query (one round trip to PostgreSQL, instead of a couple
        per proof), then each proof is folded from them.
        """
        size = self._check_size(size)
        checked = [check_count("index", i) for i in indices]
        for i in checked:
            if i >= size:
                raise InvalidInputError(f"leaf index {i} is not in a tree of size {size}")
        ranges = [inclusion_proof_ranges(i, size) for i in checked]
        distinct = list({rng for proof in ranges for rng in proof})
        folded = dict(zip(distinct, self._range_hashes(distinct), strict=True))
        return [[folded[rng] for rng in proof] for proof in ranges]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """PROOF(size1, D[size2]) from stored hashes (RFC 9162 §2.1.4.1); empty if size1 is 0."""
        size1 = check_count("size1", size1)
        size2 = self._check_size(size2)
        if size1 > size2:
            raise InvalidInputError(f"size1 ({size1}) is larger than size2 ({size2})")
        return self._range_hashes(consistency_proof_ranges(size1, size2))

    def hashes(self, level: int, start: int, count: int) -> list[bytes]:
        """Stored complete-subtree hashes at `level` for node indices start..start+count-1."""
        level = check_count("level", level)
        start, count = self._check_range(start, count)
        if level > MAX_LEVEL:
            raise NotFoundError(f"level {level} is above any tree this store can hold")
        size = self.size()
        if (start + count) << level > size:
            raise NotFoundError(
                f"nodes {start}..{start + count - 1} at level {level} are not complete in a "
                f"tree of size {size}"
            )
        if count == 0:
            return []
        if level == 0:
            leaves = self._read_range("leaf", start, start + count)
            if len(leaves) != count:
                raise StoreError("log store is damaged: entries are missing")
            return leaves
        found = self._subtree_hashes([(level, j) for j in range(start, start + count)])
        return [found[(level, j)] for j in range(start, start + count)]

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Commit pending appends, stop the sequencer and close every connection; idempotent."""
        with self._cond:
            already = self._closing
            self._closing = True
            self._cond.notify_all()
        if self._sequencer is not None:
            self._sequencer.join()
        if already:
            return
        self._closed = True
        self._release()


def pick_nodes(
    coords: Sequence[tuple[int, int]],
    read_rows: ReadRows,
) -> dict[tuple[int, int], bytes]:
    """Complete-subtree hashes by (level, index), from the entry rows that store them."""
    want = {c: (c[1] if c[0] == 0 else node_row(*c)) for c in set(coords)}
    rows = read_rows(sorted(set(want.values())))
    found: dict[tuple[int, int], bytes] = {}
    for coord, row_idx in want.items():
        row = rows.get(row_idx)
        h = None if row is None else pick_node(coord[0], *row)
        if h is None:
            raise StoreError(f"log store is damaged: node {coord} is missing")
        found[coord] = h
    return found
