"""Exact integer matrix products through onnxruntime's float MatMul, for constant weights.

The argument is `_arith.matmul_chunk`'s: with |a| ≤ amax, |w| ≤ wmax and K · amax · wmax ≤
2**p (p = 24 for float32, 53 for float64), every product and every partial sum of any subset
of the K terms is an integer of magnitude ≤ 2**p, so every multiplication, addition or fused
multiply-add the kernel performs, in whatever order, blocking or vector width, is exact, and
so is the result. onnxruntime's CPU MatMul computes sums of products (MLAS's SGEMM/DGEMM
kernels; no Strassen-like transform), so it returns the integers numpy's BLAS returns; its
kernels are faster than numpy's OpenBLAS on the digits MLP's shapes (one thread: 450×64×32
float32 11 µs vs 18 µs, float64 19 µs vs 40 µs). The bf16 fast-math option MLAS has on ARM64
is off by default and set off here explicitly, as in `_ortconv`. Tests compare both paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ENABLED = True  # tests switch this off to compare against numpy's matmul

MIN_WORK = 1 << 18
"""Multiply-adds (M·K·N) from which a session call pays for its fixed cost (~5 µs)."""

_OPSET = 13
_IR_VERSION = 8
_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class OrtMatMul:
    """``a @ w`` for one constant (K, N) float matrix of exact integers, by a cached session."""

    def __init__(self, w: npt.NDArray[Any]) -> None:
        self.w = w
        self._session: ort.InferenceSession | None = None

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
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        model.ir_version = _IR_VERSION
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one thread, as the rest of the executor's kernels
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, a: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
        """``a @ w`` (a: (M, K), the weights' dtype), or None where the session does not pay
        or does not apply (then numpy multiplies: the same integers)."""
        if not ENABLED or a.ndim != 2 or a.dtype != self.w.dtype or a.shape[1] != self.w.shape[0]:
            return None
        if a.shape[0] * self.w.shape[0] * self.w.shape[1] < MIN_WORK:
            return None
        if self._session is None:
            self._session = self._make()
        out: npt.NDArray[Any] = self._session.run(None, {"a": np.ascontiguousarray(a)})[0]
        return out


def matmul(a: npt.NDArray[Any], w: npt.NDArray[Any], ort_mm: OrtMatMul | None) -> npt.NDArray[Any]:
    """``a @ w``, through `ort_mm` when it applies."""
    out = ort_mm(a) if ort_mm is not None else None
    if out is None:
        out = np.matmul(a, w)
    return out
