"""Exact int16 1×1 convolutions as one onnxruntime float64 MatMul.

A 1×1 convolution (one group) is a matrix product: ``y[n, o, p] = Σ_c w[o, c] · x[n, c,
p']`` with p' the input pixel output pixel p reads (stride and padding pick it; a padding
pixel reads 0). With |x| ≤ xmax every partial sum of any subset of the terms is an integer of
magnitude ≤ xmax · Σ_c |w[o, c]| (the plan checks this < 2**53), so every multiplication,
addition or FMA of MLAS's DGEMM is exact in float64, in any order or blocking: the result is
`_digitconv`'s, without digits. One float64 product costs about half the three float32 digit
convolutions here (AVX-512, one thread: 256→64 channels at 56×56 0.9 ms against 1.5 ms) and
about half numpy's OpenBLAS float64 product, which the sums of ≤ 128 terms took before.

`MatConv` is a `DigitConv` with one float64 part of odd factor 1, so its combination,
requantization and fused posts (`Requantizer`, `_kernels.digit_epilogue`) are shared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed._arith import I64
from edgetrust.runtime.fixed._digitconv import DigitConv, _Term
from edgetrust.runtime.fixed._ortconv import make_session

_F64_EXACT = 1 << 53


def _span(n_in: int, n_out: int, stride: int, pad: int) -> tuple[int, int, int]:
    """Output indices [i0, i1) whose input index ``i·stride - pad`` is inside [0, n_in), and
    the first such input index."""
    i0 = min(n_out, -(-pad // stride))
    i1 = max(i0, min(n_out, (n_in - 1 + pad) // stride + 1))
    return i0, i1, i0 * stride - pad


class MatConv(DigitConv):
    """A 1×1 convolution's exact sums by one float64 MatMul (N, OC, C) @ (N, C, OH·OW)."""

    @classmethod
    def plan_matmul(cls, w4: I64, group: int, xmax: int, bias: I64 | None) -> MatConv | None:
        """The MatMul path for 1×1 weights `w4` (OC, C, 1, 1), one group, |x| ≤ xmax; None
        where the float64 sums could be inexact."""
        if group != 1 or w4.shape[2:] != (1, 1) or 0 in w4.shape or not 0 <= xmax < 1 << 24:
            return None
        l1 = int(np.abs(w4).reshape(w4.shape[0], -1).sum(axis=1).max())
        top = 0 if bias is None else int(np.abs(bias).max(initial=0))
        if xmax * l1 + top >= _F64_EXACT:
            return None
        wf = np.ascontiguousarray(w4.reshape(w4.shape[0], -1), np.float64)  # exact: int16
        return cls([_Term("x", wf, 1, [(0, int(w4.shape[1]))])], 1, (1, 1), bias)

    def _parts(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> npt.NDArray[Any]:
        """The exact float64 sums as (1, N, OC, OH, OW), in a buffer the next call
        overwrites (hold `_lock`); dilations do not matter for a 1×1 kernel."""
        n, c, h, w = x.shape
        (sh, sw), (pt, pl, pb, pr) = strides, pads
        oh = (h + pt + pb - 1) // sh + 1
        ow = (w + pl + pr - 1) // sw + 1
        key = (pads, tuple(strides), x.shape)
        bufs = self._buffers.get(key)
        if bufs is None:
            sess = self._sessions.get(("mm",))
            if sess is None:
                sess = make_session(self._graph({}, c))
                self._sessions[("mm",)] = sess
            oc = self.terms[0].w.shape[0]
            xb = np.zeros((n, c, oh * ow), np.float64)  # padding pixels stay 0
            out = np.empty((1, n, oc, oh, ow), np.float64)
            binding = sess.io_binding()
            binding.bind_cpu_input("x", xb)
            binding.bind_output("y0", "cpu", 0, np.float64, (n, oc, oh * ow), out.ctypes.data)
            bufs = (xb, out, binding)
            self._buffers[key] = bufs
        xb, out, binding = bufs
        if (sh, sw, pt, pl, pb, pr) == (1, 1, 0, 0, 0, 0):
            np.copyto(xb.reshape(x.shape), x, casting="unsafe")  # exact: |x| < 2**24
        else:
            y0, y1, ys = _span(h, oh, sh, pt)
            x0, x1, xs = _span(w, ow, sw, pl)
            if y1 > y0 and x1 > x0:
                src = x[
                    :,
                    :,
                    ys : ys + (y1 - y0 - 1) * sh + 1 : sh,
                    xs : xs + (x1 - x0 - 1) * sw + 1 : sw,
                ]
                np.copyto(xb.reshape(n, c, oh, ow)[:, :, y0:y1, x0:x1], src, casting="unsafe")
        self._sessions[("mm",)].run_with_iobinding(binding)
        return out

    def _graph(self, attrs: dict[str, Any], channels: int) -> Any:
        """(N, C, M) float64 → W @ x → (N, OC, M)."""
        f64 = TensorProto.DOUBLE
        w = self.terms[0].w
        return helper.make_graph(
            [helper.make_node("MatMul", ["w", "x"], ["y0"])],
            "exact_conv1x1",
            [helper.make_tensor_value_info("x", f64, ["n", channels, "m"])],
            [helper.make_tensor_value_info("y0", f64, ["n", w.shape[0], "m"])],
            [numpy_helper.from_array(w, "w")],
        )
