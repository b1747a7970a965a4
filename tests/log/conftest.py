"""Fixtures for the log tests: a real PostgreSQL server for the session, a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .pg_fixture import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.new_database()
