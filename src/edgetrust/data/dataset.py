"""Dataset cards: records an owner keeps, named by a digest over their canonical form.

A dataset is a table: named columns, each a numeric tensor whose first axis is the record
(``.npy`` is one column ``x``; ``.npz`` one column per array; CSV and JSON lines one column per
field). Its digest is over `canonical_records`, which depend only on the values, never on the
file format, byte order or platform: the same records in CSV and in JSON lines have one digest.
A `DatasetCard` adds the schema, record count, owner DID, licence and provenance and is signed
by the owner as a DSSE in-toto statement (`https://edgetrust.dev/dataset/v1`).

New sources (a directory of EDF captures) plug in with `register_loader`; nothing else changes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import (
    DIGEST_PREFIX,
    canonical_json,
    digest_hex,
    parse_digest,
    update_tensor_hash,
)
from edgetrust.errors import InvalidInputError
from edgetrust.files import read_limited
from edgetrust.identity import Identity, public_bytes_from_did
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
    "DATASET_PREDICATE_TYPE",
    "DEFAULT_MAX_DATASET_BYTES",
    "RECORDS_MAGIC",
    "Column",
    "DatasetCard",
    "Table",
    "canonical_records",
    "digest_table",
    "load_table",
    "parse_table",
    "read_dataset_card",
    "register_loader",
]

DATASET_PREDICATE_TYPE = "https://edgetrust.dev/dataset/v1"
RECORDS_MAGIC = b"ETD1"
"""First bytes of the canonical records encoding (edgetrust dataset, version 1)."""
DEFAULT_MAX_DATASET_BYTES = 256 * 2**20
"""Largest dataset file read (256 MiB)."""
MAX_COLUMNS = 1024
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_DTYPES = ("bool", "int64", "float64", "float32", "int32", "uint8", "int8", "int16", "uint16")

Table = dict[str, npt.NDArray[Any]]
"""Columns by name; every column's first axis is the record, all of one length."""


@dataclass(frozen=True)
class Column:
    """One column of the schema: name, dtype and the shape of one record's value."""

    name: str
    dtype: str
    """numpy dtype name (``int64``, ``float64``, ``bool``, ...)."""
    shape: tuple[int, ...] = ()
    """Shape of a single record's value: ``()`` for a scalar, ``(64,)`` for a feature vector."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form in the card."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, obj: object) -> Column:
        """Parse the JSON form, checking every type."""
        if not isinstance(obj, dict) or set(obj) != {"name", "dtype", "shape"}:
            raise InvalidInputError("a schema column needs exactly name, dtype and shape")
        name, dtype, shape = obj["name"], obj["dtype"], obj["shape"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidInputError(f"bad column name {name!r:.40}")
        if dtype not in _DTYPES:
            raise InvalidInputError(f"column {name} has unsupported dtype {dtype!r:.20}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape
        ):
            raise InvalidInputError(f"column {name} has a malformed shape")
        return cls(name, dtype, tuple(shape))


def _check_table(table: Mapping[str, Any]) -> tuple[Table, int]:
    if not table:
        raise InvalidInputError("a dataset needs at least one column")
    if len(table) > MAX_COLUMNS:
        raise InvalidInputError(f"a dataset has at most {MAX_COLUMNS} columns")
    out: Table = {}
    count: int | None = None
    for name in sorted(table):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidInputError(f"bad column name {name!r:.40}")
        arr = np.asarray(table[name])
        if arr.dtype.name not in _DTYPES:
            raise InvalidInputError(f"column {name} has unsupported dtype {arr.dtype.name}")
        if arr.ndim == 0:
            raise InvalidInputError(f"column {name} must have a record axis")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInputError(f"column {name} holds NaN or infinity")
        if count is None:
            count = int(arr.shape[0])
        elif arr.shape[0] != count:
            raise InvalidInputError(
                f"column {name} has {arr.shape[0]} records, other columns have {count}"
            )
        out[name] = arr
    assert count is not None  # (non-empty table)
    return out, count


def canonical_records(table: Mapping[str, Any]) -> bytes:
    """The bytes a dataset digest is over, the same on every machine.

    Layout: ``b"ETD1" || u32le(len(header)) || header`` then, for each column in name order,
    its canonical tensor bytes (`edgetrust.encoding.canonical_tensor_bytes`: dtype, shape,
    little-endian C-order data). The header is the RFC 8785 JSON
    ``{"columns": [names...], "count": N}``.
    """
    h = _Collect()
    _feed(h, table)
    return h.data()


def digest_table(table: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of `canonical_records(table)`, streamed (no copy of the data)."""
    h = hashlib.sha256()
    _feed(h, table)
    return DIGEST_PREFIX + h.hexdigest()


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: Any) -> None:
        self.parts.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.parts)


def _feed(hasher: Any, table: Mapping[str, Any]) -> None:
    checked, count = _check_table(table)
    header = canonical_json({"columns": list(checked), "count": count})
    hasher.update(RECORDS_MAGIC + struct.pack("<I", len(header)) + header)
    for name in checked:
        update_tensor_hash(hasher, checked[name])


def schema_of(table: Mapping[str, Any]) -> tuple[tuple[Column, ...], int]:
    """The schema and record count of a table."""
    checked, count = _check_table(table)
    cols = tuple(
        Column(n, a.dtype.name, tuple(int(d) for d in a.shape[1:])) for n, a in checked.items()
    )
    return cols, count


# -- loaders: bytes of one file format -> Table --------------------------------------------------

Loader = Callable[[bytes], Table]
_LOADERS: dict[str, Loader] = {}


def register_loader(kind: str, loader: Loader) -> None:
    """Register a parser for a dataset source kind (a file suffix such as ``edf``)."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", kind):
        raise ValueError(f"loader kind {kind!r} must be 1-16 lower-case letters or digits")
    _LOADERS[kind] = loader


def _load_npy(data: bytes) -> Table:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"not a .npy array: {exc}") from exc
    return {"x": np.asarray(arr)}


def _load_npz(data: bytes) -> Table:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise InvalidInputError(f"not a .npz archive: {exc}") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise InvalidInputError(f"not a .npz archive: {type(exc).__name__}") from exc


def _column_from_values(name: str, values: list[Any]) -> npt.NDArray[Any]:
    """One typed column from parsed JSON values: bool, int64, float64 or fixed-length lists."""
    if not values:
        raise InvalidInputError(f"column {name} is empty")
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.bool_)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if not all(-(2**63) <= v < 2**63 for v in values):
            raise InvalidInputError(f"column {name} has an integer outside int64")
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            raise InvalidInputError(f"column {name} holds NaN or infinity")
        return np.array(floats, dtype=np.float64)
    if all(isinstance(v, list) for v in values):
        width = len(values[0])
        if any(len(v) != width for v in values):
            raise InvalidInputError(f"column {name} has lists of different lengths")
        flat = [x for v in values for x in v]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
            raise InvalidInputError(f"column {name} lists must hold numbers")
        col = _column_from_values(name, flat) if flat else np.zeros(0, dtype=np.float64)
        return col.reshape(len(values), width)
    raise InvalidInputError(f"column {name} mixes types or holds text (only numbers are records)")


def _load_jsonl(data: bytes) -> Table:
    rows: list[dict[str, Any]] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("JSON lines file is not UTF-8") from exc
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidInputError(f"line {i} is not valid JSON") from exc
        if not isinstance(obj, dict):
            raise InvalidInputError(f"line {i} is not a JSON object")
        if rows and set(obj) != set(rows[0]):
            raise InvalidInputError(f"line {i} has other fields than line 1")
        rows.append(obj)
    if not rows:
        raise InvalidInputError("JSON lines file has no records")
    return {k: _column_from_values(k, [r[k] for r in rows]) for k in rows[0]}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _csv_value(cell: str, name: str, line: int) -> int | float:
    s = cell.strip()
    if re.fullmatch(r"[+-]?[0-9]+", s):
        return int(s)
    try:
        v = float(s)
    except ValueError as exc:
        raise InvalidInputError(
            f"CSV line {line} column {name}: {s!r:.20} is not a number"
        ) from exc
    if not math.isfinite(v):
        raise InvalidInputError(f"CSV line {line} column {name} holds NaN or infinity")
    return v


def _load_csv(data: bytes) -> Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("CSV file is not UTF-8") from exc
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidInputError(f"CSV does not parse: {exc}") from exc
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise InvalidInputError("CSV needs a header line and at least one record")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise InvalidInputError("CSV header names a column twice")
    cols: dict[str, list[Any]] = {h: [] for h in header}
    for i, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise InvalidInputError(f"CSV line {i} has {len(row)} fields, header has {len(header)}")
        for h, cell in zip(header, row, strict=True):
            cols[h].append(_csv_value(cell, h, i))
    return {h: _column_from_values(h, v) for h, v in cols.items()}


register_loader("npy", _load_npy)
register_loader("npz", _load_npz)
register_loader("csv", _load_csv)
register_loader("jsonl", _load_jsonl)


def parse_table(data: bytes, kind: str) -> Table:
    """Parse the bytes of a dataset file of `kind` (``npy``, ``npz``, ``csv``, ``jsonl``)."""
    loader = _LOADERS.get(kind)
    if loader is None:
        raise InvalidInputError(
            f"unknown dataset format {kind!r:.20} (known: {', '.join(sorted(_LOADERS))})"
        )
    table = loader(data)
    _check_table(table)
    return table


def load_table(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_DATASET_BYTES
) -> tuple[Table, bytes, str]:
    """Read a dataset file: its table, exact bytes and kind (from the suffix)."""
    p = Path(path)
    kind = p.suffix.lstrip(".").lower()
    if kind == "ndjson":
        kind = "jsonl"
    data = read_limited(p, "dataset file", max_bytes=max_bytes)
    return parse_table(data, kind), data, kind


# -- the card --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetCard:
    """What others may know about a dataset without seeing it."""

    digest: str
    """``sha256:<hex>`` of the canonical records: the dataset's identity."""
    name: str
    owner: str
    """did:key of the owner, who signs the card and issues grants over it."""
    columns: tuple[Column, ...]
    count: int
    """Number of records."""
    licence: str = "all-rights-reserved"
    """Licence terms (an SPDX identifier or a short text)."""
    provenance: tuple[str, ...] = ()
    """Digests of the captures or datasets this one was derived from."""
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def describe(
        cls,
        table: Mapping[str, Any],
        *,
        name: str,
        owner: str,
        licence: str = "all-rights-reserved",
        provenance: tuple[str, ...] | list[str] = (),
        description: str = "",
    ) -> DatasetCard:
        """The card of a table (digest, schema and count computed here)."""
        columns, count = schema_of(table)
        card = cls(
            digest_table(table),
            name,
            owner,
            columns,
            count,
            licence,
            tuple(provenance),
            description,
        )
        return cls.from_predicate(card.to_predicate())  # one validation path

    def column(self, name: str) -> Column:
        """The schema column `name`."""
        for c in self.columns:
            if c.name == name:
                return c
        raise InvalidInputError(f"dataset {self.name} has no column {name!r:.40}")

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/dataset/v1` predicate."""
        return {
            "digest": self.digest,
            "name": self.name,
            "owner": self.owner,
            "columns": [c.to_dict() for c in self.columns],
            "count": self.count,
            "licence": self.licence,
            "provenance": list(self.provenance),
            "description": self.description,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> DatasetCard:
        """Parse a dataset predicate, checking every field."""
        known = {
            "digest",
            "name",
            "owner",
            "columns",
            "count",
            "licence",
            "provenance",
            "description",
            "extra",
        }
        if not isinstance(pred, Mapping) or set(pred) - known:
            raise InvalidInputError("malformed dataset card: unknown or missing fields")
        try:
            parse_digest(pred["digest"])
            public_bytes_from_did(pred["owner"])
            name, licence = pred["name"], pred.get("licence", "all-rights-reserved")
            description = pred.get("description", "")
            for label, text in (("name", name), ("licence", licence)):
                if not isinstance(text, str) or not 0 < len(text) <= 256:
                    raise InvalidInputError(f"dataset {label} must be 1-256 characters")
                check_text(text, f"dataset {label}")
            if not isinstance(description, str) or len(description) > 4096:
                raise InvalidInputError("dataset description must be text of ≤ 4096 characters")
            check_text(description, "dataset description", multiline=True)
            count = pred["count"]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise InvalidInputError("dataset count must be a non-negative integer")
            raw_cols = pred["columns"]
            if not isinstance(raw_cols, list) or not 0 < len(raw_cols) <= MAX_COLUMNS:
                raise InvalidInputError("dataset columns must be a non-empty list")
            columns = tuple(Column.from_dict(c) for c in raw_cols)
            if len({c.name for c in columns}) != len(columns):
                raise InvalidInputError("dataset names a column twice")
            prov = pred.get("provenance", [])
            if not isinstance(prov, list) or len(prov) > 256:
                raise InvalidInputError("dataset provenance must be a list of ≤ 256 digests")
            for d in prov:
                parse_digest(d)
            extra = pred.get("extra", {})
            if not isinstance(extra, dict):
                raise InvalidInputError("dataset extra must be an object")
        except KeyError as exc:
            raise InvalidInputError(f"malformed dataset card: missing {exc}") from exc
        return cls(
            pred["digest"],
            name,
            pred["owner"],
            columns,
            count,
            licence,
            tuple(prov),
            description,
            dict(extra),
        )

    def sign(self, owner: Identity) -> Envelope:
        """Sign the card (by its owner) as a DSSE in-toto statement about the dataset digest."""
        if owner.did != self.owner:
            raise InvalidInputError("a dataset card is signed by its owner")
        payload = encode_statement(
            [Subject(self.name, digest_hex(self.digest))],
            DATASET_PREDICATE_TYPE,
            self.to_predicate(),
        )
        return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, owner)


def _validate_dataset_statement(statement: Statement, signer: str) -> None:
    card = DatasetCard.from_predicate(statement.predicate)
    if statement.subjects[0].sha256 != digest_hex(card.digest):
        raise InvalidInputError("dataset card subject digest differs from its predicate digest")
    if signer != card.owner:
        raise InvalidInputError("a dataset card must be signed by the owner it names")


register_predicate_type(DATASET_PREDICATE_TYPE, _validate_dataset_statement)


def read_dataset_card(data: bytes | Envelope) -> DatasetCard:
    """Open a signed dataset card envelope (signature, type and owner checked)."""
    signed = open_signed_statement(data)
    if signed.statement.predicate_type != DATASET_PREDICATE_TYPE:
        raise InvalidInputError(f"not a dataset card: {signed.statement.predicate_type:.80}")
    return DatasetCard.from_predicate(signed.statement.predicate)
