"""`edgetrust fl serve|join`: federated rounds across machines on Flower's SuperLink/SuperNodes.

Registered on the `fl` group of `_fl` (simulate and audit live there); split out because the
process management of the Flower binaries has nothing to share with the in-process commands.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from edgetrust.cli._app import HomeOpt, err, out
from edgetrust.cli._fl import fl
from edgetrust.errors import InvalidInputError


def _flower_env() -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _flower_bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise InvalidInputError(f"{name} not found: install the 'fl' extra (flwr)")
    return found


@fl.command()
def serve(
    port: Annotated[int, typer.Option(help="Port of the SuperLink (all its APIs).")] = 9091,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    run: Annotated[
        bool, typer.Option("--run", help="Also submit the federated app once nodes can join.")
    ] = False,
    rounds: Annotated[int, typer.Option(help="Rounds (with --run).")] = 2,
    min_nodes: Annotated[int, typer.Option(help="Wait for this many SuperNodes.")] = 3,
    dp_noise: Annotated[float, typer.Option("--dp-noise", help="DP noise multiplier z.")] = 0.0,
    clip: Annotated[float, typer.Option(help="L2 clip C.")] = 1.0,
    epsilon_max: Annotated[float, typer.Option("--epsilon-max", help="0: no budget.")] = 0.0,
    home: HomeOpt = None,
) -> None:
    """Coordinate federated rounds across machines: start a Flower SuperLink.

    Devices join with 'edgetrust fl join --superlink HOST:PORT'. With --run, the federated
    app (edgetrust's secure aggregation protocol over Flower messages) is submitted and the
    command waits for it to finish, exiting 0 only if the run completed; then
    'edgetrust fl audit' checks its records. Insecure transport: put it behind TLS for real
    use.
    """
    from edgetrust.collab.flower import write_app
    from edgetrust.home import resolve_home

    root = resolve_home(home)
    env = _flower_env()
    cmd = [
        _flower_bin("flower-superlink"),
        "--insecure",
        "--disable-runtime-dependency-installation",
        "--port",
        str(port),
        "--host",
        host,
        "--database",
        str(root / "fl" / "superlink.db"),
    ]
    (root / "fl").mkdir(parents=True, exist_ok=True)
    err.print(f"starting SuperLink on {host}:{port} (Ctrl-C to stop)")
    link = subprocess.Popen(cmd, env=env)
    try:
        if run:
            with tempfile.TemporaryDirectory(prefix="edgetrust-flwr-") as tmp:
                flwr_home = Path(tmp)
                env["FLWR_HOME"] = str(flwr_home)
                (flwr_home / "config.toml").write_text(
                    f'[superlink]\ndefault = "edgetrust"\n\n[superlink.edgetrust]\n'
                    f'address = "{host}:{port}"\ninsecure = true\n'
                )
                appdir = write_app(
                    flwr_home / "app",
                    home=str(root),
                    rounds=rounds,
                    min_nodes=min_nodes,
                    noise=dp_noise,
                    clip=clip,
                    epsilon_max=epsilon_max,
                    wait_nodes=600.0,
                )
                code = _submit_and_wait(appdir, env)
            raise typer.Exit(code)
        link.wait()
    finally:
        link.terminate()
        link.wait(timeout=10)


def _submit_and_wait(appdir: Path, env: dict[str, str], limit: float = 3600.0) -> int:
    """Submit the app with `flwr run`, then poll `flwr ls` until the run finishes.

    `flwr run --stream` exits 0 even when the run failed, so the status is what counts:
    exit 0 only for ``finished:completed``.
    """
    import json

    flwr = _flower_bin("flwr")
    run_id = None
    for _ in range(60):  # the SuperLink takes a moment before it accepts runs
        proc = subprocess.run(
            [flwr, "run", str(appdir), "edgetrust", "--format", "json"],
            env=env,
            capture_output=True,
            timeout=300,
        )
        try:
            body = json.loads(proc.stdout)
        except json.JSONDecodeError:
            body = {}
        if body.get("success"):
            run_id = str(body["run-id"])
            break
        time.sleep(1.0)
    if run_id is None:
        err.print("[bold red]error:[/] the SuperLink did not accept the run")
        return 1
    err.print(f"run {run_id} submitted; waiting for it to finish")
    deadline = time.monotonic() + limit
    status = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [flwr, "ls", "edgetrust", "--run-id", run_id, "--format", "json"],
            env=env,
            capture_output=True,
            timeout=300,
        )
        try:
            runs = json.loads(proc.stdout).get("runs", [])
        except json.JSONDecodeError:
            runs = []
        status = str(runs[0].get("status", "")) if runs else ""
        if status.startswith("finished"):
            break
        time.sleep(3.0)
    out.print(f"run {run_id}: {status or 'unknown'}")
    return 0 if status == "finished:completed" else 1


@fl.command()
def join(
    superlink: Annotated[str, typer.Option(help="HOST:PORT of the coordinator's SuperLink.")],
    partition: Annotated[
        int, typer.Option(help="This device's data partition (simulated data).")
    ] = 0,
    partitions: Annotated[int, typer.Option(help="Total partitions.")] = 3,
    port: Annotated[int, typer.Option(help="Local port of this SuperNode.")] = 9094,
    home: HomeOpt = None,
) -> None:
    """Join a federated session as a device: start a Flower SuperNode.

    The device's identity is 'fl-client' in its keystore; it trains on its own partition of
    the digits data, and sends only masked, noised, quantized updates.
    """
    from edgetrust.home import resolve_home

    env = _flower_env()
    env["EDGETRUST_HOME"] = str(resolve_home(home))
    cmd = [
        _flower_bin("flower-supernode"),
        "--insecure",
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        f"partition-id={partition} num-partitions={partitions}",
    ]
    err.print(f"joining {superlink} as partition {partition}/{partitions} (Ctrl-C to leave)")
    node = subprocess.Popen(cmd, env=env)
    try:
        node.wait()
    finally:
        node.terminate()
        node.wait(timeout=10)
