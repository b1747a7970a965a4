"""Conv: 2-D convolution under `_linear`'s integer definition (exact sums, per-output-channel
weight scales, one rescale per channel).

The sums run through onnxruntime's float32 Conv when the weights' L1 bound proves that exact
(`_ortconv`), else through the im2col BLAS path in K-chunks proven exact; both give the same
integers. A BatchNormalization that alone reads a Conv's output can be applied to each block of
the requantized output while it is in cache (`run_fused`, untraced runs only): the same
integers as running the two nodes one after the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _digitconv, _ortconv
from edgetrust.runtime.fixed._arith import I64, apply_rescale, matmul_chunk, saturate
from edgetrust.runtime.fixed._base import ElementSource, register, unravel
from edgetrust.runtime.fixed._digitconv import DigitConv, Requantizer, requant_blocks
from edgetrust.runtime.fixed._linear import _Dense, _rescale_one
from edgetrust.runtime.fixed._ortconv import F32Requant, OrtConv
from edgetrust.runtime.fixed._window import Window2D


@register
class Conv(_Dense, Window2D):
    """2-D convolution (NCHW), with groups, strides, dilations and padding (explicit or SAME)."""

    op_types = ("Conv",)
    narrow_out = False
    """Set by the executor once planned: the compiled epilogue may write int8/int16."""

    def setup(self) -> None:
        self.oc, self.cg, self.kh, self.kw = self._conv_weight_shape("convolution")
        self.conv_attrs()
        # Narrow activations reach only the float32 path of `run_fused` (`run` widens them
        # for the others); subclasses (ConvInteger, QLinearConv) shift by zero points.
        self.narrow_inputs = type(self) is Conv

    def conv_attrs(self) -> None:
        """Group, kernel, strides, dilations and padding, checked against the weights."""
        self.group = int(self.attrs.get("group", 1))
        if self.group < 1 or self.oc % self.group:
            raise self.fail(f"group={self.group} does not divide {self.oc} output channels")
        ks = self.attrs.get("kernel_shape")
        if ks is not None and list(ks) != [self.kh, self.kw]:
            raise self.fail(f"kernel_shape {list(ks)} disagrees with the weights")
        self.window_attrs()

    def weights(self) -> dict[str, Any]:
        """Per-output-channel weights as (OC, Cg·KH·KW), bias, accumulator scales."""
        if not hasattr(self, "_weights"):
            w4 = np.asarray(self.info(1).const, np.float64)
            self._weights = self.channel_weights(w4.reshape(self.oc, -1))
        return self._weights

    def _check_x(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.cg * self.group:
            raise InvalidInputError(
                f"Conv node {self.label}: expected (N, {self.cg * self.group}, H, W), got {shape}"
            )

    def _acc(self, xs: Sequence[I64 | None]) -> I64:
        wts = self.weights()
        return self.conv_sum(self.x(xs, 0), wts["b"], self.qmax, self.qmax)

    def conv_sum(self, x: I64, bias: I64 | None, xmax: int, wmax: int) -> I64:
        """Σ x · w (+ bias) per output element, exactly; |x| ≤ xmax, |w| ≤ wmax.

        Padding contributes zeros (for zero-point-shifted integers: the zero point).
        """
        self._check_x(x.shape)
        n, _, h, w_ = x.shape
        oh, ow, pt, pl, pb, pr = self.geometry(h, w_)
        fast = self._ort_conv(xmax, bias) if x.size else None
        if fast is not None:
            acc4 = fast.run(x, (pt, pl, pb, pr), self.strides, self.dilations)
            if bias is not None and fast.bias is None:
                acc4 += bias[None, :, None, None]
            return acc4
        digits = self._digit_conv(xmax, bias) if x.size else None
        if digits is not None:
            return digits.sums(x, (pt, pl, pb, pr), self.strides, self.dilations)
        acc: I64 | None = None
        for chunk in self._blas_chunks(x, xmax, wmax):
            part = chunk.astype(np.int64)
            acc = part if acc is None else acc + part
        assert acc is not None
        m = n * oh * ow
        out = acc.reshape(self.oc, m)
        if bias is not None:
            out += bias[:, None]
        res = out.reshape(self.oc, n, oh, ow)
        return res[None, :, 0] if n == 1 else np.ascontiguousarray(res.transpose(1, 0, 2, 3))

    def _blas_plan(self, xmax: int, wmax: int) -> tuple[Any, int]:
        """The BLAS path's float format and channels per chunk (equal chunks: 128 channels →
        2 × 64, not 115 + 13; same sums, better GEMM shapes)."""
        dtype, kmax = matmul_chunk(xmax, wmax)
        if dtype is None:  # pragma: no cover - only for precisions wider than int16
            raise self.fail("no exact float format for this precision")
        cmax = kmax // (self.kh * self.kw)
        if cmax < 1:
            raise self.fail("kernel window alone exceeds the exact chunk bound")
        n_chunks = -(-self.cg // cmax)
        return dtype, -(-self.cg // n_chunks)

    def _blas_chunks(self, x: I64, xmax: int, wmax: int) -> Iterator[npt.NDArray[Any]]:
        """The im2col BLAS path: each input-channel chunk's exact float sums as
        (G, OCg, N·OH·OW), without the bias."""
        n, _, h, w_ = x.shape
        oh, ow, pt, pl, pb, pr = self.geometry(h, w_)
        dtype, cstep = self._blas_plan(xmax, wmax)
        sh, sw = self.strides
        dh, dw = self.dilations
        xp = np.pad(x.astype(dtype), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        m = n * oh * ow
        g_n, cg = self.group, self.cg
        for c0 in range(0, cg, cstep):
            c1 = min(cg, c0 + cstep)
            # Channels [c0, c1) of every group at once: xg is (N, G, c1 - c0, H', W').
            xg = xp.reshape(n, g_n, cg, *xp.shape[2:])[:, :, c0:c1]
            # im2col as (G, channels · taps, N · OH · OW): one strided copy per tap.
            cols = np.empty((g_n, c1 - c0, self.kh, self.kw, n, oh, ow), dtype)
            for i in range(self.kh):
                for j in range(self.kw):
                    y0, x0 = i * dh, j * dw
                    tap = xg[
                        ..., y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw
                    ]
                    cols[:, :, i, j] = tap.transpose(1, 2, 0, 3, 4)
            wc = self._conv_weights(c0, c1, dtype)
            # Exact: each dot product has (c1 - c0)·taps ≤ kmax terms (see matmul_chunk).
            yield np.matmul(wc, cols.reshape(g_n, -1, m))

    def _blas_fused(self, x: I64, post: Callable[[I64, int, int], None] | None) -> I64 | None:
        """`run_fused` on the BLAS path when it is one chunk (one exact float product per
        output: no int64 sum of chunks), requantized by blocks; else None."""
        if self._blas_plan(self.qmax, self.qmax)[1] < self.cg:
            return None
        self._check_x(x.shape)
        n, _, h, w_ = x.shape
        oh, ow, *_ = self.geometry(h, w_)
        (y,) = self._blas_chunks(x, self.qmax, self.qmax)
        sums = y.reshape(self.oc, n, oh * ow).transpose(1, 0, 2)  # (N, OC, OH·OW), a view
        rs = self._rescale_from(self.params())
        bias = self.weights()["b"]
        out = requant_blocks(sums, rs, self.acc_bound(), self.qmax, post, bias, self.narrow_out)
        return out.reshape(n, self.oc, oh, ow)

    def _ort_conv(self, xmax: int, bias: I64 | None) -> OrtConv | None:
        """The onnxruntime float32 path when its L1 bound proves it exact (cached per xmax and
        bias values)."""
        if not _ortconv.ENABLED or not 0 <= xmax < 1 << 24:
            return None

        def build(w4: I64) -> OrtConv | None:
            plan = _ortconv.channel_chunks(w4, self.group, xmax, bias)
            if plan is None:
                return None
            chunks, with_bias = plan
            return OrtConv(w4, self.group, chunks, bias if with_bias else None)

        fast: OrtConv | None = self._cached("_ortcache", xmax, bias, build)
        return fast

    def _digit_conv(self, xmax: int, bias: I64 | None) -> DigitConv | None:
        """The onnxruntime float32 path by base-256 digits (`_digitconv`) when its bounds prove
        it exact, bias included (cached per xmax and bias values)."""
        if not (_ortconv.ENABLED and _digitconv.ENABLED):
            return None

        def build(w4: I64) -> DigitConv | None:
            return DigitConv.plan(w4, self.group, xmax, bias)

        digits: DigitConv | None = self._cached("_digitcache", xmax, bias, build)
        return digits

    def _cached(self, name: str, xmax: int, bias: I64 | None, build: Callable[[I64], Any]) -> Any:
        """`build(weights (OC, Cg, KH, KW))`, cached in `name` per xmax and bias values."""
        cache: dict[int, tuple[I64 | None, Any]] = self.__dict__.setdefault(name, {})
        hit = cache.get(xmax)
        same = hit is not None and (
            hit[0] is bias
            or (hit[0] is not None and bias is not None and np.array_equal(hit[0], bias))
        )
        if not same:
            w4 = self.weights()["w"].reshape(self.oc, self.cg, self.kh, self.kw)
            hit = (None if bias is None else bias.copy(), build(w4))
            cache[xmax] = hit
        assert hit is not None
        return hit[1]

    def _conv_weights(self, c0: int, c1: int, dtype: Any) -> npt.NDArray[Any]:
        """Channels [c0, c1) of every group as (G, OCg, channels · taps) floats (cached)."""
        cache: dict[tuple[int, int], npt.NDArray[Any]] = self.__dict__.setdefault("_wcache", {})
        key = (c0, c1)
        if key not in cache:
            ocg = self.oc // self.group
            wg = self.weights()["w"].reshape(self.group, ocg, self.cg, -1)
            cache[key] = np.ascontiguousarray(
                wg[:, :, c0:c1].reshape(self.group, ocg, -1), dtype=dtype
            )
        return cache[key]

    def channel_axis(self, ndim: int) -> int:
        """NCHW: axis 1."""
        return 1

    def acc_bound(self) -> int:
        """A proven bound on |acc| for inputs |x| ≤ qmax: qmax · max_o Σ|W_o| + max|b|."""
        if not hasattr(self, "_acc_bound"):
            wts = self.weights()
            l1 = int(np.abs(wts["w"]).sum(axis=1).max(initial=0))
            self._acc_bound = self.qmax * l1 + int(np.abs(wts["b"]).max(initial=0))
        return self._acc_bound

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Accumulate and requantize; straight from onnxruntime's float32 sums when one
        exact call covers the node and the fused rescale is proven (`_ortconv.F32Requant`)."""
        out = self.run_fused(xs, None)
        if out is not None:
            return out
        wide = [None if x is None else np.asarray(x, np.int64) for x in xs]
        return super().run(wide)

    def run_fused(
        self, xs: Sequence[I64 | None], post: Callable[[I64, int, int], None] | None
    ) -> I64 | None:
        """`run` from onnxruntime's float32 sums with `post(block, c0, c1)` applied to each
        requantized block of channels [c0, c1) in place; None where that path does not
        apply (the caller then runs the nodes one by one)."""
        x = self.x(xs, 0)
        if not x.size:
            return None
        b = self.weights()["b"]
        fast = self._ort_conv(self.qmax, b)
        if fast is not None:
            rq = self._f32_requant(fast) if len(fast.chunks) == 1 else None
            return None if rq is None else self._fused_sums(x, fast, rq, post)
        digits = self._digit_conv(self.qmax, b)
        if digits is None:
            return self._blas_fused(x, post)
        self._check_x(x.shape)
        _, _, pt, pl, pb, pr = self.geometry(x.shape[2], x.shape[3])
        rs = self._rescale_from(self.params())
        finish = Requantizer(rs, self.acc_bound(), self.qmax, post, narrow=self.narrow_out)
        return digits.sums(x, (pt, pl, pb, pr), self.strides, self.dilations, finish)

    def fusable(self) -> bool:
        """Whether `run_fused` applies (to any non-empty input)."""
        b = self.weights()["b"]
        fast = self._ort_conv(self.qmax, b)
        if fast is not None:
            return len(fast.chunks) == 1 and self._f32_requant(fast) is not None
        if self._digit_conv(self.qmax, b) is not None:
            return True
        return self._blas_plan(self.qmax, self.qmax)[1] >= self.cg

    def _fused_sums(
        self,
        x: I64,
        fast: OrtConv,
        rq: F32Requant,
        post: Callable[[I64, int, int], None] | None,
    ) -> I64:
        """The one exact float32 call, then the requantization (and `post`) by blocks."""
        self._check_x(x.shape)
        _, _, pt, pl, pb, pr = self.geometry(x.shape[2], x.shape[3])
        narrow = self.narrow_out

        def finish(ys: list[npt.NDArray[np.float32]]) -> I64:
            return rq(ys[0], post, narrow)  # a new array: the kept sums are not handed on

        return fast.sums(x, (pt, pl, pb, pr), self.strides, self.dilations, finish)

    def _f32_requant(self, fast: OrtConv) -> F32Requant | None:
        p = self.params()
        hit = self.__dict__.get("_f32rq")
        if hit is None or hit[0] is not p or hit[1] is not fast:
            bias = self.weights()["b"] if fast.bias is None else None
            rq = F32Requant.plan(self._rescale_from(p), bias, self.qmax, self.acc_bound())
            hit = (p, fast, rq)
            self._f32rq = hit
        return hit[2]

    def _requant(self, acc: I64) -> I64:
        """Rescale with the plan's bound on |acc| (saves finding max |acc| on every run)."""
        rs = self._rescale_from(self.params())
        out = apply_rescale(acc, rs, channel_axis=1, bound=self.acc_bound())
        return saturate(out, self.qmax)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(N, OC, OH, OW)."""
        shape = src.input_shape(0)
        self._check_x(shape)
        oh, ow, *_ = self.geometry(shape[2], shape[3])
        return (shape[0], self.oc, oh, ow)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One receptive field (Cg·KH·KW taps) times one weight row."""
        oc = unravel(flat, out_shape)[1]
        return _rescale_one(self.field_sum(flat, out_shape, src, 0), oc, src, self.qmax)

    def field_sum(
        self, flat: int, out_shape: tuple[int, ...], src: ElementSource, x_zp: int
    ) -> int:
        """Σ (x - x_zp) · w over one receptive field (padding: 0), plus param b if present."""
        n, oc, oy, ox = unravel(flat, out_shape)
        xshape = src.input_shape(0)
        _, c_in, h, w_ = xshape
        _, _, pt, pl, _, _ = self.geometry(h, w_)
        g = oc // (self.oc // self.group)
        cs = np.arange(self.cg)[:, None, None] + g * self.cg
        ys = (oy * self.strides[0] - pt + np.arange(self.kh) * self.dilations[0])[None, :, None]
        xs_ = (ox * self.strides[1] - pl + np.arange(self.kw) * self.dilations[1])[None, None, :]
        ys_b, xs_b, cs_b = np.broadcast_arrays(ys, xs_, cs)
        valid = ((ys_b >= 0) & (ys_b < h) & (xs_b >= 0) & (xs_b < w_)).reshape(-1)
        flat_x = (((n * c_in + cs_b) * h + ys_b) * w_ + xs_b).reshape(-1)
        k = self.cg * self.kh * self.kw
        wrow = src.read_param("w", oc * k + np.arange(k))
        xv = np.zeros(k, np.int64)
        xv[valid] = src.read_input(0, flat_x[valid]) - x_zp
        acc = int(np.dot(xv, wrow))
        if self.has_bias_param():
            acc += int(src.read_param("b", np.array([oc]))[0])
        return acc

    def has_bias_param(self) -> bool:
        """Whether param "b" exists (always for Conv)."""
        return True
