"""Exact integer convolution sums through onnxruntime's float32 Conv kernel.

Why this is exact on every CPU: the operands are integers with |x| ≤ xmax and fixed integer
weights W. For one output element the terms are x_k · W_ok, and the sum of their magnitudes is
at most ``xmax · Σ_k |W_ok|`` (the weights' L1 norm per output channel, known when the plan is
made). When that bound is at most 2**24, every product and every partial sum of any subset of
the terms is an integer of magnitude ≤ 2**24, hence a float32 value: each multiplication,
addition or fused multiply-add the kernel performs (in whatever order, blocking, vector width
or channel layout its CPU dispatch picks: AVX2, AVX-512, NEON) is exact, and so is the result.
This is the argument `_arith.matmul_chunk` makes for BLAS with the worst-case bound
K·qmax²; the L1 bound of real weights is several times smaller, so most layers need one
float32 call where the worst case needed two or three. Input channels are split into chunks
whose bound holds, and the chunk sums are added in int64.

It relies on the kernel computing the convolution as sums of products (direct, im2col+GEMM or
NCHWc blocking, which is what onnxruntime's MLAS does on the CPU); transform methods such as
Winograd or FFT would not be exact, and MLAS has none. The bf16 fast-math option MLAS has on
ARM64 is off by default and is set off here explicitly. The pure-numpy path in
`Conv.conv_sum` computes the same integers and a property test compares the two.

Why a hand-written wrapper: onnxruntime has no integer convolution with int32 accumulation
that is exact on every CPU (its u8·s8 kernels saturate int16 intermediates on AVX2), so the
float kernel with a proven bound is the fastest exact one available.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import BLOCK, I64, Rescale, narrow_dtype
from edgetrust.runtime.fixed._batchnorm import TablePost
from edgetrust.runtime.fixed._elementwise import KeptRelu, ReluPost

ENABLED = True  # tests switch this off to compare against the numpy path
BIND = True
"""Run through IOBinding with kept float32 buffers (tests switch it off to compare against
`InferenceSession.run` with fresh arrays: the same sums)."""
_EXACT = 1 << 24  # float32: 24 mantissa bits (implicit one included)
_OPSET = 13
_IR_VERSION = 8
KEPT_SHAPES = 4
"""Input shapes whose buffers a Conv keeps (more, e.g. ever new batch sizes: forget them)."""
T = TypeVar("T")


def channel_chunks(
    w: I64, group: int, xmax: int, bias: I64 | None = None
) -> tuple[list[tuple[int, int]], bool] | None:
    """Input-channel chunks [c0, c1) (within each group) whose sums are exact in float32, and
    whether the bias can join the first chunk.

    `w` is (OC, Cg, KH, KW). A chunk is exact when max_o (xmax · Σ_{c∈chunk, taps} |W[o, c]|
    (+ |b_o| for the first chunk, if the bias joins it)) ≤ 2**24. With groups, only one chunk
    (all Cg channels) is supported. None when a single input channel already exceeds the
    bound, or a grouped convolution would need chunks.
    """
    if 0 in w.shape:
        return None
    per_c = l1_per_channel(w, xmax)
    b = np.zeros(w.shape[0], np.int64) if bias is None else np.abs(bias)
    with_bias = bias is not None and int((b + per_c[:, 0]).max()) <= _EXACT
    chunks = l1_chunks(per_c, group, b if with_bias else None)
    return None if chunks is None else (chunks, with_bias)


def l1_per_channel(w: I64, xmax: int) -> I64:
    """``xmax · Σ_taps |W[o, c]|`` as (OC, Cg): input channel c's share of output channel o's
    bound on the magnitudes of its terms."""
    per_c: I64 = np.abs(w).reshape(w.shape[0], w.shape[1], -1).sum(axis=2) * xmax
    return per_c


def l1_chunks(
    per_c: I64, group: int, first: I64 | None = None, align: int = 1
) -> list[tuple[int, int]] | None:
    """Greedy input-channel chunks [c0, c1) with max_o Σ_{c∈chunk} per_c[o, c] ≤ 2**24
    (`first`, per output channel, added to the first chunk's sum: a bias joining it).

    With `align` > 1 the chunks start at multiples of `align` where that is possible (blocked
    kernels such as MLAS's NCHWc convolution want whole channel blocks); the bound is the same.
    None when one channel alone exceeds the bound, or a grouped convolution (group > 1)
    would need more than one chunk.
    """
    if per_c.size == 0 or int(per_c.max()) > _EXACT:
        return None
    n_c = per_c.shape[1]
    step = align if align > 1 and n_c > align else 1
    blocks = [per_c[:, c : c + step].sum(axis=1) for c in range(0, n_c, step)]
    if step > 1 and max(int(b.max()) for b in blocks) > _EXACT:
        return l1_chunks(per_c, group, first)
    chunks: list[tuple[int, int]] = []
    c0 = 0
    run = np.zeros(per_c.shape[0], np.int64) if first is None else first.astype(np.int64)
    for i, blk in enumerate(blocks):
        nxt = run + blk
        if int(nxt.max()) > _EXACT:
            chunks.append((c0, i * step))
            c0, nxt = i * step, blk.copy()
        run = nxt
    chunks.append((c0, n_c))
    if group > 1 and len(chunks) > 1:
        return None
    return chunks


def session_options() -> ort.SessionOptions:
    """One thread, no spinning, no bf16 fast math: the options of every exact session; and
    one CPU arena shared by all of them (`SHARED_ARENA`) where onnxruntime allows it."""
    opts = ort.SessionOptions()
    # One thread, as the rest of the executor's kernels; spinning would steal the core.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
    if SHARED_ARENA and _shared_arena():
        opts.add_session_config_entry("session.use_env_allocators", "1")
    return opts


SHARED_ARENA = True
"""Every exact session allocates from one process-wide onnxruntime CPU arena instead of one
arena per session: a model's dozens of one-Conv sessions then reuse the same (cache-warm)
scratch memory for their layout conversions, as one whole-model session does. Allocation
only: no arithmetic changes. Measured (one process, alternating, 1 thread, load ~1.6):
SqueezeNet int8 7.93 → 7.81 ms min, 8.56 → 8.25 median; ResNet50 73.96 → 73.27 ms min,
77.96 → 75.80 median."""
_ARENA: list[bool] = []


def _shared_arena() -> bool:
    """Register the shared arena once per process; False if onnxruntime refuses (then every
    session keeps its own, as before)."""
    if not _ARENA:
        try:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _ARENA.append(True)
        except Exception:  # e.g. another component registered one first: keep per-session arenas
            _ARENA.append(False)
    return _ARENA[0]


def make_session(graph: onnx.GraphProto, blocked: bool = True) -> ort.InferenceSession:
    """A CPU session for `graph` (opset 13) with `session_options`; without `blocked`, at
    the optimization level below onnxruntime's NCHWc layout (see `BLOCKED_CONV`)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    opts = session_options()
    if not blocked:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


BLOCKED_CONV = "tune"
"""Which one-Conv sessions run in onnxruntime's NCHWc (channel-blocked) layout: "tune" (the
faster of the two per Conv and input shape, timed over its first runs, `LayoutTuner`), "all"
or "none". onnxruntime blocks every Conv at its top optimization level, which for a session
of one Conv means reordering its input and output on every call (a whole model reorders
once), so which layout is faster depends on the shape: profiled per session (SqueezeNet, one
thread, AVX-512) plain NCHW cost 10-35% less for its 1×1 Convs and its 3-channel first one,
15-30% more for its 3×3 ones; a fixed rule by kernel size was 3.5% faster on SqueezeNet but
5% slower on ResNet50, whose 1×1 Convs have more channels. Either layout gives the same exact
sums (`_ortconv`'s argument holds for any order of the products): tuning moves time, never
bits."""
TUNE_RUNS = 3
"""Timed runs per layout, after one untimed, before `LayoutTuner` keeps the faster (by
median)."""


class LayoutTuner:
    """Chooses between two ways of computing the same sums (a Conv's layout, blocked or
    not; a product's library) per key from its own first runs: the two take turns until each
    has `TUNE_RUNS` timings after its first, then the one with the lower median is kept. No
    extra runs: every timed run is a real one (the first few calls may take the slower way).

    `setting` gives "tune", "all" (always True) or "none" (always False); by default
    `BLOCKED_CONV`."""

    def __init__(self, setting: Callable[[], str] | None = None) -> None:
        self._setting = setting or (lambda: BLOCKED_CONV)
        self._times: dict[Any, dict[bool, list[float]]] = {}
        self.chosen: dict[Any, bool] = {}

    def pick(self, key: Any) -> bool:
        """The way (True or False) the next run for `key` takes."""
        setting = self._setting()
        if setting != "tune":
            return setting == "all"
        hit = self.chosen.get(key)
        if hit is not None:
            return hit
        times = self._times.setdefault(key, {True: [], False: []})
        return len(times[True]) <= len(times[False])

    def record(self, key: Any, way: bool, seconds: float) -> bool:
        """One run's time; after enough of both, the choice for `key` is made (True then)."""
        if self._setting() != "tune" or key in self.chosen:
            return False
        times = self._times.setdefault(key, {True: [], False: []})
        times[way].append(seconds)
        if min(len(times[True]), len(times[False])) <= TUNE_RUNS:
            return False
        # each way's first run (a new session's allocations) is not counted
        fast = np.median(times[True][1:]) <= np.median(times[False][1:])
        self.chosen[key] = bool(fast)
        self._times.pop(key, None)  # another thread may have decided it just now
        return True

    def layouts(self, geometry: Any) -> set[bool]:
        """The layouts that keys ``(geometry, shape)`` take or are still being timed in."""
        out = {v for (g, _), v in self.chosen.items() if g == geometry}
        if any(g == geometry for g, _ in self._times):
            out |= {True, False}
        return out


def _session(
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    group: int,
    attrs: dict[str, Any],
    blocked: bool,
) -> ort.InferenceSession:
    inits = [numpy_helper.from_array(w, "w")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    names = ["x", "w", "b"] if bias is not None else ["x", "w"]
    node = helper.make_node("Conv", names, ["y"], group=group, **attrs)
    graph = helper.make_graph(
        [node],
        "exact_conv",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, ["n", w.shape[1] * group, "h", "w"]
            )
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return make_session(graph, blocked)


class ProcessBuffers:
    """A lock and a dict of kept buffers, per process: a forked child makes its own (a lock
    another thread held at the fork would never be released in the child, and the buffers
    may be in use). Two threads that both make them get one each: disjoint buffers, so no
    run can see another's."""

    def __init__(self) -> None:
        self._state: tuple[int, threading.Lock, dict[Any, Any]] | None = None

    def get(self) -> tuple[threading.Lock, dict[Any, Any]]:
        """This process's lock and buffers."""
        state = self._state
        pid = os.getpid()
        if state is None or state[0] != pid:
            state = (pid, threading.Lock(), {})
            self._state = state
        return state[1], state[2]


class _Bound:
    """One geometry and input shape's kept buffers: the float32 input of each chunk, its
    sums (N, OC, OH, OW), and the IOBinding tying them to the session."""

    def __init__(
        self,
        sessions: list[ort.InferenceSession],
        x_shapes: list[tuple[int, ...]],
        y_shape: tuple[int, int, int, int],
    ) -> None:
        self.inputs = [np.empty(shape, np.float32) for shape in x_shapes]
        self.outputs = [np.empty(y_shape, np.float32) for _ in sessions]
        self.bindings = []
        for sess, xf, y in zip(sessions, self.inputs, self.outputs, strict=True):
            binding = sess.io_binding()
            binding.bind_cpu_input("x", xf)
            binding.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
            self.bindings.append(binding)


class OrtConv:
    """Cached float32 sessions for one Conv node's integer weights, one per channel chunk.

    Runs go through IOBinding into float32 buffers kept per layout, geometry and input shape
    (up to `KEPT_SHAPES` shapes in each of the two layouts; a layout's sessions and buffers
    are dropped once no shape takes it, `LayoutTuner`): the integers are converted straight
    into the bound input and onnxruntime writes the sums into the bound output, with no fresh
    arrays and no per-call output handling (ResNet50 int8 73.6 → 71.6 ms, SqueezeNet within
    noise; one thread, load ~3). The buffers are reused, so one run at a time holds the lock
    (`ProcessBuffers`: a forked child makes its own).
    """

    def __init__(self, w: I64, group: int, chunks: list[tuple[int, int]], bias: I64 | None) -> None:
        self.w = w
        self.group = group
        self.chunks = chunks
        self.bias = bias  # added by the first chunk's kernel (None: the caller adds it)
        self._sessions: dict[tuple[Any, ...], list[ort.InferenceSession]] = {}
        self._proc = ProcessBuffers()
        self.tuner = LayoutTuner()

    def _session_list(
        self, key: tuple[Any, ...], pads: tuple[int, int, int, int], blocked: bool
    ) -> list[ort.InferenceSession]:
        sessions = self._sessions.get((blocked, key))
        if sessions is None:
            attrs: dict[str, Any] = {
                "pads": [pads[0], pads[1], pads[2], pads[3]],
                "strides": list(key[1]),
                "dilations": list(key[2]),
                "kernel_shape": [int(self.w.shape[2]), int(self.w.shape[3])],
            }
            sessions = [
                _session(
                    np.ascontiguousarray(self.w[:, c0:c1], np.float32),
                    None if self.bias is None or i else self.bias.astype(np.float32),
                    self.group,
                    attrs,
                    blocked,
                )
                for i, (c0, c1) in enumerate(self.chunks)
            ]
            self._sessions[(blocked, key)] = sessions
        return sessions

    def _y_shape(self, shape: tuple[int, ...], key: tuple[Any, ...]) -> tuple[int, int, int, int]:
        """(N, OC, OH, OW) of the sums for an input of `shape` and geometry `key`."""
        (pt, pl, pb, pr), (sh, sw), (dh, dw) = key
        kh, kw = int(self.w.shape[2]), int(self.w.shape[3])
        oh = (shape[2] + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (shape[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return shape[0], int(self.w.shape[0]), oh, ow

    def sums(
        self,
        x: npt.NDArray[Any],
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
        finish: Callable[[list[npt.NDArray[np.float32]]], T],
    ) -> T:
        """``finish(sums)`` for each chunk's exact float32 sums (N, OC, OH, OW), the bias in
        the first if it joined; `pads` = (t, l, b, r). The sums are buffers the next run
        overwrites: `finish` runs under the lock and must not return them (or views)."""
        key = (pads, tuple(strides), tuple(dilations))
        whole = len(self.chunks) == 1
        parts = [x if whole else x[:, c0:c1] for c0, c1 in self.chunks]
        if not BIND:  # untimed: the layout chosen (or the next in turn, or the fixed one)
            sessions = self._session_list(key, pads, self.tuner.pick((key, x.shape)))
            return finish(
                [
                    sess.run(None, {"x": part.astype(np.float32)})[0]
                    for part, sess in zip(parts, sessions, strict=True)
                ]
            )
        lock, kept = self._proc.get()
        with lock:
            tkey = (key, x.shape)
            blocked = self.tuner.pick(tkey)
            sessions = self._session_list(key, pads, blocked)
            bkey = (blocked, key, x.shape)
            bound = kept.get(bkey)
            if bound is None:
                if len(kept) >= 2 * KEPT_SHAPES:
                    kept.clear()
                bound = _Bound(sessions, [p.shape for p in parts], self._y_shape(x.shape, key))
                kept[bkey] = bound
            start = time.perf_counter()
            for part, sess, xf, binding in zip(
                parts, sessions, bound.inputs, bound.bindings, strict=True
            ):
                np.copyto(xf, part, casting="unsafe")  # exact: |x| < 2**24
                sess.run_with_iobinding(binding)
            if self.tuner.record(tkey, blocked, time.perf_counter() - start):
                self._prune(key, kept)
            return finish(bound.outputs)

    def _prune(self, key: tuple[Any, ...], kept: dict[Any, Any]) -> None:
        """Forget the sessions and buffers of a layout no input shape of geometry `key`
        takes any more (each layout's sessions hold a copy of the weights)."""
        wanted = self.tuner.layouts(key)
        for blocked in (True, False):
            if blocked not in wanted:
                self._sessions.pop((blocked, key), None)
        for bkey in [k for k in kept if k[1] == key and k[0] not in wanted]:
            del kept[bkey]

    def run(
        self,
        x: npt.NDArray[Any],
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> I64:
        """Σ x · w (+ b if it joined) per output element (N, OC, OH, OW), exact int64;
        `pads` = (t, l, b, r)."""

        def total(ys: list[npt.NDArray[np.float32]]) -> I64:
            acc: I64 = ys[0].astype(np.int64)  # a new array: the buffer is not handed on
            for y in ys[1:]:
                acc += y.astype(np.int64)
            return acc

        return self.sums(x, pads, strides, dilations, total)


class F32Requant:
    """``sat(rescale(y + b))`` per output channel, straight from one float32 sum tensor.

    Valid (see `plan`) when the shift is ≥ 31 and bound · max(mult) + 2**(shift-1) < 2**63 for
    the proven bound on |y + b|: then ``floor((x·m + 2**(s-1) - [x < 0]) / 2**s)`` in int64 is
    `_arith.apply_rescale`'s fused pass, the same integers. When also bound · max_c lowbit(m_c)
    < 2**(s-1) no product is a tie, so the [x < 0] term never matters and is skipped
    (`_arith.tie_free_split` gives the argument). The work goes block by block
    (`_arith.BLOCK` elements) into the output array: no full-size temporaries.
    """

    def __init__(self, rs: Rescale, bias: I64 | None, qmax: int, tie_free: bool) -> None:
        self.mult = rs.mult.reshape(-1, 1)
        self.shift = rs.shift
        self.bias = None if bias is None else bias.reshape(-1, 1)
        self.qmax = qmax
        self.tie_free = tie_free

    @classmethod
    def plan(cls, rs: Rescale, bias: I64 | None, qmax: int, bound: int) -> F32Requant | None:
        """The requantizer, or None when the fused pass is not proven exact."""
        s = rs.shift
        mmax = int(rs.mult.max(initial=0))
        if s < 31 or bound * mmax + (1 << (s - 1)) >= 1 << 63:
            return None
        lowbit = int(np.max(rs.mult & -rs.mult, initial=0))
        return cls(rs, bias, qmax, bound * lowbit < 1 << (s - 1))

    def __call__(
        self,
        y: npt.NDArray[np.float32],
        post: Callable[[I64, int, int], None] | None = None,
        narrow: bool = False,
    ) -> I64:
        """The requantized int64 tensor, shaped as `y` (N, OC, ...); `post(block, c0, c1)`,
        if given, then rewrites each block of channels [c0, c1) in place (an element-wise op
        fused behind this one). Relu and a fused BatchNormalization's table go through the
        compiled epilogue with the requantization, in one pass, where it applies; with
        `narrow`, that path writes int8/int16 (the narrowest type holding ±qmax)."""
        fast = self._compiled(y, post, narrow)
        if fast is not None:
            return fast
        n, oc = y.shape[0], y.shape[1]
        src = y.reshape(n, oc, -1)
        out: I64 = np.empty(src.shape, np.int64)
        inner = src.shape[2]
        step = max(1, BLOCK // max(inner, 1))
        half = np.int64(1 << (self.shift - 1))
        for o in range(n):
            for c0 in range(0, oc, step):
                c1 = min(oc, c0 + step)
                w = out[o, c0:c1]
                np.copyto(w, src[o, c0:c1], casting="unsafe")  # exact: integers < 2**24
                if self.bias is not None:
                    w += self.bias[c0:c1]
                neg = None if self.tie_free else w < 0
                w *= self.mult[c0:c1]
                w += half
                if neg is not None:
                    w -= neg
                w >>= self.shift
                np.clip(w, -self.qmax, self.qmax, out=w)
                if post is not None:
                    post(w, c0, c1)
        return out.reshape(y.shape)

    def _compiled(
        self,
        y: npt.NDArray[np.float32],
        post: Callable[[I64, int, int], None] | None,
        narrow: bool,
    ) -> I64 | None:
        relu = isinstance(post, ReluPost)
        table = post.table if isinstance(post, TablePost) else None
        bias = None if self.bias is None else self.bias.reshape(-1)
        mult = self.mult.reshape(-1)
        dtype = narrow_dtype(self.qmax)
        if isinstance(post, KeptRelu):  # the Conv's output, and the Relu's into post.relu
            both = _kernels.channel_epilogue_relu(
                y, bias, mult, self.shift, self.qmax, dtype if narrow else np.int64
            )
            if both is None:
                return None
            post.relu = both[1]
            return both[0]
        if post is not None and not relu and table is None:
            return None
        return _kernels.channel_epilogue(
            y,
            bias,
            mult,
            self.shift,
            self.qmax,
            relu=relu,
            table=table,
            dtype=dtype if narrow else np.int64,
        )
