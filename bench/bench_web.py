"""The web pages: the log page at 1M entries beside the JSON API, the receipt page beside verify.

The log holds 1,000,000 entries: 999,000 small unique filler entries (appended as raw bytes,
as a store holds them; signing a million envelopes would take longer than the rest of the
bench) and 1,000 signed model cards at the end, so the 10 newest entries the log page shows
are real, plus one signed checkpoint every 1,000 entries (1,000 checkpoints for the size
chart). Times are server side: an in-process ASGI client (Starlette's TestClient), no network.
The JSON baseline is the same data through the node's API: ``/checkpoint`` plus
``/v1/entries/{i}`` for the 10 newest entries. The receipt page (multipart upload, CSRF,
`Verifier.report`, rendering) is timed beside `Verifier.verify` in process and
``edgetrust verify`` as a command (which includes starting Python).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import table

ROOT = Path(__file__).resolve().parent.parent
N = 1_000_000
REAL = 1_000
CHECKPOINT_EVERY = 1_000
REQUESTS = 300


def _pcts(fn: Any, n: int = REQUESTS) -> tuple[float, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3


def _fill(log: Any) -> None:
    from tests.node.conftest import card_envelope

    from edgetrust.identity import Identity

    chunk = 20_000
    filler = N - REAL
    for start in range(0, filler, chunk):
        end = min(start + chunk, filler)
        for lo in range(start, end, CHECKPOINT_EVERY):
            log.append_many(
                [b'{"filler":%d}' % i for i in range(lo, min(lo + CHECKPOINT_EVERY, end))]
            )
            log.checkpoint()
    publisher = Identity.from_seed(b"\x01" * 32, "bench")
    log.append_many([card_envelope(publisher, i) for i in range(REAL)])
    log.checkpoint()


def run() -> str:
    from fastapi.testclient import TestClient
    from tests.web.world import build_world

    from edgetrust.identity import Identity
    from edgetrust.log.service import Log
    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings
    from edgetrust.receipts import parse_bundle
    from edgetrust.verify.verifier import Verifier

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        start = time.perf_counter()
        with Log.open(Path(tmp) / "big", max_delay=0.002) as log:
            _fill(log)
            fill_s = time.perf_counter() - start
            size = log.size()
            app = create_app(log, settings=NodeSettings(rate=0))
            with TestClient(app) as client:
                client.get("/")

                def json_api() -> None:
                    client.get("/checkpoint")
                    for i in range(size - 10, size):
                        client.get(f"/v1/entries/{i}")

                for label, fn in (
                    (
                        "log page `/` (checkpoint, signatures, size chart, 10 newest)",
                        lambda: client.get("/"),
                    ),
                    ("entries page `/entries` (50 newest)", lambda: client.get("/entries")),
                    (
                        "entries page deep `/entries?before=500000`",
                        lambda: client.get("/entries?before=500000"),
                    ),
                    ("JSON API, same data: `/checkpoint` + 10 × `/v1/entries/{i}`", json_api),
                    (
                        "JSON API: one `/v1/entries/{i}`",
                        lambda: client.get(f"/v1/entries/{size - 1}"),
                    ),
                ):
                    p50, p99 = _pcts(fn)
                    rows.append([label, f"{size:,}", f"{p50:.1f}", f"{p99:.1f}"])
                # Search needs the explorer index: build it over the 1M entries first (what
                # the follower thread does in the background on a live node).
                from edgetrust.node.web.index import ExplorerIndex

                t0 = time.perf_counter()
                index = ExplorerIndex(Path(tmp) / "big" / "log" / "explorer.db")
                index.catch_up(log.entries, size)
                index_s = time.perf_counter() - t0
                index.close()
                did = Identity.from_seed(b"\x01" * 32, "bench").did
                digest = "sha256:" + hashlib.sha256(b"m-500").hexdigest()
                client.get(f"/search?q={did}")
                for label, fn in (
                    (
                        "search by DID (1,000 matches, 50 shown)",
                        lambda: client.get(f"/search?q={did}"),
                    ),
                    ("search by digest (1 match)", lambda: client.get(f"/search?q={digest}")),
                ):
                    p50, p99 = _pcts(fn)
                    rows.append([label, f"{size:,}", f"{p50:.1f}", f"{p99:.1f}"])
        world = build_world(Path(tmp) / "world")
        data = world.bundle.read_bytes()
        with Log.open(world.home) as log:
            vkey = log.verifier_key

            def new() -> Verifier:  # no signature cache carried from one call to the next
                return Verifier(log_keys=[vkey])

            bundle = parse_bundle(data)
            app = create_app(log, settings=NodeSettings(rate=0))
            with TestClient(app) as client:
                client.get("/receipt")
                token = client.cookies["et_csrf"]

                def upload() -> None:
                    r = client.post(
                        "/receipt", files={"bundle": ("r.json", data)}, data={"csrf_token": token}
                    )
                    assert "Verified" in r.text

                recv = [
                    [
                        "receipt page: upload + verify + render (`POST /receipt`)",
                        *_pcts(upload, 100),
                    ],
                    [
                        "receipt page by index (`/receipt?index=N`)",
                        *_pcts(lambda: client.get(f"/receipt?index={world.receipt_index}"), 100),
                    ],
                    [
                        "`Verifier.verify` in process (a new verifier each time, as the page)",
                        *_pcts(lambda: new().verify(bundle), 100),
                    ],
                    ["`Verifier.report` in process", *_pcts(lambda: new().report(bundle), 100)],
                ]
        env = {**os.environ, "EDGETRUST_HOME": str(world.home)}
        cli = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "edgetrust", "verify", str(world.bundle)],
                env=env,
                check=True,
                capture_output=True,
            )
            cli.append((time.perf_counter() - t0) * 1e3)
        recv.append(
            ["`edgetrust verify FILE` (a new process each time)", statistics.median(cli), max(cli)]
        )
    out = [
        f"Explorer index built over the 1M entries in {index_s:.0f} s (once; then followed).",
        "",
        f"Log page at {N:,} entries (filled in {fill_s:.0f} s; "
        f"{N // CHECKPOINT_EVERY:,} checkpoints), "
        f"{REQUESTS} requests each, in-process ASGI client. Target: log page p99 ≤ 100 ms.",
        "",
        table(["request", "log size", "p50 ms", "p99 ms"], rows),
        "",
        "Receipt verification (a logged float receipt; steps 1, 2, 6 run, 4, 5, 7, 8 skipped; "
        "the page and the command also run step 3 against the home's model registry, the "
        "in-process verifier has none).",
        "",
        table(
            ["what", "p50 ms", "p99 (or max) ms"],
            [[r[0], f"{r[1]:.1f}", f"{r[2]:.1f}"] for r in recv],
        ),
    ]
    return "\n".join(out)
