"""Log: an embedded store, the home's log key, an origin, and signed checkpoints."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgetrust.log as log_pkg
from edgetrust.errors import ConflictError, InvalidInputError, NotFoundError
from edgetrust.identity import Keystore
from edgetrust.log import (
    DEFAULT_ORIGIN,
    EMPTY_ROOT,
    Log,
    leaf_hash,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from edgetrust.log.checkpoint import NoteSigner, parse_note


@pytest.fixture
def log(edgetrust_home: Path) -> Iterator[Log]:
    with Log.open(max_delay=0) as opened:
        yield opened


def test_open_lays_out_the_home(edgetrust_home: Path, log: Log) -> None:
    assert (edgetrust_home / "log" / "log.db").is_file()
    assert Keystore(edgetrust_home).exists("log")
    key = Keystore(edgetrust_home).load("log")
    assert log.verifier_key == NoteSigner(DEFAULT_ORIGIN, key).vkey
    assert log.origin == DEFAULT_ORIGIN
    assert log.verifier_key.startswith(DEFAULT_ORIGIN + "+")


def test_empty_log_checkpoint(log: Log) -> None:
    cp = verify_checkpoint(log.checkpoint(), log.verifier_key)
    assert (cp.origin, cp.size, cp.root) == (DEFAULT_ORIGIN, 0, EMPTY_ROOT)
    assert log.latest() == cp


def test_checkpoints_follow_the_tree_and_are_kept(log: Log) -> None:
    first = log.checkpoint()
    assert log.checkpoint() == first  # no growth, no new signature
    log.append_many([b"a", b"b", b"c"])
    second = log.checkpoint()
    assert second != first
    cp2 = verify_checkpoint(second, log.verifier_key, origin=DEFAULT_ORIGIN)
    assert (cp2.size, cp2.root) == (3, log.root(3))
    assert log.append(b"d") == 3
    third = log.checkpoint()
    cp3 = verify_checkpoint(third, log.verifier_key)
    assert log.checkpoint_sizes() == [0, 3, 4]
    assert log.checkpoint_at(3) == second
    assert log.checkpoint_at(0) == first
    with pytest.raises(NotFoundError):
        log.checkpoint_at(2)
    with pytest.raises(InvalidInputError):
        log.checkpoint_at(-1)
    # Proofs connect entries and checkpoints.
    proof = log.inclusion_proof(1, cp2.size)
    verify_inclusion(leaf_hash(log.entry(1)), 1, cp2.size, proof, cp2.root)
    verify_consistency(3, 4, log.consistency_proof(3, 4), cp2.root, cp3.root)


def test_reopen_keeps_origin_key_and_checkpoints(edgetrust_home: Path) -> None:
    with Log.open(origin="example.org/receipts", max_delay=0) as log:
        log.append(b"x")
        note = log.checkpoint()
        vkey = log.verifier_key
    with Log.open(max_delay=0) as log:
        assert log.origin == "example.org/receipts"
        assert log.verifier_key == vkey
        assert log.checkpoint() == note
        assert log.append(b"x") == 0
    with pytest.raises(ConflictError):
        Log.open(origin="another.org/log")
    with Log.open(origin="example.org/receipts") as log:
        assert log.size() == 1


def test_explicit_home(tmp_path: Path) -> None:
    with Log.open(tmp_path / "elsewhere", max_delay=0) as log:
        log.append(b"entry")
    assert (tmp_path / "elsewhere" / "log" / "log.db").is_file()


@pytest.mark.parametrize("origin", ["", "has space", "a+b", "line\nbreak"])
def test_bad_origins_are_refused(origin: str) -> None:
    with pytest.raises(InvalidInputError):
        Log.open(origin=origin)


def test_bad_store_options_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        Log.open(batch_size=0)


def test_entries_hashes_and_index(log: Log) -> None:
    data = [b"e%d" % i for i in range(10)]
    assert log.append_many(data) == list(range(10))
    assert log.entries(2, 3) == data[2:5]
    assert log.index_of(b"e7") == 7
    assert log.index_of(b"nope") is None
    assert log.hashes(0, 0, 10) == [leaf_hash(d) for d in data]
    assert log.leaf_hash(4) == leaf_hash(b"e4")
    assert len(log.hashes(1, 0, 5)) == 5
    assert log.size() == 10


def test_concurrent_appends_and_checkpoints_are_all_consistent(edgetrust_home: Path) -> None:
    notes: list[bytes] = []
    with Log.open(batch_size=8, max_delay=0.002) as log:

        def writer(t: int) -> None:
            for i in range(25):
                log.append(b"%d-%d" % (t, i))
                if i % 5 == 0:
                    notes.append(log.checkpoint())

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        final = verify_checkpoint(log.checkpoint(), log.verifier_key)
        assert final.size == 150
        seen: dict[int, bytes] = {}
        for note in notes:
            cp = verify_checkpoint(note, log.verifier_key)
            assert seen.setdefault(cp.size, cp.root) == cp.root  # one root per size
            if cp.size:
                proof = log.consistency_proof(cp.size, final.size)
                verify_consistency(cp.size, final.size, proof, cp.root, final.root)


def test_the_checkpoint_note_is_a_c2sp_note(log: Log) -> None:
    log.append(b"hello")
    note = parse_note(log.checkpoint())
    (sig,) = note.signatures
    assert sig.name == DEFAULT_ORIGIN
    lines = note.text.decode().splitlines()
    assert lines[0] == DEFAULT_ORIGIN
    assert lines[1] == "1"


def test_close_is_idempotent_and_final(edgetrust_home: Path) -> None:
    log = Log.open(max_delay=0)
    log.close()
    log.close()
    with pytest.raises(log_pkg.StoreError):
        log.append(b"late")


def test_package_exports_are_sorted() -> None:
    names = log_pkg.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in names:
        assert getattr(log_pkg, name) is not None
