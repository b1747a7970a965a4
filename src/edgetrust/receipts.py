"""Inference receipts: build, sign, serialize and parse them, single or in batches.

A receipt is a DSSE envelope holding an in-toto Statement v1 whose subject is the output
digest and whose predicate (`https://edgetrust.dev/inference/v1`) names the model digest, a
salted commitment to the input, the executor, the issuer and the time. The input stays
private: the commitment is ``sha256(salt ‖ named-tensor bytes)`` with a 32-byte random salt
kept by the device, and `Opening` reveals the salt to whoever should check it.

Batch receipts sign N inferences at once: each item (input commitment, output digest) is a
leaf of an RFC 9162 Merkle tree, the device signs the root (`inference-batch/v1`), and each
item's receipt carries its audit path. Item salts are derived from one per-batch secret as
``sha256(secret ‖ u64be(index))``, so revealing one item's salt reveals nothing of another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgetrust.dsse import Envelope, envelope_from_dict, sign_envelope
from edgetrust.encoding import (
    DIGEST_PREFIX,
    canonical_json,
    canonical_tensor_bytes,
    canonical_tensor_prefix,
    digest_hex,
    parse_digest,
    parse_json,
    tensor_data_view,
    tensor_from_canonical_bytes,
    update_tensor_hash,
)
from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.log import merkle
from edgetrust.models import ModelCard
from edgetrust.profiles import check_text, check_time
from edgetrust.runtime.onnx import Tensors
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    VerifiedCache,
    encode_statement,
    open_signed_statement,
    register_predicate_type,
)

__all__ = [
    "BATCH_FILE_MEDIA_TYPE",
    "BATCH_ITEM_FORMAT",
    "BATCH_PREDICATE_TYPE",
    "BUNDLE_MEDIA_TYPE",
    "COMMITMENT_SCHEME",
    "INFERENCE_PREDICATE_TYPE",
    "OPENING_MEDIA_TYPE",
    "SALT_BYTES",
    "BatchItem",
    "BatchReceipts",
    "Bundle",
    "LogProof",
    "Opening",
    "Receipt",
    "batch_item_leaf",
    "batch_salt",
    "commit_inputs",
    "decode_tensors",
    "encode_tensors",
    "issue_batch",
    "issue_receipt",
    "new_opening",
    "parse_bundle",
    "parse_bundles",
    "parse_opening",
    "read_receipt",
    "tensors_digest",
    "write_batch_file",
]

INFERENCE_PREDICATE_TYPE = "https://edgetrust.dev/inference/v1"
BATCH_PREDICATE_TYPE = "https://edgetrust.dev/inference-batch/v1"
BUNDLE_MEDIA_TYPE = "https://edgetrust.dev/bundle/v1"
BATCH_FILE_MEDIA_TYPE = "https://edgetrust.dev/bundle-batch/v1"
OPENING_MEDIA_TYPE = "https://edgetrust.dev/opening/v1"
COMMITMENT_SCHEME = "sha256-salted/v1"
BATCH_ITEM_FORMAT = "edgetrust-batch-item/v1"
SALT_BYTES = 32

_ITEM_MAGIC = b"ETB1"
_COMMON = frozenset({"issuer", "issuedAt", "model", "executor"})
_SINGLE_FIELDS = (_COMMON | {"input", "output"}, frozenset({"traceRoot", "zk"}))
"""(required, optional) fields of an inference/v1 predicate."""
_BATCH_FIELDS: tuple[frozenset[str], frozenset[str]] = (_COMMON | {"batch"}, frozenset())
"""(required, optional) fields of an inference-batch/v1 predicate."""


# -- named tensors -------------------------------------------------------------------------


def _name_prefix(name: str) -> bytes:
    raw = name.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def _hash_named(hasher: Any, tensors: Mapping[str, Any]) -> None:
    """Feed the named-tensor encoding to `hasher`.

    For each name in sorted order: u32be(len(name)) ‖ name ‖ canonical tensor bytes.
    """
    for name in sorted(tensors):
        hasher.update(_name_prefix(name))
        update_tensor_hash(hasher, tensors[name])


def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """Digest of a set of named tensors (the receipt's output digest)."""
    h = hashlib.sha256()
    _hash_named(h, tensors)
    return DIGEST_PREFIX + h.hexdigest()


def new_opening(inputs: Mapping[str, Any]) -> Opening:
    """Commit to `inputs` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    return Opening(commit_inputs(inputs, salt), salt)


def commit_inputs(inputs: Mapping[str, Any], salt: bytes) -> str:
    """The input commitment: ``sha256(salt ‖ named-tensor bytes)`` (scheme sha256-salted/v1)."""
    if len(salt) != SALT_BYTES:
        raise InvalidInputError(f"a commitment salt is {SALT_BYTES} bytes, got {len(salt)}")
    h = hashlib.sha256(salt)
    _hash_named(h, inputs)
    return DIGEST_PREFIX + h.hexdigest()


def encode_tensors(tensors: Mapping[str, Any]) -> dict[str, str]:
    """Tensors as JSON: base64 of each one's canonical bytes (exact, compact, fast)."""
    return {
        name: base64.b64encode(canonical_tensor_bytes(tensors[name])).decode("ascii")
        for name in sorted(tensors)
    }


def _encoded_digest(obj: Any) -> str:
    """The named-tensor digest of `encode_tensors` output, hashed from the encoded bytes.

    Hashing the bytes as received (no parsing into arrays) is what lets a log node check
    every submitted receipt's values cheaply; `read_receipt` still decodes them and re-hashes
    the arrays, which also proves the encoding canonical.
    """
    h = hashlib.sha256()
    for name, raw in sorted(_raw_tensors(obj).items()):
        # Parse too, so that a log node refuses values a verifier could not read.
        tensor_from_canonical_bytes(raw)
        h.update(_name_prefix(name))
        h.update(raw)
    return DIGEST_PREFIX + h.hexdigest()


def _raw_tensors(obj: Any) -> dict[str, bytes]:
    if not isinstance(obj, dict):
        raise InvalidInputError("tensor values must be a JSON object")
    out = {}
    for name, value in obj.items():
        _utf8(name, "tensor name")
        if not isinstance(value, str):
            raise InvalidInputError(f"tensor {name!r} must be a base64 string")
        try:
            out[name] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError(f"tensor {name!r} is not valid base64") from exc
    return out


def decode_tensors(obj: Any) -> Tensors:
    """Inverse of `encode_tensors`, for untrusted input."""
    return {name: tensor_from_canonical_bytes(raw) for name, raw in _raw_tensors(obj).items()}


# -- openings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opening:
    """What opens an input commitment: the salt (the input itself travels separately)."""

    commitment: str
    salt: bytes = field(repr=False)

    def to_json(self) -> bytes:
        """JSON form written by `edgetrust reveal`."""
        return canonical_json(
            {
                "mediaType": OPENING_MEDIA_TYPE,
                "scheme": COMMITMENT_SCHEME,
                "commitment": self.commitment,
                "salt": self.salt.hex(),
            }
        )

    def verify(self, inputs: Mapping[str, Any]) -> None:
        """Check that `inputs` with this salt give the commitment; raise if not."""
        if commit_inputs(inputs, self.salt) != self.commitment:
            raise VerificationError("the input does not open the receipt's input commitment")


def parse_opening(data: bytes | str) -> Opening:
    """Parse an opening file (untrusted)."""
    obj = parse_json(data, what="opening", max_bytes=64 * 1024)
    if not isinstance(obj, dict) or obj.get("mediaType") != OPENING_MEDIA_TYPE:
        raise InvalidInputError(f"not an opening (mediaType must be {OPENING_MEDIA_TYPE})")
    if obj.get("scheme") != COMMITMENT_SCHEME:
        raise InvalidInputError(f"unsupported commitment scheme {obj.get('scheme')!r}")
    try:
        salt = bytes.fromhex(obj["salt"])
        parse_digest(obj["commitment"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError("opening needs a hex salt and a sha256 commitment") from exc
    if len(salt) != SALT_BYTES:
        raise InvalidInputError(f"opening salt must be {SALT_BYTES} bytes")
    return Opening(obj["commitment"], salt)


# -- single receipts -----------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _header(
    issuer: Identity, card: ModelCard, executor: Mapping[str, Any], issued_at: str | None
) -> dict[str, Any]:
    """The predicate fields every receipt kind shares."""
    return {
        "issuer": issuer.did,
        "issuedAt": issued_at or _now(),
        "model": {"digest": card.digest, "name": card.name},
        "executor": dict(executor),
    }


def issue_receipt(
    *,
    issuer: Identity,
    card: ModelCard,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    executor: Mapping[str, Any],
    output_private: bool = False,
    opening: Opening | None = None,
    trace_root: str | None = None,
    extra: Mapping[str, Any] | None = None,
    issued_at: str | None = None,
) -> tuple[Envelope, Opening]:
    """Sign a receipt for one inference; returns the envelope and the input's opening.

    `opening` lets a caller that already committed to these inputs (e.g. in a thread while
    the model ran, as `Device.infer` does) pass the result instead of hashing them again;
    it must come from `commit_inputs` on the same inputs. `extra` adds optional predicate
    fields defined by other modules (e.g. ``zk``).
    """
    if opening is None:
        opening = new_opening(inputs)
    commitment = opening.commitment
    out_digest = tensors_digest(outputs)
    output: dict[str, Any] = {"digest": out_digest}
    if not output_private:
        output["values"] = encode_tensors(outputs)
    predicate = _header(issuer, card, executor, issued_at) | {
        "input": {"commitment": commitment, "scheme": COMMITMENT_SCHEME},
        "output": output,
    }
    if trace_root is not None:
        predicate["traceRoot"] = trace_root
    for key, value in (extra or {}).items():
        if key not in _SINGLE_FIELDS[1]:
            raise InvalidInputError(f"unknown receipt predicate field {key!r}")
        predicate[key] = value
    payload = encode_statement(
        [Subject("output", digest_hex(out_digest))], INFERENCE_PREDICATE_TYPE, predicate
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, issuer), opening


# -- batch receipts ------------------------------------------------------------------------


def batch_salt(secret: bytes, index: int) -> bytes:
    """Salt of batch item `index`: ``sha256(secret ‖ u64be(index))``.

    One-way, so revealing one item's salt says nothing about any other item's.
    """
    return hashlib.sha256(secret + struct.pack(">Q", index)).digest()


def batch_item_leaf(index: int, input_commitment: bytes, output_digest: bytes) -> bytes:
    """Leaf data of a batch item: ``"ETB1" ‖ u64be(index) ‖ commitment(32) ‖ output digest(32)``.

    The index is inside the leaf so an item cannot be moved to another position.
    """
    return _ITEM_MAGIC + struct.pack(">Q", index) + input_commitment + output_digest


def _row_hashes(tensors: Mapping[str, Any], count: int, salts: list[bytes] | None) -> list[bytes]:
    """Per-row sha256 over the named-tensor encoding of row i (shape (1, ...)), salted or not.

    The encoding prefix of each tensor (name + canonical header) is computed once per batch,
    since every row shares it; only the row data is hashed per row.
    """
    names = sorted(tensors)
    arrays = [np.ascontiguousarray(tensors[n]) for n in names]
    prefixes = [
        _name_prefix(n) + canonical_tensor_prefix(a.dtype.name, (1, *a.shape[1:]))
        for n, a in zip(names, arrays, strict=True)
    ]
    views = [tensor_data_view(a) for a in arrays]
    row_bytes = [len(v) // count for v in views]
    out = []
    sha = hashlib.sha256
    for i in range(count):
        h = sha(salts[i]) if salts is not None else sha()
        for prefix, view, rb in zip(prefixes, views, row_bytes, strict=True):
            h.update(prefix)
            h.update(view[i * rb : (i + 1) * rb])
        out.append(h.digest())
    return out


@dataclass(frozen=True)
class BatchItem:
    """One inference of a batch: its commitments and audit path to the signed root."""

    index: int
    input_commitment: str
    output_digest: str
    audit_path: tuple[bytes, ...]
    outputs: Tensors | None = None
    """The item's output values, bound by `output_digest`; None when private."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form inside a bundle."""
        obj: dict[str, Any] = {
            "index": self.index,
            "inputCommitment": self.input_commitment,
            "outputDigest": self.output_digest,
            "auditPath": [base64.b64encode(p).decode("ascii") for p in self.audit_path],
        }
        if self.outputs is not None:
            obj["outputValues"] = encode_tensors(self.outputs)
        return obj


@dataclass(frozen=True)
class BatchReceipts:
    """A signed batch: one envelope over the Merkle root, and every item's receipt."""

    envelope: Envelope
    items: tuple[BatchItem, ...]
    secret: bytes = field(repr=False)
    """Per-batch secret from which item salts derive; stays on the device."""

    def salt(self, index: int) -> bytes:
        """The salt of item `index`."""
        return batch_salt(self.secret, index)

    def bundle(self, index: int) -> Bundle:
        """A standalone bundle for one item."""
        return Bundle(self.envelope, item=self.items[index])


def issue_batch(
    *,
    issuer: Identity,
    card: ModelCard,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    executor: Mapping[str, Any],
    output_private: bool = False,
    issued_at: str | None = None,
) -> BatchReceipts:
    """Sign a batch of inferences once; axis 0 of every input and output is the batch axis."""
    counts = {np.shape(t)[0] if np.ndim(t) else -1 for t in (*inputs.values(), *outputs.values())}
    if len(counts) != 1 or -1 in counts or 0 in counts:
        raise InvalidInputError("batch inputs and outputs must share a non-empty axis 0")
    (count,) = counts
    secret = os.urandom(32)
    salts = [batch_salt(secret, i) for i in range(count)]
    commitments = _row_hashes(inputs, count, salts)
    digests = _row_hashes(outputs, count, None)
    leaves = [
        merkle.leaf_hash(batch_item_leaf(i, c, d))
        for i, (c, d) in enumerate(zip(commitments, digests, strict=True))
    ]
    root, paths = merkle.merkle_root_and_paths(leaves)
    predicate = _header(issuer, card, executor, issued_at) | {
        "batch": {
            "count": count,
            "root": DIGEST_PREFIX + root.hex(),
            "itemFormat": BATCH_ITEM_FORMAT,
            "commitmentScheme": COMMITMENT_SCHEME,
            "outputPrivate": output_private,
        },
    }
    payload = encode_statement([Subject("batch", root.hex())], BATCH_PREDICATE_TYPE, predicate)
    envelope = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, issuer)
    items = tuple(
        BatchItem(
            i,
            DIGEST_PREFIX + commitments[i].hex(),
            DIGEST_PREFIX + digests[i].hex(),
            tuple(paths[i]),
            None if output_private else {n: np.asarray(t)[i : i + 1] for n, t in outputs.items()},
        )
        for i in range(count)
    )
    return BatchReceipts(envelope, items, secret)


# -- validation of predicates (registered with the statement registry) ---------------------


def _check_common(
    pred: Mapping[str, Any], signer: str, fields: tuple[frozenset[str], frozenset[str]]
) -> None:
    required, optional = fields
    missing = sorted(required - set(pred))
    if missing:
        raise InvalidInputError(f"receipt predicate lacks {missing[0]!r}")
    unknown = sorted(set(pred) - required - optional)
    if unknown:
        raise InvalidInputError(f"receipt predicate has unknown field {unknown[0]!r}")
    if pred["issuer"] != signer:
        raise VerificationError("receipt issuer is not the envelope's signer", step="1 signature")
    check_time(pred["issuedAt"], "receipt issuedAt")
    model = pred["model"]
    if not isinstance(model, dict):
        raise InvalidInputError("receipt model must be an object")
    parse_digest(model.get("digest"))
    executor = pred["executor"]
    if not isinstance(executor, dict) or not isinstance(executor.get("name"), str):
        raise InvalidInputError("receipt executor must be an object with a name")
    check_text(executor["name"], "receipt executor name")
    if not isinstance(executor.get("settings", {}), dict):
        raise InvalidInputError("receipt executor settings must be an object")


def _validate_inference(statement: Statement, signer: str) -> None:
    pred = statement.predicate
    _check_common(pred, signer, _SINGLE_FIELDS)
    inp, out = pred.get("input"), pred.get("output")
    if not isinstance(inp, dict) or inp.get("scheme") != COMMITMENT_SCHEME:
        raise InvalidInputError(f"receipt input must use commitment scheme {COMMITMENT_SCHEME}")
    parse_digest(inp.get("commitment"))
    if not isinstance(out, dict):
        raise InvalidInputError("receipt output must be an object")
    if statement.subjects[0].sha256 != digest_hex(out.get("digest", "")):
        raise InvalidInputError("receipt subject differs from its output digest")
    if "values" in out and _encoded_digest(out["values"]) != out["digest"]:
        raise VerificationError(
            "receipt output values do not match the output digest", step="2 statement"
        )


def _validate_batch(statement: Statement, signer: str) -> None:
    pred = statement.predicate
    _check_common(pred, signer, _BATCH_FIELDS)
    batch = pred.get("batch")
    if not isinstance(batch, dict) or batch.get("itemFormat") != BATCH_ITEM_FORMAT:
        raise InvalidInputError(f"batch receipt needs batch.itemFormat {BATCH_ITEM_FORMAT}")
    if batch.get("commitmentScheme") != COMMITMENT_SCHEME:
        raise InvalidInputError(f"batch receipt needs commitment scheme {COMMITMENT_SCHEME}")
    if not isinstance(batch.get("outputPrivate"), bool):
        raise InvalidInputError("batch receipt needs a boolean batch.outputPrivate")
    count = batch.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count < 2**63:
        raise InvalidInputError("batch count must be a positive integer below 2^63")
    if statement.subjects[0].sha256 != digest_hex(batch.get("root", "")):
        raise InvalidInputError("batch receipt subject differs from its root")


register_predicate_type(INFERENCE_PREDICATE_TYPE, _validate_inference)
register_predicate_type(BATCH_PREDICATE_TYPE, _validate_batch)


# -- bundles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogProof:
    """Where a receipt sits in a transparency log, and the proof of it."""

    origin: str
    index: int
    tree_size: int
    inclusion_proof: tuple[bytes, ...]
    checkpoint: bytes
    """The signed checkpoint note (C2SP signed-note text) the proof is relative to."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form inside a bundle."""
        return {
            "origin": self.origin,
            "index": self.index,
            "treeSize": self.tree_size,
            "inclusionProof": [base64.b64encode(h).decode("ascii") for h in self.inclusion_proof],
            "checkpoint": self.checkpoint.decode("utf-8"),
        }


@dataclass(frozen=True)
class Bundle:
    """What a verifier is handed: the receipt envelope, plus an item and log proof if any."""

    envelope: Envelope
    item: BatchItem | None = None
    log: LogProof | None = None
    zk: Mapping[str, Any] | None = None
    """Zero-knowledge proof material, defined by `edgetrust.verify.zk`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        obj: dict[str, Any] = {"mediaType": BUNDLE_MEDIA_TYPE, "envelope": self.envelope.to_dict()}
        if self.item is not None:
            obj["item"] = self.item.to_dict()
        if self.log is not None:
            obj["log"] = self.log.to_dict()
        if self.zk is not None:
            obj["zk"] = dict(self.zk)
        return obj

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.to_dict())

    def leaf_data(self) -> bytes:
        """The bytes logged for this receipt: the envelope's canonical JSON."""
        return self.envelope.to_json()


def _b64_list(obj: Any, what: str, *, max_items: int = 64) -> tuple[bytes, ...]:
    if not isinstance(obj, list) or len(obj) > max_items:
        raise InvalidInputError(f"{what} must be a list of at most {max_items} hashes")
    out = []
    for h in obj:
        try:
            raw = base64.b64decode(h, validate=True) if isinstance(h, str) else b""
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError(f"{what} holds invalid base64") from exc
        if len(raw) != 32:
            raise InvalidInputError(f"{what} entries must be 32-byte hashes")
        out.append(raw)
    return tuple(out)


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise InvalidInputError(f"{what}.{key} must be an integer from 0 to 2^63 - 1")
    return value


def _utf8(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode text") from exc
    return value


def _parse_item(raw: Any) -> BatchItem:
    if not isinstance(raw, dict):
        raise InvalidInputError("bundle item must be an object")
    for key in ("inputCommitment", "outputDigest"):
        parse_digest(raw.get(key))
    return BatchItem(
        _int(raw, "index", "item"),
        raw["inputCommitment"],
        raw["outputDigest"],
        _b64_list(raw.get("auditPath"), "item.auditPath"),
        decode_tensors(raw["outputValues"]) if "outputValues" in raw else None,
    )


def _parse_log(raw: Any) -> LogProof:
    if not isinstance(raw, dict):
        raise InvalidInputError("bundle log must be an object")
    origin = _utf8(raw.get("origin"), "bundle log origin")
    note = _utf8(raw.get("checkpoint"), "bundle log checkpoint")
    return LogProof(
        origin,
        _int(raw, "index", "log"),
        _int(raw, "treeSize", "log"),
        _b64_list(raw.get("inclusionProof"), "log.inclusionProof"),
        note.encode("utf-8"),
    )


def _bundle_from_obj(obj: dict[str, Any]) -> Bundle:
    unknown = set(obj) - {"mediaType", "envelope", "item", "log", "zk"}
    if unknown:
        raise InvalidInputError(f"bundle has unknown fields: {sorted(unknown)}")
    envelope = envelope_from_dict(obj.get("envelope"))
    item = _parse_item(obj["item"]) if "item" in obj else None
    log = _parse_log(obj["log"]) if "log" in obj else None
    zk = obj.get("zk")
    if zk is not None and not isinstance(zk, dict):
        raise InvalidInputError("bundle zk must be an object")
    return Bundle(envelope, item, log, zk)


def _batch_from_obj(obj: dict[str, Any]) -> list[Bundle]:
    unknown = set(obj) - {"mediaType", "envelope", "items", "log"}
    if unknown:
        raise InvalidInputError(f"batch file has unknown fields: {sorted(unknown)}")
    envelope = envelope_from_dict(obj.get("envelope"))
    raw_items = obj.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise InvalidInputError("batch file needs a non-empty items list")
    log = _parse_log(obj["log"]) if "log" in obj else None
    return [Bundle(envelope, _parse_item(raw), log) for raw in raw_items]


def parse_bundle(data: bytes | str, *, max_bytes: int = 64 * 2**20) -> Bundle:
    """Parse an untrusted bundle file. Checks structure only; `Verifier` checks the rest."""
    bundles = parse_bundles(data, max_bytes=max_bytes)
    if len(bundles) != 1:
        raise InvalidInputError(f"expected one bundle, found a batch of {len(bundles)}")
    return bundles[0]


def parse_bundles(data: bytes | str, *, max_bytes: int = 256 * 2**20) -> list[Bundle]:
    """Parse a bundle or a batch file into bundles (one per receipt)."""
    obj = parse_json(data, what="bundle", max_bytes=max_bytes)
    media = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and media == BUNDLE_MEDIA_TYPE:
        return [_bundle_from_obj(obj)]
    if isinstance(obj, dict) and media == BATCH_FILE_MEDIA_TYPE:
        return _batch_from_obj(obj)
    raise InvalidInputError(
        f"not a receipt bundle (mediaType must be {BUNDLE_MEDIA_TYPE} or {BATCH_FILE_MEDIA_TYPE})"
    )


def write_batch_file(batch: BatchReceipts, log: LogProof | None = None) -> bytes:
    """One file for a whole batch: the envelope once, every item with its audit path."""
    obj: dict[str, Any] = {
        "mediaType": BATCH_FILE_MEDIA_TYPE,
        "envelope": batch.envelope.to_dict(),
        "items": [item.to_dict() for item in batch.items],
    }
    if log is not None:
        obj["log"] = log.to_dict()
    return canonical_json(obj)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A receipt whose signature and predicate checked out (steps 1-2 of verification)."""

    bundle: Bundle
    statement: Statement
    issuer: str
    model_digest: str
    executor: Mapping[str, Any]
    issued_at: str
    input_commitment: str
    output_digest: str
    outputs: Tensors | None
    trace_root: str | None

    @property
    def predicate(self) -> Mapping[str, Any]:
        """The raw predicate."""
        return self.statement.predicate

    @property
    def is_batch(self) -> bool:
        """Whether this is one item of a batch receipt."""
        return self.bundle.item is not None


def read_receipt(bundle: Bundle, *, cache: VerifiedCache | None = None) -> Receipt:
    """Verification steps 1-2: signature, statement, and (for a batch item) its audit path.

    With a `cache`, an envelope already opened (the shared envelope of a batch) is not
    verified again.

    Raises:
        VerificationError: with step "1 signature" or "2 statement".
        InvalidInputError / UnsupportedError: malformed or unknown formats (step 2).
    """
    try:
        signed = open_signed_statement(bundle.envelope, cache=cache)
    except VerificationError:
        raise
    except Error as exc:
        raise VerificationError(exc.message, step="2 statement") from exc
    st, pred = signed.statement, signed.statement.predicate
    if st.predicate_type == INFERENCE_PREDICATE_TYPE:
        if bundle.item is not None:
            raise VerificationError(
                "a single receipt cannot carry a batch item", step="2 statement"
            )
        out = pred["output"]
        values = decode_tensors(out["values"]) if "values" in out else None
        if values is not None and tensors_digest(values) != out["digest"]:
            raise VerificationError(
                "receipt output values are not canonically encoded", step="2 statement"
            )
        return Receipt(
            bundle,
            st,
            signed.signer,
            pred["model"]["digest"],
            pred["executor"],
            pred["issuedAt"],
            pred["input"]["commitment"],
            out["digest"],
            values,
            pred.get("traceRoot"),
        )
    if st.predicate_type != BATCH_PREDICATE_TYPE:
        raise VerificationError(
            f"not an inference receipt: {st.predicate_type}", step="2 statement"
        )
    item = bundle.item
    if item is None:
        raise VerificationError("a batch receipt needs its item and audit path", step="2 statement")
    batch = pred["batch"]
    leaf = merkle.leaf_hash(
        batch_item_leaf(
            item.index, parse_digest(item.input_commitment), parse_digest(item.output_digest)
        )
    )
    try:
        merkle.verify_inclusion(
            leaf, item.index, batch["count"], item.audit_path, parse_digest(batch["root"])
        )
    except VerificationError as exc:
        raise VerificationError(
            f"batch item {item.index}: {exc.message}", step="2 statement"
        ) from exc
    if item.outputs is not None and tensors_digest(item.outputs) != item.output_digest:
        raise VerificationError(
            "batch item output values do not match its digest", step="2 statement"
        )
    return Receipt(
        bundle,
        st,
        signed.signer,
        pred["model"]["digest"],
        pred["executor"],
        pred["issuedAt"],
        item.input_commitment,
        item.output_digest,
        item.outputs,
        pred.get("traceRoot"),
    )
