"""The CLI end to end, through `edgetrust.cli.run` (the entry point's body) and the real
console script, on the demo MLP and on a user's own CNN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.zoo import digits_mlp_onnx, load_digits_split, small_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    (d / "digits.onnx").write_bytes(digits_mlp_onnx()[0])
    (d / "cnn.onnx").write_bytes(small_cnn().SerializeToString())
    x = load_digits_split()[1]
    np.save(d / "one.npy", x[:1])
    np.save(d / "other.npy", x[1:2])
    np.save(d / "batch.npy", x[:40])
    np.save(d / "cnn.npy", np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    (d / "digits.json").write_text(json.dumps({"input": x[:1].tolist()}))
    return d


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | list | None, str]:  # type: ignore[type-arg]
    """Run a command with --json: (exit code, parsed stdout — the result or the error —, stderr)."""
    code = run([*args, "--json"])
    captured = capsys.readouterr()
    text = captured.out.strip()
    return code, json.loads(text) if text else None, captured.err


def test_model_add_list_show(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = cli(capsys, "model", "add", str(files / "digits.onnx"), "--log")
    assert code == 0 and data is not None
    assert data["name"] == "digits" and data["logIndex"] == 0
    code, listed, _ = cli(capsys, "model", "list")
    assert code == 0 and [m["name"] for m in listed] == ["digits"]  # type: ignore[index, union-attr]
    for ref in ("digits", data["digest"], data["digest"][7:20]):  # type: ignore[index]
        code, shown, _ = cli(capsys, "model", "show", ref)
        assert code == 0 and shown["digest"] == data["digest"]  # type: ignore[index]


def test_infer_reveal_verify_round_trip(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "model", "add", str(files / "digits.onnx"))[0] == 0
    bundle, opening = tmp_path / "r.json", tmp_path / "open.json"
    code, data, _ = cli(
        capsys, "infer", "digits", "--input", str(files / "one.npy"), "--out", str(bundle)
    )
    assert code == 0 and data["logIndex"] == 0  # type: ignore[index]
    code, data, _ = cli(capsys, "verify", str(bundle))
    assert code == 0 and "6 log" in data["checked"] and "3 model" in data["checked"]  # type: ignore[index]
    assert cli(capsys, "reveal", str(bundle), "--out", str(opening))[0] == 0
    code, data, _ = cli(
        capsys,
        "verify",
        str(bundle),
        "--model",
        str(files / "digits.onnx"),
        "--input",
        str(files / "one.npy"),
        "--opening",
        str(opening),
        "--reexecute",
    )
    assert code == 0 and "5 re-execution" in data["checked"] and "4 opening" in data["checked"]  # type: ignore[index]
    # the JSON form of the same input opens the commitment too
    assert (
        cli(
            capsys,
            "verify",
            str(bundle),
            "--input",
            str(files / "digits.json"),
            "--opening",
            str(opening),
        )[0]
        == 0
    )


def test_verification_failures_exit_1_with_the_step(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, opening = tmp_path / "r.json", tmp_path / "open.json"
    assert (
        cli(
            capsys,
            "infer",
            str(files / "digits.onnx"),
            "-i",
            str(files / "one.npy"),
            "-o",
            str(bundle),
        )[0]
        == 0
    )
    assert cli(capsys, "reveal", str(bundle), "-o", str(opening))[0] == 0
    code, data, err = cli(
        capsys,
        "verify",
        str(bundle),
        "--input",
        str(files / "other.npy"),
        "--opening",
        str(opening),
    )
    assert code == 1 and data["step"] == "4 opening" and "Traceback" not in err  # type: ignore[index]
    code, data, _ = cli(capsys, "verify", str(bundle), "--model", str(files / "cnn.onnx"))
    assert code == 1 and data["step"] == "3 model"  # type: ignore[index]
    obj = json.loads(bundle.read_text())
    obj["envelope"]["signatures"][0]["sig"] = obj["envelope"]["signatures"][0]["sig"][::-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(obj))
    code, data, _ = cli(capsys, "verify", str(bad))
    assert (code in (1, 2) and "step" in data) or data["error"] == "InvalidInputError"  # type: ignore[index, operator]


def test_batch_infer_and_verify(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "batch.json"
    code, data, _ = cli(
        capsys,
        "infer",
        str(files / "digits.onnx"),
        "-i",
        str(files / "batch.npy"),
        "--batch",
        "-o",
        str(out),
    )
    assert code == 0 and data["receipts"] == 40  # type: ignore[index]
    code, data, _ = cli(capsys, "verify", str(out), "--model", str(files / "digits.onnx"))
    assert code == 0 and data["receipts"] == 40  # type: ignore[index]
    opening = tmp_path / "o7.json"
    assert cli(capsys, "reveal", str(out), "--item", "7", "-o", str(opening))[0] == 0
    code, data, _ = cli(
        capsys,
        "verify",
        str(out),
        "--item",
        "7",
        "--model",
        str(files / "digits.onnx"),
        "-i",
        str(files / "batch.npy"),
        "--opening",
        str(opening),
        "--reexecute",
    )
    assert code == 0 and "5 re-execution" in data["checked"]  # type: ignore[index]
    code, data, _ = cli(
        capsys, "verify", str(out), "-i", str(files / "batch.npy"), "--opening", str(opening)
    )
    assert code == 2  # a batch file with an input needs --item


def test_users_own_cnn(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, opening = tmp_path / "c.json", tmp_path / "co.json"
    assert cli(capsys, "model", "add", str(files / "cnn.onnx"), "--name", "mycnn")[0] == 0
    assert (
        cli(
            capsys,
            "infer",
            "mycnn",
            "-i",
            str(files / "cnn.npy"),
            "-o",
            str(bundle),
            "--output-private",
        )[0]
        == 0
    )
    assert cli(capsys, "reveal", str(bundle), "-o", str(opening))[0] == 0
    code, data, _ = cli(
        capsys, "verify", str(bundle), "-i", str(files / "cnn.npy"), "--opening", str(opening)
    )
    assert code == 0 and "4 opening" in data["checked"]  # type: ignore[index]
    # private output + float executor: re-execution cannot compare values, and says so
    code, data, _ = cli(
        capsys,
        "verify",
        str(bundle),
        "-i",
        str(files / "cnn.npy"),
        "--opening",
        str(opening),
        "--reexecute",
    )
    assert code == 1 and data["step"] == "5 re-execution"  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model", "add", "{d}/garbage.onnx"], "not an ONNX model"),
        (["model", "add", "{d}/missing.onnx"], "cannot read"),
        (["infer", "{d}/digits.onnx", "-i", "{d}/wrong_shape.npy"], "expected shape"),
        (["infer", "{d}/digits.onnx", "-i", "{d}/nan.npy"], "NaN"),
        (["infer", "no-such-model", "-i", "{d}/one.npy"], "no model"),
        (["verify", "{d}/garbage.onnx"], "not valid JSON"),
        (["verify", "{d}/truncated.json"], "not valid JSON"),
        (["verify", "{d}/digits.json"], "not a receipt bundle"),
        (["reveal", "{d}/digits.json", "-o", "{d}/x"], "not a receipt bundle"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    np.save(tmp_path / "wrong_shape.npy", np.zeros((1, 63), np.float32))
    np.save(tmp_path / "nan.npy", np.full((1, 64), np.nan, np.float32))
    (tmp_path / "truncated.json").write_text(
        '{"mediaType": "https://edgetrust.dev/bundle/v1", "env'
    )
    for name in ("digits.onnx", "one.npy", "digits.json"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    code = run([a.format(d=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_open_key_permissions_refused(
    capsys: pytest.CaptureFixture[str], edgetrust_home: Path, files: dict[str, Path]
) -> None:
    assert run(["init"]) == 0
    os.chmod(edgetrust_home / "keys" / "default.pem", 0o644)
    assert run(["infer", str(files / "digits.onnx"), "-i", str(files / "one.npy")]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_console_script_end_to_end(files: dict[str, Path], tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgetrust"
    env = {**os.environ, "EDGETRUST_HOME": str(tmp_path / "h")}
    bundle = tmp_path / "r.json"
    proc = subprocess.run(
        [
            str(exe),
            "infer",
            str(files / "digits.onnx"),
            "-i",
            str(files / "one.npy"),
            "-o",
            str(bundle),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "receipt signed by" in proc.stdout
    proc = subprocess.run(
        [str(exe), "verify", str(bundle)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and "verified" in proc.stdout
    bundle.write_text(bundle.read_text().replace('"payload":"', '"payload":"AAAA', 1))
    proc = subprocess.run(
        [str(exe), "verify", str(bundle)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verification failed: step 1 signature" in proc.stderr


@pytest.mark.slow
def test_demo_runs_and_all_checks_come_out_as_expected(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["demo", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data["failures"]
    assert data["ok"] and data["receipts"] == 259, data
    outcomes = {c["check"]: c["outcome"] for c in data["checks"]}
    assert outcomes["fraud proof against carol"] == "convicted"
    assert outcomes["lying device, refereed on chain"] == "convicted"
    assert outcomes["federated round log: lineage, commitments, ε, models recomputed"] == "verified"
    assert outcomes["carol's fixed-point receipt, re-executed bit for bit"].startswith(
        "rejected at step 5"
    )
    assert outcomes["receipt checked against a different model"].startswith("rejected at step 3")


def test_passphrase_protected_identity(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edgetrust.identity import Keystore

    Keystore().create("default", passphrase="s3cret")
    args = [
        "infer",
        str(files / "digits.onnx"),
        "-i",
        str(files / "one.npy"),
        "-o",
        str(tmp_path / "r.json"),
    ]
    assert run(args) == 2  # stdin is not a terminal and no passphrase is set
    assert "EDGETRUST_PASSPHRASE" in capsys.readouterr().err
    monkeypatch.setenv("EDGETRUST_PASSPHRASE", "wrong")
    assert run(args) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv("EDGETRUST_PASSPHRASE", "s3cret")
    assert run(args) == 0


def test_input_size_limit(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "big.npy", np.zeros((20000, 64), np.float32))  # ~5 MB
    code = run(
        [
            "infer",
            str(files / "digits.onnx"),
            "-i",
            str(tmp_path / "big.npy"),
            "--batch",
            "--max-input-mb",
            "1",
        ]
    )
    assert code == 2 and "limit" in capsys.readouterr().err


def test_fixed_executor_exact_reexecution_and_a_lying_device(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, x = str(files / "digits.onnx"), str(files / "one.npy")
    honest, lying = tmp_path / "honest.json", tmp_path / "lying.json"
    assert cli(capsys, "infer", model, "-i", x, "--executor", "fixed", "-o", str(honest))[0] == 0
    assert cli(capsys, "reveal", str(honest), "-o", str(tmp_path / "h.open"))[0] == 0
    code, data, _ = cli(
        capsys,
        "verify",
        str(honest),
        "--model",
        model,
        "-i",
        x,
        "--opening",
        str(tmp_path / "h.open"),
        "--reexecute",
    )
    assert code == 0 and "5 re-execution" in data["checked"]  # type: ignore[index]
    assert data["executor"]["name"] == "fixed"  # type: ignore[index]
    # A device that lies consistently about one hidden value.
    code, _, _ = cli(
        capsys,
        "infer",
        model,
        "-i",
        x,
        "--simulate-fault",
        "node=gemm0,element=3,delta=50",
        "-o",
        str(lying),
    )
    assert code == 0
    assert cli(capsys, "reveal", str(lying), "-o", str(tmp_path / "l.open"))[0] == 0
    code, data, _ = cli(
        capsys,
        "verify",
        str(lying),
        "--model",
        model,
        "-i",
        x,
        "--opening",
        str(tmp_path / "l.open"),
        "--reexecute",
    )
    assert code == 1 and data["step"] == "5 re-execution"  # type: ignore[index]
    code = run(
        ["challenge", str(lying), "--model", model, "-i", x, "--opening", str(tmp_path / "l.open")]
    )
    assert code == 1  # convicted
    assert "convicted" in capsys.readouterr().out
    assert (
        run(
            [
                "challenge",
                str(honest),
                "--model",
                model,
                "-i",
                x,
                "--opening",
                str(tmp_path / "h.open"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli(capsys, "infer", model, "-i", x, "--precision", "int9", "--executor", "fixed")[0] == 2
    )
    assert cli(capsys, "infer", model, "--executor", "fixed")[0] == 2  # neither --input nor --text
