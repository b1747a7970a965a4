"""Exact int16 convolutions as one onnxruntime float64 MatMul over im2col columns.

A convolution (one group) is a matrix product: ``y[n, o, p] = Σ_k w[o, k] · cols[n, k, p]``
over k = (c, i, j), with cols the input pixel tap (i, j) of output pixel p reads (stride,
dilation and padding pick it; a padding pixel reads 0; for a 1×1 kernel with stride 1 and no
padding, cols is x itself). With |x| ≤ xmax every partial sum of any subset of the terms is
an integer of magnitude ≤ xmax · Σ_k |w[o, k]| (the plan checks this < 2**53), so every
multiplication, addition or FMA of MLAS's DGEMM is exact in float64, in any order or blocking:
the result is `_digitconv`'s, without digits. One float64 product costs about half the three
float32 digit convolutions here for 1×1 kernels (AVX-512, one thread: 256→64 channels at 56×56
0.9 ms against 1.5 ms), 0.7-0.9 of them with im2col for 3×3 kernels, and about half numpy's
OpenBLAS float64 product, which the sums of ≤ 128 terms took before. Where the columns would
be large (`COLS_MAX`), the digit plan runs instead.

`MatConv` is a `DigitConv` with one float64 part of odd factor 1, so its combination,
requantization and fused posts (`Requantizer`, `_kernels.digit_epilogue`) are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed._arith import I64
from edgetrust.runtime.fixed._digitconv import DigitConv, _Term
from edgetrust.runtime.fixed._ortconv import make_session

_F64_EXACT = 1 << 53


def _span(n_in: int, n_out: int, stride: int, pad: int) -> tuple[int, int, int]:
    """Output indices [i0, i1) whose input index ``i·stride - pad`` is inside [0, n_in) (pad
    may be negative: a kernel tap's offset), and the first such input index."""
    i0 = min(n_out, max(0, -(-pad // stride)))
    i1 = max(i0, min(n_out, (n_in - 1 + pad) // stride + 1))
    return i0, i1, i0 * stride - pad


COLS_MAX = 3 << 19
"""Most im2col column entries (float64: 12 MiB) for which the MatMul is taken where a digit
plan exists: above, the columns' copy outweighs the cheaper products (measured on ResNet50,
one thread: its 7×7 stem at 147 × 112² digits 4.0 ms vs MatMul 4.7; 3×3 at 56² ties; every
smaller one is faster by MatMul)."""


class MatConv(DigitConv):
    """A convolution's exact sums by one float64 MatMul (OC, C·KH·KW) @ (N, C·KH·KW, OH·OW)."""

    @classmethod
    def plan_matmul(cls, w4: I64, group: int, xmax: int, bias: I64 | None) -> MatConv | None:
        """The MatMul path for weights `w4` (OC, C, KH, KW), one group, |x| ≤ xmax; None
        where the float64 sums could be inexact."""
        if group != 1 or 0 in w4.shape or not 0 <= xmax < 1 << 24:
            return None
        l1 = int(np.abs(w4).reshape(w4.shape[0], -1).sum(axis=1).max())
        top = 0 if bias is None else int(np.abs(bias).max(initial=0))
        if xmax * l1 + top >= _F64_EXACT:
            return None
        wf = np.ascontiguousarray(w4.reshape(w4.shape[0], -1), np.float64)  # exact: int16
        kernel = (int(w4.shape[2]), int(w4.shape[3]))
        return cls([_Term("x", wf, 1, [(0, int(w4.shape[1]))])], 1, kernel, bias)

    fallback: DigitConv | None = None
    """The digit plan for inputs whose columns exceed `COLS_MAX` (the same integers)."""

    def sums(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
        finish: Callable[[npt.NDArray[np.float64], I64, int, int], None] | None = None,
    ) -> I64:
        """`DigitConv.sums`, by the MatMul or, for large columns, by `fallback`."""
        if self.fallback is not None and self._cols(x.shape, pads, strides, dilations) > COLS_MAX:
            return self.fallback.sums(x, pads, strides, dilations, finish)
        return super().sums(x, pads, strides, dilations, finish)

    def _cols(
        self,
        shape: tuple[int, ...],
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> int:
        """Entries of the im2col columns for an input of `shape`."""
        n, c, h, w = shape
        (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = self.kernel, strides, dilations, pads
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return n * c * kh * kw * max(oh, 0) * max(ow, 0)

    def _parts(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> npt.NDArray[Any]:
        """The exact float64 sums as (1, N, OC, OH, OW), in a buffer the next call
        overwrites (hold `_lock`). The input columns (N, C·KH·KW, OH·OW), im2col in the
        weights' (C, KH, KW) order, are a kept buffer whose padding entries stay 0."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = self.kernel, strides, dilations, pads
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        key = (pads, tuple(strides), tuple(dilations), x.shape)
        bufs = self._buffers.get(key)
        if bufs is None:
            sess = self._sessions.get(("mm",))
            if sess is None:
                sess = make_session(self._graph({}, c * kh * kw))
                self._sessions[("mm",)] = sess
            oc = self.terms[0].w.shape[0]
            cols = np.zeros((n, c * kh * kw, oh * ow), np.float64)
            out = np.empty((1, n, oc, oh, ow), np.float64)
            binding = sess.io_binding()
            binding.bind_cpu_input("x", cols)
            binding.bind_output("y0", "cpu", 0, np.float64, (n, oc, oh * ow), out.ctypes.data)
            bufs = (cols, out, binding)
            self._buffers[key] = bufs
        cols, out, binding = bufs
        if (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0):
            np.copyto(cols.reshape(x.shape), x, casting="unsafe")  # exact: |x| < 2**24
        else:
            taps = cols.reshape(n, c, kh, kw, oh, ow)
            for i in range(kh):
                y0, y1, ys = _span(h, oh, sh, pt - i * dh)
                for j in range(kw):
                    x0, x1, xs = _span(w, ow, sw, pl - j * dw)
                    if y1 > y0 and x1 > x0:
                        ye, xe = ys + (y1 - y0 - 1) * sh + 1, xs + (x1 - x0 - 1) * sw + 1
                        src = x[:, :, ys:ye:sh, xs:xe:sw]
                        np.copyto(taps[:, :, i, j, y0:y1, x0:x1], src, casting="unsafe")
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
