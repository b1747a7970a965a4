"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ArgMax, ArgMin.

* ReduceMax/ReduceMin: exact, at the input's scale.
* ReduceMean: ``round_div(Σ q, n)`` at the input's scale (n = elements reduced).
* ReduceSum: ``sat(R(Σ q, s / s_out))`` with a calibrated s_out (the sum outgrows the input
  range); integer tensors exactly.
* ArgMax/ArgMin: the index (int64) of the first (or, with select_last_index, last) extreme
  integer along the axis. Quantization can make two nearly equal floats equal, so ties are
  decided on the integers - every machine decides them the same way.

Axes come from the `axes` attribute (or, for ReduceSum from opset 13 and every reduction from
opset 18, a constant input); no axes reduce everything unless noop_with_empty_axes is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np

from edgetrust.runtime.fixed._arith import I64, Rescale, apply_rescale, round_div, saturate
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    norm_axis,
    ravel,
    register,
    unravel,
)


class _Reduce(Op):
    """Reduce over axes; subclasses define `reduce` on an int64 array."""

    def setup(self) -> None:
        self.keepdims = bool(int(self.attrs.get("keepdims", 1)))
        self.noop = bool(int(self.attrs.get("noop_with_empty_axes", 0)))
        from_input = self.settings.opset >= 18 or (
            self.node.op_type == "ReduceSum" and self.settings.opset >= 13
        )
        self.axes_given: list[int] | None
        if from_input:
            self.axes_given = self.static_ints(1) if self.has_input(1) else None
        else:
            raw = self.attrs.get("axes")
            self.axes_given = None if raw is None else [int(a) for a in raw]

    def make_params(self) -> dict[str, I64]:
        """No params (axes are folded into the op)."""
        return {}

    def axes(self, rank: int) -> tuple[int, ...]:
        """The reduced axes, normalised."""
        if not self.axes_given:
            return () if self.noop else tuple(range(rank))
        out = sorted({norm_axis(a, rank, self.label) for a in self.axes_given})
        return tuple(out)

    def out_kind(self) -> Kind:
        """The input's kind."""
        return self.info(0).kind

    def scale_policy(self) -> ScalePolicy:
        """The input's scale (ReduceSum overrides)."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def reduce(self, x: I64, axes: tuple[int, ...]) -> I64:
        """The reduction with keepdims=True."""
        raise NotImplementedError

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Reduce, then drop the axes unless keepdims."""
        x = self.x(xs, 0)
        axes = self.axes(x.ndim)
        if not axes:
            return x.copy()
        out = self.reduce(x, axes)
        return out if self.keepdims else out.reshape(self._shape(x.shape, axes))

    def _shape(self, shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in axes)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The reduced shape."""
        shape = self.in_shape(src, 0)
        axes = self.axes(len(shape))
        return shape if not axes else self._shape(shape, axes)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the reduced slice; reduce it."""
        shape = self.in_shape(src, 0)
        axes = self.axes(len(shape))
        if not axes:
            return int(self.read(src, 0, [flat])[0])
        kept = iter(unravel(flat, out_shape))
        base: list[int | None] = []
        for i in range(len(shape)):
            if i in axes:
                base.append(None)
                if self.keepdims:
                    next(kept)
            else:
                base.append(next(kept))
        ranges = [range(shape[i]) if b is None else [b] for i, b in enumerate(base)]
        flats = [ravel(idx, shape) for idx in product(*ranges)]
        vals = self.read(src, 0, flats).reshape([len(r) for r in ranges])
        return int(self.reduce(vals, axes).reshape(-1)[0])


@register
class ReduceMaxMin(_Reduce):
    """Exact max / min."""

    op_types = ("ReduceMax", "ReduceMin")

    def reduce(self, x: I64, axes: tuple[int, ...]) -> I64:
        """np.max / np.min."""
        fn = np.max if self.node.op_type == "ReduceMax" else np.min
        out: I64 = fn(x, axis=axes, keepdims=True)
        return out


@register
class ReduceMean(_Reduce):
    """round_div(Σ q, n)."""

    op_types = ("ReduceMean",)

    def reduce(self, x: I64, axes: tuple[int, ...]) -> I64:
        """Rounded mean (integer tensors too)."""
        n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        if n == 0:
            raise self.fail("cannot average over an empty axis")
        return round_div(np.sum(x, axis=axes, keepdims=True), n)


@register
class ReduceSum(_Reduce):
    """Σ q, requantized to a calibrated scale."""

    op_types = ("ReduceSum",)

    def scale_policy(self) -> ScalePolicy:
        """Calibrated for real tensors."""
        return "calibrate" if self.info(0).kind == "q" else None

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """max |Σ q| · s."""
        x = self.x(xs, 0)
        axes = self.axes(x.ndim)
        total = np.sum(x, axis=axes, keepdims=True) if axes else x
        s = self.info(0).scale
        assert s is not None
        return float(np.max(np.abs(total), initial=0)) * s

    def make_params(self) -> dict[str, I64]:
        """The requantization multiplier, for real tensors."""
        if self.info(0).kind != "q":
            return {}
        s = self.info(0).scale
        assert s is not None and self.out_scale is not None
        return self.make_rescale(s / self.out_scale).params()

    def reduce(self, x: I64, axes: tuple[int, ...]) -> I64:
        """Exact sum, requantized for real tensors."""
        total: I64 = np.sum(x, axis=axes, keepdims=True)
        if self.info(0).kind != "q":
            return total
        p = self.params()
        return saturate(apply_rescale(total, Rescale.from_params(p["mult"], p["shift"])), self.qmax)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """An empty axes list with noop keeps the input (no requantization either)."""
        x = self.x(xs, 0)
        if not self.axes(x.ndim) and self.info(0).kind == "q":
            raise self.fail("noop_with_empty_axes on a real tensor is not supported")
        return super().run(xs)


@register
class ArgMaxMin(Op):
    """Index of the extreme integer along `axis` (int64 output)."""

    op_types = ("ArgMax", "ArgMin")

    def setup(self) -> None:
        self.axis = int(self.attrs.get("axis", 0))
        self.keepdims = bool(int(self.attrs.get("keepdims", 1)))
        self.last = bool(int(self.attrs.get("select_last_index", 0)))

    def out_kind(self) -> Kind:
        """Integers."""
        return "i"

    def make_params(self) -> dict[str, I64]:
        """None."""
        return {}

    def _arg(self, x: I64, axis: int) -> I64:
        v = -x if self.node.op_type == "ArgMin" else x
        if x.shape[axis] == 0:
            raise self.fail("cannot take an arg over an empty axis")
        if self.last:
            flipped = np.flip(v, axis=axis)
            out: I64 = x.shape[axis] - 1 - np.argmax(flipped, axis=axis, keepdims=True)
        else:
            out = np.argmax(v, axis=axis, keepdims=True)
        return out.astype(np.int64)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """np.argmax of the integers (first or last extreme)."""
        x = self.x(xs, 0)
        axis = norm_axis(self.axis, x.ndim, self.label)
        out = self._arg(x, axis)
        return out if self.keepdims else np.squeeze(out, axis=axis)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The input shape with the axis at 1 or dropped."""
        shape = self.in_shape(src, 0)
        axis = norm_axis(self.axis, len(shape), self.label)
        if self.keepdims:
            return tuple(1 if i == axis else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i != axis)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the row along the axis."""
        shape = self.in_shape(src, 0)
        axis = norm_axis(self.axis, len(shape), self.label)
        idx = list(unravel(flat, out_shape))
        if not self.keepdims:
            idx.insert(axis, 0)
        flats = []
        for j in range(shape[axis]):
            idx[axis] = j
            flats.append(ravel(idx, shape))
        row = self.read(src, 0, flats)
        return int(self._arg(row[None, :], 1)[0, 0])
