"""Start and stop a local anvil node (npm `@foundry-rs/anvil`, installed under tools/npm).

Tests and benchmarks use it to run the same flows against a real JSON-RPC node as against the
in-process chain. anvil listens on 127.0.0.1 only, on a free port, and is stopped (then killed
if it lingers) when the context exits.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetrust.chain.rpc import ChainUnavailableError
from edgetrust.errors import NotFoundError

# anvil's default mnemonic ("test test ... junk") gives these well-known, public dev keys.
ANVIL_DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
)


def find_anvil() -> Path:
    """Locate the anvil binary: $EDGETRUST_ANVIL, tools/npm/node_modules/.bin, then PATH."""
    env = os.environ.get("EDGETRUST_ANVIL")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
    system = platform.system().lower()
    for parent in here.parents:
        modules = parent / "tools" / "npm" / "node_modules"
        # Prefer the platform package's binary over the node wrapper in .bin, so that stopping
        # the process we started stops anvil itself.
        for candidate in (
            modules / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil",
            modules / ".bin" / "anvil",
        ):
            if candidate.exists():
                return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise NotFoundError("anvil not found: run 'npm ci --prefix tools/npm' (or make test)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChainUnavailableError(f"anvil exited with code {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ChainUnavailableError(f"anvil did not listen on 127.0.0.1:{port} in {timeout} s")


@contextmanager
def anvil(*, timeout: float = 30.0) -> Iterator[str]:
    """Run anvil on a free 127.0.0.1 port for the duration of the block; yield its URL."""
    binary = find_anvil()
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--hardfork",
            "cancun",
            "--silent",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopped as one below
    )
    try:
        _wait_listening(port, proc, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
