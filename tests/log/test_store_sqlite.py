"""SqliteLogStore: the shared LogStore contract, plus durability, batching and crash safety."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgetrust.errors import InvalidInputError
from edgetrust.log import store as store_module
from edgetrust.log.merkle import (
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from edgetrust.log.store import SqliteLogStore, StoreError

from .store_contract import LogStoreContract, MakeStore, entry


class TestSqliteLogStore(LogStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        opened: list[SqliteLogStore] = []

        def make(**options: Any) -> SqliteLogStore:
            options.setdefault("max_delay", 0.0)
            s = SqliteLogStore(tmp_path / f"log{len(opened)}.db", **options)
            opened.append(s)
            return s

        yield make
        for s in opened:
            s.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log" / "log.db"


def _all_roots_consistent(store: SqliteLogStore, entries: list[bytes]) -> None:
    leaves = [leaf_hash(e) for e in entries]
    assert store.size() == len(entries)
    assert store.root() == root_from_leaves(leaves)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("batch_size", True),
        ("max_delay", -1),
        ("max_delay", float("nan")),
        ("max_delay", float("inf")),
        ("idle_flush", -0.1),
        ("idle_flush", "soon"),
        ("max_entry_bytes", 0),
        ("dedup_merge_every", 0),
    ],
)
def test_options_are_validated_and_named(db: Path, option: str, value: Any) -> None:
    with pytest.raises(InvalidInputError, match=f"`{option}`"):
        SqliteLogStore(db, **{option: value})


def test_reopen_keeps_entries_tree_and_dedup(db: Path) -> None:
    data = [entry(i) for i in range(50)]
    with SqliteLogStore(db, max_delay=0, dedup_merge_every=16) as s:
        s.append_many(data[:20])
        for d in data[20:]:
            s.append(d)
        root = s.root()
    with SqliteLogStore(db, max_delay=0, dedup_merge_every=16) as s:
        _all_roots_consistent(s, data)
        assert s.root() == root
        # Duplicates are found whether they were merged into the on-disk index or not.
        assert s.append_many(data[::-1]) == list(range(49, -1, -1))
        assert [s.index_of(d) for d in data] == list(range(50))
        assert s.append(entry(50)) == 50
        _all_roots_consistent(s, [*data, entry(50)])


def test_dedup_index_merges_in_bulk(db: Path) -> None:
    with SqliteLogStore(db, max_delay=0, dedup_merge_every=10) as s:
        s.append_many([entry(i) for i in range(25)])
        assert _dedup_state(db) == (25, 25)  # the batch that crossed 10 merged all 25
        s.append_many([entry(i) for i in range(25, 31)])
        assert _dedup_state(db) == (25, 25)  # 6 newer entries stay in memory
        s.append_many([entry(i) for i in range(31, 35)])
        assert _dedup_state(db) == (35, 35)


def _dedup_state(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        upto = conn.execute("SELECT value FROM meta WHERE key = 'dedup_upto'").fetchone()[0]
        merged = conn.execute("SELECT count(*) FROM dedup").fetchone()[0]
    finally:
        conn.close()
    return int(upto), int(merged)


def test_long_running_writer_uses_the_in_memory_prefilter(db: Path) -> None:
    with SqliteLogStore(db, max_delay=0, dedup_merge_every=16) as s:
        for i in range(0, 300, 3):  # 100 batches: the prefilter is built after 64
            s.append_many([entry(i), entry(i + 1), entry(i + 2)])
        assert s._prefilter is not None
        assert len(s._prefilter) == s._dedup_upto
        assert list(s._prefilter) == sorted(s._prefilter)
        # Old (merged) and new (tail) entries are both found, and new ones are still new.
        assert s.append_many([entry(0), entry(150), entry(299), entry(300)]) == [0, 150, 299, 300]
        assert s.append_many([entry(i) for i in range(301)]) == list(range(301))
        _all_roots_consistent(s, [entry(i) for i in range(301)])


def test_dedup_key_collisions_are_resolved_exactly(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every leaf gets the same 8-byte key: lookups must still compare full leaf hashes.
    monkeypatch.setattr(store_module, "_dedup_key", lambda leaf: 7)
    monkeypatch.setattr(
        store_module,
        "_dedup_key_array",
        lambda leaves: np.full(len(leaves), 7, dtype=np.int64),
    )
    data = [entry(i) for i in range(200)]
    with SqliteLogStore(db, max_delay=0, dedup_merge_every=8) as s:
        assert s.append_many(data[:30]) == list(range(30))
        assert s.append_many(data[:40]) == list(range(40))
        assert s.append_many(data[:40:3]) == list(range(0, 40, 3))
        for i in range(40, 200, 2):  # past the point where the prefilter is built
            assert s.append_many(data[i : i + 2]) == [i, i + 1]
        assert s._prefilter is not None
        assert s.append_many(data[::7]) == list(range(0, 200, 7))
        assert [s.index_of(d) for d in data] == list(range(200))
        assert s.index_of(b"absent") is None
        _all_roots_consistent(s, data)


def test_two_writers_on_one_file_stay_consistent(db: Path) -> None:
    # Two stores on one file stand for two processes: each batch re-reads the tree under the
    # SQLite write lock, so the right edge and the dedup tail follow the other writer.
    a = SqliteLogStore(db, max_delay=0, dedup_merge_every=5)
    b = SqliteLogStore(db, max_delay=0, dedup_merge_every=5)
    try:
        order: list[bytes] = []
        for i in range(0, 40, 4):
            first, second = (a, b) if i % 8 else (b, a)
            batch1, batch2 = [entry(i), entry(i + 1)], [entry(i + 2), entry(i + 3)]
            assert first.append_many(batch1) == [len(order), len(order) + 1]
            order += batch1
            assert second.append_many(batch2) == [len(order), len(order) + 1]
            order += batch2
            assert second.append(batch1[0]) == len(order) - 4  # the other writer's entry
        _all_roots_consistent(a, order)
        _all_roots_consistent(b, order)
    finally:
        a.close()
        b.close()


def test_appends_are_batched(db: Path) -> None:
    with SqliteLogStore(db, batch_size=20, max_delay=30.0, idle_flush=None) as s:
        threads = [threading.Thread(target=s.append, args=(entry(i),)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # A full batch commits at once, without waiting for max_delay.
        assert s.size() == 20
        assert s.batches_committed == 1
    with SqliteLogStore(db.with_name("naive.db"), batch_size=1, max_delay=0) as s:
        for i in range(5):
            s.append(entry(i))
        assert s.batches_committed == 5


def test_a_lone_append_does_not_wait_for_max_delay(db: Path) -> None:
    with SqliteLogStore(db, batch_size=256, max_delay=600.0) as s:
        done = threading.Event()
        t = threading.Thread(target=lambda: (s.append(entry(0)), done.set()))
        t.start()
        # Liveness, not speed: with pure size/age batching this would block for 10 minutes.
        assert done.wait(timeout=60)
        t.join()
        assert s.batches_committed == 1


def test_large_append_many_is_one_transaction(db: Path) -> None:
    with SqliteLogStore(db, batch_size=4, max_delay=0) as s:
        assert s.append_many([entry(i) for i in range(100)]) == list(range(100))
        assert s.batches_committed == 1


def test_close_flushes_a_waiting_batch(db: Path) -> None:
    s = SqliteLogStore(db, batch_size=1000, max_delay=60.0, idle_flush=None)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(s.append(entry(0))))
    t.start()
    while not s._pending:  # the append is queued, waiting for a fuller batch
        time.sleep(0.001)
    s.close()
    t.join()
    assert got == [0]
    with SqliteLogStore(db) as again:
        assert again.entry(0) == entry(0)


def test_a_failed_batch_logs_nothing_and_the_store_goes_on(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteLogStore(db, max_delay=0) as s:
        s.append_many([entry(i) for i in range(3)])
        real = s._insert

        def failing(*args: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(s, "_insert", failing)
        with pytest.raises(StoreError, match="nothing was logged"):
            s.append_many([entry(3), entry(4)])
        monkeypatch.setattr(s, "_insert", real)
        assert s.size() == 3
        assert s.append(entry(4)) == 3
        _all_roots_consistent(s, [entry(0), entry(1), entry(2), entry(4)])


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "not.db"
    bogus.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(StoreError):
        SqliteLogStore(bogus)


_CRASH_CHILD = textwrap.dedent(
    """
    import sys, threading
    from edgetrust.log.store import SqliteLogStore

    store = SqliteLogStore(sys.argv[1], batch_size=64, max_delay=0.002, dedup_merge_every=700)
    out = threading.Lock()

    def say(line):
        with out:
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()

    def single(t):
        i = 0
        while True:
            data = b"single-%d-%d" % (t, i)
            say(f"A {store.append(data)} {data.hex()}")
            if t == 0 and i % 40 == 0:
                size = store.size()
                say(f"R {size} {store.root(size).hex()}")
            i += 1

    def many():
        i = 0
        while True:
            data = [b"many-%d" % (i + j) for j in range(50)]
            data.append(b"single-0-0")  # a duplicate racing the singles
            for idx, d in zip(store.append_many(data), data):
                say(f"A {idx} {d.hex()}")
            i += 50

    for t in range(4):
        threading.Thread(target=single, args=(t,), daemon=True).start()
    threading.Thread(target=many, daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize("acks_before_kill", [300, 1500, 4000])
def test_sigkill_mid_stream_loses_no_acknowledged_entry(db: Path, acks_before_kill: int) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: dict[int, bytes] = {}
    roots: list[tuple[int, bytes]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            kind, a, b = line.split()
            if kind == "A":
                idx, data = int(a), bytes.fromhex(b)
                assert acked.setdefault(idx, data) == data, "one index acknowledged twice"
            else:
                roots.append((int(a), bytes.fromhex(b)))
            # (and after a root: under load the child may ack hundreds before its first)
            if len(acked) >= acks_before_kill and roots:
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream: batches are in flight
                break
        # Everything the child printed before dying was acknowledged: read it all.
        for line in proc.stdout:
            kind, a, b = line.split()
            if kind == "A":
                acked[int(a)] = bytes.fromhex(b)
            else:
                roots.append((int(a), bytes.fromhex(b)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, err
    assert roots, "the child reported no roots before it was killed"

    with SqliteLogStore(db, max_delay=0) as s:
        size = s.size()
        assert size >= max(acked) + 1
        for idx, data in acked.items():
            assert s.entry(idx) == data, idx
        # Entries are unique: the racing duplicate kept its first index.
        dup = s.index_of(b"single-0-0")
        assert dup is not None
        assert s.entry(dup) == b"single-0-0"
        all_entries = s.entries(0, size) if size <= 65536 else []
        assert len(set(all_entries)) == size
        assert s.root() == root_from_leaves([leaf_hash(e) for e in all_entries])
        # The tree after the crash extends every tree whose root was handed out before it.
        for old_size, old_root in roots:
            assert s.root(old_size) == old_root
            if old_size:
                verify_consistency(
                    old_size, size, s.consistency_proof(old_size, size), old_root, s.root()
                )
        # And the log carries on, remembering what it had.
        some_idx, some_data = next(iter(acked.items()))
        assert s.append(some_data) == some_idx
        assert s.append(b"after the crash") == size


class StoreMachine(RuleBasedStateMachine):
    """Random appends, duplicates and reopenings against a plain list as the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-machine-"))
        self.saved_after = store_module._PREFILTER_AFTER_BATCHES
        store_module._PREFILTER_AFTER_BATCHES = 3  # exercise the prefilter in short runs
        self.store = self._open()
        self.model: list[bytes] = []

    def _open(self) -> SqliteLogStore:
        return SqliteLogStore(self.dir / "log.db", max_delay=0, dedup_merge_every=5)

    def _expect(self, data: list[bytes]) -> list[int]:
        out = []
        for d in data:
            if d not in self.model:
                self.model.append(d)
            out.append(self.model.index(d))
        return out

    @rule(value=st.integers(0, 60))
    def append(self, value: int) -> None:
        data = entry(value)
        want = self._expect([data])
        assert self.store.append(data) == want[0]

    @rule(values=st.lists(st.integers(0, 60), max_size=12))
    def append_many(self, values: list[int]) -> None:
        data = [entry(v) for v in values]
        want = self._expect(data)
        assert self.store.append_many(data) == want

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @rule(value=st.integers(0, 60))
    def index_of(self, value: int) -> None:
        data = entry(value)
        want = self.model.index(data) if data in self.model else None
        assert self.store.index_of(data) == want

    @invariant()
    def tree_matches_the_model(self) -> None:
        n = len(self.model)
        assert self.store.size() == n
        leaves = [leaf_hash(d) for d in self.model]
        assert self.store.root() == root_from_leaves(leaves)
        if n:
            i = n // 2
            proof = self.store.inclusion_proof(i, n)
            verify_inclusion(leaves[i], i, n, proof, self.store.root())

    def teardown(self) -> None:
        self.store.close()
        store_module._PREFILTER_AFTER_BATCHES = self.saved_after
        shutil.rmtree(self.dir, ignore_errors=True)


TestStoreMachine = pytest.mark.slow(StoreMachine.TestCase)
TestStoreMachine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
