"""`edgetrust infer --zk` and `edgetrust verify` on a ZK receipt: the input never leaves the
device, the verifier checks the proof (step 8) and refuses an unsafe SRS unless told."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.encoding import canonical_tensor_bytes
from edgetrust.verify.zk import ZkArtifacts

from .conftest import Digits


@pytest.mark.slow
def test_infer_zk_then_verify(
    zk_artifacts: ZkArtifacts,
    zk_home: Path,
    digits: Digits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGETRUST_HOME", str(zk_home))
    (tmp_path / "digits.onnx").write_bytes(digits.model)
    np.save(tmp_path / "x.npy", digits.test_x[:1])
    bundle = tmp_path / "zk.json"
    infer = ["infer", str(tmp_path / "digits.onnx"), "-i", str(tmp_path / "x.npy"), "--zk"]
    assert run([*infer, "-o", str(bundle), "--json"]) == 0
    capsys.readouterr()
    doc = json.loads(bundle.read_text())
    assert "zk" in doc
    # The input travels only as commitments: the salted sha256 and the proof's Poseidon hash.
    statement = json.loads(base64.b64decode(doc["envelope"]["payload"]))
    assert set(statement["predicate"]["input"]) == {"commitment", "scheme"}
    x = digits.test_x[:1].astype(np.float32)
    text = bundle.read_text()
    for encoded in (
        base64.b64encode(canonical_tensor_bytes(x)).decode(),
        base64.b64encode(x.tobytes()).decode(),
        json.dumps(x.tolist()),
    ):
        assert encoded[8:40] not in text
    assert run(["verify", str(bundle), "--json"]) == 1  # unsafe SRS refused by default
    failed = json.loads(capsys.readouterr().out)
    assert failed["step"].startswith("8 zk")
    assert run(["verify", str(bundle), "--allow-unsafe-srs", "--json"]) == 0
    captured = capsys.readouterr()
    assert "8 zk" in json.loads(captured.out)["checked"]
    assert "forge" in captured.err
    assert run([*infer, "--batch"]) == 2
