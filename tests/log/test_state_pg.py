"""A PostgreSQL log's origin and checkpoints live in its database, shared by every node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgetrust.errors import ConflictError, InvalidInputError, NotFoundError
from edgetrust.log import Log, verify_checkpoint, verify_consistency
from edgetrust.log.state import CheckpointState, SqliteCheckpointState
from edgetrust.log.store_pg import PostgresLogStore


def _homes(tmp_path: Path) -> tuple[Path, Path]:
    """Two homes holding the same log key, as two machines of one cluster would."""
    a, b = tmp_path / "a", tmp_path / "b"
    with Log.open(a):  # creates a/keys/log
        pass
    b.mkdir()
    shutil.copytree(a / "keys", b / "keys")
    return a, b


def test_two_nodes_with_separate_homes_hand_out_the_same_checkpoints(
    tmp_path: Path, pg_url: str
) -> None:
    home_a, home_b = _homes(tmp_path)
    with (
        Log.open(home_a, store=pg_url, origin="example.org/log", max_delay=0) as a,
        Log.open(home_b, store=pg_url, max_delay=0) as b,
    ):
        assert b.origin == "example.org/log"  # recorded in the database, not in a's home
        assert a.verifier_key == b.verifier_key
        assert not (home_a / "log" / "state.db").exists()
        a.append_many([b"x%d" % i for i in range(10)])
        first = a.checkpoint()
        assert b.checkpoint() == first  # b signs nothing new: a's note is the latest
        b.append_many([b"y%d" % i for i in range(5)])
        second = b.checkpoint()
        # a sees b's checkpoint, and can serve b's old ones too.
        assert a.checkpoint_sizes() == b.checkpoint_sizes() == [10, 15]
        assert a.checkpoint_at(15) == second
        cp1, cp2 = (verify_checkpoint(n, a.verifier_key) for n in (first, second))
        verify_consistency(10, 15, a.consistency_proof(10, 15), cp1.root, cp2.root)
        with pytest.raises(NotFoundError):
            a.checkpoint_at(12)
    with pytest.raises(ConflictError):
        Log.open(home_b, store=pg_url, origin="another.example/log")


def test_a_larger_checkpoint_signed_elsewhere_is_never_undercut(
    tmp_path: Path, pg_url: str
) -> None:
    # Node a read the tree size before node b appended and signed: a must not hand out an
    # older checkpoint than b already did.
    home_a, home_b = _homes(tmp_path)
    with Log.open(home_a, store=pg_url) as a, Log.open(home_b, store=pg_url) as b:
        a.append(b"one")
        assert verify_checkpoint(a.checkpoint(), a.verifier_key).size == 1
        b.append(b"two")
        note = b.checkpoint()
        assert a.checkpoint() == note
        assert a.latest().size == 2


def test_the_state_follows_the_protocol(pg_url: str, tmp_path: Path) -> None:
    with PostgresLogStore(pg_url) as store:
        state = store.checkpoint_state()
        assert isinstance(state, CheckpointState)
        assert state.latest() is None and state.recorded_origin() is None
        assert state.settle_origin("o/1") == "o/1"
        assert state.settle_origin("o/2") == "o/1"
        assert state.add(3, b"note-3") == b"note-3"
        assert state.add(3, b"other") == b"note-3"  # the first note stays
        assert state.latest() == (3, b"note-3") and state.sizes() == [3]
        state.close()
    sq = SqliteCheckpointState(tmp_path / "s.db")
    assert isinstance(sq, CheckpointState)
    sq.close()


def test_a_legacy_state_db_is_carried_over_once(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    with Log.open(home, store=pg_url, origin="legacy.example/log") as log:
        log.append_many([b"a", b"b", b"c"])
        note = log.checkpoint()
    # What an earlier version left: the origin and checkpoints in <home>/log/state.db, and
    # none in the database. A note of some other tree must not be carried over.
    legacy = SqliteCheckpointState(home / "log" / "state.db")
    legacy.settle_origin("legacy.example/log")
    legacy.add(3, note)
    legacy.add(2, note)  # not this tree's root at size 2
    legacy.close()
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM log_checkpoints")
        conn.execute("DELETE FROM log_meta")
    with Log.open(home, store=pg_url) as log:
        assert log.origin == "legacy.example/log"
        assert log.checkpoint_sizes() == [3]
        assert log.checkpoint_at(3) == note
    assert not (home / "log" / "state.db").exists()
    assert (home / "log" / "state.db.imported").exists()


def test_a_log_needs_exactly_one_state(tmp_path: Path) -> None:
    from edgetrust.identity import Identity
    from edgetrust.log.checkpoint import NoteSigner
    from edgetrust.log.store import SqliteLogStore

    with SqliteLogStore(tmp_path / "x.db") as store:
        signer = NoteSigner("o.example/x", Identity.generate())
        with pytest.raises(InvalidInputError):
            Log(store, signer)
        with pytest.raises(InvalidInputError):
            Log(
                store,
                signer,
                state_path=tmp_path / "x.db",
                state=SqliteCheckpointState(tmp_path / "y.db"),
            )


def test_log_key_and_checkpoint_read_the_postgres_log(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgetrust.cli import run

    home = tmp_path / "home"
    with Log.open(home, store=pg_url, origin="pg.example/log") as log:
        log.append(b"x")
        vkey = log.verifier_key
    assert run(["log", "key", "--home", str(home), "--store", pg_url]) == 0
    assert capsys.readouterr().out.strip() == vkey
    monkeypatch.setenv("EDGETRUST_LOG_STORE", pg_url)
    assert run(["log", "checkpoint", "--home", str(home)]) == 0
    assert capsys.readouterr().out.startswith("pg.example/log\n1\n")
