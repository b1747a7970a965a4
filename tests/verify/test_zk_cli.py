"""`edgetrust zk …`: setup, prove, verify, show, export, and bad input (exit codes 0/1/2)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.cli._zk import parse_size
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Keystore
from edgetrust.models import ModelRegistry
from edgetrust.verify.zk import ZkArtifacts

from .conftest import Digits

pytestmark = pytest.mark.slow


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    try:
        data = json.loads(captured.out) if captured.out.strip() else None
    except json.JSONDecodeError:
        data = captured.out
    return code, data, captured.err


@pytest.fixture(scope="module")
def registered(zk_home: Path, digits: Digits, zk_artifacts: ZkArtifacts) -> str:
    """The digits model registered (and an identity created) in the shared ZK home."""
    publisher = Keystore(zk_home).load_or_create("default")
    card, _ = ModelRegistry(zk_home).add_bytes(digits.model, publisher=publisher, name="digits")
    return card.digest


@pytest.fixture(scope="module")
def proved(
    registered: str, zk_home: Path, digits: Digits, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("zk-cli")
    x = work / "x.npy"
    np.save(x, digits.test_x[5:6].astype(np.float32))
    code = run(["zk", "prove", "digits", "-i", str(x), "-o", str(work / "b.json"),
                "--home", str(zk_home), "--json"])  # fmt: skip
    assert code == 0
    return {"bundle": work / "b.json", "dir": work, "x": x}


def test_setup_is_cached_and_updates_the_card(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, zk_artifacts: ZkArtifacts
) -> None:
    code, data, _ = cli(
        capsys, "zk", "setup", "digits", "--unsafe-local-srs", "--home", str(zk_home), "--json"
    )
    assert code == 0
    assert data["vkDigest"] == zk_artifacts.key.vk_digest
    assert data["srs"]["kind"] == "unsafe_test_srs"
    assert data["cardUpdated"] is True
    card, _ = ModelRegistry(zk_home).card(registered)
    assert card.extra["zk"]["vkDigest"] == zk_artifacts.key.vk_digest
    code, _, err = cli(
        capsys, "zk", "setup", "digits", "--unsafe-local-srs", "--home", str(zk_home)
    )
    assert code == 0 and "unsafe_test_srs" in err
    code, data, _ = cli(capsys, "zk", "show", "digits", "--home", str(zk_home), "--json")
    assert code == 0 and data["compiledDigest"] == zk_artifacts.compiled_digest


@pytest.mark.parametrize(
    "args",
    [
        [],  # neither --srs nor --unsafe-local-srs
        ["--unsafe-local-srs", "--srs", "x.srs"],
        ["--unsafe-local-srs", "--memory-budget", "lots"],
        ["--unsafe-local-srs", "--memory-budget", "1MiB"],  # refused: the graph alone needs more
    ],
)
def test_setup_bad_usage_exits_2(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, args: list[str]
) -> None:
    code, _, err = cli(capsys, "zk", "setup", "digits", *args, "--home", str(zk_home))
    assert code == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_setup_with_a_malformed_calibration_file(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, tmp_path: Path
) -> None:
    for name, data in (("junk.npy", b"not numpy"), ("empty.npy", b"")):
        (tmp_path / name).write_bytes(data)
        code, _, err = cli(capsys, "zk", "setup", "digits", "--unsafe-local-srs",
                           "--calibration", str(tmp_path / name), "--home", str(zk_home))  # fmt: skip
        assert code == 2 and "calibration file" in err
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    code, _, err = cli(capsys, "zk", "setup", "digits", "--unsafe-local-srs",
                       "--calibration", str(tmp_path / "text.npy"), "--home", str(zk_home))  # fmt: skip
    assert code == 2 and "numeric" in err


def test_setup_with_a_wrong_srs_file(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "kzg15.srs"
    bogus.write_bytes(b"\x01" * 4096)
    code, data, err = cli(capsys, "zk", "setup", "digits", "--srs", str(bogus),
                          "--home", str(zk_home), "--json")  # fmt: skip
    assert code == 2
    assert data["error"] == "InvalidInputError"
    assert "not the published Perpetual Powers of Tau SRS for logrows 15" in err
    code, _, err = cli(capsys, "zk", "setup", "digits", "--srs", str(tmp_path / "none.srs"),
                       "--home", str(zk_home))  # fmt: skip
    assert code == 2 and "cannot read" in err


def test_prove_then_verify(
    capsys: pytest.CaptureFixture[str], proved: dict[str, Any], zk_home: Path, digits: Digits
) -> None:
    bundle = str(proved["bundle"])
    opening = proved["dir"] / "b.opening.json"
    assert opening.exists() and opening.stat().st_mode & 0o777 == 0o600
    # Refused by default: the demo's SRS is local.
    code, data, err = cli(capsys, "zk", "verify", bundle, "--home", str(zk_home), "--json")
    assert code == 1
    assert data["step"] == "zk 3 srs"
    code, data, err = cli(capsys, "zk", "verify", bundle, "--allow-unsafe-srs",
                          "--home", str(zk_home), "--json")  # fmt: skip
    assert code == 0, err
    assert "warning" in err
    assert data["cardChecked"] is True
    assert "zk 5 proof" in data["checked"]
    assert data["argmax"] == int(np.argmax(digits_probs(digits, 5)))
    code, text, _ = cli(
        capsys, "zk", "verify", bundle, "--allow-unsafe-srs", "--home", str(zk_home)
    )
    assert code == 0
    assert "verified" in text and "the input was never revealed" in text


def digits_probs(digits: Digits, i: int) -> Any:
    import onnxruntime as ort

    sess = ort.InferenceSession(digits.model, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": digits.test_x[i : i + 1].astype(np.float32)})[0]


def test_verify_rejects_tampered_and_malformed_bundles(
    capsys: pytest.CaptureFixture[str], proved: dict[str, Any], zk_home: Path, tmp_path: Path
) -> None:
    obj = json.loads(proved["bundle"].read_bytes())
    raw = bytearray(base64.b64decode(obj["zk"]["proof"]))
    raw[300] ^= 1
    obj["zk"]["proof"] = base64.b64encode(bytes(raw)).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(obj))
    code, data, _ = cli(capsys, "zk", "verify", str(tampered), "--allow-unsafe-srs",
                        "--home", str(zk_home), "--json")  # fmt: skip
    assert code == 1 and data["step"] == "zk 1 receipt"
    for junk in (b"", b"{", b'{"mediaType": "x"}', proved["bundle"].read_bytes()[:-10]):
        bad = tmp_path / "bad.json"
        bad.write_bytes(junk)
        code, _, err = cli(capsys, "zk", "verify", str(bad), "--home", str(zk_home))
        assert code == 2, err
        assert "Traceback" not in err
    code, _, err = cli(
        capsys, "zk", "verify", str(tmp_path / "missing.json"), "--home", str(zk_home)
    )
    assert code == 2


def test_prove_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((1, 63), np.float32))
    code, _, err = cli(capsys, "zk", "prove", "digits", "-i", str(bad), "--home", str(zk_home))
    assert code == 2 and "shape" in err
    code, _, err = cli(capsys, "zk", "prove", "nosuchmodel", "-i", str(bad), "--home", str(zk_home))
    assert code == 2


def test_export(
    capsys: pytest.CaptureFixture[str], registered: str, zk_home: Path, tmp_path: Path
) -> None:
    code, data, _ = cli(capsys, "zk", "export", "digits", str(tmp_path / "v"),
                        "--home", str(zk_home), "--json")  # fmt: skip
    assert code == 0
    assert Path(data["vk_path"]).exists() and data["srsKind"] == "unsafe_test_srs"


def test_parse_size() -> None:
    assert parse_size("8GiB") == 8 * 2**30
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("1.5g") == int(1.5 * 2**30)
    assert parse_size("1000") == 1000
    for bad in ("", "-1G", "0", "8 parsecs", "1e9"):
        with pytest.raises(InvalidInputError):
            parse_size(bad)
