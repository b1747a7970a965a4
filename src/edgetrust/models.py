"""Model cards: content-addressed ONNX models, described from their graph and signed.

A model is named by the sha256 digest of its file bytes, so "which model" in a receipt means
exactly those bytes. The card adds what a verifier needs to know without the file (inputs and
outputs with dtypes and shapes, opset, size) and is signed by its publisher as a DSSE in-toto
statement (`https://edgetrust.dev/model/v1`), which is what gets logged. `ModelRegistry` keeps
files and cards under `$EDGETRUST_HOME/models/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgetrust.dsse import Envelope, parse_envelope, sign_envelope
from edgetrust.encoding import digest_bytes, digest_hex, parse_digest
from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.files import read_limited
from edgetrust.home import resolve_home
from edgetrust.identity import Identity
from edgetrust.profiles import check_text
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    open_signed_statement,
    register_predicate_type,
)

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES",
    "MODEL_PREDICATE_TYPE",
    "ModelCard",
    "ModelRegistry",
    "TensorSpec",
    "read_model_card",
]

MODEL_PREDICATE_TYPE = "https://edgetrust.dev/model/v1"
DEFAULT_MAX_MODEL_BYTES = 2 * 2**30
"""Protobuf cannot hold a single ONNX file over 2 GiB; larger models use external data."""

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, numpy dtype name and shape (dynamic dims as str/None)."""

    name: str
    dtype: str
    """numpy dtype name, e.g. ``float32``."""
    shape: tuple[Dim, ...] | None
    """None when the graph does not declare a shape; a str or None entry is a dynamic dim."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form used in the card predicate."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_dict(cls, obj: Any) -> TensorSpec:
        """Parse the JSON form, checking types."""
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise InvalidInputError("tensor spec needs a string name")
        if not isinstance(obj.get("dtype"), str):
            raise InvalidInputError(f"tensor spec {obj['name']!r} needs a string dtype")
        shape = obj.get("shape")
        if shape is not None and (
            not isinstance(shape, list)
            or not all(d is None or isinstance(d, int | str) for d in shape)
        ):
            raise InvalidInputError(f"tensor spec {obj['name']!r} has a malformed shape")
        return cls(obj["name"], obj["dtype"], None if shape is None else tuple(shape))


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    ttype = vi.type.tensor_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx:{ttype.elem_type}"
    shape: tuple[Dim, ...] | None = None
    if ttype.HasField("shape"):
        dims: list[Dim] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorSpec(vi.name, dtype, shape)


def parse_onnx(data: bytes) -> onnx.ModelProto:
    """Parse and check ONNX bytes, turning every onnx failure into `InvalidInputError`."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and others; all mean "not ONNX"
        raise InvalidInputError("file is not an ONNX model (protobuf does not parse)") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise InvalidInputError("file is not an ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidInputError(f"ONNX model fails onnx.checker: {first}") from exc
    return model


@dataclass(frozen=True)
class ModelCard:
    """What a verifier needs to know about a model, bound to the model's file digest."""

    digest: str
    """``sha256:<hex>`` of the ONNX file bytes: the model's identity."""
    name: str
    version: str
    size: int
    """File size in bytes."""
    opset: int
    """Opset version of the default ONNX domain."""
    inputs: tuple[TensorSpec, ...]
    """Real inputs only: graph inputs that have no initializer."""
    outputs: tuple[TensorSpec, ...]
    producer: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Attachments added later, e.g. ``{"zk": {...digests...}}`` by the ZK setup."""

    @classmethod
    def from_onnx_bytes(
        cls, data: bytes, *, name: str | None = None, version: str = "1"
    ) -> ModelCard:
        """Describe an ONNX file, refusing anything onnx.checker rejects."""
        model = parse_onnx(data)
        initializers = {i.name for i in model.graph.initializer}
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        return cls(
            digest=digest_bytes(data),
            name=name or model.graph.name or "model",
            version=version,
            size=len(data),
            opset=int(opset),
            inputs=tuple(
                _value_info_spec(vi) for vi in model.graph.input if vi.name not in initializers
            ),
            outputs=tuple(_value_info_spec(vi) for vi in model.graph.output),
            producer=model.producer_name,
        )

    def with_extra(self, key: str, value: Any) -> ModelCard:
        """A copy of the card with one attachment added or replaced."""
        return replace(self, extra={**self.extra, key: value})

    def input_spec(self, name: str) -> TensorSpec:
        """The spec of input `name`."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise NotFoundError(f"model {self.name} has no input {name!r}")

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/model/v1` predicate."""
        return {
            "digest": self.digest,
            "name": self.name,
            "version": self.version,
            "size": self.size,
            "opset": self.opset,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "producer": self.producer,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> ModelCard:
        """Parse a model predicate, checking every field's type."""
        try:
            parse_digest(pred["digest"])
            card = cls(
                digest=pred["digest"],
                name=str(pred["name"]),
                version=str(pred["version"]),
                size=int(pred["size"]),
                opset=int(pred["opset"]),
                inputs=tuple(TensorSpec.from_dict(s) for s in pred["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in pred["outputs"]),
                producer=str(pred.get("producer", "")),
                extra=dict(pred.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed model card: {exc}") from exc
        return card

    def sign(self, publisher: Identity) -> Envelope:
        """Sign the card as a DSSE in-toto statement whose subject is the model file."""
        payload = encode_statement(
            [Subject(self.name, digest_hex(self.digest))],
            MODEL_PREDICATE_TYPE,
            self.to_predicate(),
        )
        return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, publisher)


def _validate_model_statement(statement: Statement, signer: str) -> None:
    card = ModelCard.from_predicate(statement.predicate)
    for what, text in (("name", card.name), ("version", card.version), ("producer", card.producer)):
        check_text(text, f"model card {what}")
    if statement.subjects[0].sha256 != digest_hex(card.digest):
        raise InvalidInputError("model card subject digest differs from its predicate digest")


register_predicate_type(MODEL_PREDICATE_TYPE, _validate_model_statement)


def read_model_card(data: bytes | Envelope) -> tuple[ModelCard, str]:
    """Open a signed model card envelope: returns the card and the publisher's DID."""
    signed = open_signed_statement(data)
    if signed.statement.predicate_type != MODEL_PREDICATE_TYPE:
        raise InvalidInputError(f"not a model card: {signed.statement.predicate_type}")
    return ModelCard.from_predicate(signed.statement.predicate), signed.signer


_DIGEST_PREFIX_RE = re.compile(r"^(sha256:)?[0-9a-f]{8,64}$")


class ModelRegistry:
    """ONNX files stored by digest under `<home>/models/`, with their signed cards.

    Layout: ``<hex>.onnx`` (the exact bytes) and ``<hex>.card.json`` (the signed card envelope).
    A model is found by file path, registered name, full digest or a digest prefix of at least
    8 hex digits.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.root = resolve_home(home) / "models"
        self.max_bytes = max_bytes

    def add_bytes(
        self, data: bytes, *, publisher: Identity, name: str | None = None, version: str = "1"
    ) -> tuple[ModelCard, Envelope]:
        """Store a model and its signed card; adding the same bytes again is a no-op."""
        if len(data) > self.max_bytes:
            raise ResourceLimitError(
                f"model is {len(data)} bytes, over the {self.max_bytes}-byte limit",
                limit=self.max_bytes,
            )
        card = ModelCard.from_onnx_bytes(data, name=name, version=version)
        hexd = digest_hex(card.digest)
        self.root.mkdir(parents=True, exist_ok=True)
        card_path = self.root / f"{hexd}.card.json"
        if card_path.exists():
            return self.card(card.digest)
        envelope = card.sign(publisher)
        _write_atomic(self.root / f"{hexd}.onnx", data)
        _write_atomic(card_path, envelope.to_json())
        return card, envelope

    def add_file(
        self,
        path: str | os.PathLike[str],
        *,
        publisher: Identity,
        name: str | None = None,
        version: str = "1",
    ) -> tuple[ModelCard, Envelope]:
        """Store the ONNX file at `path` (named after the file unless `name` is given)."""
        p = Path(path)
        data = read_limited(p, "model file", max_bytes=self.max_bytes)
        return self.add_bytes(data, publisher=publisher, name=name or p.stem, version=version)

    def update_card(self, card: ModelCard, *, publisher: Identity) -> Envelope:
        """Re-sign and store a card for an already stored model (e.g. with new attachments)."""
        hexd = digest_hex(card.digest)
        if not (self.root / f"{hexd}.onnx").exists():
            raise NotFoundError(f"model {card.digest} is not stored")
        envelope = card.sign(publisher)
        _write_atomic(self.root / f"{hexd}.card.json", envelope.to_json())
        return envelope

    def cards(self) -> list[ModelCard]:
        """Every stored model card, by name then version."""
        if not self.root.is_dir():
            return []
        cards = [
            self.card("sha256:" + p.name.split(".")[0])[0] for p in self.root.glob("*.card.json")
        ]
        return sorted(cards, key=lambda c: (c.name, c.version, c.digest))

    def card(self, digest: str) -> tuple[ModelCard, Envelope]:
        """The stored card (and its envelope) for a full digest."""
        path = self.root / f"{digest_hex(digest)}.card.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no model {digest} in {self.root}") from exc
        envelope = parse_envelope(data)
        card, _ = read_model_card(envelope)
        return card, envelope

    def model_bytes(self, digest: str) -> bytes:
        """The exact stored bytes of a model, re-checked against the digest."""
        path = self.root / f"{digest_hex(digest)}.onnx"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no model {digest} in {self.root}") from exc
        if digest_bytes(data) != digest:
            raise InvalidInputError(f"stored model {path} does not match its digest (corrupted)")
        return data

    def resolve(self, ref: str) -> tuple[ModelCard, bytes]:
        """Find a model by file path, registered name, digest, or digest prefix (≥ 8 hex).

        A file path that is not registered is described on the fly (and not stored).
        """
        path = Path(ref)
        if path.is_file():
            data = path.read_bytes()
            digest = digest_bytes(data)
            if (self.root / f"{digest_hex(digest)}.card.json").exists():
                return self.card(digest)[0], data
            return ModelCard.from_onnx_bytes(data, name=path.stem), data
        if _DIGEST_PREFIX_RE.match(ref):
            prefix = ref.removeprefix("sha256:")
            matches = sorted(self.root.glob(f"{prefix}*.card.json")) if self.root.is_dir() else []
            if len(matches) > 1:
                raise InvalidInputError(
                    f"digest prefix {ref!r} is ambiguous ({len(matches)} models)"
                )
            if matches:
                digest = "sha256:" + matches[0].name.split(".")[0]
                return self.card(digest)[0], self.model_bytes(digest)
        named = [c for c in self.cards() if c.name == ref]
        if named:
            card = max(named, key=lambda c: c.version)
            return card, self.model_bytes(card.digest)
        raise NotFoundError(
            f"no model {ref!r}: not a file, a registered name or a digest "
            "(see 'edgetrust model list', or 'edgetrust model add FILE')"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
