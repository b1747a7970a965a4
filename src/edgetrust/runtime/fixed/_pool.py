"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (2-D, NCHW).

Pooling keeps the input's scale. Max is exact. Averages are ``round_div(Σ window, count)``
(half away from zero), where count is the number of input positions in the window
(``count_include_pad=0``) or of positions inside the explicitly padded extent
(``count_include_pad=1``), as onnxruntime counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import I64, round_div
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    register,
    unravel,
)
from edgetrust.runtime.fixed._window import Window2D

_NEG = -(1 << 62)


class _Pool(Op):
    def scale_policy(self) -> ScalePolicy:
        """The input's scale."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def out_kind(self) -> Kind:
        """The input's kind."""
        return self.info(0).kind

    def make_params(self) -> dict[str, I64]:
        """No params."""
        return {}

    def check4(self, shape: tuple[int, ...]) -> None:
        """Only NCHW inputs."""
        if len(shape) != 4:
            raise InvalidInputError(
                f"{self.node.op_type} node {self.label}: expected an (N, C, H, W) input, "
                f"got shape {shape}"
            )


class _Windowed(_Pool, Window2D):
    def setup(self) -> None:
        if len([o for o in self.node.output if o]) > 1:
            raise self.fail("only the Y output is supported")
        ks = self.attrs.get("kernel_shape")
        if ks is None or len(ks) != 2:
            raise self.fail("only 2-D pooling (kernel_shape of length 2) is supported")
        self.kh, self.kw = (int(k) for k in ks)
        self.ceil = bool(self.attrs.get("ceil_mode", 0))
        self.window_attrs()
        pt, pl, pb, pr = self.pads_attr
        if max(pt, pb) >= self.kh or max(pl, pr) >= self.kw:
            raise self.fail(
                f"pads {self.pads_attr} must be smaller than the kernel {[self.kh, self.kw]} "
                "(as onnxruntime requires: a window of padding alone has no value)"
            )

    def geometry(self, h: int, w: int) -> tuple[int, int, int, int, int, int]:
        """`Window2D.geometry`, refusing a window that holds only padding."""
        self.require_inside(h, w)
        return Window2D.geometry(self, h, w)

    def _windows(self, x: I64, fill: int) -> tuple[I64, int, int, int, int, int, int]:
        self.check4(x.shape)
        _, _, h, w = x.shape
        oh, ow, pt, pl, pb, pr = self.geometry(h, w)
        sh, sw = self.strides
        dh, dw = self.dilations
        ekh, ekw = self.extents()
        need_b = max(pb, (oh - 1) * sh + ekh - h - pt)
        need_r = max(pr, (ow - 1) * sw + ekw - w - pl)
        if pt or pl or need_b > 0 or need_r > 0:
            xp = np.pad(x, ((0, 0), (0, 0), (pt, need_b), (pl, need_r)), constant_values=fill)
        else:  # no padding: the windows read x itself (np.pad would copy it)
            xp = x
        win = np.lib.stride_tricks.sliding_window_view(xp, (ekh, ekw), axis=(2, 3))
        win = win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]
        return win, oh, ow, pt, pl, pb, pr

    def _tap_fold(self, x: I64, fill: int, fold: Any) -> I64:
        """fold(acc, tap) over the window's taps, one strided slice each (order-free folds:
        max and exact integer sums), in place on a fresh accumulator."""
        win = self._windows(x, fill)[0]
        acc: I64 | None = None
        for i in range(self.kh):
            for j in range(self.kw):
                tap = win[..., i, j]
                if acc is None:
                    acc = np.array(tap, dtype=x.dtype)
                else:
                    fold(acc, tap, out=acc)
        assert acc is not None
        return acc

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(N, C, OH, OW)."""
        shape = src.input_shape(0)
        self.check4(shape)
        oh, ow, *_ = self.geometry(shape[2], shape[3])
        return (shape[0], shape[1], oh, ow)

    def _taps(self, idx: tuple[int, ...], shape: tuple[int, ...]) -> tuple[I64, I64, I64, I64]:
        """Flat input indices of a window, whether each is inside the input, and its rows/cols."""
        n, c, oy, ox = idx
        _, cc, h, w = shape
        _, _, pt, pl, _, _ = self.geometry(h, w)
        ys = oy * self.strides[0] - pt + np.arange(self.kh) * self.dilations[0]
        xs = ox * self.strides[1] - pl + np.arange(self.kw) * self.dilations[1]
        grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
        yy: I64 = grid_y.reshape(-1).astype(np.int64)
        xx: I64 = grid_x.reshape(-1).astype(np.int64)
        valid: I64 = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).astype(np.int64)
        flat: I64 = ((n * cc + c) * h + yy) * w + xx
        return flat, valid, yy, xx


@register
class MaxPool(_Windowed):
    """Window maximum (padding never wins)."""

    op_types = ("MaxPool",)
    narrow_inputs = True

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Max over each window; in the narrowest integer type that holds the input and a
        padding value below all of it (max is exact in any integer type: same integers, an
        eighth of the memory traffic for int8)."""
        x = self.x(xs, 0)
        if x.size:
            self.check4(x.shape)
            oh, ow, pt, pl, _, _ = self.geometry(x.shape[2], x.shape[3])
            kernel, strides, dilations = (self.kh, self.kw), self.strides, self.dilations
            fast = _kernels.max_pool2d(
                x,
                kernel,
                (strides[0], strides[1]),
                (dilations[0], dilations[1]),
                (pt, pl),
                (oh, ow),
            )
            if fast is not None:  # one compiled pass in x's dtype (the same integers)
                return fast
            lo, hi = int(x.min()), int(x.max())
            for narrow in (np.int8, np.int16, np.int32):
                info = np.iinfo(narrow)
                if info.min < lo and hi <= info.max:
                    # padding never wins: `geometry` refuses a window of padding alone
                    small = self._tap_fold(x.astype(narrow, copy=False), int(info.min), np.maximum)
                    # a narrow input stays narrow (the executor widens it for whoever needs)
                    return small if x.dtype != np.int64 else small.astype(np.int64)
        return self._tap_fold(np.asarray(x, np.int64), _NEG, np.maximum)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Max of the window's in-range elements."""
        taps, valid, _, _ = self._taps(unravel(flat, out_shape), src.input_shape(0))
        return int(np.max(src.read_input(0, taps[valid.astype(bool)])))


@register
class AveragePool(_Windowed):
    """Window average, rounded half away from zero."""

    op_types = ("AveragePool",)

    def setup(self) -> None:
        super().setup()
        self.include_pad = bool(self.attrs.get("count_include_pad", 0))

    def _axis_counts(self, out: int, size: int, p0: int, p1: int, k: int, st: int, dil: int) -> I64:
        """Per output position along one axis: how many window taps count."""
        pos = np.arange(out)[:, None] * st - p0 + np.arange(k)[None, :] * dil
        lo, hi = (-p0, size + p1) if self.include_pad else (0, size)
        counted: I64 = np.sum((pos >= lo) & (pos < hi), axis=1).astype(np.int64)
        return counted

    def counts(self, h: int, w: int) -> I64:
        """(OH, OW) divisors; the counted region is a rectangle, so rows × columns."""
        oh, ow, pt, pl, pb, pr = self.geometry(h, w)
        cy = self._axis_counts(oh, h, pt, pb, self.kh, self.strides[0], self.dilations[0])
        cx = self._axis_counts(ow, w, pl, pr, self.kw, self.strides[1], self.dilations[1])
        out: I64 = np.outer(cy, cx)
        return out

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Window sums divided by per-position counts."""
        x = self.x(xs, 0)
        total = self._tap_fold(x, 0, np.add)
        return round_div(total, self.counts(x.shape[2], x.shape[3]))

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Sum of the window's in-range elements over the count."""
        shape = src.input_shape(0)
        idx = unravel(flat, out_shape)
        taps, valid, _, _ = self._taps(idx, shape)
        total = int(np.sum(src.read_input(0, taps[valid.astype(bool)])))
        oh, ow, pt, pl, pb, pr = self.geometry(shape[2], shape[3])
        cy = self._axis_counts(oh, shape[2], pt, pb, self.kh, self.strides[0], self.dilations[0])
        cx = self._axis_counts(ow, shape[3], pl, pr, self.kw, self.strides[1], self.dilations[1])
        count = int(cy[idx[2]] * cx[idx[3]])
        return int(round_div(np.array([total], np.int64), count)[0])


class _Global(_Pool):
    def setup(self) -> None:
        pass

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(N, C, 1, ...)."""
        shape = src.input_shape(0)
        if len(shape) < 3:
            raise InvalidInputError(f"{self.node.op_type} node {self.label}: rank must be ≥ 3")
        return (*shape[:2], *([1] * (len(shape) - 2)))

    def reduce(self, v: I64, axis: tuple[int, ...] | int, count: int) -> I64:
        """The reduction."""
        raise NotImplementedError

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Reduce all spatial axes."""
        x = self.x(xs, 0)
        if x.ndim < 3:
            raise InvalidInputError(f"{self.node.op_type} node {self.label}: rank must be ≥ 3")
        axes = tuple(range(2, x.ndim))
        count = int(np.prod(x.shape[2:], dtype=np.int64))
        return self.reduce(x, axes, count).reshape(*x.shape[:2], *([1] * len(axes)))

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read one channel plane; reduce."""
        shape = src.input_shape(0)
        plane = int(np.prod(shape[2:], dtype=np.int64))
        v = src.read_input(0, flat * plane + np.arange(plane, dtype=np.int64))
        return int(self.reduce(v[None, :], 1, plane)[0])


@register
class GlobalAveragePool(_Global):
    """round_div(Σ plane, H·W)."""

    op_types = ("GlobalAveragePool",)
    narrow_inputs = True  # the sums are taken in int64 from any integer width

    def reduce(self, v: I64, axis: tuple[int, ...] | int, count: int) -> I64:
        """Rounded mean."""
        return round_div(np.sum(v, axis=axis, dtype=np.int64), count)


@register
class GlobalMaxPool(_Global):
    """max over the plane."""

    op_types = ("GlobalMaxPool",)

    def reduce(self, v: I64, axis: tuple[int, ...] | int, count: int) -> I64:
        """Maximum."""
        out: I64 = np.max(v, axis=axis)
        return out
