"""A bounded HTTP/1.1 load generator for the node benchmark, run as its own process.

Written on raw asyncio streams rather than httpx: on a 2-core machine the generator shares the
CPU with the server, and httpx's per-request overhead (~10x a bare keep-alive write/read) would
measure the client instead of the node. Each connection sends its requests back to back
(keep-alive); latency is from writing a request to reading its whole response.

Usage: python -m bench._loadgen HOST PORT PATH BODIES_FILE CONCURRENCY
BODIES_FILE holds u32be-length-prefixed request bodies; prints one JSON line of results.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from pathlib import Path


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def write_bodies(path: Path, bodies: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in bodies))


async def _worker(
    host: str,
    port: int,
    path: str,
    queue: list[bytes],
    latencies: list[float],
    statuses: dict[int, int],
    timeout: float,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    try:
        while queue:
            body = queue.pop()
            request = (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
            start = time.perf_counter()
            writer.write(request)
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(raw.split(b" ", 2)[1])
            length = 0
            for line in raw.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await asyncio.wait_for(reader.readexactly(length), timeout)
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(
    host: str, port: int, path: str, bodies: list[bytes], concurrency: int, timeout: float = 30.0
) -> dict[str, object]:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cpu0, wall0 = time.process_time(), time.time()
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _worker(host, port, path, queue, latencies, statuses, timeout)
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.50) * 1e3,
        "p99_ms": pct(0.99) * 1e3,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1e3,
        "statuses": statuses,
        # The generator's own CPU (user + system) during the run, so a run can tell whether it
        # measured the node or its client; and the run's wall-clock span, so several
        # generators' runs can be lined up (their start-up left out).
        "cpu_s": time.process_time() - cpu0,
        "wall": [wall0, time.time()],
    }


def main(argv: list[str]) -> int:
    host, port, path, bodies_file, concurrency = argv
    bodies = read_bodies(Path(bodies_file))
    result = asyncio.run(run(host, int(port), path, bodies, int(concurrency)))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
