"""Fixtures for the node and witness tests: signed entries, an embedded log, live servers."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.models import ModelCard
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings


def card_envelope(identity: Identity, i: int, *, name: str = "m") -> bytes:
    """A signed model card (a real registered predicate type), unique per `i`."""
    digest = hashlib.sha256(f"{name}-{i}".encode()).hexdigest()
    card = ModelCard(
        digest="sha256:" + digest,
        name=f"{name}{i}",
        version="1",
        size=1000 + i,
        opset=17,
        inputs=(),
        outputs=(),
    )
    return card.sign(identity).to_json()


@pytest.fixture
def publisher() -> Identity:
    return Identity.from_seed(b"\x07" * 32, "publisher")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    the_log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        yield the_log
    finally:
        the_log.close()


@pytest.fixture
def node(log: Log) -> Iterator[TestClient]:
    app = create_app(log, settings=NodeSettings(rate=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server started as `edgetrust ...` in a subprocess."""

    url: str
    proc: subprocess.Popen[bytes]
    home: Path
    args: list[str]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(args: list[str], home: Path, *, timeout: float = 60.0) -> Server:
    """Run ``python -m edgetrust <args> --port P --home H``; wait until /healthz answers."""
    port = free_port()
    full = [*args, "--host", "127.0.0.1", "--port", str(port), "--home", str(home)]
    env = {**os.environ, "EDGETRUST_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetrust", *full],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {stderr}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, proc, home, full)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not become healthy in time")


@pytest.fixture
def live_node(tmp_path: Path) -> Iterator[Server]:
    server = start_server(["node", "serve", "--rate", "0"], tmp_path / "node-home")
    try:
        yield server
    finally:
        server.stop()


def fork_logs(root: Path, publisher: Identity, *, shared: int = 3) -> tuple[Log, Log]:
    """Two logs with the same key and origin that agree on `shared` entries, then diverge.

    Made the way a misbehaving operator would: copy the log (key included) and append a
    different entry to each copy, so both sign a checkpoint of the same size, different roots.
    """
    import shutil

    home_a, home_b = root / "fork-a", root / "fork-b"
    first = Log.open(home_a, max_delay=0.002)
    first.append_many([card_envelope(publisher, i) for i in range(shared)])
    first.close()
    shutil.copytree(home_a, home_b)
    log_a = Log.open(home_a, max_delay=0.002)
    log_b = Log.open(home_b, max_delay=0.002)
    log_a.append(card_envelope(publisher, 100, name="a"))
    log_b.append(card_envelope(publisher, 100, name="b"))
    return log_a, log_b
