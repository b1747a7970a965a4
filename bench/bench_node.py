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
        deadline = time.monotonic() + 60  # a PostgreSQL-backed node starts slower
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants (the verify workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total


def _load(
    node: _Node, path: str, bodies: list[bytes], concurrency: int, tmp: Path, per_body: int
) -> dict[str, Any]:
    """Run the load generator; add entries/s and the node's CPU per entry to its result."""
    f = tmp / "bodies.bin"
    write_bodies(f, bodies)
    cpu0 = _cpu_seconds(node.proc.pid)
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
    result = dict(json.loads(proc.stdout))
    entries = result["requests"] * per_body
    result["entries"] = entries
    result["rate"] = entries / result["seconds"]
    result["node_cpu_s"] = _cpu_seconds(node.proc.pid) - cpu0
    result["cpu_us"] = result["node_cpu_s"] / entries * 1e6
    return result


def _ok(result: dict[str, Any]) -> str:
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    return "" if not bad else f" (non-200: {bad})"


def _verify_us() -> float:
    """Ed25519 verify time now: the machine-load yardstick printed beside each scenario."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    sig = key.sign(b"m" * 300)
    pub = key.public_key()
    return best_of(lambda: pub.verify(sig, b"m" * 300), repeat=5, number=500) * 1e6


def _row(name: str, r: dict[str, Any], unit: str, target: str, met: bool, ed: float) -> list[str]:
    return [
        name,
        f"{r['entries']:,}",
        f"{r['rate']:,.0f} {unit}/s{_ok(r)}",
        f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
        f"{r['cpu_us']:.0f} µs",
        f"{1e6 / r['cpu_us']:,.0f}/s",
        f"{ed:.0f} µs",
        target,
        "met" if met else "**missed**",
    ]


def run() -> str:
    from edgetrust.identity import Identity
    from edgetrust.log.service import Log
    from edgetrust.node.entries import prepare_entry

    devices = [Identity.generate(f"d{i}") for i in range(16)]
    singles = _receipts(SINGLE_N, devices)
    batch_items = _receipts(BATCH_N, devices)
    signed_batches = _batch_receipts(SIGNED_BATCHES, SIGNED_BATCH_ITEMS, devices)
    batch_bodies = [
        json.dumps({"entries": [json.loads(e) for e in batch_items[i : i + BATCH_SIZE]]}).encode()
        for i in range(0, BATCH_N, BATCH_SIZE)
    ]

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)

        # -- baseline: the same work without HTTP, in this process ----------------------------
        ed_raw = _verify_us()
        sample = singles[:2000]
        # CPU time, like the node's figures below, so that both are measured the same way on
        # a shared machine (the store's sequencer thread is in this process too).
        cpu = time.process_time()
        for _ in range(2):
            for e in sample:
                prepare_entry(e, max_entry=65535)
        t_prep = (time.process_time() - cpu) / (2 * len(sample))
        prepared = [prepare_entry(e, max_entry=65535).data for e in batch_items]
        raw_log = Log.open(tmp / "raw", max_delay=0.0)
        cpu = time.process_time()
        for i in range(0, len(prepared), 256):
            raw_log.append_many(prepared[i : i + 256])
        t_append = (time.process_time() - cpu) / len(prepared)
        raw_log.close()
        raw_us = (t_prep + t_append) * 1e6
        raw_rows = [
            [
                "Ed25519 verify (cryptography), wall time: the load yardstick",
                f"{ed_raw:.0f} µs",
                f"{1e6 / ed_raw:,.0f}/s",
            ],
            [
                "open + verify + check a receipt envelope (`prepare_entry`)",
                f"{t_prep * 1e6:.0f} µs",
                f"{1 / t_prep:,.0f}/s",
            ],
            [
                "`Log.append_many` (256/batch, SQLite WAL)",
                f"{t_append * 1e6:.1f} µs",
                f"{1 / t_append:,.0f}/s",
            ],
            [
                "**verify + append, no HTTP** (one core)",
                f"{raw_us:.0f} µs",
                f"{1e6 / raw_us:,.0f}/s",
            ],
        ]

        # -- HTTP -------------------------------------------------------------------------------
        node = _Node(tmp / "node")
        try:
            _load(node, "/v1/entries", singles[:300], 16, tmp, 1)  # warm-up
            ed = _verify_us()
            r = _load(node, "/v1/entries", singles[300:], 16, tmp, 1)
            rows.append(
                _row(
                    "single `POST /v1/entries`, 16 connections",
                    r,
                    "entries",
                    "≥ 1,000/s, p99 ≤ 50 ms",
                    r["rate"] >= 1000 and r["p99_ms"] <= 50,
                    ed,
                )
            )
            single_cpu = r["cpu_us"]
            ed = _verify_us()
            r = _load(node, "/v1/entries:batch", batch_bodies, 4, tmp, BATCH_SIZE)
            rows.append(
                _row(
                    f"batch `POST /v1/entries:batch` ({BATCH_SIZE}/request, with "
                    "proofs), 4 connections",
                    r,
                    "entries",
                    "≥ 5,000/s",
                    r["rate"] >= 5000,
                    ed,
                )
            )
            batch_cpu = r["cpu_us"]
            ed = _verify_us()
            r = _load(node, "/v1/entries", signed_batches, 4, tmp, SIGNED_BATCH_ITEMS)
            rows.append(
                _row(
                    f"batch-signed receipts ({SIGNED_BATCH_ITEMS:,} per envelope), "
                    "`POST /v1/entries`",
                    r,
                    "receipts",
                    "≥ 50,000/s",
                    r["rate"] >= 50_000,
                    ed,
                )
            )
        finally:
            node.stop()

        node = _Node(tmp / "node2", "--verify-workers", "2")
        try:
            _load(node, "/v1/entries:batch", batch_bodies[:2], 2, tmp, BATCH_SIZE)
            ed = _verify_us()
            r = _load(node, "/v1/entries:batch", batch_bodies[2:], 4, tmp, BATCH_SIZE)
            rows.append(
                _row(
                    "batch, `--verify-workers 2` (CPU includes the workers)",
                    r,
                    "entries",
                    "≥ 5,000/s",
                    r["rate"] >= 5000,
                    ed,
                )
            )
        finally:
            node.stop()

    return (
        "## Log node over HTTP (loopback)\n\n"
        "A real `edgetrust node serve` (uvicorn, one process, rate limit off, group commit) "
        "under a separate load-generator process (raw asyncio keep-alive HTTP/1.1, bodies "
        "signed in advance); both share the machine's 2 cores, with whatever else runs on it. "
        "Entries are real inference receipts from `issue_receipt`/`issue_batch`, signed by 16 "
        "device identities; the node verifies every signature and validates every receipt. "
        "p50/p99 are per HTTP request. 'node CPU/entry' is the node's user+system CPU (from "
        "/proc) divided by the entries it logged, so 'per idle core' is what one uncontended "
        "core would sustain; the Ed25519 column is a verify timed just before the scenario "
        "(~113 µs on this machine when idle), to show how loaded the machine was.\n\n"
        + table(
            [
                "scenario",
                "entries",
                "throughput",
                "p50 / p99 ms",
                "node CPU/entry",
                "per idle core",
                "Ed25519 then",
                "target",
                "",
            ],
            rows,
        )
        + "\n\nThe same work without HTTP, in the benchmark process (same run):\n\n"
        + table(["step", "CPU per entry", "rate per core"], raw_rows)
        + f"\n\nWhat HTTP costs, in node CPU per entry over the no-HTTP work: single "
        f"{single_cpu - raw_us:+.0f} µs ({single_cpu / raw_us:.1f}x), batched "
        f"{batch_cpu - raw_us:+.0f} µs ({batch_cpu / raw_us:.1f}x). On a loaded machine CPU "
        "time is inflated too (contended caches), less than wall time.\n\n"
        "Ed25519 verification in `cryptography` holds the GIL (two threads verify barely "
        "faster than one), so a batch's signatures use a second core only through worker "
        "processes (`--verify-workers`); on 2 cores shared with the load generator that "
        "buys little. Receipt validation (`open_signed_statement` + the receipt validator, "
        "which re-hashes the output tensors) costs more than the signature itself.\n"
    )
