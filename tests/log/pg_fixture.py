"""A throwaway PostgreSQL 15 server for tests: `PostgresServer` and pytest fixtures.

PostgreSQL refuses to run as root, and the tests do, so the cluster is initialised and run as
the unprivileged Debian ``postgres`` user (``runuser``) in a temporary directory, with trust
authentication, listening only on a unix socket in that directory. The conftest exposes it as
the session fixture ``pg_server``; ``pg_url`` gives each test a fresh, empty database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("EDGETRUST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, started and stopped by its owner."""

    def __init__(self, *, fsync: bool = False) -> None:
        self._counter = itertools.count()
        self.root = Path(tempfile.mkdtemp(prefix="edgetrust-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.fsync = fsync
        self._started = False

    def _as_postgres(self, *args: str) -> list[str]:
        if os.geteuid() != 0:
            return list(args)
        return ["runuser", "-u", PG_USER, "--", *args]

    def start(self) -> PostgresServer:
        """initdb (as the `postgres` user when run as root) and start the server."""
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        run = subprocess.run
        run(
            self._as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=64MB"
        )
        run(
            self._as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "-l",
                str(self.root / "server.log"),
                "start",
            ),
            check=True,
            capture_output=True,
        )
        self._started = True
        return self

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for `dbname` over the unix socket."""
        return f"postgresql://{PG_USER}@/{dbname}?host={self.socket_dir}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self._started:
            subprocess.run(
                self._as_postgres(
                    str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                ),
                capture_output=True,
                check=False,
            )
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
