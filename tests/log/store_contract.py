"""The behaviour every `LogStore` backend must have.

A backend's test module subclasses `LogStoreContract` and provides the `make_store` fixture (a
factory taking keyword options such as ``batch_size`` and ``max_delay``); every test here then
runs against it. See test_store_sqlite.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from edgetrust.errors import Error, InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.log.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from edgetrust.log.store import LogStore

MakeStore = Callable[..., LogStore]


def entry(i: int) -> bytes:
    return b'{"entry":%d}' % i


class LogStoreContract:
    """Inherit and provide a `make_store` fixture returning a fresh, empty store."""

    @pytest.fixture
    def make_store(self) -> MakeStore:
        raise NotImplementedError("a backend's test class must provide `make_store`")

    @pytest.fixture
    def store(self, make_store: MakeStore) -> LogStore:
        return make_store()

    def test_is_a_log_store(self, store: LogStore) -> None:
        assert isinstance(store, LogStore)

    def test_empty_store(self, store: LogStore) -> None:
        assert store.size() == 0
        assert store.root() == EMPTY_ROOT
        assert store.root(0) == EMPTY_ROOT
        assert store.index_of(b"nothing") is None
        assert store.consistency_proof(0, 0) == []
        assert store.entries(0, 0) == []
        assert store.hashes(0, 0, 0) == []
        with pytest.raises(NotFoundError):
            store.entry(0)
        with pytest.raises(NotFoundError):
            store.leaf_hash(0)
        with pytest.raises(NotFoundError):
            store.root(1)
        with pytest.raises(NotFoundError):
            store.inclusion_proof(0, 1)
        with pytest.raises(InvalidInputError):
            store.inclusion_proof(0, 0)
        with pytest.raises(NotFoundError):
            store.hashes(0, 0, 1)

    def test_appends_are_dense_and_read_back(self, store: LogStore) -> None:
        assert [store.append(entry(i)) for i in range(5)] == [0, 1, 2, 3, 4]
        assert store.append_many([entry(i) for i in range(5, 12)]) == list(range(5, 12))
        assert store.size() == 12
        for i in range(12):
            assert store.entry(i) == entry(i)
            assert store.leaf_hash(i) == leaf_hash(entry(i))
            assert store.index_of(entry(i)) == i
        assert store.entries(3, 4) == [entry(i) for i in range(3, 7)]
        assert store.append_many([]) == []
        assert store.size() == 12

    def test_empty_entry_is_a_valid_leaf(self, store: LogStore) -> None:
        assert store.append(b"") == 0
        assert store.entry(0) == b""
        assert store.root() == leaf_hash(b"")

    def test_duplicates_return_the_existing_index(self, store: LogStore) -> None:
        store.append_many([entry(i) for i in range(10)])
        assert store.append(entry(3)) == 3
        # Within one call, and mixed with new entries and earlier ones.
        got = store.append_many([entry(10), entry(2), entry(10), entry(11), entry(0), entry(11)])
        assert got == [10, 2, 10, 11, 0, 11]
        assert store.size() == 12
        assert store.index_of(entry(11)) == 11
        assert store.index_of(entry(99)) is None
        assert store.root() == root_from_leaves([leaf_hash(entry(i)) for i in range(12)])

    def test_roots_and_proofs_match_the_pure_functions(self, store: LogStore) -> None:
        n = 37
        store.append_many([entry(i) for i in range(n)])
        leaves = [leaf_hash(entry(i)) for i in range(n)]
        for size in range(n + 1):
            assert store.root(size) == root_from_leaves(leaves[:size]), size
        assert store.root() == store.root(n)
        for size in range(1, n + 1):
            root = root_from_leaves(leaves[:size])
            for i in range(size):
                proof = store.inclusion_proof(i, size)
                assert proof == inclusion_proof(i, leaves[:size]), (i, size)
                verify_inclusion(leaves[i], i, size, proof, root)
            for m in range(0, size + 1):
                proof = store.consistency_proof(m, size)
                assert proof == consistency_proof(m, leaves[:size]), (m, size)
                if m:
                    verify_consistency(m, size, proof, root_from_leaves(leaves[:m]), root)

    def test_many_inclusion_proofs_in_one_read(self, store: LogStore) -> None:
        leaves = [leaf_hash(entry(i)) for i in range(77)]
        store.append_many([entry(i) for i in range(77)])
        batched = getattr(store, "inclusion_proofs", None)
        if batched is None:
            pytest.skip("this backend has no batched inclusion proofs")
        for size in (1, 2, 33, 64, 77):
            indices = [0, size - 1, size // 2, size // 2, size // 3]
            expected = [inclusion_proof(i, leaves[:size]) for i in indices]
            assert batched(indices, size) == expected
        assert batched([], 77) == []
        with pytest.raises(InvalidInputError):
            batched([77], 77)
        with pytest.raises(InvalidInputError):
            batched([-1], 77)
        with pytest.raises(NotFoundError):
            batched([0], 78)

    def test_hashes_are_the_complete_subtrees(self, store: LogStore) -> None:
        n = 300
        store.append_many([entry(i) for i in range(n)])
        leaves = [leaf_hash(entry(i)) for i in range(n)]
        assert store.hashes(0, 0, n) == leaves
        for level in range(1, 9):
            width = 1 << level
            complete = n // width
            got = store.hashes(level, 0, complete)
            want = [root_from_leaves(leaves[j * width : (j + 1) * width]) for j in range(complete)]
            assert got == want, level
            assert store.hashes(level, complete, 0) == []
            with pytest.raises(NotFoundError):
                store.hashes(level, complete, 1)  # the right edge is not complete
        with pytest.raises(NotFoundError):
            store.hashes(9, 0, 1)
        with pytest.raises(NotFoundError):
            store.hashes(63, 0, 1)

    @pytest.mark.parametrize("bad", [-1, True, 1.0, "1", None])
    def test_invalid_arguments_raise_typed_errors(self, store: LogStore, bad: Any) -> None:
        store.append_many([entry(i) for i in range(4)])
        calls: list[Callable[[], object]] = [
            lambda: store.entry(bad),
            lambda: store.leaf_hash(bad),
            *([lambda: store.root(bad)] if bad is not None else []),  # None means "all"
            lambda: store.inclusion_proof(bad, 4),
            lambda: store.inclusion_proof(0, bad),
            lambda: store.consistency_proof(bad, 4),
            lambda: store.consistency_proof(1, bad),
            lambda: store.hashes(bad, 0, 1),
            lambda: store.hashes(0, bad, 1),
            lambda: store.hashes(0, 0, bad),
            lambda: store.entries(bad, 1),
            lambda: store.entries(0, bad),
        ]
        for call in calls:
            with pytest.raises(InvalidInputError):
                call()

    def test_sizes_beyond_the_tree(self, store: LogStore) -> None:
        store.append_many([entry(i) for i in range(4)])
        with pytest.raises(NotFoundError):
            store.entry(4)
        with pytest.raises(NotFoundError):
            store.root(5)
        with pytest.raises(NotFoundError):
            store.inclusion_proof(0, 5)
        with pytest.raises(InvalidInputError):
            store.inclusion_proof(4, 4)  # the index is not in the tree of that size
        with pytest.raises(NotFoundError):
            store.consistency_proof(1, 5)
        with pytest.raises(InvalidInputError):
            store.consistency_proof(4, 3)
        with pytest.raises(NotFoundError):
            store.entries(2, 3)
        with pytest.raises(InvalidInputError):
            store.entries(0, 10**9)  # over the read limit, whatever the size
        assert store.size() == 4  # nothing above changed the store

    @pytest.mark.parametrize("bad", ["text", 3, None, ["a"]])
    def test_bad_entries_are_refused_and_nothing_is_logged(self, store: LogStore, bad: Any) -> None:
        store.append(entry(0))
        with pytest.raises(InvalidInputError):
            store.append(bad)
        with pytest.raises(InvalidInputError):
            store.append_many([entry(1), bad])
        assert store.size() == 1

    def test_append_many_wants_a_sequence_not_one_entry(self, store: LogStore) -> None:
        with pytest.raises(InvalidInputError):
            store.append_many(b"abc")  # would otherwise log three one-byte ints
        assert store.size() == 0

    def test_oversized_entry_is_refused(self, make_store: MakeStore) -> None:
        store = make_store(max_entry_bytes=100)
        store.append(b"x" * 100)
        with pytest.raises(ResourceLimitError) as info:
            store.append(b"x" * 101)
        assert info.value.limit == 100
        with pytest.raises(ResourceLimitError):
            store.append_many([b"y", b"x" * 101])
        assert store.size() == 1

    def test_concurrent_appends_from_threads(self, make_store: MakeStore) -> None:
        store = make_store(batch_size=16, max_delay=0.005)
        results: dict[bytes, set[int]] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                for i in range(40):
                    # Every thread also submits the shared entries 0..9: duplicates racing.
                    data = entry(i % 10) if i % 4 == 0 else b"t%d-%d" % (t, i)
                    idx = store.append(data)
                    with lock:
                        results.setdefault(data, set()).add(idx)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert all(len(v) == 1 for v in results.values()), "a duplicate got two indices"
        assert store.size() == len(results)
        by_index = {next(iter(v)): k for k, v in results.items()}
        assert sorted(by_index) == list(range(len(results)))
        for idx, data in by_index.items():
            assert store.entry(idx) == data
        leaves = [leaf_hash(by_index[i]) for i in range(len(results))]
        assert store.root() == root_from_leaves(leaves)

    def test_concurrent_reads_during_appends(self, make_store: MakeStore) -> None:
        store = make_store(batch_size=8, max_delay=0.01)
        store.append_many([entry(i) for i in range(8)])
        stop = threading.Event()
        failures: list[BaseException] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    size = store.size()
                    root = store.root(size)
                    i = size // 2
                    verify_inclusion(
                        store.leaf_hash(i), i, size, store.inclusion_proof(i, size), root
                    )
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for th in readers:
            th.start()
        for i in range(8, 200, 8):
            store.append_many([entry(j) for j in range(i, i + 8)])
        stop.set()
        for th in readers:
            th.join()
        assert not failures

    def test_close_refuses_more_and_is_idempotent(self, make_store: MakeStore) -> None:
        store = make_store()
        store.append(entry(0))
        store.close()
        with pytest.raises(Error):
            store.append(entry(1))
        with pytest.raises(Error):
            store.size()
        store.close()
