"""The log node over HTTP: submissions/s and latency under load, beside the same work without HTTP.

A real `edgetrust node serve` (uvicorn) runs as one process; the load generator
(`bench._loadgen`, raw asyncio keep-alive HTTP/1.1) runs as another, with its request bodies
signed in advance. The baseline, measured in this process in the same run, is the work the node
must do anyway: verify every envelope (`prepare_entry`: parse, Ed25519, statement checks,
canonical bytes) and append to the same SQLite log (`Log.append_many`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._loadgen import write_bodies
from bench._util import best_of, table

ROOT = Path(__file__).resolve().parent.parent

SINGLE_N = 4000
BATCH_N = 24_000
BATCH_SIZE = 500
SIGNED_BATCHES = 40
SIGNED_BATCH_ITEMS = 2000


def _card() -> Any:
    from edgetrust.models import ModelCard

    return ModelCard(
        digest="sha256:" + "ab" * 32,
        name="bench",
        version="1",
        size=1,
        opset=17,
        inputs=(),
        outputs=(),
    )


def _receipts(n: int, devices: list[Any]) -> list[bytes]:
    from edgetrust.receipts import issue_receipt

    card = _card()
    out = []
    for i in range(n):
        x = np.array([[i, i + 1, i + 2, i + 3]], dtype=np.float32)
        env, _ = issue_receipt(
            issuer=devices[i % len(devices)],
            card=card,
            inputs={"x": x},
            outputs={"y": x * 2},
            executor={"name": "bench"},
        )
        out.append(env.to_json())
    return out


def _batch_receipts(n: int, items: int, devices: list[Any]) -> list[bytes]:
    from edgetrust.receipts import issue_batch

    card = _card()
    out = []
    for b in range(n):
        x = np.arange(items * 4, dtype=np.float32).reshape(items, 4) + b * items
        batch = issue_batch(
            issuer=devices[b % len(devices)],
            card=card,
            inputs={"x": x},
            outputs={"y": x * 2},
            executor={"name": "bench"},
            output_private=True,
        )
        out.append(batch.envelope.to_json())
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Node:
    def __init__(self, home: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "EDGETRUST_HOME": str(home)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgetrust",
                "node",
                "serve",
                "--port",
                str(self.port),
                "--home",
                str(home),
                "--rate",
                "0",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("node did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def _load(
    node: _Node, path: str, bodies: list[bytes], concurrency: int, tmp: Path
) -> dict[str, Any]:
    f = tmp / "bodies.bin"
    write_bodies(f, bodies)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._loadgen",
            "127.0.0.1",
            str(node.port),
            path,
            str(f),
            str(concurrency),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(proc.stdout))


def _ok(result: dict[str, Any]) -> str:
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    return "" if not bad else f" (non-200: {bad})"


def run() -> str:
    from edgetrust.identity import Identity
    from edgetrust.log.service import Log
    from edgetrust.node.app import prepare_entry

    devices = [Identity.generate(f"d{i}") for i in range(16)]
    singles = _receipts(SINGLE_N, devices)
    batch_items = _receipts(BATCH_N, devices)
    signed_batches = _batch_receipts(SIGNED_BATCHES, SIGNED_BATCH_ITEMS, devices)
    batch_bodies = [
        json.dumps({"entries": [json.loads(e) for e in batch_items[i : i + BATCH_SIZE]]}).encode()
        for i in range(0, BATCH_N, BATCH_SIZE)
    ]

    rows: list[list[str]] = []
    raw_rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)

        # -- baseline: the same work without HTTP, in this process ----------------------------
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        sig = key.sign(b"m" * 300)
        pub = key.public_key()
        t_ed = best_of(lambda: pub.verify(sig, b"m" * 300), repeat=5, number=2000)
        sample = singles[:2000]
        t_prep = best_of(lambda: [prepare_entry(e, max_entry=65535) for e in sample], repeat=3)
        prepared = [prepare_entry(e, max_entry=65535).data for e in batch_items]
        raw_log = Log.open(tmp / "raw", max_delay=0.01)
        start = time.perf_counter()
        for i in range(0, len(prepared), 256):
            raw_log.append_many(prepared[i : i + 256])
        t_append = (time.perf_counter() - start) / len(prepared)
        raw_log.close()
        raw_verify_rate = len(sample) / t_prep
        raw_rate = 1 / (t_prep / len(sample) + t_append)
        raw_rows = [
            ["Ed25519 verify (cryptography)", f"{t_ed * 1e6:.0f} µs", f"{1 / t_ed:,.0f}/s"],
            [
                "verify + check a receipt envelope (`prepare_entry`)",
                f"{t_prep / len(sample) * 1e6:.0f} µs",
                f"{raw_verify_rate:,.0f}/s",
            ],
            [
                "`Log.append_many` (256/batch, SQLite)",
                f"{t_append * 1e6:.1f} µs",
                f"{1 / t_append:,.0f}/s",
            ],
            [
                "verify + append, no HTTP (the ceiling for one core)",
                f"{1e6 / raw_rate:.0f} µs",
                f"{raw_rate:,.0f}/s",
            ],
        ]

        # -- HTTP -------------------------------------------------------------------------------
        node = _Node(tmp / "node")
        try:
            _load(node, "/v1/entries", singles[:300], 16, tmp)  # warm-up
            single = _load(node, "/v1/entries", singles[300:], 32, tmp)
            rows.append(
                [
                    "single `POST /v1/entries`, 32 connections",
                    f"{single['requests']:,}",
                    f"{single['rps']:,.0f} entries/s{_ok(single)}",
                    f"{single['p50_ms']:.1f} / {single['p99_ms']:.1f}",
                    "≥ 1,000/s, p99 ≤ 50 ms",
                    "met" if single["rps"] >= 1000 and single["p99_ms"] <= 50 else "**missed**",
                    f"{single['rps'] / raw_rate:.2f}",
                ]
            )
            batch = _load(node, "/v1/entries:batch", batch_bodies, 4, tmp)
            brate = batch["requests"] * BATCH_SIZE / batch["seconds"]
            rows.append(
                [
                    f"batch `POST /v1/entries:batch` ({BATCH_SIZE}/request, proofs), 4 connections",
                    f"{batch['requests'] * BATCH_SIZE:,}",
                    f"{brate:,.0f} entries/s{_ok(batch)}",
                    f"{batch['p50_ms']:.0f} / {batch['p99_ms']:.0f}",
                    "≥ 5,000/s",
                    "met" if brate >= 5000 else "**missed**",
                    f"{brate / raw_rate:.2f}",
                ]
            )
            signed = _load(node, "/v1/entries", signed_batches, 4, tmp)
            srate = signed["requests"] * SIGNED_BATCH_ITEMS / signed["seconds"]
            rows.append(
                [
                    f"batch-signed receipts ({SIGNED_BATCH_ITEMS}/envelope), `POST /v1/entries`",
                    f"{signed['requests'] * SIGNED_BATCH_ITEMS:,}",
                    f"{srate:,.0f} receipts/s{_ok(signed)}",
                    f"{signed['p50_ms']:.1f} / {signed['p99_ms']:.1f}",
                    "≥ 50,000/s",
                    "met" if srate >= 50_000 else "**missed**",
                    "—",
                ]
            )
        finally:
            node.stop()

        node = _Node(tmp / "node2", "--verify-workers", "2")
        try:
            _load(node, "/v1/entries:batch", batch_bodies[:2], 2, tmp)
            batch2 = _load(node, "/v1/entries:batch", batch_bodies[2:], 4, tmp)
            n2 = batch2["requests"] * BATCH_SIZE
            b2rate = n2 / batch2["seconds"]
            rows.append(
                [
                    "batch, `--verify-workers 2` (signatures verified in 2 processes)",
                    f"{n2:,}",
                    f"{b2rate:,.0f} entries/s{_ok(batch2)}",
                    f"{batch2['p50_ms']:.0f} / {batch2['p99_ms']:.0f}",
                    "≥ 5,000/s",
                    "met" if b2rate >= 5000 else "**missed**",
                    f"{b2rate / raw_rate:.2f}",
                ]
            )
        finally:
            node.stop()

    return (
        "## Log node over HTTP (loopback)\n\n"
        "A real `edgetrust node serve` (uvicorn, one process, rate limit off) under a separate "
        "load-generator process (raw asyncio keep-alive HTTP/1.1, bodies signed in advance), "
        "both on the same 2 cores. Entries are real inference receipts signed by 16 device "
        "identities; every signature is verified by the node. 'vs raw' divides by the "
        "no-HTTP cost of the same work (verify + append) measured below in the same run.\n\n"
        + table(
            [
                "scenario",
                "entries",
                "throughput",
                "p50 / p99 ms (per request)",
                "target",
                "",
                "vs raw",
            ],
            rows,
        )
        + "\n\nThe same work without HTTP (this process):\n\n"
        + table(["step", "per entry", "rate"], raw_rows)
        + "\n\nEd25519 verification in `cryptography` holds the GIL (two threads verify "
        "barely faster than one, measured while writing this node), so a batch's signatures "
        "can use a second core only through worker processes (`--verify-workers`). On this "
        "2-core machine the load generator competes for the same cores.\n"
    )
