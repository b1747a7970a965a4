"""A real Flower deployment: SuperLink and three SuperNodes as processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgetrust.collab.audit import audit_log
from edgetrust.log import Log

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(flwr_home: Path, **extra: str) -> dict[str, str]:
    flwr_home.mkdir(parents=True, exist_ok=True)
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
    """`edgetrust fl serve --run` (SuperLink + run) and three `edgetrust fl join` processes."""
    port = _free_port()
    server_home = tmp_path / "coordinator"
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    edgetrust = str(BIN / "edgetrust")
    try:
        for i in range(3):
            node_log = open(tmp_path / f"node{i}.log", "wb")
            logs.append(node_log)
            procs.append(
                subprocess.Popen(
                    [
                        edgetrust,
                        "fl",
                        "join",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--partition",
                        str(i),
                        "--partitions",
                        "3",
                        "--port",
                        str(_free_port()),
                        "--home",
                        str(tmp_path / f"device{i}"),
                    ],
                    env=_env(tmp_path / f"flwr{i}"),
                    stdout=node_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        serve_log = open(tmp_path / "serve.log", "wb")
        logs.append(serve_log)
        serve = subprocess.Popen(
            [
                edgetrust,
                "fl",
                "serve",
                "--port",
                str(port),
                "--run",
                "--rounds",
                "2",
                "--min-nodes",
                "3",
                "--dp-noise",
                "1.0",
                "--epsilon-max",
                "10",
                "--home",
                str(server_home),
            ],
            env=_env(tmp_path / "flwr"),
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(serve)
        code = serve.wait(timeout=840)
        serve_log.flush()
        assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert "finished:completed" in (tmp_path / "serve.log").read_text()
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
    assert len(list((server_home / "fl").glob("flower-*.json"))) == 1
