"""ConvTranspose (2-D, NCHW): the exact adjoint of Conv's scatter, requantized per channel.

Integer definition, with weights W (C_in, OCg, KH, KW) quantized per *output* channel (as
Conv's: w_oc = round(W[·, oc] / s_w[oc]) over the row of its group's C_in/G input channels
and the taps) and the bias at the accumulator scale s_x · s_w[oc]:

``acc[n, oc, oy, ox] = b[oc] + Σ x[n, ic, iy, ix] · w[oc, ic, i, j]`` over the input channels
ic of oc's group and taps (i, j) with ``oy = iy · sh - pt + i · dh`` and
``ox = ix · sw - pl + j · dw`` (0 ≤ iy < H, 0 ≤ ix < W), exact int64;
``out = sat(R(acc, s_x · s_w[oc] / s_out))``, s_out calibrated. Output size
``sh · (H - 1) + output_padding + dh · (KH - 1) + 1 - pt - pb``. The executor computes the
per-tap products with Conv's exact float GEMM (chunks proven exact) and scatters them into an
int64 canvas; the referee sums the same terms for one element directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64, matmul_chunk
from edgetrust.runtime.fixed._base import ElementSource, register, unravel
from edgetrust.runtime.fixed._linear import _Dense, _rescale_one


def _pair(v: Any, default: list[int], what: str, n: int, fail: Any) -> list[int]:
    out = [int(x) for x in (v if v is not None else default)]
    if len(out) != n:
        raise fail(f"{what} must have {n} values for 2-D ConvTranspose")
    return out


@register
class ConvTranspose(_Dense):
    """2-D transposed convolution with groups, strides, dilations, pads, output_padding."""

    op_types = ("ConvTranspose",)

    def setup(self) -> None:
        self.cin, self.ocg, self.kh, self.kw = self._conv_weight_shape("ConvTranspose")
        self.group = int(self.attrs.get("group", 1))
        if self.group < 1 or self.cin % self.group:
            raise self.fail(f"group={self.group} does not divide {self.cin} input channels")
        self.cg = self.cin // self.group
        self.oc = self.ocg * self.group
        raw = self.attrs.get("auto_pad", b"NOTSET")
        if (raw.decode() if isinstance(raw, bytes) else raw) != "NOTSET":
            raise self.fail("auto_pad is not supported (give pads)")
        if self.attrs.get("output_shape") is not None:
            raise self.fail("output_shape is not supported (give pads and output_padding)")
        ks = self.attrs.get("kernel_shape")
        if ks is not None and list(ks) != [self.kh, self.kw]:
            raise self.fail(f"kernel_shape {list(ks)} disagrees with the weights")
        self.strides = _pair(self.attrs.get("strides"), [1, 1], "strides", 2, self.fail)
        self.dilations = _pair(self.attrs.get("dilations"), [1, 1], "dilations", 2, self.fail)
        self.pads = _pair(self.attrs.get("pads"), [0, 0, 0, 0], "pads", 4, self.fail)
        self.out_pad = _pair(
            self.attrs.get("output_padding"), [0, 0], "output_padding", 2, self.fail
        )
        if min(self.strides) < 1 or min(self.dilations) < 1 or min(self.pads) < 0:
            raise self.fail("strides and dilations must be ≥ 1 and pads ≥ 0")
        if any(
            not 0 <= p < max(s, d)
            for p, s, d in zip(self.out_pad, self.strides, self.dilations, strict=True)
        ):
            raise self.fail("output_padding must be below the stride or dilation")

    def weights(self) -> dict[str, Any]:
        """Per-output-channel rows (OC, Cg·KH·KW), bias, accumulator scales (cached)."""
        if not hasattr(self, "_weights"):
            w4 = np.asarray(self.info(1).const, np.float64)  # (Cin, OCg, KH, KW)
            # rows[g·OCg + o] = W[g·Cg : (g+1)·Cg, o] flattened (ic, i, j)
            w5 = w4.reshape(self.group, self.cg, self.ocg, self.kh, self.kw)
            self._weights = self.channel_weights(w5.transpose(0, 2, 1, 3, 4).reshape(self.oc, -1))
        return self._weights

    def channel_axis(self, ndim: int) -> int:
        """NCHW: axis 1."""
        return 1

    def _check_x(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.cin:
            raise InvalidInputError(
                f"ConvTranspose node {self.label}: expected (N, {self.cin}, H, W), got {shape}"
            )

    def geometry(self, h: int, w: int) -> tuple[int, int]:
        """(OH, OW)."""
        (sh, sw), (dh, dw) = self.strides, self.dilations
        pt, pl, pb, pr = self.pads
        oh = sh * (h - 1) + self.out_pad[0] + dh * (self.kh - 1) + 1 - pt - pb
        ow = sw * (w - 1) + self.out_pad[1] + dw * (self.kw - 1) + 1 - pl - pr
        if oh < 1 or ow < 1:
            raise InvalidInputError(f"ConvTranspose node {self.label}: pads leave no output")
        return oh, ow

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(N, OC, OH, OW)."""
        shape = src.input_shape(0)
        self._check_x(shape)
        return (shape[0], self.oc, *self.geometry(shape[2], shape[3]))

    def _acc(self, xs: Sequence[I64 | None]) -> I64:
        x = self.x(xs, 0)
        self._check_x(x.shape)
        n, _, h, w_ = x.shape
        oh, ow = self.geometry(h, w_)
        (sh, sw), (dh, dw) = self.strides, self.dilations
        pt, pl = self.pads[0], self.pads[1]
        wts = self.weights()
        dtype, kmax = matmul_chunk(self.qmax, self.qmax)
        if dtype is None:  # pragma: no cover - only for precisions wider than int16
            raise self.fail("no exact float format for this precision")
        # Canvas rows/cols: every scattered position, and the cropped output window.
        ch = max(sh * (h - 1) + dh * (self.kh - 1) + 1, pt + oh)
        cw = max(sw * (w_ - 1) + dw * (self.kw - 1) + 1, pl + ow)
        canvas = np.zeros((n, self.oc, ch, cw), np.int64)
        xg = x.reshape(n, self.group, self.cg, h * w_).transpose(1, 2, 0, 3)  # (G, Cg, N, HW)
        # (G, OCg·taps, Cg) float weights: row (o, i, j), column ic.
        wf = self._wt_float(dtype)
        m = n * h * w_
        for c0 in range(0, self.cg, max(1, kmax)):
            c1 = min(self.cg, c0 + kmax)
            xc = np.ascontiguousarray(xg[:, c0:c1].reshape(self.group, c1 - c0, m), dtype=dtype)
            part = np.matmul(wf[:, :, c0:c1], xc).astype(np.int64)  # exact: ≤ kmax terms
            cols = part.reshape(self.group, self.ocg, self.kh, self.kw, n, h, w_)
            for i in range(self.kh):
                for j in range(self.kw):
                    tap = cols[:, :, i, j].reshape(self.oc, n, h, w_).transpose(1, 0, 2, 3)
                    y0, x0 = i * dh, j * dw
                    canvas[
                        :, :, y0 : y0 + sh * (h - 1) + 1 : sh, x0 : x0 + sw * (w_ - 1) + 1 : sw
                    ] += tap
        out = canvas[:, :, pt : pt + oh, pl : pl + ow] + wts["b"].reshape(1, -1, 1, 1)
        return np.ascontiguousarray(out)

    def _wt_float(self, dtype: Any) -> Any:
        """The quantized rows as (G, OCg·KH·KW, Cg) floats (cached)."""
        if not hasattr(self, "_wtf"):
            w = self.weights()["w"].reshape(self.group, self.ocg, self.cg, self.kh, self.kw)
            self._wtf = np.ascontiguousarray(
                w.transpose(0, 1, 3, 4, 2).reshape(self.group, -1, self.cg), dtype=dtype
            )
        return self._wtf

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Σ over the (ic, tap) pairs that scatter into this element, plus the bias."""
        n, oc, oy, ox = unravel(flat, out_shape)
        xshape = src.input_shape(0)
        _, _, h, w_ = xshape
        (sh, sw), (dh, dw) = self.strides, self.dilations
        pt, pl = self.pads[0], self.pads[1]
        g = oc // self.ocg
        k = self.cg * self.kh * self.kw
        x_idx: list[int] = []
        w_idx: list[int] = []
        for i in range(self.kh):
            ty = oy + pt - i * dh
            if ty < 0 or ty % sh or ty // sh >= h:
                continue
            for j in range(self.kw):
                tx = ox + pl - j * dw
                if tx < 0 or tx % sw or tx // sw >= w_:
                    continue
                for ic in range(self.cg):
                    c = g * self.cg + ic
                    x_idx.append(((n * self.cin + c) * h + ty // sh) * w_ + tx // sw)
                    w_idx.append(oc * k + (ic * self.kh + i) * self.kw + j)
        acc = int(src.read_param("b", np.array([oc]))[0])
        if x_idx:
            xv = src.read_input(0, np.array(x_idx, np.int64))
            wv = src.read_param("w", np.array(w_idx, np.int64))
            acc += int(np.dot(xv, wv))
        return _rescale_one(acc, oc, src, self.qmax)
