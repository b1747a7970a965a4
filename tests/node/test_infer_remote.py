"""`edgetrust infer --log URL`: a device logs its receipt on a live node and the bundle
verifies offline against the node's key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

from .conftest import Server


def _log_key(server: Server, capsys: pytest.CaptureFixture[str]) -> str:
    assert run(["log", "key", "--home", str(server.home)]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_infer_logs_on_a_live_node(
    live_node: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _log_key(live_node, capsys)
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits_mlp_onnx()[0])
    np.save(tmp_path / "x.npy", load_digits_split()[1][:1])
    bundle = tmp_path / "r.json"
    args = ["infer", str(model), "-i", str(tmp_path / "x.npy"), "-o", str(bundle), "--json"]
    assert run([*args, "--log", live_node.url, "--log-key", key]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logIndex"] == 0
    assert json.loads(bundle.read_text())["log"]["treeSize"] >= 1
    assert run(["verify", str(bundle), "--log-key", key, "--json"]) == 0
    assert "6 log" in json.loads(capsys.readouterr().out)["checked"]
    # a wrong key for the node is refused before any proof is handed out
    name, _, b64 = key.split("+", 2)  # the base64 part may itself contain '+'
    other = f"{name}+00000000+{b64}"
    assert run([*args, "--log", live_node.url, "--log-key", other]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert run([*args, "--log", live_node.url]) == 2
    assert "--log-key" in capsys.readouterr().err
    assert run([*args, "--log", "ftp://x"]) == 2
