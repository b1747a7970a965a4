"""A whole RFC 9162 tree with the CPU's SHA-256 instructions, two messages at a time.

SHA-NI's round instruction (``sha256rnds2``) has a latency about twice its issue interval,
so one message's dependent rounds leave the unit half idle: OpenSSL, which hashes one message
per call, runs at ~36 ns per 64-byte block on a Zen 4 core. A tree's leaves (and the nodes
of one level) are independent messages, so here two of them go through the rounds together,
interleaved, at ~23 ns per block on the same core (measured in `bench.bench_speed`'s
machine). The compression function is emitted as LLVM IR (the ``llvm.x86.sha256*``
intrinsics) inside a numba kernel, ``nogil`` and cached like the others.

Why by hand: no library hashes many short messages per call on more than one lane (OpenSSL's
multi-block SHA-256 is internal to its TLS ciphers; `hashlib` and `cryptography` take one
Python call per message).

Only built where the CPU has SHA-NI and numba compiles for this host (LLVM cannot lower the
intrinsics otherwise); `_sha256` checks the result against `hashlib` before using it, and
falls back to OpenSSL's one-message-per-call path.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Any

import numba
import numpy as np
from llvmlite import binding, ir  # type: ignore[import-untyped]
from numba import types
from numba.extending import intrinsic
from numba.np.numpy_support import carray

_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
"""FIPS 180-4 §4.2.2: the round constants."""
_H0 = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)
"""FIPS 180-4 §5.3.3: the initial hash value H0..H7 (A..H)."""
_INIT = np.array([_H0[i] for i in (5, 4, 1, 0, 7, 6, 3, 2)], np.uint32)
"""H0 as SHA-NI holds it: lanes 0..3 of one register F, E, B, A and of the other H, G, D, C."""
_DIGEST_LANES = (3, 2, 7, 6, 1, 0, 5, 4)
"""Where A..H sit in that state (for the big-endian digest)."""
_LANES = 2
"""Messages per pass: two fill the round unit on Zen 4 (measured: 1 lane 36 ns per block, 2
lanes 23, 3 lanes 25, 4 lanes 27; SHA-NI has 16 registers, and more lanes spill)."""


def supported() -> bool:
    """Whether this CPU has SHA-NI and numba compiles for it (else the kernel must not be
    compiled at all: LLVM aborts the process on an intrinsic it cannot lower)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    config = numba.config
    if getattr(config, "CPU_NAME", None) not in (None, "host"):
        return False
    if getattr(config, "CPU_FEATURES", None) is not None:
        return False
    try:
        return bool(binding.get_host_cpu_features().get("sha", False))
    except RuntimeError:  # pragma: no cover - hosts LLVM cannot describe
        return False


def _function(module: Any, name: str, fnty: Any) -> Any:
    try:
        return module.get_global(name)
    except KeyError:
        return ir.Function(module, fnty, name)


def _compress_typing(typingctx: Any, states: Any, blocks: Any) -> Any:
    """``compress((state, ...), (block, ...))``: one 64-byte block of each lane's message
    into its state (8 uint32 in SHA-NI's order, `_INIT`), all lanes' rounds interleaved.

    The schedule follows FIPS 180-4 §6.2.2 four words at a time: W[t..t+3] for t ≥ 16 is
    ``sha256msg2(sha256msg1(W[t-16..], W[t-12..]) + W[t-7..t-4], W[t-4..])``.
    """
    lanes = len(states)
    pointers = types.UniTuple(types.intp, lanes)  # type: ignore[no-untyped-call]
    sig = types.void(pointers, pointers)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        v4 = ir.VectorType(i32, 4)
        v4p = v4.as_pointer()
        mod = builder.module
        rnds2 = _function(mod, "llvm.x86.sha256rnds2", ir.FunctionType(v4, [v4, v4, v4]))
        msg1 = _function(mod, "llvm.x86.sha256msg1", ir.FunctionType(v4, [v4, v4]))
        msg2 = _function(mod, "llvm.x86.sha256msg2", ir.FunctionType(v4, [v4, v4]))
        bswap = _function(mod, "llvm.bswap.v4i32", ir.FunctionType(v4, [v4]))

        def at(base: Any, offset: int) -> Any:
            return builder.inttoptr(builder.add(base, ir.Constant(base.type, offset)), v4p)

        def lanes_of(vector: Any, picks: list[int], other: Any = None) -> Any:
            mask = ir.Constant(v4, [ir.Constant(i32, p) for p in picks])
            return builder.shuffle_vector(vector, vector if other is None else other, mask)

        state_ptrs = [builder.extract_value(args[0], k) for k in range(lanes)]
        block_ptrs = [builder.extract_value(args[1], k) for k in range(lanes)]
        abef = [builder.load(at(p, 0), align=1) for p in state_ptrs]
        cdgh = [builder.load(at(p, 16), align=1) for p in state_ptrs]
        saved = list(zip(abef, cdgh, strict=True))
        words = [
            [builder.call(bswap, [builder.load(at(p, 16 * g), align=1)]) for g in range(4)]
            for p in block_ptrs
        ]
        for g in range(16):  # rounds 4g .. 4g+3
            k = ir.Constant(v4, [ir.Constant(i32, _K[4 * g + j]) for j in range(4)])
            for lane in range(lanes):
                w = words[lane]
                if g >= 4:
                    t = builder.call(msg1, [w[g - 4], w[g - 3]])
                    t = builder.add(t, lanes_of(w[g - 2], [1, 2, 3, 4], w[g - 1]))
                    w.append(builder.call(msg2, [t, w[g - 1]]))
                wk = builder.add(w[g], k)
                cdgh[lane] = builder.call(rnds2, [cdgh[lane], abef[lane], wk])
                abef[lane] = builder.call(
                    rnds2, [abef[lane], cdgh[lane], lanes_of(wk, [2, 3, 0, 0])]
                )
        for lane, p in enumerate(state_ptrs):
            builder.store(builder.add(abef[lane], saved[lane][0]), at(p, 0), align=1)
            builder.store(builder.add(cdgh[lane], saved[lane][1]), at(p, 16), align=1)
        return context.get_dummy_value()

    return sig, codegen


_compress: Any = intrinsic(_compress_typing)


@numba.njit(nogil=True, cache=True, inline="always")
def _pad(row: Any, length: int) -> int:
    """SHA-256 padding (FIPS 180-4 §5.1.1) after `length` message bytes in `row`; the blocks."""
    blocks = (length + 9 + 63) // 64
    row[length] = 0x80
    zeros = row[length + 1 : blocks * 64 - 8]
    for k in range(zeros.size):
        zeros[k] = 0
    bits = length * 8
    for k in range(8):
        row[blocks * 64 - 1 - k] = (bits >> (8 * k)) & 0xFF
    return blocks


@numba.njit(nogil=True, cache=True, inline="always")
def _leaf(row: Any, data: Any, index: int, step: int, padded: bool, swap: int) -> int:
    """``0x00 || chunk`` (zero-padded to `step` if `padded`), padded for SHA-256; the blocks.
    With `swap` > 1, the chunk's bytes are reversed within each `swap`-byte element (the
    big-endian layout from the machine's little-endian data; chunks hold whole elements)."""
    lo = index * step
    hi = min(lo + step, data.size)
    row[0] = 0
    # Loops over views, indexed from 0: numba's slice assignment checks for overlap (and may
    # copy through a temporary), and an index it cannot prove >= 0 (``1 + k``) gets a
    # wraparound select that keeps LLVM from vectorizing; either cost 3-4x the hashing here.
    src, dst = data[lo:hi], row[1:]
    if swap == 1:
        for k in range(src.size):
            dst[k] = src[k]
    else:
        flip = np.uint64(swap - 1)
        for k in range(src.size):
            dst[k] = src[np.uint64(k) ^ flip]
    length = 1 + (step if padded else hi - lo)
    tail = row[1 + hi - lo : length]
    for k in range(tail.size):
        tail[k] = 0
    return _pad(row, length)


@numba.njit(nogil=True, cache=True, inline="always")
def _node(row: Any, out: Any, left: int) -> int:
    """``0x01 || left || right`` of the node pair starting at row `left` of `out`."""
    row[0] = 1
    pair, dst = out[left : left + 2].reshape(64), row[1:]
    for k in range(64):
        dst[k] = pair[k]
    return _pad(row, 65)


@numba.njit(nogil=True, cache=True, inline="always")
def _hash(state: Any, buf: Any, blocks: int) -> None:
    """Both rows of `buf`, `blocks` blocks each, into the two rows of `state`."""
    state[0] = _INIT
    state[1] = _INIT
    s, b, row = state.ctypes.data, buf.ctypes.data, buf.shape[1]
    for i in range(blocks):
        _compress((s, s + 32), (b + 64 * i, b + row + 64 * i))


@numba.njit(nogil=True, cache=True, inline="always")
def _digest(state: Any, out: Any, index: int) -> None:
    for k in range(8):
        word = state[_DIGEST_LANES[k]]
        for j in range(4):
            out[index, 4 * k + j] = (word >> (24 - 8 * j)) & 0xFF


def _bytes_at_typing(typingctx: Any, address: Any) -> Any:
    """``(uint8 *) address``, for `numba.carray`."""
    sig = types.CPointer(types.uint8)(types.intp)  # type: ignore[no-untyped-call]

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return sig, codegen


_bytes_at: Any = intrinsic(_bytes_at_typing)


@numba.njit(nogil=True, cache=True)
def tree(table: Any, step: int, padded: bool, out: Any) -> None:
    """`_trees` of data in the layout's own byte order."""
    _trees(table, step, padded, out, 1)


@numba.njit(nogil=True, cache=True)
def _trees(table: Any, step: int, padded: bool, out: Any, swap: int) -> None:
    """The RFC 9162 tree over each tensor's `step`-byte chunks into `out`: tensor k is the
    ``table[k, 1]`` bytes at address ``table[k, 0]``, its level L rows [table[k, 2 + L],
    table[k, 3 + L]) (see `_sha256.Forest`; the same bytes as `_sha256._tree`).

    Messages of equal length go two at a time; a lone one (the last of a level, a short last
    chunk) is hashed in both lanes.
    """
    row = max(128, (1 + step + 9 + 63) // 64 * 64)
    buf = np.zeros((2, row), np.uint8)
    state = np.empty((2, 8), np.uint32)
    for t in range(table.shape[0]):
        data = carray(_bytes_at(table[t, 0]), (table[t, 1],))
        starts = table[t, 2:]
        first, width = starts[0], starts[1] - starts[0]
        i = 0
        while i < width:  # leaves: SHA-256(0x00 || chunk)
            blocks = _leaf(buf[0], data, i, step, padded, swap)
            pair = i + 1 < width and _leaf(buf[1], data, i + 1, step, padded, swap) == blocks
            if not pair:
                one, two = buf[0], buf[1]
                for k in range(one.size):
                    two[k] = one[k]
            _hash(state, buf, blocks)
            _digest(state[0], out, first + i)
            if pair:
                _digest(state[1], out, first + i + 1)
            i += 2 if pair else 1
        for lv in range(starts.size - 2):  # interior: SHA-256(0x01 || left || right)
            below, here = starts[lv], starts[lv + 1]
            if here - below < 2:
                break
            nodes = (here - below) // 2
            for j in range(0, nodes, 2):
                _node(buf[0], out, below + 2 * j)
                _node(buf[1], out, below + 2 * min(j + 1, nodes - 1))
                _hash(state, buf, 2)
                _digest(state[0], out, here + j)
                if j + 1 < nodes:
                    _digest(state[1], out, here + j + 1)
            if (here - below) & 1:  # an unpaired last node is promoted
                out[here + nodes] = out[here - 1]


# -- a queue of tensors served by one call ----------------------------------------------------
# Atomic int64 operations at an address, a spin-wait hint and a nap, for `serve`.
_I64P = ir.IntType(64).as_pointer()


def _load_typing(typingctx: Any, address: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, a: Any) -> Any:
        return builder.load_atomic(builder.inttoptr(a[0], _I64P), "acquire", 8)

    return types.int64(types.intp), codegen


def _cas_typing(typingctx: Any, address: Any, old: Any, new: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, a: Any) -> Any:
        pair = builder.cmpxchg(builder.inttoptr(a[0], _I64P), a[1], a[2], "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(types.intp, types.int64, types.int64), codegen


def _add_typing(typingctx: Any, address: Any, value: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, a: Any) -> Any:
        return builder.atomic_rmw("add", builder.inttoptr(a[0], _I64P), a[1], "acq_rel")

    return types.int64(types.intp, types.int64), codegen


def _pause_typing(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, a: Any) -> Any:
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(_function(builder.module, "llvm.x86.sse2.pause", fnty), [])
        return context.get_dummy_value()

    return types.void(), codegen


def _nap_typing(typingctx: Any, fn: Any, micros: Any) -> Any:
    """``usleep(micros)`` through its address `fn`."""

    def codegen(context: Any, builder: Any, signature: Any, a: Any) -> Any:
        i32 = ir.IntType(32)
        f = builder.inttoptr(a[0], ir.FunctionType(i32, [i32]).as_pointer())
        builder.call(f, [builder.trunc(a[1], i32)])
        return context.get_dummy_value()

    return types.void(types.intp, types.int64), codegen


_load: Any = intrinsic(_load_typing)
_cas: Any = intrinsic(_cas_typing)
_add: Any = intrinsic(_add_typing)
_pause: Any = intrinsic(_pause_typing)
_nap: Any = intrinsic(_nap_typing)

POSTED, CLAIMED, CLOSED, FINISHED, JOBS, JOB_WORDS = 0, 1, 2, 3, 4, 4
"""`serve`'s control array: jobs posted, jobs claimed, whether no more will be posted, jobs
finished; from slot `JOBS`, `JOB_WORDS` per job: the tensor's bytes' address and length,
its tree's output rows' address, and its `mode`."""


def mode(step: int, padded: bool, swap: int) -> int:
    """A job's chunk size, padding and byte swap (1: none; 2, 4, 8: reverse each element of
    that many bytes, for a big-endian layout of little-endian data) in one word."""
    if swap not in (1, 2, 4, 8) or step % swap:
        raise ValueError(f"a swap of {swap} bytes does not fit chunks of {step}")
    return step << 5 | swap << 1 | int(padded)


_SPINS, _NAPS, _NAP_US = 64, 30_000, 20
"""`serve` without a job spins `_SPINS` times (a `pause` each), then naps (``usleep``, ~20-80
µs each), so that an idle worker takes no cycles from the run; after `_NAPS` naps in a row
(about two seconds) it gives up, so a caller that never closes its queue leaves no thread
polling for long (whoever closes it hashes what is left)."""


def usleep_address() -> int:
    """The address of libc's ``usleep``, for `serve`."""
    return int(ctypes.cast(ctypes.CDLL(None).usleep, ctypes.c_void_p).value or 0)


@numba.njit(nogil=True, cache=True)
def _one(ctl: Any, job: int) -> None:
    """Job `job`'s tree (one tensor), as `tree` computes it."""
    at = JOBS + JOB_WORDS * job
    size, mode = ctl[at + 1], ctl[at + 3]
    step = mode >> 5
    width = (size + step - 1) // step
    bounds, w = 2, width  # level bounds: 0, the leaves' end, then one more per level up
    while w > 1:
        w = (w + 1) // 2
        bounds += 1
    table = np.empty((1, 2 + bounds), np.int64)  # `_sha256.Forest`'s row for this tensor
    table[0, 0], table[0, 1], table[0, 2], table[0, 3] = ctl[at], size, 0, width
    w = width
    for k in range(4, 2 + bounds):
        w = (w + 1) // 2
        table[0, k] = table[0, k - 1] + w
    out = carray(_bytes_at(ctl[at + 2]), (table[0, 1 + bounds], 32))
    _trees(table, step, (mode & 1) == 1, out, (mode >> 1) & 15)


@numba.njit(nogil=True, cache=True)
def serve(ctl: Any, nap: int) -> int:
    """Hash the jobs posted in `ctl` (see `POSTED`) until the queue is closed and empty, or
    no job came for `_NAPS` naps; each job is claimed by one caller (compare-and-swap), so
    several threads may serve one queue. The jobs this call hashed.

    Posting is a plain store of the job's words and then of ``ctl[POSTED]``: x86 keeps
    stores in order (and this kernel exists only on x86), so a job is complete once counted.
    """
    base = ctl.ctypes.data
    posted, claimed, closed, finished = base, base + 8, base + 16, base + 24
    done, idle = 0, 0
    while True:
        c = _load(claimed)
        if c < _load(posted):
            if _cas(claimed, c, c + 1):
                _one(ctl, c)
                _add(finished, 1)
                done += 1
                idle = 0
            continue
        if _load(closed) != 0 and _load(claimed) >= _load(posted):
            return done
        idle += 1
        if idle <= _SPINS:
            _pause()
        elif idle - _SPINS > _NAPS:
            return done
        else:
            _nap(nap, _NAP_US)
