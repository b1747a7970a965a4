"""The `log`, `node` and `witness` commands: output, exit codes, and refusing bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from edgetrust.cli import run
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import NoteSigner
from edgetrust.log.service import Log
from tests.node.conftest import Server, card_envelope

VKEY_RE = re.compile(r"^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$")


def _json(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out)


def test_key_is_one_vkey_line(edgetrust_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["log", "key"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and VKEY_RE.match(out.strip())
    log = Log.open(edgetrust_home)
    try:
        assert log.verifier_key == out.strip()
    finally:
        log.close()


def test_submit_get_prove_verify_locally(
    tmp_path: Path, publisher: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        f = tmp_path / f"e{i}.json"
        f.write_bytes(card_envelope(publisher, i))
        assert run(["log", "submit", str(f), "--json"]) == 0
        assert _json(capsys)["index"] == i
    assert run(["log", "key"]) == 0
    key = capsys.readouterr().out.strip()
    assert run(["log", "checkpoint", "--json"]) == 0
    assert _json(capsys)["size"] == 3
    assert run(["log", "get", "1"]) == 0
    human = capsys.readouterr().out
    assert "inclusion verified" in human and "https://edgetrust.dev/model/v1" in human
    assert run(["log", "get", "1", "--json"]) == 0
    doc = _json(capsys)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(doc))
    assert run(["log", "verify", str(proof_file), "--key", key]) == 0
    assert "verified" in capsys.readouterr().out
    assert run(["log", "prove", "2", "--json"]) == 0
    assert _json(capsys)["index"] == 2
    assert run(["log", "prove", "--consistency", "1", "--json"]) == 0
    cons = _json(capsys)
    assert cons["size1"] == 1 and cons["size2"] == 3
    (tmp_path / "cons.json").write_text(json.dumps(cons))
    assert run(["log", "verify", str(tmp_path / "cons.json"), "--key", key]) == 0
    assert "is a prefix" in capsys.readouterr().out
    cons["proof"] = cons["proof"][::-1]
    (tmp_path / "cons.json").write_text(json.dumps(cons))
    assert run(["log", "verify", str(tmp_path / "cons.json"), "--key", key]) == 1

    # A tampered entry fails verification (exit 1); a wrong key too.
    entry = bytearray(base64.b64decode(doc["entry"]))
    entry[10] ^= 1
    (tmp_path / "bad.json").write_text(
        json.dumps({**doc, "entry": base64.b64encode(bytes(entry)).decode()})
    )
    assert run(["log", "verify", str(tmp_path / "bad.json"), "--key", key]) == 1
    other = NoteSigner(key.split("+")[0], Identity.generate()).vkey
    assert run(["log", "verify", str(proof_file), "--key", other]) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["log", "get", "99"],
        ["log", "get", "-1"],
        ["log", "prove"],
        ["log", "prove", "1", "--consistency", "1"],
        ["log", "prove", "--consistency", "99"],
        ["log", "verify", "/no/such/file", "--key", "a+00000000+AQ=="],
        ["log", "checkpoint", "--log", "http://127.0.0.1:9"],
        ["log", "monitor", "http://127.0.0.1:9"],
        ["log", "submit", "/no/such/file"],
    ],
)
def test_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [b"", b"{}", b"[]", b'{"checkpoint": 5}', b'{"checkpoint": "x\\n", "index": 0}', b"\xff"],
)
def test_verify_malformed_documents(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "doc.json"
    f.write_bytes(content)
    code = run(
        [
            "log",
            "verify",
            str(f),
            "--key",
            "a+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode(),
        ]
    )
    assert code in (1, 2)
    assert "Traceback" not in capsys.readouterr().err


def test_submit_refuses_bad_envelope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "e.json"
    f.write_text('{"payload": "e30=", "payloadType": "x", "signatures": []}')
    assert run(["log", "submit", str(f)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_remote_commands_against_a_live_node(
    live_node: Server, tmp_path: Path, publisher: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    url = live_node.url
    assert run(["log", "key", "--log", url]) == 0
    key = capsys.readouterr().out.strip()
    assert VKEY_RE.match(key)
    f = tmp_path / "e.json"
    f.write_bytes(card_envelope(publisher, 0))
    assert run(["log", "submit", str(f), "--log", url, "--key", key, "--json"]) == 0
    assert _json(capsys)["index"] == 0
    assert run(["log", "get", "0", "--log", url, "--key", key]) == 0
    assert "inclusion verified" in capsys.readouterr().out
    assert run(["log", "checkpoint", "--log", url]) == 2  # --key is required
    state = tmp_path / "mon.json"
    assert run(["log", "monitor", url, "--key", key, "--state", str(state), "--once"]) == 0
    assert "size 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["node", "serve", "--max-body", "10"],
        ["node", "serve", "--rate", "-1"],
        ["witness", "serve", "--log-key", "not-a-key"],
        ["witness", "serve", "--log-key", "a+00000000+AQ==", "--name", "has space"],
    ],
)
def test_servers_refuse_bad_settings_before_listening(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*args, "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_witness_key_is_a_cosignature_vkey(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["witness", "key", "--name", "w.example/1"]) == 0
    vkey = capsys.readouterr().out.strip()
    assert vkey.startswith("w.example/1+") and base64.b64decode(vkey.split("+", 2)[2])[0] == 4
