"""Whole RFC 9162 trees of a tensor's chunks in one native call (no Python per hash).

A traced run commits to every tensor of the model: ResNet50 at 224×224 is 147,000 chunks of
256 bytes and as many interior nodes, and `hashlib` costs ~0.35 µs of Python per call, more
than the hashing itself. Here one compiled loop (numba, ``nogil``) calls OpenSSL's own SHA-256
(``SHA256_Init/Update/Final`` of the libcrypto that Python's ``_hashlib`` is linked against,
so the same implementation, SHA-NI where the CPU has it) for every leaf and node: ~0.2 µs per
leaf, and the GIL is free meanwhile, so a traced run can hash on another core while it
computes (see `edgetrust.runtime.fixed._executor`).

Why by hand: no library hashes many short messages per call; `hashlib` and `cryptography`
both take one Python call per message. The function addresses are passed at run time (the
`_c_call` intrinsic casts them), which keeps the compiled kernel cacheable across processes.

Where the CPU has SHA-NI, `_shani`'s kernel is preferred: it hashes two messages at a time
with the instructions themselves, ~1.6× faster than OpenSSL's one message per call.

`tree_levels` returns None where neither path is available (numba missing, a libcrypto without
those symbols, a self-check that disagrees with `hashlib`, or `ENABLED` switched off by a
test); callers then hash with `hashlib`, which gives the same bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from functools import cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import UnsupportedError

ENABLED = True  # tests switch this off to compare with the hashlib path
_kernel: Any = None  # (name, tree function); False once found unavailable

try:  # the kernel is defined at module level so numba can cache it across processes
    import _hashlib

    import numba
    from llvmlite import ir  # type: ignore[import-untyped]
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; without it, hashlib
    numba = None  # type: ignore[assignment]


def _addresses() -> npt.NDArray[np.intp]:
    """OpenSSL's SHA256_Init/Update/Final in the libcrypto `_hashlib` is linked against."""
    lib = ctypes.CDLL(_hashlib.__file__)
    names = ("SHA256_Init", "SHA256_Update", "SHA256_Final")
    return np.array([ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in names], np.intp)


if numba is not None:

    def _c_call_typing(typingctx: Any, fn: Any, a: Any, b: Any, n: Any) -> Any:
        """``int fn(void *a, void *b, size_t n)`` at address `fn` (all arguments intp)."""
        sig = types.int32(types.intp, types.intp, types.intp, types.intp)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            i8p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.IntType(32), [i8p, i8p, ir.IntType(64)])
            f = builder.inttoptr(args[0], fnty.as_pointer())
            pa = builder.inttoptr(args[1], i8p)
            pb = builder.inttoptr(args[2], i8p)
            return builder.call(f, [pa, pb, args[3]])

        return sig, codegen

    _c_call: Any = intrinsic(_c_call_typing)

    @numba.njit(nogil=True, cache=True)
    def _tree(fns: Any, table: Any, step: int, padded: bool, out: Any) -> None:
        # SHA256_CTX is 112 bytes in OpenSSL 1.1 and 3.x; 256 leaves room.
        ctx = np.empty(256, np.uint8)
        tag = np.zeros(2, np.uint8)
        tag[1] = 1
        zeros = np.zeros(step, np.uint8)
        init, upd, fin = fns[0], fns[1], fns[2]
        c, t0, t1 = ctx.ctypes.data, tag.ctypes.data, tag.ctypes.data + 1
        obase = out.ctypes.data
        for k in range(table.shape[0]):  # one tree per tensor (see `Forest`)
            base, n, starts = table[k, 0], table[k, 1], table[k, 2:]
            for i in range(starts[0], starts[1]):  # leaves: SHA-256(0x00 || chunk)
                lo = (i - starts[0]) * step
                hi = min(lo + step, n)
                _c_call(init, c, 0, 0)
                _c_call(upd, c, t0, 1)
                _c_call(upd, c, base + lo, hi - lo)
                if padded and hi - lo < step:
                    _c_call(upd, c, zeros.ctypes.data, step - (hi - lo))
                _c_call(fin, obase + 32 * i, c, 0)
            for lv in range(starts.size - 2):  # interior: SHA-256(0x01 || left || right)
                below, here = starts[lv], starts[lv + 1]
                width = here - below
                if width < 2:
                    break
                for j in range(width // 2):
                    _c_call(init, c, 0, 0)
                    _c_call(upd, c, t1, 1)
                    _c_call(upd, c, obase + 32 * (below + 2 * j), 64)
                    _c_call(fin, obase + 32 * (here + j), c, 0)
                if width & 1:  # an unpaired last node is promoted
                    out[here + width // 2] = out[here - 1]


def _openssl() -> Any:
    """The OpenSSL kernel as a tree function (one message per call)."""
    return partial(_tree, _addresses())


def _sha_ni() -> Any:
    """The two-lane SHA-NI kernel (`_shani`), where this CPU has the instructions."""
    from edgetrust.runtime import _shani

    if not _shani.supported():
        raise UnsupportedError("no SHA-NI on this CPU (or numba compiles for another)")
    _check_queue(_shani)
    return _shani.tree


def _check_queue(shani: Any) -> None:
    """The queue's kernel (`_shani.serve`: its own level bounds and byte swaps) against the
    hashlib trees, on both layouts, several dtypes, odd widths and a lone leaf."""
    from edgetrust.runtime._commit import LAYOUT_V1, LAYOUT_V2, MerkleLevels

    base = np.arange(1000, dtype=np.int64) * 2654435761
    cases: list[tuple[npt.NDArray[Any], Any]] = [
        (base[:300].astype(np.int16), LAYOUT_V2),
        (base[:70] * 1_000_003, LAYOUT_V2),
        (base[:513].astype(np.int32), LAYOUT_V2),
        (base[:7].astype(np.int8), LAYOUT_V2),
        (base.astype(np.int8), LAYOUT_V1),
        (base[:300].astype(np.int16), LAYOUT_V1),
    ]
    ctl = np.zeros(shani.JOBS + shani.JOB_WORDS * len(cases), np.int64)
    outs = []
    for k, (arr, layout) in enumerate(cases):
        out = np.zeros((level_starts(arr.nbytes, layout.chunk_bytes)[-1], 32), np.uint8)
        outs.append(out)
        swap = arr.itemsize if layout.byteorder == ">" else 1
        at = shani.JOBS + shani.JOB_WORDS * k
        ctl[at : at + 4] = (
            address(arr),
            arr.nbytes,
            address(out),
            shani.mode(layout.chunk_bytes, layout.padded, swap),
        )
    ctl[shani.POSTED], ctl[shani.CLOSED] = len(cases), 1
    shani.serve(ctl, shani.usleep_address())
    for (arr, layout), out in zip(cases, outs, strict=True):
        b = level_starts(arr.nbytes, layout.chunk_bytes)
        got = [[bytes(r) for r in out[b[k] : b[k + 1]]] for k in range(len(b) - 1)]
        if got != MerkleLevels(layout.tensor_hashes(arr)).levels:
            raise AssertionError("the SHA-NI queue disagrees with hashlib")


_CANDIDATES = {"sha-ni": _sha_ni, "openssl": _openssl}
"""The native tree functions in order of preference."""


def _build() -> Any:
    """(name, tree function) of the first candidate that builds and agrees with hashlib; or
    False."""
    for name in _CANDIDATES:
        tree = build(name)
        if tree is not None:
            return name, tree
    return False


def build(name: str) -> Any:
    """Candidate `name`'s tree function, checked against hashlib; None where it does not build
    or disagrees (tests use this to check each kernel this machine has)."""
    if numba is None:  # pragma: no cover
        return None
    try:
        tree = _CANDIDATES[name]()
        _self_check(tree)
    except Exception:  # missing symbols or instructions, a failed compile or check: hashlib
        return None
    return tree


def _self_check(tree: Any) -> None:
    """Compare with the hashlib trees on odd widths, a short and a padded last chunk, a lone
    leaf, several trees in one call."""
    from edgetrust.runtime._commit import MerkleLevels, TraceLayout

    data = np.arange(1000, dtype=np.int64).astype(np.uint8)
    for step, padded in ((256, True), (1024, False), (64, False), (1, False)):
        layout = TraceLayout(0, step, "<", padded)
        parts = [data, data[:1], data[: step + 1]]
        trees = Forest(parts, step, padded)
        trees.hash(tree)
        for k, part in enumerate(parts):
            want = MerkleLevels(layout._hash_memory(part.data)).levels
            if [[bytes(row) for row in lv] for lv in trees.levels(k)] != want:
                raise AssertionError("native SHA-256 disagrees with hashlib")


def address(arr: npt.NDArray[Any]) -> int:
    """Where `arr`'s data starts (``arr.ctypes.data`` costs ~5 µs; this, well under 1)."""
    return int(arr.__array_interface__["data"][0])


@cache
def level_starts(size: int, step: int) -> tuple[int, ...]:
    """Row bounds of each level of the tree over `size` bytes in `step`-byte chunks, from 0
    (cached: a model's tensors have the same sizes run after run)."""
    width = -(-size // step)
    starts = [0, width]
    while width > 1:
        width = -(-width // 2)
        starts.append(starts[-1] + width)
    return tuple(starts)


class Forest:
    """The RFC 9162 trees of several tensors' chunks, hashed in one native call: the GIL is
    released throughout, so a commit thread needs it only before and after a whole batch."""

    def __init__(
        self,
        datas: Sequence[npt.NDArray[np.uint8]],
        step: int,
        padded: bool,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> None:
        """Trees of `datas` in `step`-byte chunks, into `out` (rows of 32 bytes) if given."""
        self._datas = [np.ascontiguousarray(d) for d in datas]  # alive while hashed
        self.step, self.padded = step, padded
        rows, table = 0, []
        for d in self._datas:
            levels = level_starts(d.size, step)
            table.append([address(d), d.size, *(rows + b for b in levels)])
            rows += levels[-1]
        self._lengths = [len(t) - 2 for t in table]
        depth = max(self._lengths, default=0)
        # Row k: tensor k's address, size and level bounds (rows of `_out`), its last bound
        # repeated past its top (empty levels, which the kernels skip).
        self._table = np.array([t + t[-1:] * (depth - len(t) + 2) for t in table], np.int64)
        if out is not None and out.shape != (rows, 32):
            raise ValueError(f"the trees need ({rows}, 32) output rows, not {out.shape}")
        self._out = np.empty((rows, 32), np.uint8) if out is None else out

    def hash(self, tree: Any = None) -> None:
        """Hash every tree (with `tree`, a kernel `build` returned; by default the one
        `available` chose)."""
        if tree is None:
            if not available():
                raise UnsupportedError("no native SHA-256 kernel on this machine")
            tree = _kernel[1]
        tree(self._table, self.step, self.padded, self._out)

    def rows(self, index: int) -> npt.NDArray[np.uint8]:
        """Tensor `index`'s tree as one (nodes, 32) array, level after level from the leaves
        (the rows `level_starts` bounds, from 0)."""
        b = self._table[index, 2 : 2 + self._lengths[index]]
        return self._out[int(b[0]) : int(b[-1])]

    def levels(self, index: int) -> list[npt.NDArray[np.uint8]]:
        """Tensor `index`'s tree, as (width, 32) uint8 arrays from the leaves up."""
        b = self._table[index, 2 : 2 + self._lengths[index]].tolist()
        return [self._out[b[k] : b[k + 1]] for k in range(len(b) - 1)]


def available() -> bool:
    """Whether `tree_levels` hashes natively (builds the kernel on first use)."""
    global _kernel
    if _kernel is None:
        _kernel = _build()
    return ENABLED and _kernel is not False


def loaded() -> bool:
    """Whether the kernel is built and usable already (no cost to ask)."""
    return ENABLED and _kernel not in (None, False)


def kernel() -> str | None:
    """The name of the tree function `tree_levels` uses ("sha-ni", "openssl"), or None."""
    return _kernel[0] if available() else None


def tree_levels(data: npt.NDArray[np.uint8], step: int, padded: bool) -> list[Any] | None:
    """Every level of the RFC 9162 tree over `data` (1-D uint8) cut into `step`-byte chunks
    (the last one zero-padded to `step` if `padded`, else short), as (width, 32) uint8 arrays
    from the leaves up; None for no data or where the native path is unavailable."""
    if data.size == 0 or not available():
        return None
    trees = Forest([data], step, padded)
    trees.hash()
    return trees.levels(0)
