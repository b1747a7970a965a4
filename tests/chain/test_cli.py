"""`edgetrust chain …`: in-process by default, the same against anvil; reverts as one line."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from edgetrust.chain._devchain import ANVIL_DEV_KEYS
from edgetrust.cli import run
from edgetrust.identity import Keystore
from edgetrust.log.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from tests.chain import rfc9162

ORIGIN = "cli.example/log"
LEAVES = [rfc9162.leaf(bytes([i])) for i in range(32)]


def root(n: int) -> str:
    return rfc9162.mth(LEAVES[:n]).hex()


def _json(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out)


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_help_teaches_the_in_process_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "in-process" in text and "--rpc" in text and "demo" in text


@pytest.mark.slow
def test_account_new_show_import(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run(["chain", "account", "new", "--name", "me", "--json"]) == 0
    address = _json(capsys)["address"]
    assert run(["chain", "account", "show", "--name", "me", "--json"]) == 0
    assert _json(capsys)["address"] == address
    monkeypatch.setattr("sys.stdin", io.StringIO(ANVIL_DEV_KEYS[0] + "\n"))
    assert run(["chain", "account", "import", "--name", "dev", "--json"]) == 0
    assert _json(capsys)["address"] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    key_file = tmp_path / "k.hex"
    key_file.write_text(ANVIL_DEV_KEYS[1])
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    args = ["chain", "account", "import", "--name", "dev2", "--key-file", str(key_file)]
    assert run([*args, "--passphrase-file", str(pw)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    "payload",
    ["", "not hex", "0x" + "00" * 32, "ab" * 31, "ab" * 100 + "\n" * 10, "\x00\xff" * 50],
)
def test_account_import_rejects_bad_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, payload: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(payload))
    assert run(["chain", "account", "import", "--name", "x"]) == 2
    _one_line_error(capsys, "private key")


def test_account_show_missing_and_existing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "account", "show", "--name", "ghost"]) == 2
    _one_line_error(capsys, "no EVM account")
    assert run(["chain", "account", "new", "--name", "a"]) == 0
    assert run(["chain", "account", "new", "--name", "a"]) == 2
    _one_line_error(capsys, "already exists")


def test_in_process_deploy_and_anchor(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "deploy", "--json"]) == 0
    data = _json(capsys)
    assert data["in_process"] and data["LogAnchor"].startswith("0x")
    args = ["chain", "anchor", "--origin", ORIGIN, "--size", "5", "--root", root(5), "--json"]
    assert run(args) == 0
    data = _json(capsys)
    assert data["registered_now"] and data["gas"] < 55_000


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--root", "zz"], "--root is not hex"),
        (["--root", "ab" * 16], "32 bytes"),
        (["--root", "ab" * 32, "--rpc", "ftp://x"], "http"),
        (["--root", "ab" * 32, "--rpc", "http://127.0.0.1:9"], "cannot reach"),
    ],
)
def test_anchor_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    assert run(["chain", "anchor", "--origin", ORIGIN, "--size", "1", *extra]) == 2
    _one_line_error(capsys, needle)


def test_stateful_commands_need_rpc(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "report-equivocation", "--origin", ORIGIN]) == 2
    _one_line_error(capsys, "--rpc", "chain demo")
    assert run(["chain", "challenge", "--origin", ORIGIN, "--size1", "1", "--size2", "2"]) == 2
    _one_line_error(capsys, "--rpc")


def _signed_checkpoint(home: Path, n: int, root_hex: str) -> Path:
    ident = Keystore(home).load_or_create("log")
    note = sign_checkpoint(
        Checkpoint(ORIGIN, n, bytes.fromhex(root_hex)), NoteSigner(ORIGIN, ident)
    )
    path = home / f"checkpoint-{n}"
    path.write_bytes(note)
    return path


@pytest.mark.slow
def test_flows_against_anvil(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    anvil_url: str,
    edgetrust_home: Path,
) -> None:
    rpc = ["--rpc", anvil_url]
    monkeypatch.setattr("sys.stdin", io.StringIO(ANVIL_DEV_KEYS[0]))
    assert run(["chain", "account", "import"]) == 0
    capsys.readouterr()
    assert run(["chain", "account", "show", *rpc, "--json"]) == 0
    assert _json(capsys)["balance_wei"] > 10**18
    assert run(["chain", "deploy", *rpc, "--window", "60", "--json"]) == 0
    deployed = _json(capsys)
    assert not deployed["in_process"]
    assert (edgetrust_home / "chain.json").exists()
    for n in (4, 9):
        assert (
            run(["chain", "anchor", *rpc, "--origin", ORIGIN, "--size", str(n), "--root", root(n)])
            == 0
        )
    capsys.readouterr()
    # A decreasing size: the contract's reason, one line, exit 2.
    assert run(["chain", "anchor", *rpc, "--origin", ORIGIN, "--size", "3", "--root", root(3)]) == 2
    _one_line_error(capsys, "anchor reverted on chain: size decreased")
    # The watcher agrees with an honest served checkpoint, alarms on a forged one.
    good = _signed_checkpoint(edgetrust_home, 9, root(9))
    assert run(["chain", "watch", *rpc, "--origin", ORIGIN, "--checkpoint", str(good)]) == 0
    assert "ok:" in capsys.readouterr().out
    forged = _signed_checkpoint(edgetrust_home, 9, "ab" * 32)
    assert run(["chain", "watch", *rpc, "--origin", ORIGIN, "--checkpoint", str(forged)]) == 1
    _one_line_error(capsys, "verification failed", "anchored")
    garbage = edgetrust_home / "garbage"
    garbage.write_bytes(os.urandom(64))
    assert run(["chain", "watch", *rpc, "--origin", ORIGIN, "--checkpoint", str(garbage)]) == 2
    capsys.readouterr()
    # Challenge 4 -> 9, not answered: claiming too early is refused, after the window it slashes.
    assert (
        run(
            [
                "chain",
                "challenge",
                *rpc,
                "--origin",
                ORIGIN,
                "--size1",
                "4",
                "--size2",
                "9",
                "--json",
            ]
        )
        == 0
    )
    cid = _json(capsys)["challenge_id"]
    assert run(["chain", "claim-timeout", *rpc, "--challenge-id", str(cid)]) == 2
    _one_line_error(capsys, "deadline not passed")
    from edgetrust.chain import connect

    connect(anvil_url).advance_time(61)
    assert run(["chain", "claim-timeout", *rpc, "--challenge-id", str(cid)]) == 0
    capsys.readouterr()
    assert (
        run(["chain", "anchor", *rpc, "--origin", ORIGIN, "--size", "10", "--root", root(10)]) == 2
    )
    _one_line_error(capsys, "not the log operator")
    assert run(["chain", "report-equivocation", *rpc, "--origin", ORIGIN]) == 2
    _one_line_error(capsys, "no equivocation")


@pytest.mark.slow
def test_anchor_and_watch_the_home_log(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    anvil_url: str,
    edgetrust_home: Path,
) -> None:
    from edgetrust.log.service import Log

    rpc = ["--rpc", anvil_url]
    monkeypatch.setattr("sys.stdin", io.StringIO(ANVIL_DEV_KEYS[1]))
    assert run(["chain", "account", "import"]) == 0
    assert run(["chain", "deploy", *rpc]) == 0
    capsys.readouterr()
    with Log.open(edgetrust_home) as log:
        log.append_many([b"receipt %d" % i for i in range(5)])
    assert run(["chain", "anchor", *rpc, "--json"]) == 0
    anchored = _json(capsys)
    assert anchored["size"] == 5 and anchored["registered_now"]
    with Log.open(edgetrust_home) as log:
        log.append_many([b"receipt %d" % i for i in range(5, 12)])
    # The log grew: its new checkpoint must be consistent with the anchored one, and is.
    assert run(["chain", "watch", *rpc, "--json"]) == 0
    report = _json(capsys)
    assert report["ok"] and report["size"] == 12 and report["latest_anchored"]["size"] == 5
    assert run(["chain", "anchor", *rpc, "--json"]) == 0
    assert _json(capsys)["size"] == 12 and not anchored["in_process"]
    assert run(["chain", "anchor", *rpc, "--size", "3"]) == 2
    _one_line_error(capsys, "together")


@pytest.mark.slow
def test_demo_convicts_on_the_in_process_chain(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "demo", "--json"]) == 0
    story = _json(capsys)
    outcomes = " | ".join(s["outcome"] for s in story["steps"])
    assert "operator slashed" in outcomes and "CONVICTED" in outcomes
    assert "refused: not the log operator" in outcomes and "log entry 0" in outcomes


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--origin", "x" * 200, "--size", "1", "--root", "ab" * 32], "origin"),
        (["--origin", ORIGIN, "--size", "-1", "--root", "ab" * 32], "size"),
        (["--origin", ORIGIN, "--size", str(2**64), "--root", "ab" * 32], "size"),
        (["--origin", "", "--size", "1", "--root", "ab" * 32], "origin"),
    ],
)
def test_anchor_adversarial_arguments(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert run(["chain", "anchor", *args]) == 2
    _one_line_error(capsys, needle)


def test_deploy_rejects_bad_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["chain", "deploy", "--window", "0"]) == 2
    _one_line_error(capsys, "response_window")
    assert run(["chain", "deploy", "--min-bond", "-5"]) == 2
    _one_line_error(capsys, "min_bond")


def test_errors_in_json_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(["chain", "anchor", "--origin", ORIGIN, "--size", "1", "--root", "zz", "--json"]) == 2
    )
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert body["error"] == "InvalidInputError" and "hex" in body["message"]
    assert "Traceback" not in captured.err


def test_passphrase_file_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["chain", "account", "new", "--passphrase-file", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "cannot read passphrase file")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert run(["chain", "account", "new", "--passphrase-file", str(empty)]) == 2
    _one_line_error(capsys, "is empty")


@pytest.mark.slow
def test_watch_and_zk_reject_malformed_files(
    capsys: pytest.CaptureFixture[str], anvil_url: str, edgetrust_home: Path, tmp_path: Path
) -> None:
    rpc = ["--rpc", anvil_url]
    key = tmp_path / "k"
    key.write_text(ANVIL_DEV_KEYS[0])
    assert run(["chain", "account", "import", "--key-file", str(key)]) == 0
    assert run(["chain", "deploy", *rpc]) == 0
    assert run(["chain", "anchor", *rpc, "--origin", ORIGIN, "--size", "4", "--root", root(4)]) == 0
    capsys.readouterr()
    good = _signed_checkpoint(edgetrust_home, 4, root(4)).read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "no-signature": good.split(b"\n\n")[0] + b"\n\n",
        "oversized": good + b"x" * (200 * 1024),
        "binary": bytes(range(256)),
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        code = run(["chain", "watch", *rpc, "--origin", ORIGIN, "--checkpoint", str(path)])
        assert code in (1, 2), name
        _one_line_error(capsys)
    # A note signed by another key than the registered one is refused (verification failed).
    from edgetrust.identity import Identity

    other = sign_checkpoint(
        Checkpoint(ORIGIN, 4, bytes.fromhex(root(4))), NoteSigner(ORIGIN, Identity.generate())
    )
    path = tmp_path / "other-key"
    path.write_bytes(other)
    assert run(["chain", "watch", *rpc, "--origin", ORIGIN, "--checkpoint", str(path)]) == 1
    _one_line_error(capsys, "verification failed")
    for name, data in {"short": b"\x1e\x8e", "huge": b"\x00" * (300 * 1024)}.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert run(["chain", "verify-zk", *rpc, "--calldata", str(path)]) == 2
        _one_line_error(capsys, "calldata")
