"""`edgetrust challenge` end to end: fixed receipts, a lying device convicted, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.device import Device
from edgetrust.log import Log
from edgetrust.runtime.fixed import Fault, FixedRuntime
from edgetrust.statement import open_signed_statement
from edgetrust.verify.dispute import VERDICT_PREDICATE_TYPE
from edgetrust.zoo import digits_mlp_onnx, load_digits_split


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("digits")
    onnx_bytes, _ = digits_mlp_onnx()
    _, x_te, _, _ = load_digits_split()
    (d / "digits.onnx").write_bytes(onnx_bytes)
    np.save(d / "x.npy", x_te[3:4])
    return {"model": d / "digits.onnx", "x": d / "x.npy"}


def _issue(
    tmp_path: Path, files: dict[str, Path], name: str, fault: Fault | None
) -> tuple[Path, Path]:
    x = np.load(files["x"])
    with Device() as device:
        result = device.infer(str(files["model"]), {"input": x}, executor=FixedRuntime(fault=fault))
        bundle = tmp_path / f"{name}.json"
        opening = tmp_path / f"{name}.opening.json"
        bundle.write_bytes(result.bundle.to_json())
        opening.write_bytes(device.reveal(result.bundle).to_json())
    return bundle, opening


def _challenge(bundle: Path, opening: Path, files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "challenge",
        str(bundle),
        "--model",
        str(files["model"]),
        "--input",
        str(files["x"]),
        "--opening",
        str(opening),
        *extra,
    ]


def test_honest_receipt_agrees(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, opening = _issue(tmp_path, digits_files, "honest", None)
    assert run(_challenge(bundle, opening, digits_files, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "agrees"


def test_lying_device_is_convicted_signed_and_logged(
    tmp_path: Path,
    digits_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    edgetrust_home: Path,
) -> None:
    bundle, opening = _issue(tmp_path, digits_files, "lying", Fault("gemm1", 4, -6))
    assert run(_challenge(bundle, opening, digits_files, "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "convicted" and out["loser"] == "device"
    assert (out["node"], out["nodeIndex"], out["element"]) == ("gemm1", 2, 4)
    assert out["rounds"] <= out["roundBound"]
    assert out["refereeMacs"] == 32 and out["refereeMacs"] < out["modelMacs"]
    with Log.open(edgetrust_home) as log:
        verdict = open_signed_statement(log.entry(out["verdictLogIndex"]))
    assert verdict.statement.predicate_type == VERDICT_PREDICATE_TYPE
    assert verdict.statement.predicate["element"] == 4
    # Human output names node, element, rounds and referee work.
    assert run(_challenge(bundle, opening, digits_files, "--no-log")) == 1
    text = capsys.readouterr().out
    assert (
        "convicted" in text and "gemm1" in text and "element 4" in text and "referee work" in text
    )


def test_unnamed_nodes_are_named_by_index(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, opening = _issue(tmp_path, digits_files, "byindex", Fault(1, 0, 3))
    assert run(_challenge(bundle, opening, digits_files, "--json", "--no-log")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["nodeIndex"] == 1 and out["node"] == "relu0"


def test_missing_trace_and_bad_inputs_exit_2(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, opening = _issue(tmp_path, digits_files, "lying2", Fault("gemm0", 1, 5))
    other_home = tmp_path / "elsewhere"
    assert run(_challenge(bundle, opening, digits_files, "--device-home", str(other_home))) == 2
    assert "no stored trace" in capsys.readouterr().err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    cases: list[list[str]] = [
        _challenge(garbage, opening, digits_files),
        _challenge(tmp_path / "missing.json", opening, digits_files),
        _challenge(bundle, garbage, digits_files),
        [
            "challenge",
            str(bundle),
            "--model",
            str(digits_files["x"]),
            "--input",
            str(digits_files["x"]),
            "--opening",
            str(opening),
        ],
        _challenge(bundle, opening, digits_files, "--item", "3"),
    ]
    for argv in cases:
        assert run(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_wrong_opening_fails_verification(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    b1, _ = _issue(tmp_path, digits_files, "one", Fault("gemm0", 1, 5))
    _, o2 = _issue(tmp_path, digits_files, "two", None)
    assert run(_challenge(b1, o2, digits_files)) == 1
    assert "opening" in capsys.readouterr().err


def test_float_receipts_cannot_be_challenged(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.load(digits_files["x"])
    with Device() as device:
        result = device.infer(str(digits_files["model"]), {"input": x}, executor="onnxruntime")
        bundle, opening = tmp_path / "f.json", tmp_path / "f.opening.json"
        bundle.write_bytes(result.bundle.to_json())
        opening.write_bytes(device.reveal(result.bundle).to_json())
    assert run(_challenge(bundle, opening, digits_files)) == 2
    assert "bit-exact" in capsys.readouterr().err


def test_fixed_receipts_reverify_byte_exactly(
    tmp_path: Path, digits_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["init"]) == 0
    bundle = tmp_path / "cli.json"
    argv: list[Any] = [
        "infer",
        str(digits_files["model"]),
        "-i",
        str(digits_files["x"]),
        "--executor",
        "fixed",
        "-o",
        str(bundle),
    ]
    assert run(argv) == 0
    opening = tmp_path / "cli.opening.json"
    assert run(["reveal", str(bundle), "-o", str(opening)]) == 0
    verify = [
        "verify",
        str(bundle),
        "--model",
        str(digits_files["model"]),
        "--input",
        str(digits_files["x"]),
        "--opening",
        str(opening),
        "--reexecute",
    ]
    assert run(verify) == 0
    pred = json.loads(bundle.read_text())
    import base64

    statement = json.loads(base64.b64decode(pred["envelope"]["payload"]))
    settings = statement["predicate"]["executor"]["settings"]
    assert statement["predicate"]["executor"]["name"] == "fixed"
    assert statement["predicate"]["traceRoot"].startswith("sha256:")
    assert {"plan", "precision", "weights_root", "weights_size"} <= set(settings)
    capsys.readouterr()
