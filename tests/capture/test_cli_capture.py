"""`edgetrust capture record|verify|show`: exit 0 ok, 1 verification failed, 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetrust.capture.edf import manifest_path, read_recording, write_recording
from edgetrust.capture.verify import parse_manifest
from edgetrust.cli import run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    try:
        body = json.loads(captured.out)
    except ValueError:
        body = captured.out
    return code, body, captured.err


def test_record_verify_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = str(tmp_path / "r.bdf")
    code, body, _ = cli(
        capsys,
        "capture",
        "record",
        "--source",
        "numpy",
        "--seconds",
        "4.5",
        "--seal-every",
        "2",
        "--out",
        rec,
        "--json",
    )
    assert code == 0 and body["chunks"] == 5 and body["log_index"] == 0
    code, v, _ = cli(capsys, "capture", "verify", rec, "--json", "--require-logged")
    assert code == 0 and v["verified"] and v["root"] == body["root"] and v["log_index"] == 0
    code, text, _ = cli(capsys, "capture", "show", rec)
    assert code == 0 and body["stream_id"] in text
    code, s, _ = cli(capsys, "capture", "show", str(manifest_path(rec)), "--json")
    assert code == 0 and s["samples"] == 1125


def test_tampered_file_exits_1_naming_the_chunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "r.bdf"
    assert (
        run(
            [
                "capture",
                "record",
                "--source",
                "numpy",
                "--seconds",
                "5",
                "--out",
                str(rec),
                "--no-log",
            ]
        )
        == 0
    )
    capsys.readouterr()
    frames = read_recording(rec).frames.copy()
    frames[3 * 250 + 7, 2] += 1
    manifest = parse_manifest(manifest_path(rec).read_bytes())
    write_recording(rec, manifest, [frames[i : i + 250] for i in range(0, 1250, 250)])
    code, body, err = cli(capsys, "capture", "verify", str(rec), "--json")
    assert code == 1 and body["error"] == "AlteredChunkError" and "chunk 3" in body["message"]
    assert "Traceback" not in err
    code, _, err = cli(capsys, "capture", "verify", str(rec))
    assert code == 1 and "chunk 3 was altered" in err
    code, _, err = cli(capsys, "capture", "verify", str(rec), "--require-consent")
    assert code == 1 and "names no wearer" in err


def test_wearer_co_signs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgetrust.identity import Keystore

    Keystore().create("alice")
    rec = str(tmp_path / "w.bdf")
    code, body, _ = cli(
        capsys,
        "capture",
        "record",
        "--source",
        "numpy",
        "--seconds",
        "2",
        "--wearer",
        "alice",
        "--out",
        rec,
        "--json",
    )
    assert code == 0 and body["wearer"].startswith("did:key:")
    code, v, _ = cli(capsys, "capture", "verify", rec, "--require-consent", "--json")
    assert code == 0 and v["consented"] is True


@pytest.mark.parametrize(
    "args",
    [
        ["capture", "record", "--out", "x.txt", "--source", "numpy"],
        ["capture", "record", "--out", "x.bdf", "--source", "tv"],
        ["capture", "record", "--out", "x.bdf", "--seconds", "-1"],
        ["capture", "record", "--out", "x.bdf", "--source", "numpy", "--channels", "500"],
        ["capture", "record", "--out", "x.bdf", "--source", "numpy", "--chunk-seconds", "0.001"],
        ["capture", "record", "--out", "x.bdf", "--source", "numpy", "--wearer", "nobody"],
        ["capture", "verify", "missing.bdf"],
        ["capture", "show", "missing.bdf"],
    ],
)
def test_bad_input_exits_2(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err


def test_bad_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "r.bdf"
    run(["capture", "record", "--source", "numpy", "--seconds", "1", "--out", str(rec)])
    manifest_path(rec).write_text('{"format": 1}')
    code, _, err = cli(capsys, "capture", "verify", str(rec))
    assert code == 2 and "manifest" in err


@pytest.mark.slow
def test_record_from_brainflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = str(tmp_path / "b.bdf")
    code, body, _ = cli(capsys, "capture", "record", "--seconds", "1", "--out", rec, "--json")
    assert code == 0 and body["samples"] == 250 and body["source"] == "synthetic"
    assert cli(capsys, "capture", "verify", rec)[0] == 0


def test_wearer_must_be_a_logged_reviewer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edgetrust.human.reviewers import ReviewerRegistry, sign_reviewer_statement
    from edgetrust.identity import Keystore
    from edgetrust.log.service import Log
    from tests.human.authenticator import SoftAuthenticator

    alice = Keystore().create("alice")
    rec = str(tmp_path / "w.bdf")
    assert (
        run(
            [
                "capture",
                "record",
                "--source",
                "numpy",
                "--seconds",
                "1",
                "--wearer",
                "alice",
                "--out",
                rec,
            ]
        )
        == 0
    )
    capsys.readouterr()
    code, _, err = cli(capsys, "capture", "verify", rec, "--wearer-reviewer")
    assert code == 1 and "not a registered reviewer" in err
    reg = ReviewerRegistry(rp_id="edgetrust.local", origin="https://edgetrust.local")
    auth = SoftAuthenticator()
    passkey = reg.finish_registration(alice.did, auth.create(reg.start_registration(alice.did)))
    with Log.open() as log:
        log.append(sign_reviewer_statement(alice, passkey).to_json())
    code, v, err = cli(capsys, "capture", "verify", rec, "--wearer-reviewer", "--json")
    assert code == 0 and v["consented"], err
