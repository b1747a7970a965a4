"""The owner's job ledger: uses and ε reserved per grant, results and usage records, in SQLite.

Exactly once: a job is *reserved* (uses and ε counted against every grant in its chain, in one
``BEGIN IMMEDIATE`` transaction, so concurrent jobs cannot overspend), then run, then its result
and usage record are *recorded* together in one transaction, then the record is *logged* and
only then is the result released. A crash before *recorded* leaves a reservation that
`recover` drops (no result ever left, nothing is spent); a crash after it leaves a record that
`recover` logs (the log returns the existing index for an entry it already holds, so logging
twice is one entry). A job resubmitted with the same id gets the stored answer, not a new use.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetrust.data.grant import Grant, GrantError
from edgetrust.errors import ConflictError

__all__ = ["BudgetExhaustedError", "JobLedger", "LedgerRow"]


class BudgetExhaustedError(GrantError):
    """The job's ε is over a grant's per-use cap or would exceed its total budget."""

    def __init__(self, message: str, *, spent: float, budget: float) -> None:
        super().__init__(message, step="6 budget")
        self.spent = spent
        """ε the grant would have spent with this job."""
        self.budget = budget
        """The cap or budget it would exceed."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job       TEXT PRIMARY KEY,
    state     TEXT NOT NULL,          -- reserved | recorded | logged
    dataset   TEXT NOT NULL,
    requester TEXT NOT NULL,
    action    TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    epsilon   REAL NOT NULL,
    created   INTEGER NOT NULL,
    response  TEXT,                   -- the JSON answer, once recorded
    usage     BLOB,                   -- the signed usage record, once recorded
    log_index INTEGER
);
CREATE TABLE IF NOT EXISTS spend (
    job   TEXT NOT NULL REFERENCES jobs(job) ON DELETE CASCADE,
    grant TEXT NOT NULL,
    eps   REAL NOT NULL,
    PRIMARY KEY (job, grant)
);
CREATE INDEX IF NOT EXISTS spend_grant ON spend(grant);
"""


@dataclass(frozen=True)
class LedgerRow:
    """One job as the ledger holds it."""

    job: str
    state: str
    dataset: str
    requester: str
    action: str
    algorithm: str
    epsilon: float
    created: int
    response: dict[str, Any] | None
    usage: bytes | None
    log_index: int | None


class JobLedger:
    """Reservations, results and usage records of the jobs run on an owner's data."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> Any:
        """Run `fn` in one ``BEGIN IMMEDIATE`` transaction.

        Only `record` needs its commit on disk before it returns (``durable``: WAL fsync): it
        is what makes a released result's use permanent. A reservation or a ``logged`` mark
        that is not yet fsynced survives a process crash (SQLite has written it to the WAL)
        and, on power loss, is lost only together with every later commit: a lost
        reservation is a crash before *record* (nothing released), a lost ``logged`` mark is
        repaired by `recover` (the log dedups the re-append). Measured: one fsync per job
        instead of three (BENCHMARKS.md, data section).
        """
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return out

    def get(self, job: str) -> LedgerRow | None:
        """The ledger row of `job`, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT job, state, dataset, requester, action, algorithm, epsilon, created, "
                "response, usage, log_index FROM jobs WHERE job = ?",
                (job,),
            ).fetchone()
        return None if row is None else _row(row)

    def used(self, grant: str) -> tuple[int, float]:
        """Jobs and ε counted against `grant` (with everything delegated from it)."""
        with self._lock:
            n, eps = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(eps), 0) FROM spend WHERE grant = ?", (grant,)
            ).fetchone()
        return int(n), float(eps)

    def reserve(
        self,
        *,
        job: str,
        chain: Sequence[tuple[str, Grant]],
        dataset: str,
        requester: str,
        action: str,
        algorithm: str,
        epsilon: float,
        created: int,
        extra: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        """Count one use and `epsilon` against every grant of `chain`, or raise and count none.

        `extra` adds uses and ε spent outside this ledger (grant digest -> (uses, ε)).

        Raises:
            GrantError: a grant of the chain has no use left.
            BudgetExhaustedError: `epsilon` is over a per-use cap or a total budget.
            ConflictError: a job with this id is already reserved.
        """

        def work(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM jobs WHERE job = ?", (job,)).fetchone():
                raise ConflictError("this job is already running")
            for digest, g in chain:
                n, spent = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(eps), 0) FROM spend WHERE grant = ?", (digest,)
                ).fetchone()
                n_out, eps_out = (extra or {}).get(digest, (0, 0.0))
                n, spent = n + n_out, spent + eps_out
                if g.max_uses is not None and n + 1 > g.max_uses:
                    raise GrantError(
                        f"grant {digest[:19]}… has no use left ({n} of {g.max_uses})", step="6 uses"
                    )
                if g.eps_per_use is not None and epsilon > g.eps_per_use:
                    raise BudgetExhaustedError(
                        f"ε = {epsilon:g} is over the grant's per-use cap {g.eps_per_use:g}",
                        spent=epsilon,
                        budget=g.eps_per_use,
                    )
                if g.eps_total is not None and spent + epsilon > g.eps_total + 1e-12:
                    raise BudgetExhaustedError(
                        f"ε budget exhausted: {spent:g} spent of {g.eps_total:g}, "
                        f"this job asks {epsilon:g}",
                        spent=spent + epsilon,
                        budget=g.eps_total,
                    )
            db.execute(
                "INSERT INTO jobs(job, state, dataset, requester, action, algorithm, epsilon, "
                "created) VALUES (?, 'reserved', ?, ?, ?, ?, ?, ?)",
                (job, dataset, requester, action, algorithm, epsilon, created),
            )
            db.executemany(
                "INSERT OR IGNORE INTO spend(job, grant, eps) VALUES (?, ?, ?)",
                [(job, d, epsilon) for d, _ in chain],
            )

        self._tx(work, durable=False)

    def release(self, job: str) -> None:
        """Drop a reservation whose job failed: nothing was released, nothing is spent."""
        self._tx(
            lambda db: db.execute("DELETE FROM jobs WHERE job = ? AND state = 'reserved'", (job,))
        )

    def record(
        self, job: str, response: dict[str, Any], usage: bytes, *, text: str | None = None
    ) -> None:
        """Store a job's answer and its signed usage record together.

        `text`: the answer already serialized (``json.dumps(response, sort_keys=True)``).
        """
        text = json.dumps(response, sort_keys=True) if text is None else text
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'recorded', response = ?, usage = ? "
                "WHERE job = ? AND state = 'reserved'",
                (text, usage, job),
            )
        )

    def logged(self, job: str, index: int) -> None:
        """Note where the usage record was logged; the answer may now be released."""
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'logged', log_index = ? WHERE job = ?", (index, job)
            ),
            durable=False,
        )

    def recover(self, append: Callable[[bytes], int]) -> tuple[int, int]:
        """After a crash: drop unrecorded reservations, log recorded-but-unlogged records.

        Returns (reservations dropped, records logged).
        """
        dropped = self._tx(
            lambda db: db.execute("DELETE FROM jobs WHERE state = 'reserved'").rowcount
        )
        with self._lock:
            pending = self._db.execute(
                "SELECT job, usage FROM jobs WHERE state = 'recorded'"
            ).fetchall()
        for job, usage in pending:
            self.logged(job, append(bytes(usage)))
        return int(dropped), len(pending)

    def rows(self, *, dataset: str | None = None, limit: int = 10_000) -> list[LedgerRow]:
        """Logged jobs, oldest first (optionally of one dataset)."""
        sql = (
            "SELECT job, state, dataset, requester, action, algorithm, epsilon, created, "
            "response, usage, log_index FROM jobs WHERE state = 'logged'"
        )
        args: tuple[Any, ...] = ()
        if dataset is not None:
            sql += " AND dataset = ?"
            args = (dataset,)
        sql += " ORDER BY log_index LIMIT ?"
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, (*args, limit)).fetchall()]


def _row(r: tuple[Any, ...]) -> LedgerRow:
    return LedgerRow(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        float(r[6]),
        int(r[7]),
        None if r[8] is None else json.loads(r[8]),
        None if r[9] is None else bytes(r[9]),
        None if r[10] is None else int(r[10]),
    )


def now_seconds() -> int:
    """The current Unix time in whole seconds."""
    return int(time.time())
