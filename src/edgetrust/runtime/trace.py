"""Per-node trace commitments of a fixed-point run, and element-level weight commitments.

Two levels of RFC 9162 Merkle trees (edgetrust.log.merkle), so one element is proven with two
audit paths. Two layouts (`TraceLayout`) exist; receipts name theirs in the executor settings
(``"trace"``; absent means v1, which every receipt before executor version 2 used):

* **v2** (`LAYOUT_V2`, the default, what an EVM contract checks cheaply): fixed-size binary
  leaves. A tensor's canonical bytes are its elements in C order, **big-endian** two's
  complement in the storage dtype, cut into chunks of exactly 256 bytes (the last one padded
  with zeros, which the referee checks). An entry leaf is 96 bytes: a header word (byte 0 the
  layout tag 0x02, byte 1 the item size 1/2/4/8, byte 2 the rank <= 7, byte 3 zero, bytes
  4..31 seven big-endian uint32 dims, unused ones zero), the element count as a uint256, the
  tensor root; a weight param leaf appends the node index (uint256) and the param name (ASCII,
  zero-padded to 32 bytes). Every word is what `abi.encode` gives, and hashing is SHA-256 as
  the EVM precompile has it with RFC 9162's 0x00/0x01 prefixes.
* **v1** (`LAYOUT_V1`), kept so old receipts still verify. **tensor commitment** - the root of a
  tree whose leaves are the tensor's canonical bytes (elements in C order, little-endian, in the
  storage dtype: int8/int16 for real tensors, int64 for integer ones; weights in the narrowest
  of int8/16/32/64 that holds them) cut into chunks of `CHUNK_BYTES` (the last one shorter).
  Element j is in chunk j·itemsize // 1024.
  A 1 KiB chunk keeps the number of Python-level hash calls low (24 MB hash in ~50 ms, measured
  against ~200 ms with 128-byte chunks) while an opening stays ~1 KiB plus the path.
  **entry leaf** - ``canonical_json({"dtype", "shape", "root"})``: binds shape and dtype to the
  tensor commitment; a param leaf adds ``"node"`` and ``"param"``.

In both, the trace root is the tree over entry leaves in trace order (graph inputs, then each
node's first output followed by any later output something reads, in node order); the weights
root is the tree over param leaves in (node index, param name) order.

Hashing cost: MiniLM-L6 at sequence 128 has a few million traced elements; see docs/fixed.md
and the benchmark for measured figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgetrust.encoding import canonical_json, parse_json
from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.log.merkle import leaf_hash, root_from_inclusion_proof
from edgetrust.runtime._commit import (
    _DTYPES,
    _MAX_DIMS,
    _V2_ENTRY_BYTES,
    _V2_MAX_DIMS,
    _V2_PARAM_BYTES,
    _V2_TAG,
    CHUNK_BYTES,
    LAYOUT_V1,
    LAYOUT_V2,
    MerkleLevels,
    TensorCommitment,
    TraceLayout,
    _v2_entry_leaf,
    entry_leaf_data,
    layout_named,
    split,
)

if TYPE_CHECKING:
    from edgetrust.runtime.fixed import Entry, FixedExecutor

__all__ = [
    "CHUNK_BYTES",
    "LAYOUT_V1",
    "LAYOUT_V2",
    "ChunkOpening",
    "ElementProof",
    "EntryLeaf",
    "LeafOpening",
    "MerkleLevels",
    "TensorCommitment",
    "Trace",
    "TraceLayout",
    "WeightCommitments",
    "element_from_chunk",
    "entry_leaf_data",
    "layout_named",
    "parse_entry_leaf",
    "read_chunk_elements",
    "split",
]


@dataclass(frozen=True)
class EntryLeaf:
    """A parsed entry leaf."""

    dtype: str
    shape: tuple[int, ...]
    root: bytes
    extra: Mapping[str, Any]
    layout: TraceLayout = LAYOUT_V1

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return int(np.dtype(self.dtype).itemsize)

    @property
    def per_chunk(self) -> int:
        """Elements per chunk of the tensor commitment."""
        return self.layout.chunk_bytes // self.itemsize

    @property
    def chunks(self) -> int:
        """Number of leaves of the tensor commitment."""
        return -(-self.size * self.itemsize // self.layout.chunk_bytes)

    def chunk_length(self, index: int) -> int:
        """Byte length chunk `index` must have."""
        return self.layout.chunk_length(self.size * self.itemsize, index)

    def read(self, chunk: bytes, first: int, count: int) -> npt.NDArray[np.int64]:
        """Elements [first, first + count) of one of this tensor's chunks."""
        return self.layout.read(chunk, self.dtype, first, count)

    def check_padding(self, index: int, chunk: bytes) -> None:
        """A v2 chunk's bytes past the tensor's end must be zero (the canonical padding)."""
        used = self.size * self.itemsize - index * self.layout.chunk_bytes
        if self.layout.padded and 0 <= used < len(chunk) and any(chunk[used:]):
            raise VerificationError(f"chunk {index} has non-zero padding", step="chunk")


def parse_entry_leaf(data: bytes) -> EntryLeaf:
    """Parse an entry leaf (untrusted bytes) of either layout, checking every field."""
    if data[:1] == bytes([_V2_TAG]):
        return _parse_v2_leaf(bytes(data))
    obj = parse_json(data, what="trace entry", max_bytes=4096)
    if not isinstance(obj, dict):
        raise InvalidInputError("trace entry must be a JSON object")
    dtype, shape, root = obj.get("dtype"), obj.get("shape"), obj.get("root")
    if dtype not in _DTYPES:
        raise InvalidInputError(f"trace entry dtype must be one of {_DTYPES}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)
    ):
        raise InvalidInputError("trace entry shape must be a short list of non-negative integers")
    if not isinstance(root, str) or len(root) != 64:
        raise InvalidInputError("trace entry root must be 64 hex characters")
    try:
        root_b = bytes.fromhex(root)
    except ValueError as exc:
        raise InvalidInputError("trace entry root must be 64 hex characters") from exc
    extra = {k: v for k, v in obj.items() if k not in ("dtype", "shape", "root")}
    leaf = EntryLeaf(dtype, tuple(shape), root_b, extra)
    if leaf.size > 2**40:
        raise InvalidInputError("trace entry is too large")
    if canonical_json(obj) != bytes(data):
        raise InvalidInputError("trace entry is not in canonical JSON form")
    return leaf


def _parse_v2_leaf(data: bytes) -> EntryLeaf:
    if len(data) not in (_V2_ENTRY_BYTES, _V2_PARAM_BYTES):
        raise InvalidInputError(
            f"a v2 trace entry is {_V2_ENTRY_BYTES} or {_V2_PARAM_BYTES} bytes, not {len(data)}"
        )
    itemsize, ndim = data[1], data[2]
    dtype = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}.get(itemsize)
    if dtype is None:
        raise InvalidInputError("v2 trace entry item size must be 1, 2, 4 or 8")
    if ndim > _V2_MAX_DIMS:
        raise InvalidInputError(f"v2 trace entry rank must be at most {_V2_MAX_DIMS}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    extra: dict[str, Any] = {}
    if len(data) == _V2_PARAM_BYTES:
        name = data[128:160].rstrip(b"\x00")
        if not name or b"\x00" in name or not name.isascii():
            raise InvalidInputError("v2 param name must be 1-32 ASCII characters")
        extra = {"node": int.from_bytes(data[96:128], "big"), "param": name.decode()}
    leaf = EntryLeaf(dtype, shape, data[64:96], extra, LAYOUT_V2)
    if leaf.size > 2**40:
        raise InvalidInputError("trace entry is too large")
    # Canonical form: re-encoding gives the same bytes (reserved byte, unused dims, count).
    try:
        again = _v2_entry_leaf(dtype, shape, leaf.root, extra or None)
    except Error as exc:
        raise InvalidInputError(f"v2 trace entry is malformed: {exc.message}") from exc
    if again != data:
        raise InvalidInputError("v2 trace entry is not in canonical form")
    return leaf


def read_chunk_elements(chunk: bytes, dtype: str, first: int, count: int) -> npt.NDArray[np.int64]:
    """Elements [first, first + count) of a v1 chunk's bytes, as int64."""
    return LAYOUT_V1.read(chunk, dtype, first, count)


@dataclass(frozen=True)
class ChunkOpening:
    """One chunk of a tensor and its audit path to the tensor commitment."""

    index: int
    data: bytes
    path: tuple[bytes, ...]

    def verify(self, leaf: EntryLeaf) -> None:
        """Check the chunk against the tensor root; its length against dtype and shape."""
        if not 0 <= self.index < leaf.chunks:
            raise VerificationError(f"chunk {self.index} is outside the tensor", step="chunk")
        want = leaf.chunk_length(self.index)
        if len(self.data) != want:
            raise VerificationError(
                f"chunk {self.index} has {len(self.data)} bytes, want {want}", step="chunk"
            )
        got = root_from_inclusion_proof(
            leaf_hash(self.data), self.index, leaf.chunks, list(self.path)
        )
        if got != leaf.root:
            raise VerificationError(
                f"chunk {self.index} does not match its tensor commitment", step="chunk"
            )
        leaf.check_padding(self.index, self.data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (hex)."""
        return {"index": self.index, "data": self.data.hex(), "path": [p.hex() for p in self.path]}


@dataclass(frozen=True)
class LeafOpening:
    """An entry leaf (trace entry or weight param) and its audit path to the tree root."""

    index: int
    data: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes, size: int) -> EntryLeaf:
        """Check the leaf's inclusion; return it parsed."""
        got = root_from_inclusion_proof(leaf_hash(self.data), self.index, size, list(self.path))
        if got != root:
            raise VerificationError(
                f"entry {self.index} does not match the committed root", step="entry"
            )
        return parse_entry_leaf(self.data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: a v1 leaf as its JSON text, a binary v2 leaf as ``data_hex``."""
        data: dict[str, str] = (
            {"data_hex": self.data.hex()}
            if self.data[:1] == bytes([_V2_TAG])
            else {"data": self.data.decode()}
        )
        return {"index": self.index, **data, "path": [p.hex() for p in self.path]}


@dataclass(frozen=True)
class ElementProof:
    """One element of a committed tensor: its entry leaf and its chunk, each with a path."""

    leaf: LeafOpening
    chunk: ChunkOpening

    def verify(self, root: bytes, size: int, element: int) -> int:
        """Check both audit paths against `root` (a tree of `size` entries); return the value.

        Raises:
            VerificationError: a path does not lead to its root, or the chunk does not hold
                `element`.
        """
        leaf = self.leaf.verify(root, size)
        return element_from_chunk(leaf, self.chunk, element)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"leaf": self.leaf.to_dict(), "chunk": self.chunk.to_dict()}


def element_from_chunk(leaf: EntryLeaf, chunk: ChunkOpening, element: int) -> int:
    """Verify `chunk` against `leaf` and read `element` from it."""
    if not 0 <= element < leaf.size:
        raise VerificationError(
            f"element {element} is outside a tensor of {leaf.size}", step="chunk"
        )
    per = leaf.per_chunk
    if element // per != chunk.index:
        raise VerificationError(f"element {element} is not in chunk {chunk.index}", step="chunk")
    chunk.verify(leaf)
    return int(leaf.read(chunk.data, element % per, 1)[0])


class _Committed:
    """Shared: a tree of entry leaves over tensor commitments."""

    def __init__(
        self, tensors: list[npt.NDArray[Any]], leaves: list[bytes], layout: TraceLayout
    ) -> None:
        self.layout = layout
        self.values = tensors
        self.leaf_bytes = leaves
        self.tree = MerkleLevels([leaf_hash(d) for d in leaves])
        self._commitments: dict[int, TensorCommitment] = {}

    @property
    def root(self) -> bytes:
        """Root over the entry leaves."""
        return self.tree.root

    @property
    def root_digest(self) -> str:
        """``sha256:<hex>`` of the root."""
        return "sha256:" + self.root.hex()

    @property
    def size(self) -> int:
        """Number of entries."""
        return self.tree.size

    def commitment(self, k: int) -> TensorCommitment:
        """The tensor commitment of entry k (recomputed on demand, cached)."""
        if k not in self._commitments:
            self._commitments[k] = TensorCommitment.of(self.values[k], self.layout)
        return self._commitments[k]

    def open_leaf(self, k: int) -> LeafOpening:
        """Entry leaf k with its audit path."""
        return LeafOpening(k, self.leaf_bytes[k], tuple(self.tree.path(k)))

    def prove(self, k: int, element: int) -> ElementProof:
        """Proof of element `element` (C-order) of entry k: two audit paths."""
        return ElementProof(self.open_leaf(k), self.open_chunk(k, element // self.per_chunk(k)))

    def per_chunk(self, k: int) -> int:
        """Elements per chunk of entry k's tensor commitment."""
        return self.layout.chunk_bytes // np.dtype(self.values[k].dtype).itemsize

    def open_chunk(self, k: int, chunk: int) -> ChunkOpening:
        """Chunk `chunk` of entry k's tensor, with its audit path."""
        c = self.commitment(k)
        flat = np.ascontiguousarray(self.values[k]).reshape(-1)
        per = self.per_chunk(k)
        data = self.layout.encode(flat[chunk * per : (chunk + 1) * per])
        return ChunkOpening(chunk, data, tuple(c.levels.path(chunk)))


class Trace(_Committed):
    """Every traced tensor of one run and the commitments over them.

    Entries are the graph inputs (quantized, labelled ``input:<name>``) and then each node's
    output in node order; the trace root commits to all of them.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        values: list[npt.NDArray[Any]],
        layout: TraceLayout = LAYOUT_V2,
        commitments: Sequence[TensorCommitment] | None = None,
    ) -> None:
        """A trace of `values` (`commitments`: theirs, if computed as the run went)."""
        if len(entries) != len(values):
            raise InvalidInputError("a trace needs one value per entry")
        self.entries = list(entries)
        if commitments is None:
            commitments = [TensorCommitment.of(v, layout) for v in values]
        super().__init__(values, [c.leaf_data() for c in commitments], layout)
        self._commitments = dict(enumerate(commitments))

    @staticmethod
    def from_executor(ex: FixedExecutor, values: list[npt.NDArray[Any]]) -> Trace:
        """The trace of a run of `ex` (values in its storage dtypes, in its trace layout)."""
        return Trace(ex.entries, values, ex.trace_layout)

    def entry_index(self, label: str | int) -> int:
        """Index of an entry by label (``input:x``, a node name, ``#<node index>``) or index."""
        if isinstance(label, int):
            if 0 <= label < self.size:
                return label
            raise InvalidInputError(f"trace entry {label} is outside 0..{self.size - 1}")
        for i, e in enumerate(self.entries):
            if e.label == label or (e.node_index is not None and label == f"#{e.node_index}"):
                return i
        raise InvalidInputError(f"no trace entry {label!r}")


def _narrow(values: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """The narrowest of int8/16/32/64 that holds `values` exactly."""
    if values.size == 0:
        return values.astype(np.int8)
    lo, hi = int(values.min()), int(values.max())
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return values.astype(dt)
    return values.astype(np.int64)


class WeightCommitments(_Committed):
    """Element-level commitments of every op's params: quantized weights, biases, multipliers.

    The referee of a dispute checks each weight element it uses against `root` (agreed before
    the game: it is in the receipt's executor settings), so it never needs the model's weights.
    """

    def __init__(
        self,
        keys: list[tuple[int, str]],
        values: list[npt.NDArray[Any]],
        layout: TraceLayout = LAYOUT_V2,
    ) -> None:
        self.keys = keys
        commitments = [TensorCommitment.of(v, layout) for v in values]
        leaves = [
            c.leaf_data({"node": node, "param": name})
            for (node, name), c in zip(keys, commitments, strict=True)
        ]
        super().__init__(values, leaves, layout)
        self._commitments = dict(enumerate(commitments))
        self.index = {key: i for i, key in enumerate(keys)}

    @staticmethod
    def from_executor(ex: FixedExecutor) -> WeightCommitments:
        """Materialize every op's params and commit to them (once per model and plan)."""
        keys: list[tuple[int, str]] = []
        values: list[npt.NDArray[Any]] = []
        for i, op in enumerate(ex.ops):
            for name, value in sorted(op.params().items()):
                keys.append((i, name))
                values.append(_narrow(np.asarray(value, np.int64)))
        return WeightCommitments(keys, values, ex.trace_layout)
