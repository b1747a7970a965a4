"""PostgresLogStore: the shared LogStore contract on a real PostgreSQL 15, plus several writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from edgetrust.errors import InvalidInputError
from edgetrust.log.merkle import leaf_hash, root_from_leaves, verify_consistency
from edgetrust.log.store import StoreError
from edgetrust.log.store_pg import PostgresLogStore, check_postgres_url

from .pg_fixture import PostgresServer
from .store_contract import LogStoreContract, MakeStore, entry


class TestPostgresLogStore(LogStoreContract):
    @pytest.fixture
    def make_store(self, pg_server: PostgresServer) -> Iterator[MakeStore]:
        opened: list[PostgresLogStore] = []

        def make(**options: Any) -> PostgresLogStore:
            options.setdefault("max_delay", 0.0)
            s = PostgresLogStore(pg_server.new_database(), **options)
            opened.append(s)
            return s

        yield make
        for s in opened:
            s.close()


def _consistent(store: PostgresLogStore, entries: list[bytes]) -> None:
    assert store.size() == len(entries)
    assert store.root() == root_from_leaves([leaf_hash(e) for e in entries])


def test_reopen_keeps_the_tree(pg_url: str) -> None:
    with PostgresLogStore(pg_url, max_delay=0) as s:
        s.append_many([entry(i) for i in range(300)])
        root = s.root()
    with PostgresLogStore(pg_url, max_delay=0) as s:
        assert s.root() == root
        assert s.append(entry(5)) == 5
        assert s.append(entry(300)) == 300
        _consistent(s, [entry(i) for i in range(301)])


def test_two_stores_on_one_database_share_one_tree(pg_url: str) -> None:
    a = PostgresLogStore(pg_url, max_delay=0)
    b = PostgresLogStore(pg_url, max_delay=0)
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
        _consistent(a, order)
        _consistent(b, order)
    finally:
        a.close()
        b.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from edgetrust.log.store_pg import PostgresLogStore
    url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with PostgresLogStore(url, max_delay=0, batch_size=8) as s:
        for i in range(n):
            data = b"%s-%d" % (tag.encode(), i)
            idx = s.append_many([data, b"shared-%d" % (i % 50)])[0]
            print(idx, data.decode(), flush=True)
    """
)


def _writer(url: str, tag: str, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, tag, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_writer_processes_never_fork_the_tree(pg_url: str) -> None:
    PostgresLogStore(pg_url).close()  # create the schema before the race
    procs = [_writer(pg_url, tag, 150) for tag in ("a", "b")]
    acked: dict[str, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        for line in out.splitlines():
            idx, data = line.split(" ", 1)
            acked[data] = int(idx)
    with PostgresLogStore(pg_url) as s:
        size = s.size()
        assert size == 300 + 50  # every unique entry once, the shared ones de-duplicated
        logged = s.entries(0, size)
        assert len(set(logged)) == size
        for data, idx in acked.items():
            assert logged[idx] == data.encode()
        _consistent(s, logged)


@pytest.mark.slow
def test_sigkill_of_a_writer_loses_no_acknowledged_entry(pg_url: str) -> None:
    PostgresLogStore(pg_url).close()
    with PostgresLogStore(pg_url) as watcher:
        victim = _writer(pg_url, "victim", 100_000)
        other = _writer(pg_url, "other", 300)
        acked: dict[str, int] = {}
        roots: list[tuple[int, bytes]] = []
        assert victim.stdout is not None
        for _ in range(200):  # read acknowledgements, then kill mid-stream
            idx, data = victim.stdout.readline().split(" ", 1)
            acked[data.strip()] = int(idx)
            if len(acked) % 50 == 0:
                size = watcher.size()
                roots.append((size, watcher.root(size)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        out, _ = other.communicate(timeout=120)
        assert other.returncode == 0
        for line in out.splitlines():
            idx, data = line.split(" ", 1)
            acked[data] = int(idx)
    # "Restart": a new store on the same database carries on from the committed tree.
    with PostgresLogStore(pg_url) as s:
        size = s.size()
        logged = s.entries(0, size) if size <= 65536 else []
        for data, idx in acked.items():
            assert logged[idx] == data.encode()
        root = s.root()
        for old_size, old_root in roots:
            verify_consistency(old_size, size, s.consistency_proof(old_size, size), old_root, root)
        assert s.append(b"after the crash") == size
        _consistent(s, [*logged, b"after the crash"])


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sqlite:///x.db",
        "http://localhost/db",
        "postgresql://host:notaport/db",
        "postgresql://u@/db?no_such_option=1",
        "postgresql://h:0/db",
        "postgres ql://x",
        "postgresql://x\nInjected",
        None,
        42,
    ],
)
def test_bad_urls_are_refused_as_input(url: Any) -> None:
    with pytest.raises(InvalidInputError):
        check_postgres_url(url)


def test_an_unreachable_server_is_a_store_error(tmp_path: Any) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach"):
        PostgresLogStore(f"postgresql://nobody@/db?host={tmp_path}", connect_timeout=2)
    assert time.monotonic() - started < 10


def test_a_missing_database_is_a_store_error(pg_server: PostgresServer) -> None:
    with pytest.raises(StoreError):
        PostgresLogStore(pg_server.url("no_such_database"))


def test_a_table_that_is_not_a_log_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE log_entries (idx text PRIMARY KEY)")
    with pytest.raises(StoreError):
        s = PostgresLogStore(pg_url)
        s.append(b"x")
