"""More data movement: Pad, Expand, Tile, Resize/Upsample (nearest).

Every output element is one input element (or, for Pad in constant mode, the pad value
quantized to the input's scale: ``sat(round(value / s))``, exact integers for integer
tensors), so the scale and kind are the input's and constants are folded at plan time.

* Pad: modes constant, edge, reflect and wrap, non-negative pads (opset < 11: the `pads`
  and `value` attributes; from 11: inputs, and from 18 an `axes` input).
* Expand: numpy broadcasting of the input to the given shape.
* Tile: the input repeated `repeats[i]` times along each axis.
* Resize/Upsample, nearest mode: an exact per-axis index map (see `Resize`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64, quantize, round_shift
from edgetrust.runtime.fixed._base import (
    ElementSource,
    broadcast_index,
    broadcast_shapes,
    norm_axis,
    ravel,
    register,
    unravel,
)
from edgetrust.runtime.fixed._shape import _Movement

_PAD_MODES = ("constant", "edge", "reflect", "wrap")


@register
class Pad(_Movement):
    """Pad with a constant, the edge, a reflection or a wrap-around."""

    op_types = ("Pad",)

    def setup(self) -> None:
        raw = self.attrs.get("mode", b"constant")
        self.mode = raw.decode() if isinstance(raw, bytes) else str(raw)
        if self.mode not in _PAD_MODES:
            raise self.fail(f"mode={self.mode} is not supported ({', '.join(_PAD_MODES)})")
        if self.settings.opset < 11:
            self.value = float(self.attrs.get("value", 0.0))
        else:
            self.value = 0.0
            if self.has_input(2):
                if not self.is_const(2):
                    raise self.fail("constant_value must be a constant")
                c = np.asarray(self.info(2).const, np.float64).reshape(-1)
                self.value = float(c[0]) if c.size else 0.0
        if not np.isfinite(self.value):
            raise self.fail("constant_value must be finite")
        info = self.info(0)
        if info.kind == "q":
            assert info.scale is not None
            self.fill = int(quantize(np.array([self.value]), info.scale, self.qmax)[0])
        else:
            if self.value != int(self.value):
                raise self.fail("an integer tensor needs an integer constant_value")
            self.fill = int(self.value)

    def int_inputs(self) -> list[int]:
        """pads and axes (from opset 11)."""
        return [1, 3] if self.settings.opset >= 11 else []

    def make_params(self) -> dict[str, I64]:
        """The data input only (pads are shape vectors, the value is folded into the op)."""
        out = super().make_params()
        return {k: v for k, v in out.items() if k == "in0"}

    def widths(self, rank: int, ints: dict[int, list[int]]) -> list[tuple[int, int]]:
        """(before, after) per axis."""
        pads = self.attrs.get("pads") if self.settings.opset < 11 else ints.get(1)
        if pads is None:
            raise self.fail("pads are required")
        pads = [int(p) for p in pads]
        axes = ints.get(3)
        axes = list(range(rank)) if axes is None else [norm_axis(a, rank, self.label) for a in axes]
        if len(pads) != 2 * len(axes):
            raise InvalidInputError(
                f"Pad node {self.label}: {len(pads)} pads for {len(axes)} axes of rank {rank}"
            )
        if any(p < 0 for p in pads):
            raise self.fail("negative pads (cropping) are not supported")
        out = [(0, 0)] * rank
        for i, a in enumerate(axes):
            out[a] = (pads[i], pads[i + len(axes)])
        return out

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """The padded shape."""
        w = self.widths(len(shape), ints)
        out = []
        for d, (b, a) in zip(shape, w, strict=True):
            if self.mode != "constant" and (b or a) and d == 0:
                raise InvalidInputError(
                    f"Pad node {self.label}: cannot {self.mode}-pad an empty axis"
                )
            if self.mode == "reflect" and (b >= d or a >= d) and (b or a):
                raise InvalidInputError(
                    f"Pad node {self.label}: reflect pads must be smaller than the axis ({d})"
                )
            out.append(d + b + a)
        return tuple(out)

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """np.pad (the fill is the float value for plan-time constants)."""
        self.target(tuple(x.shape), ints)
        w = self.widths(x.ndim, ints)
        if self.mode == "constant":
            fill = self.value if x.dtype.kind == "f" else self.fill
            return np.pad(x, w, mode="constant", constant_values=fill)
        out: npt.NDArray[Any] = np.pad(x, w, mode=self.mode)  # type: ignore[call-overload]
        return out

    def _source(self, i: int, d: int, before: int) -> int:
        j = i - before
        if 0 <= j < d:
            return j
        if self.mode == "constant":
            return -1
        if self.mode == "edge":
            return min(max(j, 0), d - 1)
        if self.mode == "wrap":
            return j % d
        period = 2 * (d - 1)  # reflect (d ≥ 2 when any reflection pad is given)
        j = j % period if period else 0
        return period - j if j >= d else j

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """The source element, or the fill."""
        in_shape = self.in_shape(src, 0)
        w = self.widths(len(in_shape), self._ints_src(src))
        idx = []
        for i, d, (b, _) in zip(unravel(flat, out_shape), in_shape, w, strict=True):
            j = self._source(i, d, b)
            if j < 0:
                return self.fill
            idx.append(j)
        return int(self.read(src, 0, [ravel(idx, in_shape)])[0])


@register
class Expand(_Movement):
    """Broadcast to a shape (numpy rules, in both directions)."""

    op_types = ("Expand",)

    def int_inputs(self) -> list[int]:
        """The shape."""
        return [1]

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """broadcast(shape, given)."""
        if 1 not in ints:
            raise self.fail("the shape input is required")
        return broadcast_shapes([shape, ints[1]], lambda: f"Expand node {self.label}")

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """np.broadcast_to, copied."""
        return np.ascontiguousarray(np.broadcast_to(x, self.target(tuple(x.shape), ints)))

    def source_index(self, flat: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """The broadcast source."""
        return broadcast_index(unravel(flat, out_shape), in_shape)


@register
class Tile(_Movement):
    """Repeat along each axis."""

    op_types = ("Tile",)

    def int_inputs(self) -> list[int]:
        """repeats."""
        return [1]

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """shape · repeats."""
        reps = ints.get(1)
        if reps is None or len(reps) != len(shape) or any(r < 0 for r in reps):
            raise InvalidInputError(
                f"Tile node {self.label}: repeats {reps} must be {len(shape)} values ≥ 0"
            )
        return tuple(d * r for d, r in zip(shape, reps, strict=True))

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """np.tile."""
        self.target(tuple(x.shape), ints)
        return np.tile(x, tuple(ints[1]))

    def source_index(self, flat: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """Output index modulo the input shape."""
        idx = [i % d for i, d in zip(unravel(flat, out_shape), in_shape, strict=True)]
        return ravel(idx, in_shape)


_COORD_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _text(value: Any, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


@register
class Resize(_Movement):
    """Resize and Upsample in nearest mode: an index map per axis, computed in exact rationals.

    For output index x along an axis with input size n, output size m and scale r (the given
    float32 scale as an exact fraction, or m / n when sizes are given), the source coordinate
    is the ONNX `coordinate_transformation_mode` formula evaluated with Python `Fraction`s,
    then rounded by `nearest_mode` and clamped to [0, n - 1]. No float arithmetic decides an
    index, so every machine picks the same elements.
    """

    op_types = ("Resize", "Upsample")
    modes: tuple[str, ...] = ("nearest",)

    def __new__(cls, node: Any, *args: Any, **kwargs: Any) -> Resize:
        """Linear (and bilinear) modes are `ResizeLinear`."""
        modes = [a.s for a in node.attribute if a.name == "mode"]
        if cls is Resize and modes and modes[0] in (b"linear", b"bilinear"):
            return super().__new__(ResizeLinear)
        return super().__new__(cls)

    def setup(self) -> None:
        mode = _text(self.attrs.get("mode"), "nearest")
        if mode not in self.modes:
            raise self.fail(f"mode={mode} is not supported (only nearest and linear)")
        self.coord = _text(self.attrs.get("coordinate_transformation_mode"), "half_pixel")
        if self.node.op_type == "Upsample" or self.settings.opset < 11:
            self.coord = "asymmetric"
        if self.coord not in _COORD_MODES:
            raise self.fail(f"coordinate_transformation_mode={self.coord} is not supported")
        self.nearest = _text(self.attrs.get("nearest_mode"), "round_prefer_floor")
        if self.settings.opset < 11:
            self.nearest = "floor"  # opset 10 Resize and Upsample: floor(x / scale)
        if self.nearest not in _NEAREST_MODES:
            raise self.fail(f"nearest_mode={self.nearest} is not supported")
        if int(self.attrs.get("antialias", 0)):
            raise self.fail("antialias is not supported")
        if self.attrs.get("axes") is not None:
            raise self.fail("the axes attribute is not supported")
        self.scales: list[Fraction] | None = None
        self.sizes: list[int] | None = None
        if self.node.op_type == "Upsample" and "scales" in self.attrs:
            self.scales = [Fraction(float(s)) for s in self.attrs["scales"]]
            return
        k_scales = 1 if (self.node.op_type == "Upsample" or self.settings.opset < 11) else 2
        if self.has_input(k_scales) and self.is_const(k_scales):
            c = np.asarray(self.info(k_scales).const, np.float64).reshape(-1)
            if c.size:
                self.scales = [Fraction(float(v)) for v in c]
        if self.scales is None and k_scales == 2 and self.has_input(3):
            self.sizes = self.static_ints(3)
        if self.scales is None and self.sizes is None:
            raise self.fail("scales or sizes must be given as constants")
        if self.scales is not None and any(s <= 0 for s in self.scales):
            raise self.fail("scales must be positive")

    def make_params(self) -> dict[str, I64]:
        """The data input only (scales and sizes are folded into the op)."""
        return {k: v for k, v in super().make_params().items() if k == "in0"}

    def _plan(self, shape: tuple[int, ...]) -> tuple[list[int], list[Fraction]]:
        rank = len(shape)
        if self.sizes is not None:
            if len(self.sizes) != rank:
                raise InvalidInputError(f"Resize node {self.label}: sizes must have rank {rank}")
            out = [int(v) for v in self.sizes]
            scales = [Fraction(o, n) if n else Fraction(1) for o, n in zip(out, shape, strict=True)]
            return out, scales
        assert self.scales is not None
        if len(self.scales) != rank:
            raise InvalidInputError(f"Resize node {self.label}: scales must have rank {rank}")
        out = [int(n * s) for n, s in zip(shape, self.scales, strict=True)]  # floor
        return out, list(self.scales)

    def _index(self, x: int, n: int, m: int, r: Fraction) -> int:
        c = self.coord
        if c == "half_pixel":
            v = (x + Fraction(1, 2)) / r - Fraction(1, 2)
        elif c == "pytorch_half_pixel":
            v = (x + Fraction(1, 2)) / r - Fraction(1, 2) if m > 1 else Fraction(0)
        elif c == "align_corners":
            v = Fraction(x * (n - 1), m - 1) if m > 1 else Fraction(0)
        elif c == "tf_half_pixel_for_nn":
            v = (x + Fraction(1, 2)) / r
        else:
            v = x / r
        fl = v.numerator // v.denominator
        frac = v - fl
        if self.nearest == "floor":
            i = fl
        elif self.nearest == "ceil":
            i = fl + (frac > 0)
        elif self.nearest == "round_prefer_ceil":
            i = fl + (frac >= Fraction(1, 2))
        else:
            i = fl + (frac > Fraction(1, 2))
        return min(max(int(i), 0), n - 1)

    def maps(self, shape: tuple[int, ...]) -> list[list[int]]:
        """Per axis, the source index of every output index."""
        out, scales = self._plan(shape)
        return [
            [self._index(x, n, m, r) for x in range(m)]
            for n, m, r in zip(shape, out, scales, strict=True)
        ]

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """The resized shape."""
        out, _ = self._plan(shape)
        if any(n == 0 and m > 0 for n, m in zip(shape, out, strict=True)):
            raise InvalidInputError(f"Resize node {self.label}: cannot resize an empty axis")
        return tuple(out)

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """Gather along each axis."""
        self.target(tuple(x.shape), ints)
        out = x
        for axis, m in enumerate(self.maps(tuple(x.shape))):
            out = np.take(out, np.asarray(m, np.int64), axis=axis)
        return np.ascontiguousarray(out)

    def source_index(self, flat: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """The mapped index along each axis."""
        out, scales = self._plan(in_shape)
        idx = [
            self._index(i, n, m, r)
            for i, n, m, r in zip(unravel(flat, out_shape), in_shape, out, scales, strict=True)
        ]
        return ravel(idx, in_shape)


_LIN_F = 16  # interpolation weights in Q16
_LIN_MAX_AXES = 2


class ResizeLinear(Resize):
    """Resize / Upsample in linear mode, over at most two interpolated axes.

    Per axis (input size n, output size m, scale r): the source coordinate v = T(x) in exact
    rationals (`coordinate_transformation_mode`: half_pixel, pytorch_half_pixel, align_corners,
    asymmetric), clamped to [0, n - 1]; i0 = floor(v), i1 = min(i0 + 1, n - 1),
    W1 = round(2**16 · (v - i0)), W0 = 2**16 - W1. An axis where every output index maps to
    the same input index with weight 2**16 is not interpolated. With d ≤ 2 interpolated axes,
    ``out = round_shift(Σ Π W · q, 16 · d)`` over the 2**d corners, exact int64, at the input's
    scale (a convex combination: nothing saturates).
    """

    modes = ("linear", "bilinear")
    movement = False

    def setup(self) -> None:
        super().setup()
        if self.info(0).kind != "q":
            raise self.fail("linear mode needs a real tensor")
        if self.coord == "tf_half_pixel_for_nn":
            raise self.fail("tf_half_pixel_for_nn is for nearest mode")

    def _coord(self, x: int, n: int, m: int, r: Fraction) -> Fraction:
        c = self.coord
        if c == "half_pixel":
            v = (x + Fraction(1, 2)) / r - Fraction(1, 2)
        elif c == "pytorch_half_pixel":
            v = (x + Fraction(1, 2)) / r - Fraction(1, 2) if m > 1 else Fraction(0)
        elif c == "align_corners":
            v = Fraction(x * (n - 1), m - 1) if m > 1 else Fraction(0)
        else:
            v = x / r
        return min(max(v, Fraction(0)), Fraction(n - 1))

    def axis_weights(self, shape: tuple[int, ...]) -> list[tuple[int, I64, I64, I64] | None]:
        """Per axis: None (not interpolated) or (axis, i0, i1, W1) over the output indices."""
        out, scales = self._plan(shape)
        res: list[tuple[int, I64, I64, I64] | None] = []
        for axis, (n, m, r) in enumerate(zip(shape, out, scales, strict=True)):
            i0, i1, w1 = [], [], []
            for x in range(m):
                v = self._coord(x, n, m, r)
                fl = v.numerator // v.denominator
                w = (v - fl) * (1 << _LIN_F)
                i0.append(fl)
                i1.append(min(fl + 1, n - 1))
                w1.append(int(w.numerator * 2 + w.denominator) // (2 * w.denominator))
            if m == n and i0 == list(range(n)) and not any(w1):
                res.append(None)
            else:
                res.append(
                    (axis, np.array(i0, np.int64), np.array(i1, np.int64), np.array(w1, np.int64))
                )
        if sum(a is not None for a in res) > _LIN_MAX_AXES:
            raise self.fail(f"linear interpolation over more than {_LIN_MAX_AXES} axes")
        return res

    def scale_policy(self) -> Any:
        """The input's scale."""
        return self.info(0).scale

    def run(self, xs: Any) -> I64:
        """Interpolate axis by axis in exact int64, round once."""
        a = self.x(xs, 0)
        shape = tuple(a.shape)
        self.target(shape, {})
        d = 0
        for spec in self.axis_weights(shape):
            if spec is None:
                continue
            axis, i0, i1, w1 = spec
            bshape = [1] * a.ndim
            bshape[axis] = -1
            w1b = w1.reshape(bshape)
            a = ((1 << _LIN_F) - w1b) * np.take(a, i0, axis=axis) + w1b * np.take(a, i1, axis=axis)
            d += 1
        return np.ascontiguousarray(round_shift(a, _LIN_F * d)) if d else a.copy()

    def calib_max(self, xs: Any) -> float:  # pragma: no cover - the scale is the input's
        """Not calibrated."""
        return 0.0

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The resized shape."""
        return self.target(self.in_shape(src, 0), {})

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the 2**d corners."""
        in_shape = self.in_shape(src, 0)
        idx = unravel(flat, out_shape)
        base = list(idx)
        corners: list[tuple[list[int], int]] = [([], 1)]
        d = 0
        specs = self.axis_weights(in_shape)
        for axis, spec in enumerate(specs):
            if spec is None:
                corners = [([*c, idx[axis]], w) for c, w in corners]
                continue
            _, i0, i1, w1 = spec
            x = base[axis]
            wa, wb = (1 << _LIN_F) - int(w1[x]), int(w1[x])
            corners = [([*c, int(i0[x])], w * wa) for c, w in corners] + [
                ([*c, int(i1[x])], w * wb) for c, w in corners
            ]
            d += 1
        flats = np.array([ravel(c, in_shape) for c, _ in corners], np.int64)
        vals = self.read(src, 0, flats)
        total = sum(int(v) * w for v, (_, w) in zip(vals.tolist(), corners, strict=True))
        return int(round_shift(np.array([total], np.int64), _LIN_F * d)[0])
