"""Tensor commitments: the two trace layouts, chunk hashing and every level of a Merkle tree.

The hashing half of `edgetrust.runtime.trace` (see its docstring for the layouts); kept apart
so the hot path of a traced run - one RFC 9162 tree per tensor - reads on its own.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError, UnsupportedError, VerificationError
from edgetrust.log.merkle import EMPTY_ROOT

CHUNK_BYTES = 1024
"""Bytes of canonical element data per leaf of a v1 tensor commitment."""

_DTYPES = ("int8", "int16", "int32", "int64")
_MAX_DIMS = 16
_V2_TAG = 0x02
_V2_MAX_DIMS = 7
_V2_ENTRY_BYTES = 96
_V2_PARAM_BYTES = 160
_sha256 = hashlib.sha256
_DTYPE_NAMES = {np.dtype(n): n for n in _DTYPES}
_NATIVE_MIN = 1 << 16
"""Tensors of fewer bytes are hashed with hashlib until the native hasher is loaded: loading
numba costs ~0.5 s once per process, more than small models ever save."""


@dataclass(frozen=True)
class TraceLayout:
    """How tensors and entries are laid out as Merkle leaves (see the module docstring)."""

    version: int
    """1 or 2."""
    chunk_bytes: int
    """Bytes of element data per leaf of a tensor commitment."""
    byteorder: Literal["<", ">"] = field(repr=False)
    """numpy byte order of the elements: "<" (v1) or ">" (v2)."""
    padded: bool = field(repr=False)
    """Whether the last chunk is zero-padded to `chunk_bytes` (fixed-size leaves)."""

    @property
    def type(self) -> str:
        """The type string a receipt's executor settings name it by."""
        return f"https://edgetrust.dev/trace/v{self.version}"

    def encode(self, values: npt.NDArray[Any]) -> bytes:
        """A tensor's canonical bytes in this layout (padded, for v2)."""
        arr = np.ascontiguousarray(values)
        data = arr.astype(arr.dtype.newbyteorder(self.byteorder), copy=False).tobytes()
        if self.padded and len(data) % self.chunk_bytes:
            data += bytes(self.chunk_bytes - len(data) % self.chunk_bytes)
        return data

    def chunk_hashes(self, data: bytes) -> list[bytes]:
        """RFC 9162 leaf hashes of the chunks of canonical bytes `data`."""
        return _leaf_hashes(memoryview(data), self.chunk_bytes)

    def tensor_hashes(self, values: npt.NDArray[Any]) -> list[bytes]:
        """``chunk_hashes(encode(values))`` without building the canonical bytes.

        The chunks are hashed straight from the array's memory (for int8, or where the layout's
        byte order is the machine's, no copy at all); only a padded last chunk is copied.
        """
        return self._hash_memory(self._memory(values))

    def tensor_tree(self, values: npt.NDArray[Any]) -> MerkleLevels:
        """The tree over ``tensor_hashes(values)``: in one native call where `_sha256` is
        available (the same hashes), else with hashlib."""
        from edgetrust.runtime import _sha256 as native

        mv = self._memory(values)
        if len(mv) >= _NATIVE_MIN or (len(mv) > self.chunk_bytes and native.loaded()):
            levels = native.tree_levels(np.frombuffer(mv, np.uint8), self.chunk_bytes, self.padded)
            if levels is not None:
                return MerkleLevels.from_arrays(levels)
        return MerkleLevels(self._hash_memory(mv))

    def bytes_of(self, values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """The canonical bytes (before padding) as a uint8 array: for int8, or where the
        layout's byte order is the machine's, a view of the array's own memory."""
        return np.frombuffer(self._memory(values), np.uint8)

    def _memory(self, values: npt.NDArray[Any]) -> memoryview:
        """The canonical bytes (before padding) as memory: for int8, or where the layout's
        byte order is the machine's, the array's own."""
        arr = np.ascontiguousarray(values)
        want = arr.dtype.newbyteorder(self.byteorder)
        if arr.dtype != want:  # numpy dtypes of different byte orders compare unequal
            arr = arr.astype(want)
        return arr.reshape(-1).view(np.uint8).data

    def _hash_memory(self, mv: memoryview) -> list[bytes]:
        """Leaf hashes of canonical bytes with hashlib; only a padded last chunk is copied."""
        step, n = self.chunk_bytes, len(mv)
        tail = n % step if self.padded else 0
        out = _leaf_hashes(mv[: n - tail], step)
        if tail:
            out.append(_sha256(b"\x00" + mv[n - tail :] + bytes(step - tail)).digest())
        return out

    def chunk_length(self, nbytes: int, index: int) -> int:
        """Byte length of chunk `index` of a tensor of `nbytes` unpadded bytes."""
        if self.padded:
            return self.chunk_bytes
        return min(self.chunk_bytes, nbytes - index * self.chunk_bytes)

    def read(self, chunk: bytes, dtype: str, first: int, count: int) -> npt.NDArray[np.int64]:
        """Elements [first, first + count) of a chunk's bytes, as int64."""
        dt = np.dtype(dtype).newbyteorder(self.byteorder)
        usable = len(chunk) - len(chunk) % dt.itemsize
        arr = np.frombuffer(chunk[:usable], dtype=dt)
        if first < 0 or first + count > arr.size:
            raise VerificationError(
                "chunk is too short for the elements it should hold", step="chunk"
            )
        return arr[first : first + count].astype(np.int64)

    def entry_leaf(
        self,
        dtype: str,
        shape: Sequence[int],
        root: bytes,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The entry leaf binding dtype, shape and root (and a param's node and name)."""
        if self.version == 1:
            return _v1_entry_leaf(dtype, shape, root, extra)
        return _v2_entry_leaf(dtype, shape, root, extra)


LAYOUT_V1 = TraceLayout(1, CHUNK_BYTES, "<", padded=False)
"""The JSON-leaf layout of executor version 1 receipts."""
LAYOUT_V2 = TraceLayout(2, 256, ">", padded=True)
"""The fixed-size binary layout an EVM contract checks (executor version 2)."""
_LAYOUTS = {LAYOUT_V1.type: LAYOUT_V1, LAYOUT_V2.type: LAYOUT_V2}


def layout_named(name: Any) -> TraceLayout:
    """The layout a receipt's settings name (``None``: v1, what receipts before v2 used)."""
    if name is None:
        return LAYOUT_V1
    layout = _LAYOUTS.get(name) if isinstance(name, str) else None
    if layout is None:
        raise InvalidInputError(f"unknown trace layout {name!r}")
    return layout


def _v2_header(dtype: str, shape: Sequence[int]) -> bytes:
    if len(shape) > _V2_MAX_DIMS:
        raise UnsupportedError(f"trace layout v2 holds tensors of rank <= {_V2_MAX_DIMS}")
    if not all(0 <= int(d) < 2**32 for d in shape):
        raise UnsupportedError("trace layout v2 holds dimensions below 2**32")
    dims = b"".join(int(d).to_bytes(4, "big") for d in shape)
    dims += bytes(4 * (_V2_MAX_DIMS - len(shape)))
    return bytes([_V2_TAG, np.dtype(dtype).itemsize, len(shape), 0]) + dims


def _v2_entry_leaf(
    dtype: str, shape: Sequence[int], root: bytes, extra: Mapping[str, Any] | None
) -> bytes:
    count = math.prod(int(d) for d in shape)  # 1 for a scalar
    out = _v2_header(dtype, shape) + count.to_bytes(32, "big") + bytes(root)
    if not extra:
        return out
    if set(extra) != {"node", "param"}:
        raise InvalidInputError("a v2 param leaf holds exactly a node index and a param name")
    name = str(extra["param"]).encode("ascii")
    if not 0 < len(name) <= 32 or b"\x00" in name:
        raise InvalidInputError("a v2 param name is 1-32 ASCII characters")
    return out + int(extra["node"]).to_bytes(32, "big") + name.ljust(32, b"\x00")


class MerkleLevels:
    """Every level of an RFC 9162 tree, for O(1) subtree hashes during bisection.

    Level 0 holds the leaf hashes; each level above pairs neighbours and promotes an unpaired
    last node, which gives the RFC 9162 tree (§2.1.1). The node at (level L, index i) covers
    leaves [i·2**L, min((i+1)·2**L, n)); every subtree the RFC recursion visits is one of those.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        levels: list[list[bytes]] = [list(leaf_hashes)]
        sha = _sha256
        level = levels[0]
        while len(level) > 1:
            # zip over one iterator pairs neighbours (an odd last node is left out, promoted
            # below) without copying the level into two slices.
            pairs = iter(level)
            up = [sha(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
            if len(level) & 1:
                up.append(level[-1])
            level = up
            levels.append(level)
        self._levels: Sequence[Any] = levels

    @classmethod
    def from_arrays(cls, levels: list[npt.NDArray[np.uint8]]) -> MerkleLevels:
        """The tree from its levels as (width, 32) uint8 arrays (`_sha256.tree_levels`)."""
        tree = cls.__new__(cls)
        tree._levels = levels
        return tree

    @property
    def levels(self) -> list[list[bytes]]:
        """Every level's node hashes, from the leaves up."""
        return [[bytes(h) for h in level] for level in self._levels]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The tree's root (SHA-256 of nothing for an empty tree)."""
        return bytes(self._levels[-1][0]) if len(self._levels[0]) else EMPTY_ROOT

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(leaves[lo:hi]) for an RFC 9162 subtree [lo, hi) of this tree."""
        if not 0 <= lo < hi <= self.size:
            raise InvalidInputError(f"[{lo}, {hi}) is not a range of {self.size} leaves")
        level = (hi - lo - 1).bit_length()
        if lo & ((1 << level) - 1) or min(lo + (1 << level), self.size) != hi:
            raise InvalidInputError(f"[{lo}, {hi}) is not a subtree of a tree of {self.size}")
        return bytes(self._levels[level][lo >> level])

    def path(self, index: int) -> list[bytes]:
        """The RFC 9162 audit path of leaf `index` (§2.1.3.1), from the stored levels."""
        out: list[bytes] = []
        lo, hi = 0, self.size
        # Walk down from the root collecting the sibling of each subtree on the way.
        stack: list[bytes] = []
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                stack.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                stack.append(self.subtree(lo, lo + k))
                lo = lo + k
        out.extend(reversed(stack))
        return out


def split(lo: int, hi: int) -> int:
    """Where RFC 9162 splits the subtree [lo, hi): lo + the largest power of two < hi - lo."""
    return lo + (1 << ((hi - lo - 1).bit_length() - 1))


@dataclass(frozen=True)
class TensorCommitment:
    """The element-level commitment of one tensor."""

    dtype: str
    shape: tuple[int, ...]
    levels: MerkleLevels

    layout: TraceLayout = LAYOUT_V1

    @staticmethod
    def of(values: npt.NDArray[Any], layout: TraceLayout = LAYOUT_V1) -> TensorCommitment:
        """Commit to `values` (an int8/16/32/64 array) in `layout`."""
        arr = np.ascontiguousarray(values)  # ndim >= 1: a scalar commits as shape (1,)
        name = _dtype_name(arr)
        levels = layout.tensor_tree(arr)
        return TensorCommitment(name, tuple(int(d) for d in arr.shape), levels, layout)

    @staticmethod
    def from_levels(
        values: npt.NDArray[Any], levels: list[npt.NDArray[np.uint8]], layout: TraceLayout
    ) -> TensorCommitment:
        """The commitment to `values` whose tree `_sha256.Forest` built (`levels`)."""
        arr = np.ascontiguousarray(values)
        tree = MerkleLevels.from_arrays(levels)
        return TensorCommitment(_dtype_name(arr), tuple(int(d) for d in arr.shape), tree, layout)

    @property
    def root(self) -> bytes:
        """Root over the chunks."""
        return self.levels.root

    def leaf_data(self, extra: Mapping[str, Any] | None = None) -> bytes:
        """The entry leaf binding dtype, shape and root."""
        return self.layout.entry_leaf(self.dtype, self.shape, self.root, extra)


def _dtype_name(arr: npt.NDArray[Any]) -> str:
    """The committed dtype's name; an error for any other dtype."""
    # the dict skips numpy's slow Python-level `dtype.name` for native arrays
    name = _DTYPE_NAMES.get(arr.dtype) or arr.dtype.name
    if name not in _DTYPES:
        raise InvalidInputError(f"cannot commit to dtype {arr.dtype.name}")
    return name


def entry_leaf_data(
    dtype: str, shape: Sequence[int], root: bytes, extra: Mapping[str, Any] | None = None
) -> bytes:
    """The v1 entry leaf ``canonical_json({"dtype", "shape", "root": hex, **extra})``."""
    return _v1_entry_leaf(dtype, shape, root, extra)


def _v1_entry_leaf(
    dtype: str, shape: Sequence[int], root: bytes, extra: Mapping[str, Any] | None
) -> bytes:
    obj: dict[str, Any] = {"dtype": dtype, "shape": list(shape), "root": root.hex()}
    if extra:
        obj.update(extra)
    return canonical_json(obj)


def _leaf_hashes(data: memoryview, step: int) -> list[bytes]:
    """RFC 9162 leaf hashes of `data` cut into `step`-byte chunks (the last one may be short)."""
    sha = _sha256
    return [sha(b"\x00" + data[i : i + step]).digest() for i in range(0, len(data), step)]


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_BATCH_MIN = 1 << 18
"""Elements per hand-over to the commit thread: smaller tensors wait and go together, since
handing over a small tensor (and the GIL back and forth) costs more than hashing it. Measured
traced/untraced, one process per setting: at 2**16 SqueezeNet int8 1.41, int16 1.25, the
digits MLP 5.2 (its few small tensors then cross threads once, mid-run); at 2**18 1.35, 1.26,
3.2; at 2**20 1.42, 1.35, 3.5. Before batching (tensors of 2**16 or more handed over one by
one, smaller ones inline): 1.57, 1.50, 3.5. A tensor of this size or more goes at once, with
any that wait before it."""


def _worker() -> ThreadPoolExecutor:
    """The process's one commit thread (a new one after a fork: threads do not survive it)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="edgetrust-commit"))
    return _POOL[1]


@dataclass
class _Batch:
    """Entries hashed together in one native call: their indices and values, and the
    committed arrays and trees once hashed (by the worker, if `future` is set)."""

    indices: list[int]
    values: list[Any]
    future: Future[tuple[list[npt.NDArray[Any]], Any]] | None = None


class Committer:
    """Commits tensors as a run appends them: where the native hasher is available, in
    batches of at least `_BATCH_MIN` elements, each one `_sha256.Forest` hashed on a worker
    thread in one call (the GIL released throughout, so the run computes the next nodes
    meanwhile); else inline with hashlib. The same commitments either way.

    `convert[k]` turns the k-th appended value into the array that is committed (its storage
    dtype); the value must not change after it is appended.
    """

    def __init__(
        self, layout: TraceLayout, convert: Sequence[Callable[[Any], npt.NDArray[Any]]]
    ) -> None:
        from edgetrust.runtime import _sha256 as native

        self.layout = layout
        self.convert = convert
        self._count = 0
        self._inline: list[_Job] = []
        """Entries committed inline (no native hasher), in order."""
        self._waiting = _Batch([], [])
        """Entries not handed over yet."""
        self._waiting_size = 0
        self._batches: list[_Batch] = []
        """Batches handed to the worker, in order."""
        self._pool = _worker() if native.available() else None

    def append(self, value: Any) -> None:
        """Commit the next entry's value."""
        index, self._count = self._count, self._count + 1
        if self._pool is None:
            arr = self.convert[index](value)
            self._inline.append((arr, TensorCommitment.of(arr, self.layout)))
            return
        self._waiting.indices.append(index)
        self._waiting.values.append(value)
        self._waiting_size += int(getattr(value, "size", 1))
        if self._waiting_size >= _BATCH_MIN:
            batch, self._waiting, self._waiting_size = self._waiting, _Batch([], []), 0
            batch.future = self._pool.submit(self._hash, batch)
            self._batches.append(batch)

    def _hash(self, batch: _Batch) -> tuple[list[npt.NDArray[Any]], Any]:
        """The committed arrays of `batch` and their trees, hashed in one native call."""
        from edgetrust.runtime import _sha256 as native

        arrs = [self.convert[i](v) for i, v in zip(batch.indices, batch.values, strict=True)]
        layout = self.layout
        trees = native.Forest([layout.bytes_of(a) for a in arrs], layout.chunk_bytes, layout.padded)
        trees.hash()  # GIL released: the run computes on meanwhile
        return arrs, trees

    def results(self) -> tuple[list[npt.NDArray[Any]], list[TensorCommitment]]:
        """The committed arrays and their commitments, in the order appended. Entries still
        waiting, and batches the worker has not started yet (taken back from the end of its
        queue), are hashed here, so both threads hash until the last one is done (the same
        commitments)."""
        if self._pool is None:
            return [a for a, _ in self._inline], [c for _, c in self._inline]
        pending = self._batches + ([self._waiting] if self._waiting.indices else [])
        self._batches, self._waiting, self._waiting_size = [], _Batch([], []), 0
        hashed: dict[int, tuple[list[npt.NDArray[Any]], Any]] = {}
        for k in range(len(pending) - 1, -1, -1):
            future = pending[k].future
            if future is not None and not future.cancel():
                break  # the worker has started this one, so every one before it
            hashed[k] = self._hash(pending[k])
        arrays: list[npt.NDArray[Any]] = []
        commitments: list[TensorCommitment] = []
        for k, batch in enumerate(pending):
            if k in hashed:
                arrs, trees = hashed[k]
            else:
                assert batch.future is not None  # handed over, and not taken back above
                arrs, trees = batch.future.result()
            for j, arr in enumerate(arrs):
                arrays.append(arr)
                commitments.append(TensorCommitment.from_levels(arr, trees.levels(j), self.layout))
        return arrays, commitments


_Job = tuple[npt.NDArray[Any], TensorCommitment]
