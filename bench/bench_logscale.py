"""The log beyond one machine: SQLite vs PostgreSQL, one node vs two, static tiles vs the node.

In one run, on this machine: (1) store appends/s and acknowledgement latency for both backends
(batched `append_many`, and many threads calling `append`); (2) single `POST /v1/entries`
submissions/s through one node vs two nodes sharing one PostgreSQL (and one SQLite node beside
them); (3) what `publish_tiles` costs per 1,000 new entries; (4) tile reads/s from the published
directory under ``python -m http.server`` vs the node's tiles API. PostgreSQL 15 is a throwaway
cluster (tests/log/pg_fixture.py) over a unix socket, with fsync ON: the durability a
production server has. Anchor from the issue: Tessera on POSIX ~10,000 writes/s on 7 cores.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench._util import table
from bench.bench_node import ROOT, _cpu_seconds, _free_port, _load, _Node, _receipts

STORE_N = 20_000
THREADS = 32
THREAD_N = 12_000
SINGLE_N = int(os.environ.get("EDGETRUST_BENCH_SINGLES", "3000"))
WARM_N = 200
CONNECTIONS = int(os.environ.get("EDGETRUST_BENCH_CONNECTIONS", "16"))
PUBLISH_N = 20_000
READS = 3000
READ_CONNECTIONS = 8
TARGET_PG = 20_000
TARGET_TWO_NODES = 1.5
ANCHOR_TESSERA = 10_000
# Diagnosis only (what fsync costs): EDGETRUST_BENCH_PG_FSYNC=0; the published run keeps it on.
FSYNC = os.environ.get("EDGETRUST_BENCH_PG_FSYNC", "1") != "0"


def _entry(i: int) -> bytes:
    return b'{"payload":"%064x","payloadType":"application/vnd.in-toto+json","sig":"%0128x"}' % (
        i * 2654435761,
        i,
    )


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


# -- (1) stores ------------------------------------------------------------------------------


def _store_batched(store: Any) -> tuple[float, float]:
    """append_many in batches of 256: entries/s and p99 seconds per batch acknowledgement."""
    lat = []
    start = time.perf_counter()
    for s in range(0, STORE_N, 256):
        t = time.perf_counter()
        store.append_many([_entry(i) for i in range(s, min(s + 256, STORE_N))])
        lat.append(time.perf_counter() - t)
    return STORE_N / (time.perf_counter() - start), _pct(lat, 0.99)


def _store_threads(store: Any, offset: int) -> tuple[float, float, float]:
    """THREADS threads each calling append(): entries/s, p50 and p99 acknowledgement seconds."""
    lat: list[float] = []
    lock = threading.Lock()
    per = THREAD_N // THREADS

    def work(k: int) -> None:
        mine = []
        for i in range(per):
            t = time.perf_counter()
            store.append(_entry(offset + k * per + i))
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = per * THREADS / (time.perf_counter() - start)
    return rate, _pct(lat, 0.5), _pct(lat, 0.99)


# -- (4) reads -------------------------------------------------------------------------------


async def _get_worker(host: str, port: int, paths: list[str], lat: list[float]) -> int:
    """GET `paths` in turn, keeping the connection open while the server allows it."""
    reader = writer = None
    errors = 0
    while paths:
        path = paths.pop()
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        assert reader is not None
        t = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length, close = 0, lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection":
                close = value.strip().lower() == b"close"
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        if not lines[0].split(b" ")[1].startswith(b"200"):
            errors += 1
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    return errors


def _read_load(port: int, paths: list[str]) -> dict[str, float]:
    lat: list[float] = []
    todo = list(paths)

    async def main() -> int:
        counts = await asyncio.gather(
            *(_get_worker("127.0.0.1", port, todo, lat) for _ in range(READ_CONNECTIONS))
        )
        return sum(counts)

    start = time.perf_counter()
    errors = asyncio.run(main())
    seconds = time.perf_counter() - start
    return {
        "rps": len(lat) / seconds,
        "p50": _pct(lat, 0.5) * 1e3,
        "p99": _pct(lat, 0.99) * 1e3,
        "errors": errors,
    }


# -- nodes -----------------------------------------------------------------------------------


def _singles(nodes: list[_Node], bodies: list[bytes], tmp: Path) -> dict[str, Any]:
    """Single submissions spread over `nodes` (one load generator each, all at once).

    The rate is over the generators' common span (first start to last end, their start-up
    left out), so one node and two nodes are timed alike.
    """
    results: list[dict[str, Any]] = [{} for _ in nodes]
    share = CONNECTIONS // len(nodes)

    def one(k: int) -> None:
        sub = tmp / f"n{k}"
        sub.mkdir(exist_ok=True)
        results[k] = _load(nodes[k], "/v1/entries", bodies[k :: len(nodes)], share, sub, 1)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = max(r["wall"][1] for r in results) - min(r["wall"][0] for r in results)
    entries = sum(r["entries"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "entries": entries,
        "seconds": seconds,
        "rate": entries / seconds,
        # Each generator's percentiles; the worse of the two is reported.
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "cpu_us": statistics.mean(r["cpu_us"] for r in results),
        "node_cpu_s": sum(r["node_cpu_s"] for r in results),
        "gen_cpu_s": sum(r["cpu_s"] for r in results),
        "statuses": statuses,
    }


def _pg_cpu(pg: Any) -> float:
    """CPU seconds used so far by this PostgreSQL server (postmaster and live backends)."""
    pid = int((pg.data / "postmaster.pid").read_text().split("\n", 1)[0])
    return _cpu_seconds(pid)


def _cpu_busy() -> float:
    """CPU seconds the whole machine has been busy so far (all cores), from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user, nice, system, irq, softirq (guest time is inside user; idle, iowait, steal are not)
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def _ok(r: dict[str, Any]) -> str:
    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
    return "" if not bad else f" (non-200: {bad})"


def _per_k(seconds: float, entries: int) -> float:
    """CPU milliseconds per entry (= CPU seconds per 1,000 entries)."""
    return seconds / entries * 1e3


def _nodes_section(pg: Any, tmp: Path) -> str:
    """(2): single submissions through one SQLite node, one and two PostgreSQL nodes.

    Besides the rates: the CPU each process group spent per entry (the nodes, this
    PostgreSQL server's processes, the load generators, and the rest of the machine: this
    driver and whatever else runs), so the ratio can be checked against what 2 cores allow.
    """
    from edgetrust.identity import Identity
    from edgetrust.log.service import Log

    cores = os.cpu_count() or 1
    devices = [Identity.generate(f"d{i}") for i in range(16)]
    scenarios: list[tuple[str, str | None, int]] = [
        ("SQLite, one node", None, 1),
        ("PostgreSQL, one node", "pg", 1),
        ("PostgreSQL, two nodes", "pg", 2),
    ]
    per = SINGLE_N + WARM_N * 2
    bodies = _receipts(per * len(scenarios), devices)
    rows = []
    res: dict[str, dict[str, Any]] = {}
    for k, (name, kind, count) in enumerate(scenarios):
        home = tmp / f"home{k}"
        with Log.open(home):
            pass  # the key, before two nodes race to create it
        extra = ["--store", pg.new_database()] if kind else []
        nodes = [_Node(home, *extra) for _ in range(count)]
        mine = bodies[k * per : (k + 1) * per]
        try:
            for i, n in enumerate(nodes):  # warm-up: first requests import and connect
                _load(n, "/v1/entries", mine[i * WARM_N : (i + 1) * WARM_N], 4, tmp, 1)
            pg0, busy0 = _pg_cpu(pg), _cpu_busy()
            r = _singles(nodes, mine[WARM_N * 2 :], tmp)
            r["pg_cpu_s"] = _pg_cpu(pg) - pg0 if kind else 0.0
            r["busy_s"] = _cpu_busy() - busy0
        finally:
            for n in nodes:
                n.stop()
        res[name] = r
        e = r["entries"]
        rest = r["busy_s"] - r["node_cpu_s"] - r["pg_cpu_s"] - r["gen_cpu_s"]
        rows.append(
            [
                name,
                f"{e:,}",
                f"{r['rate']:,.0f}/s{_ok(r)}",
                f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
                f"{r['cpu_us']:.0f} µs",
                f"{r['pg_cpu_s'] / e * 1e6:.0f} µs" if kind else "",
                f"{_per_k(r['node_cpu_s'], e):.2f} / {_per_k(r['pg_cpu_s'], e):.2f} / "
                f"{_per_k(r['gen_cpu_s'], e):.2f} / {_per_k(rest, e):.2f}",
                f"{r['busy_s'] / (r['seconds'] * cores):.0%}",
            ]
        )
    one, two = res["PostgreSQL, one node"], res["PostgreSQL, two nodes"]
    ratio = two["rate"] / one["rate"]

    def bound(r: dict[str, Any], generator: bool) -> float:
        """Entries/s the cores allow at `r`'s CPU per entry (with or without the generator)."""
        spent = r["node_cpu_s"] + r["pg_cpu_s"] + (r["gen_cpu_s"] if generator else 0.0)
        return cores * r["entries"] / spent

    e2 = two["entries"]
    return (
        "### Nodes over HTTP: single submissions\n\n"
        f"Real `edgetrust node serve` processes (uvicorn) under load generators "
        f"(`bench._loadgen`, {CONNECTIONS} keep-alive connections in all, split between the "
        "nodes; each node first warmed up with "
        f"{WARM_N} submissions), each submission a real inference receipt that the node "
        "verifies (Ed25519 + receipt validation) before appending. Everything - nodes, load "
        f"generators, PostgreSQL - shares this machine's {cores} cores. 'node CPU' is per "
        "node, per entry; 'PostgreSQL CPU' is the server's CPU per entry. 'CPU ms per entry' "
        "splits the machine's busy CPU during the run (= CPU seconds per 1,000 entries) into "
        "all nodes / PostgreSQL / the load generators / everything else (this driver and "
        "other work on the machine).\n\n"
        + table(
            [
                "scenario",
                "entries",
                "submissions",
                "p50 / p99 ms",
                "node CPU/entry",
                "PostgreSQL CPU/entry",
                "CPU ms per entry: nodes / PostgreSQL / generators / rest",
                "machine CPU busy",
            ],
            rows,
        )
        + f"\n\nTwo nodes vs one (PostgreSQL): **{ratio:.2f}x** (target ≥ "
        f"{TARGET_TWO_NODES}x: **{'met' if ratio >= TARGET_TWO_NODES else 'missed'}**). "
        f"The bound, from the two-node run: per entry the nodes need "
        f"{_per_k(two['node_cpu_s'], e2):.2f} core-ms, PostgreSQL "
        f"{_per_k(two['pg_cpu_s'], e2):.2f}, the generators {_per_k(two['gen_cpu_s'], e2):.2f}; "
        f"{cores} cores give at most {bound(two, True):,.0f}/s = "
        f"{bound(two, True) / one['rate']:.2f}x one node with the generators on the same "
        f"cores, {bound(two, False):,.0f}/s = {bound(two, False) / one['rate']:.2f}x without "
        f"them. One node alone already keeps "
        f"{one['busy_s'] / one['seconds']:.2f} of {cores} cores busy."
    )


def run() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.log.pg_fixture import PostgresServer

    from edgetrust.log.publish import publish_tiles
    from edgetrust.log.service import Log
    from edgetrust.log.store import SqliteLogStore
    from edgetrust.log.store_pg import PostgresLogStore

    load = os.getloadavg()[0]
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmpdir, PostgresServer(fsync=FSYNC) as pg:
        tmp = Path(tmpdir)

        # -- (1) the stores, in this process ----------------------------------------------
        rows = []
        figures: dict[str, tuple[float, ...]] = {}
        for name in (
            "SQLite (WAL, synchronous=NORMAL)",
            "PostgreSQL 15 (fsync on)" if FSYNC else "PostgreSQL 15 (fsync OFF)",
        ):
            if name.startswith("SQLite"):
                store: Any = SqliteLogStore(tmp / "bench.db", max_delay=0)
            else:
                store = PostgresLogStore(pg.new_database(), max_delay=0)
            with store:
                rate_b, p99_b = _store_batched(store)
                rate_t, p50_t, p99_t = _store_threads(store, STORE_N)
                figures[name] = (rate_b, rate_t)
                proofs = []
                size = store.size()
                for _ in range(300):
                    i = random.randrange(size)
                    t = time.perf_counter()
                    store.inclusion_proof(i, size)
                    proofs.append(time.perf_counter() - t)
            pg_target = name.startswith("Postgre")
            rows.append(
                [
                    name,
                    f"**{rate_b:,.0f}**/s (p99 {p99_b * 1e3:.1f} ms per 256)",
                    f"{rate_t:,.0f}/s (p50 {p50_t * 1e3:.1f} / p99 {p99_t * 1e3:.1f} ms)",
                    f"{statistics.median(proofs) * 1e6:.0f} µs",
                    f"{rate_b / ANCHOR_TESSERA:.1f}x",
                    (
                        f"≥ {TARGET_PG:,}/s batched: "
                        + ("**met**" if rate_b >= TARGET_PG else "**missed**")
                    )
                    if pg_target
                    else "",
                ]
            )
        out.append(
            "### Stores (in-process)\n\n"
            f"{STORE_N:,} receipt-sized entries with `append_many` (256 a batch), then "
            f"{THREAD_N:,} more from {THREADS} threads calling `append` (group commit; latency "
            "is each call's wait for its commit). Inclusion proofs at the final size.\n\n"
            + table(
                [
                    "store",
                    "batched appends",
                    f"{THREADS} threads, `append`",
                    "inclusion proof (median)",
                    "vs Tessera POSIX",
                    "target",
                ],
                rows,
            )
        )

        # -- (2) nodes over HTTP ----------------------------------------------------------
        out.append(_nodes_section(pg, tmp))

        # -- (3) static tiles -------------------------------------------------------------
        home = tmp / "pubhome"
        www = tmp / "www"
        with Log.open(home, max_delay=0) as log:
            steps = []
            for s in range(0, PUBLISH_N, 1000):
                log.append_many([_entry(i) for i in range(s, s + 1000)])
                t = time.perf_counter()
                res = publish_tiles(log, www)
                steps.append((time.perf_counter() - t, res.bytes_written))
            t = time.perf_counter()
            publish_tiles(log, tmp / "www-full")
            full = time.perf_counter() - t
            per_k = statistics.median(s for s, _ in steps)
            bytes_k = statistics.median(b for _, b in steps)
            idle = []
            for _ in range(5):
                t = time.perf_counter()
                publish_tiles(log, www)
                idle.append(time.perf_counter() - t)
            out.append(
                "### Static tiles (`publish_tiles`, SQLite store)\n\n"
                + table(
                    ["publication", "wall time", "written"],
                    [
                        [
                            "incremental, per 1,000 new entries (median of "
                            f"{PUBLISH_N // 1000}, up to {PUBLISH_N:,})",
                            f"**{per_k * 1e3:.1f} ms**",
                            f"{bytes_k / 1e3:,.0f} kB",
                        ],
                        [
                            "nothing new (the checkpoint and partial tiles again)",
                            f"{statistics.median(idle) * 1e3:.1f} ms",
                            "",
                        ],
                        [
                            f"from scratch, {PUBLISH_N:,} entries",
                            f"{full * 1e3:.0f} ms ({full / PUBLISH_N * 1e6:.1f} µs/entry)",
                            "",
                        ],
                    ],
                )
            )

        # -- (4) reads: static directory vs the node's tiles API --------------------------
        full_tiles = PUBLISH_N // 256
        paths = [
            random.choice([f"/tile/0/{t:03d}", f"/tile/entries/{t:03d}"])
            for t in (random.randrange(full_tiles) for _ in range(READS))
        ]
        port = _free_port()
        static = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=www,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = None
        try:
            for _ in range(200):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/checkpoint", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            r_static = _read_load(port, paths)
            static.terminate()
            static.wait(10)
            node = _Node(home)
            r_node = _read_load(node.port, paths)
        finally:
            if static.poll() is None:
                static.terminate()
            if node is not None:
                node.stop()
        out.append(
            "### Reads: full hash tiles and entry bundles, "
            f"{READS:,} random GETs over {READ_CONNECTIONS} connections\n\n"
            + table(
                ["server", "reads/s", "p50 / p99 ms"],
                [
                    [
                        "published directory, `python -m http.server` (HTTP/1.0: a connection "
                        "per request)",
                        f"{r_static['rps']:,.0f}/s",
                        f"{r_static['p50']:.1f} / {r_static['p99']:.1f}",
                    ],
                    [
                        "node tiles API (uvicorn, SQLite store, keep-alive)",
                        f"{r_node['rps']:,.0f}/s",
                        f"{r_node['p50']:.1f} / {r_node['p99']:.1f}",
                    ],
                ],
            )
            + "\n\nhttp.server is the issue's stand-in for a static server; what the static "
            "directory buys is that nginx, an object store or a CDN serves it with no "
            "log process at all, and that reads never touch the sequencer's database."
        )
        _ = figures
    header = (
        "## The log at scale: PostgreSQL, several nodes, static tiles\n\n"
        f"Load average when the run started: {load:.2f} on {os.cpu_count()} cores. "
        f"Anchor (the issue): Tessera on POSIX ~{ANCHOR_TESSERA:,} writes/s on 7 cores."
    )
    return header + "\n\n" + "\n\n".join(out)


def run_nodes() -> str:
    """Only section (2), for diagnosis: ``python -m bench.bench_logscale nodes``."""
    sys.path.insert(0, str(ROOT))
    from tests.log.pg_fixture import PostgresServer

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmpdir, PostgresServer(fsync=FSYNC) as pg:
        text = _nodes_section(pg, Path(tmpdir))
    after = os.getloadavg()
    return (
        f"Load average at the start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, at the "
        f"end: {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} ({os.cpu_count()} cores).\n\n"
        + text
    )


if __name__ == "__main__":
    print(run_nodes() if sys.argv[1:] == ["nodes"] else run())
