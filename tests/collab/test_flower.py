"""A real Flower deployment: SuperLink and three SuperNodes as processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgetrust.collab.flower import write_app
from edgetrust.collab.rounds import audit_log
from edgetrust.log import Log

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(flwr_home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_HOME=str(flwr_home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_rounds_with_secagg_and_dp_over_flower(tmp_path: Path) -> None:
    flwr_home = tmp_path / "flwr"
    flwr_home.mkdir()
    link_port = _free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "et"\n\n[superlink.et]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    server_home = tmp_path / "coordinator"
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log_file = open(tmp_path / "superlink.log", "wb")
        logs.append(log_file)
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "flower-superlink"),
                    "--insecure",
                    "--disable-runtime-dependency-installation",
                    "--port",
                    str(link_port),
                    "--database",
                    str(tmp_path / "link.db"),
                ],
                env=_env(flwr_home, EDGETRUST_HOME=str(server_home)),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        for i in range(3):
            node_log = open(tmp_path / f"node{i}.log", "wb")
            logs.append(node_log)
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{link_port}",
                        "--port",
                        str(_free_port()),
                        "--node-config",
                        f"partition-id={i} num-partitions=3",
                    ],
                    env=_env(flwr_home, EDGETRUST_HOME=str(tmp_path / f"device{i}")),
                    stdout=node_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        app = write_app(
            tmp_path / "app",
            home=str(server_home),
            rounds=2,
            noise=1.0,
            epsilon_max=10.0,
            local_epochs=1,
        )
        run = None
        for _ in range(30):  # the SuperLink needs a moment before it accepts runs
            out = subprocess.run(
                [str(BIN / "flwr"), "run", str(app), "et", "--format", "json"],
                env=_env(flwr_home),
                capture_output=True,
                timeout=120,
            )
            try:
                body = json.loads(out.stdout)
            except json.JSONDecodeError:
                body = {}
            if body.get("success"):
                run = body["run-id"]
                break
            time.sleep(1)
        assert run is not None, out.stdout + out.stderr
        status = ""
        deadline = time.monotonic() + 800
        while time.monotonic() < deadline:
            ls = subprocess.run(
                [str(BIN / "flwr"), "ls", "et", "--run-id", str(run), "--format", "json"],
                env=_env(flwr_home),
                capture_output=True,
                timeout=120,
            )
            runs = json.loads(ls.stdout).get("runs", [])
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished"):
                break
            time.sleep(3)
        assert status == "finished:completed", (tmp_path / "superlink.log").read_text()[-3000:]
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
        for f in logs:
            f.close()
    with Log.open(server_home) as log:
        report = audit_log(log, home=server_home, require_artifacts=True)
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.survivors == 3 and r.model_recomputed for r in report.rounds)
    assert report.rounds[-1].epsilon is not None and report.rounds[-1].epsilon < 10.0
    summaries = list((server_home / "fl").glob("flower-*.json"))
    assert len(summaries) == 1
