"""`edgetrust human ...` against a live node (subprocess): ceremonies, tasks, verdicts, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetrust.cli import run
from tests.node.conftest import Server, free_port, start_server

SUBJECT = "ab" * 32


@pytest.fixture(scope="module")
def live_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(["node", "serve", "--rate", "0"], tmp_path_factory.mktemp("node-home"))
    try:
        yield server
    finally:
        server.stop()


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, Any, str]:
    code = run([*args, "--home", str(home), "--json"])
    captured = capsys.readouterr()
    body = json.loads(captured.out) if captured.out.strip() else None
    return code, body, captured.err


def _people(tmp: Path, node: Server, capsys: pytest.CaptureFixture[str], n: int) -> list[Path]:
    homes = []
    for i in range(n):
        home = tmp / f"r{i}"
        code, body, err = cli(capsys, home, "human", "register", "--node", node.url)
        assert code == 0, err
        assert body["did"].startswith("did:key:") and body["duplicate"] is False
        homes.append(home)
    return homes


def _task(capsys: pytest.CaptureFixture[str], home: Path, node: Server, subject: str) -> str:
    args = ("human", "task", "add", subject, "-q", "Is it right?", "-a", "yes", "-a", "no")
    code, body, err = cli(capsys, home, *args, "--node", node.url)
    assert code == 0, err
    return str(body["digest"])


def test_register_review_aggregate_reputation(
    tmp_path: Path, live_node: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    homes = _people(tmp_path, live_node, capsys, 3)
    auth_file = homes[0] / "human" / "default.authenticator.json"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    code, body, err = cli(capsys, homes[0], "human", "login", "--node", live_node.url)
    assert code == 0 and body["verified"] is True, err
    task = _task(capsys, homes[0], live_node, "cd" * 32)
    for home, answer in zip(homes, ["yes", "yes", "no"], strict=True):
        code, body, err = cli(
            capsys, home, "human", "review", task, answer, "--confidence", "0.8",
            "--node", live_node.url,
        )  # fmt: skip
        assert code == 0, err
        assert body["answer"] == answer
    code, rows, _ = cli(capsys, homes[0], "human", "tasks", "--mine", "--node", live_node.url)
    (row,) = [r for r in rows if r["digest"] == task]
    assert row["verdicts"] == 3 and row["mine"] == "yes"
    code, rows, _ = cli(capsys, homes[0], "human", "aggregate", task, "--node", live_node.url)
    assert code == 0 and rows[0]["answer"] == "yes" and len(rows[0]["reviewers"]) == 3
    code, rows, _ = cli(capsys, homes[2], "human", "reputation", "--node", live_node.url)
    assert code == 0 and {r["reviews"] for r in rows} == {1}
    # the counter persisted: a second login still verifies (counter moved forward on disk)
    assert json.loads(auth_file.read_text())["signCount"] >= 2
    # rich output renders without error
    for args in (["tasks", "--mine"], ["aggregate"], ["reputation"], ["login"]):
        assert run(["human", *args, "--home", str(homes[0]), "--node", live_node.url]) == 0
    text = capsys.readouterr().out
    assert task[:10] in text and "verified" in text


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, live_node: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    (home,) = _people(tmp_path, live_node, capsys, 1)
    task = _task(capsys, home, live_node, "ef" * 32)
    url = ("--node", live_node.url)
    cases = [
        (("human", "review", "00" * 32, "yes", *url), "no task"),  # unknown task
        (("human", "review", task, "maybe", *url), "not one of"),  # bad answer
        (("human", "task", "add", "xyz", "-q", "q", "-a", "a", "-a", "b", *url), "64"),
        (("human", "task", "add", SUBJECT, "-q", "q", "-a", "a", *url), "answers"),
        (("human", "aggregate", "00" * 32, *url), "no task"),
        (("human", "reputation", "did:key:zNope", *url), "did"),
    ]
    for args, word in cases:
        code, _, err = cli(capsys, home, *args)
        assert code == 2, (args, err)
        assert word in err.lower() and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    # a second verdict: 409, "the first verdict counts"
    assert cli(capsys, home, "human", "review", task, "yes", *url)[0] == 0
    code, _, err = cli(capsys, home, "human", "review", task, "no", *url)
    assert code == 2 and "first verdict counts" in err
    # review without registering first
    code, _, err = cli(capsys, tmp_path / "nobody", "human", "review", task, "yes", *url)
    assert code == 2 and "register" in err


def test_vouch_and_publish(
    tmp_path: Path, live_node: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    homes = _people(tmp_path, live_node, capsys, 3)
    url = ("--node", live_node.url)
    dids = [cli(capsys, h, "init")[1]["did"] for h in homes]
    for h in homes[1:]:
        code, body, err = cli(capsys, h, "human", "vouch", dids[0], *url)
        assert code == 0, err
    assert body["vouchers"] == 2
    code, body, _ = cli(capsys, homes[1], "human", "vouch", dids[0], *url)  # again: not twice
    # a fresh assertion makes new bytes (logged), but the voucher is counted once
    assert code == 0 and body["duplicate"] is False and body["vouchers"] == 2
    code, _, err = cli(capsys, homes[0], "human", "vouch", dids[0], *url)
    assert code == 2 and "themselves" in err
    code, _, err = cli(capsys, tmp_path / "stranger", "human", "vouch", dids[0], *url)
    assert code == 2 and "run 'edgetrust human register' first" in err
    code, rows, _ = cli(capsys, homes[0], "human", "reputation", dids[0], *url)
    assert rows[0]["vouchers"] == 2
    task = _task(capsys, homes[0], live_node, "12" * 32)
    for h in homes:
        assert cli(capsys, h, "human", "review", task, "no", *url)[0] == 0
    code, body, err = cli(capsys, homes[1], "human", "aggregate", task, "--publish", *url)
    assert code == 0, err
    assert body["answer"] == "no" and len(body["inputs"]) == 3 and body["signer"] == dids[1]
    at = body["index"]
    shown = run(["human", "aggregate", task, *url, "--home", str(homes[0])])
    assert shown == 0 and f"current at {at}" in capsys.readouterr().out
    late = _people(tmp_path / "late", live_node, capsys, 1)[0]
    code, body, err = cli(capsys, late, "human", "review", task, "yes", *url)
    assert code == 0, err
    code, rows, _ = cli(capsys, homes[0], "human", "aggregate", task, *url)
    assert rows[0]["published"]["stale"] and rows[0]["published"]["later"] == [body["index"]]
    assert run(["human", "aggregate", task, *url, "--home", str(homes[0])]) == 0
    text = capsys.readouterr().out  # the table cell may wrap after "(later:"
    assert f"stale at {at}" in text and f"{body['index']})" in text and "current" not in text
    code, _, err = cli(capsys, homes[1], "human", "aggregate", "--publish", *url)
    assert code == 2 and "needs a task" in err.lower()


def test_node_down_is_one_line_no_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "EDGETRUST_HOME": str(tmp_path)}
    for args in (["register"], ["tasks"], ["aggregate"]):
        proc = subprocess.run(
            [sys.executable, "-m", "edgetrust", "human", *args, "--node", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "cannot reach the node" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["human", "--help"]) == 0
    text = capsys.readouterr().out
    for word in (
        "register",
        "login",
        "task",
        "tasks",
        "review",
        "aggregate",
        "reputation",
        "vouch",
    ):
        assert word in text
