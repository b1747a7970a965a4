"""Tensor commitments: the two trace layouts, chunk hashing and every level of a Merkle tree.

The hashing half of `edgetrust.runtime.trace` (see its docstring for the layouts); kept apart
so the hot path of a traced run - one RFC 9162 tree per tensor - reads on its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
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


@lru_cache(maxsize=4096)
def _v2_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    """An entry leaf's bytes before its root: the header and the element count (cached: a
    model's tensors have the same shapes run after run)."""
    count = int(math.prod(shape))  # 1 for a scalar
    return _v2_header(dtype, shape) + count.to_bytes(32, "big")


def _v2_entry_leaf(
    dtype: str, shape: Sequence[int], root: bytes, extra: Mapping[str, Any] | None
) -> bytes:
    dims = shape if type(shape) is tuple else tuple(int(d) for d in shape)
    out = _v2_prefix(dtype, dims) + bytes(root)
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

    _levels: Sequence[Any]
    _rows: tuple[npt.NDArray[np.uint8], Sequence[int]]
    """`from_rows`'s output rows and level bounds, until `_cut` makes `_levels` of them."""

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
        self._levels = levels

    @classmethod
    def from_arrays(cls, levels: list[npt.NDArray[np.uint8]]) -> MerkleLevels:
        """The tree from its levels as (width, 32) uint8 arrays (`_sha256.tree_levels`)."""
        tree = cls.__new__(cls)
        tree._levels = levels
        return tree

    @classmethod
    def from_rows(cls, rows: npt.NDArray[np.uint8], starts: Sequence[int]) -> MerkleLevels:
        """The tree whose level k is ``rows[starts[k]:starts[k + 1]]`` (a native tree's
        output), cut into levels only when a level is asked for: a traced run needs only
        the root of most tensors."""
        tree = cls.__new__(cls)
        tree._rows = (rows, starts)
        return tree

    def _cut(self) -> Sequence[Any]:
        if not hasattr(self, "_levels"):
            rows, b = self._rows
            self._levels = [rows[b[k] : b[k + 1]] for k in range(len(b) - 1)]
        return self._levels

    @property
    def levels(self) -> list[list[bytes]]:
        """Every level's node hashes, from the leaves up."""
        return [[bytes(h) for h in level] for level in self._cut()]

    @property
    def size(self) -> int:
        """Number of leaves."""
        if not hasattr(self, "_levels"):
            _, b = self._rows
            return int(b[1] - b[0])
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The tree's root (SHA-256 of nothing for an empty tree)."""
        if not hasattr(self, "_levels"):
            rows, b = self._rows
            return bytes(rows[b[-2]]) if b[1] > b[0] else EMPTY_ROOT
        return bytes(self._levels[-1][0]) if len(self._levels[0]) else EMPTY_ROOT

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(leaves[lo:hi]) for an RFC 9162 subtree [lo, hi) of this tree."""
        if not 0 <= lo < hi <= self.size:
            raise InvalidInputError(f"[{lo}, {hi}) is not a range of {self.size} leaves")
        level = (hi - lo - 1).bit_length()
        if lo & ((1 << level) - 1) or min(lo + (1 << level), self.size) != hi:
            raise InvalidInputError(f"[{lo}, {hi}) is not a subtree of a tree of {self.size}")
        return bytes(self._cut()[level][lo >> level])

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
    def from_tree(
        values: npt.NDArray[Any], tree: MerkleLevels, layout: TraceLayout
    ) -> TensorCommitment:
        """The commitment to `values` whose tree was built natively (`_sha256.Forest`)."""
        arr = np.ascontiguousarray(values)
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
