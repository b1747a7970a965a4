"""Exact integer matrix products through onnxruntime's float MatMul, for constant weights.

The argument is `_arith.matmul_chunk`'s: with |a| ≤ amax, |w| ≤ wmax and K · amax · wmax ≤
2**p (p = 24 for float32, 53 for float64), every product and every partial sum of any subset
of the K terms is an integer of magnitude ≤ 2**p, so every multiplication, addition or fused
multiply-add the kernel performs, in whatever order, blocking or vector width, is exact, and
so is the result. onnxruntime's CPU MatMul computes sums of products (MLAS's SGEMM/DGEMM
kernels; no Strassen-like transform), so it returns the integers numpy's BLAS returns. Which
is faster depends on the CPU (see `LIBRARY`: on an AVX-512 Intel core MLAS, level on an AVX2
AMD one, OpenBLAS on a Zen 4 one), so each weight matrix times both on its first runs and
keeps the faster; both run into the same kept buffers. The
bf16 fast-math option MLAS has on ARM64 is off by default and set off here explicitly
(`_ortconv.session_options`, whose one thread and shared arena these sessions share). Tests
compare both paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import I64
from edgetrust.runtime.fixed._ortconv import (
    KEPT_SHAPES,
    LayoutTuner,
    ProcessBuffers,
    T,
    make_session,
)

ENABLED = True  # tests switch this off to compare against numpy's matmul
LIBRARY = "tune"
"""Which library multiplies where a session applies: "tune" (the faster per weight matrix
and row count, timed over its first runs, `_ortconv.LayoutTuner`), "all" (onnxruntime) or
"none" (numpy's BLAS). Which is faster depends on the CPU: on an AVX-512 Intel core MLAS
was (450×64×32: float32 11 µs against 18, float64 19 against 40), on a Zen 4 core OpenBLAS
is (float32 17 µs against 25, float64 34 against 70). Both give the same exact sums."""

MIN_WORK = 1 << 18
"""Multiply-adds (M·K·N) from which a session call pays for its fixed cost (~5 µs)."""

_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class OrtMatMul:
    """``a @ w`` for one constant (K, N) float matrix of exact integers, by a cached session.

    `bound` runs through IOBinding with the input and output kept per row count (as
    `_ortconv.OrtConv`): the integers are converted straight into the bound input and the
    sums land in the bound output, with no fresh arrays (digits MLP, 450×64×32 float32, one
    thread, AVX2: 63 → 39 µs per call).
    """

    def __init__(self, w: npt.NDArray[Any]) -> None:
        self.w = w
        self._session: ort.InferenceSession | None = None
        self._proc = ProcessBuffers()
        self.tuner = LayoutTuner(lambda: LIBRARY)
        """Per row count: onnxruntime (True) or numpy (False), whichever is faster here."""

    def _make(self) -> ort.InferenceSession:
        k, n = self.w.shape
        tp = _TYPES[self.w.dtype]
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "w"], ["y"])],
            "exact_matmul",
            [helper.make_tensor_value_info("a", tp, [None, k])],
            [helper.make_tensor_value_info("y", tp, [None, n])],
            [numpy_helper.from_array(self.w, "w")],
        )
        return make_session(graph)

    def applies(self, shape: tuple[int, ...]) -> bool:
        """Whether the session takes (and pays for) an input of `shape`."""
        if not ENABLED or len(shape) != 2 or shape[1] != self.w.shape[0]:
            return False
        return int(shape[0]) * int(self.w.shape[0]) * int(self.w.shape[1]) >= MIN_WORK

    def __call__(self, a: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
        """``a @ w`` (a: (M, K), the weights' dtype), or None where the session does not pay
        or does not apply (then numpy multiplies: the same integers)."""
        if a.dtype != self.w.dtype or not self.applies(a.shape):
            return None
        if self._session is None:
            self._session = self._make()
        out: npt.NDArray[Any] = self._session.run(None, {"a": np.ascontiguousarray(a)})[0]
        return out

    def bound(
        self, a: I64, amax: int, finish: Callable[[npt.NDArray[Any]], T], session: bool = True
    ) -> T | None:
        """``finish(a @ w)`` for int64 `a` (M, K) with |a| ≤ amax, by IOBinding (or, without
        `session`, numpy's matmul into the same kept buffers); None where the session does
        not apply or pay, or `a` does not convert exactly (the caller then multiplies another
        way: the same integers). The product is a buffer the next call overwrites: `finish`
        runs under the lock and must not return it (or a view)."""
        if not self.applies(a.shape) or a.dtype != np.int64 or not a.flags.c_contiguous:
            return None
        if self._session is None:
            self._session = self._make()
        lock, kept = self._proc.get()
        with lock:
            bufs = kept.get(a.shape[0])
            if bufs is None:
                if len(kept) >= KEPT_SHAPES:
                    kept.clear()
                af = np.empty(a.shape, self.w.dtype)
                y = np.empty((a.shape[0], self.w.shape[1]), self.w.dtype)
                binding = self._session.io_binding()
                binding.bind_cpu_input("a", af)
                binding.bind_output("y", "cpu", 0, self.w.dtype, y.shape, y.ctypes.data)
                bufs = kept[a.shape[0]] = (af, y, binding)
            af, y, binding = bufs
            if _kernels.to_float(a, amax, self.w.dtype.type, out=af) is None:
                return None
            if session:
                self._session.run_with_iobinding(binding)
            else:
                np.matmul(af, self.w, out=y)
            return finish(y)


def matmul(a: npt.NDArray[Any], w: npt.NDArray[Any], ort_mm: OrtMatMul | None) -> npt.NDArray[Any]:
    """``a @ w``, through `ort_mm` when it applies."""
    out = ort_mm(a) if ort_mm is not None else None
    if out is None:
        out = np.matmul(a, w)
    return out
