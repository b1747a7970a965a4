"""QLinearConv, QLinearMatMul and ConvInteger: pre-quantized integer ops at the model's own scales.

Inputs and outputs are exact integer tensors (the model's uint8/int8 values, kind "i"); nothing
is re-quantized. With x the input integers, w the constant weights, zp the zero points:

* **ConvInteger**: ``y = Σ (x - x_zp) · (w - w_zp[c])`` exactly (ONNX's int32; here int64).
* **QLinearConv**: ``acc = Σ (x - x_zp) · (w - w_zp[c]) + B[c]``, then
  ``y = clamp(rescale(acc, x_scale · w_scale[c] / y_scale) + y_zp, lo, hi)``.
* **QLinearMatMul**: ``acc = (A - a_zp) @ (B - b_zp)``, then
  ``y = clamp(rescale(acc, a_scale · b_scale[n] / y_scale) + y_zp, lo, hi)``.

``rescale`` is the executor's one rescaling rule (`_arith.make_rescale`: the ratio, computed in
float64 from the model's float32 scales, becomes a 31-bit multiplier and a shift; the product
is rounded half away from zero). [lo, hi] is the range of y_zp's type (uint8 when absent).
ONNX rounds half to even on the real ratio: the two differ by one step only where acc · ratio
is within 2**-31 relative of a half-integer, or exactly on one.
Padding contributes x_zp (zero after the shift), as ONNX specifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64, Rescale, apply_rescale
from edgetrust.runtime.fixed._base import ElementSource, Kind, Op, ScalePolicy, register, unravel
from edgetrust.runtime.fixed._conv import Conv
from edgetrust.runtime.fixed._integer import MatMulInteger

_RANGES: dict[str, tuple[int, int]] = {"uint8": (0, 255), "int8": (-128, 127)}


class _Quantized(Op):
    """Scale and zero-point reading shared by the three ops."""

    def const_scale(self, k: int, what: str) -> npt.NDArray[np.float64]:
        """A constant, positive, finite scale input (one value, or one per channel)."""
        if not self.is_const(k):
            raise self.fail(f"{what} (input {k}) must be a constant")
        s = np.asarray(self.info(k).const, np.float64).reshape(-1)
        if s.size == 0 or np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise self.fail(f"{what} must be positive and finite")
        return s

    def const_zp(self, k: int, what: str) -> npt.NDArray[np.int64]:
        """A constant zero point (0 when absent)."""
        if not self.has_input(k):
            return np.zeros(1, np.int64)
        if not self.is_const(k):
            raise self.fail(f"{what} (input {k}) must be a constant")
        return np.asarray(self.info(k).const, np.int64).reshape(-1)

    def zp_range(self, k: int, what: str, data: int | None = None) -> tuple[int, int]:
        """[lo, hi] of the zero point's type: uint8 or int8.

        An absent zero point (0) leaves the type to its `data` input: ConvInteger's x may be
        uint8 or int8 with no x_zero_point. The plan knows a graph input's values are integers,
        not which of the two types, so both ranges are allowed ([-128, 255]; the overflow
        bound uses it too). Without `data`, uint8.
        """
        if not self.has_input(k):
            dtype = self.info(data).dtype if data is not None else None
            if dtype in _RANGES:
                return _RANGES[dtype]
            return (
                (_RANGES["int8"][0], _RANGES["uint8"][1]) if data is not None else _RANGES["uint8"]
            )
        dtype = self.info(k).dtype or ""
        if dtype not in _RANGES:
            raise self.fail(f"{what} must be uint8 or int8, got {dtype or 'a computed tensor'}")
        return _RANGES[dtype]

    def check_range(self, x: I64, lo: int, hi: int, k: int) -> None:
        """Refuse input integers outside the range of their declared type."""
        if x.size and (int(x.min()) < lo or int(x.max()) > hi):
            raise InvalidInputError(
                f"node {self.label}: input {k} has values outside [{lo}, {hi}] (its type)"
            )


def _out(acc: I64, rs: Rescale, axis: int | None, zp: int, lo: int, hi: int) -> I64:
    out: I64 = apply_rescale(acc, rs, channel_axis=axis)
    out += zp
    np.clip(out, lo, hi, out=out)
    return out


def _out_one(acc: int, channel: int, src: ElementSource, zp: int, lo: int, hi: int) -> int:
    """One accumulator through its channel's committed multiplier."""
    nmult = src.param_shape("mult")[0]
    mult = src.read_param("mult", np.array([channel if nmult > 1 else 0]))
    rs = Rescale.from_params(mult, src.read_param("shift", np.arange(1)))
    return int(_out(np.array([acc], np.int64), rs, None, zp, lo, hi)[0])


class _IntConv(_Quantized, Conv):
    """Convolution of zero-point-shifted integers by constant integer weights."""

    X_ZP: ClassVar[int]
    W: ClassVar[int]
    W_ZP: ClassVar[int]

    def setup(self) -> None:
        if self.info(0).kind != "i":
            raise self.fail("input x must be an integer tensor")
        if not self.is_const(self.W) or self.info(self.W).kind != "i":
            raise self.fail("weights w must be a constant integer tensor")
        wshape = np.asarray(self.info(self.W).const).shape
        if len(wshape) != 4:
            raise self.fail("only 2-D convolution (4-D weights) is supported")
        self.oc, self.cg, self.kh, self.kw = (int(d) for d in wshape)
        self.conv_attrs()
        self.x_zp = self.const_zp(self.X_ZP, "x_zero_point")
        if self.x_zp.size != 1:
            raise self.fail("x_zero_point must be one value")
        self.x_lo, self.x_hi = self.zp_range(self.X_ZP, "x_zero_point", data=0)
        self.w_zp = self.const_zp(self.W_ZP, "w_zero_point")
        if self.w_zp.size not in (1, self.oc):
            raise self.fail(f"w_zero_point has {self.w_zp.size} values for {self.oc} channels")
        self.xmax = max(abs(self.x_lo - int(self.x_zp[0])), abs(self.x_hi - int(self.x_zp[0])))

    def out_kind(self) -> Kind:
        """Exact integers."""
        return "i"

    def scale_policy(self) -> ScalePolicy:
        """None: integers."""
        return None

    def weights(self) -> dict[str, Any]:
        """w - w_zp as (OC, Cg·KH·KW), and the int bias when given."""
        if not hasattr(self, "_weights"):
            w = np.asarray(self.info(self.W).const, np.int64).reshape(self.oc, -1)
            w = w - self.w_zp.reshape(-1, 1)
            self._weights: dict[str, Any] = {"w": w}
            self.wmax = max(int(np.max(np.abs(w), initial=0)), 1)
        return self._weights

    def make_params(self) -> dict[str, I64]:
        """The shifted weights."""
        return {"w": self.weights()["w"]}

    def has_bias_param(self) -> bool:
        """Whether param "b" exists."""
        return "b" in self.params()

    def shifted_sum(self, xs: Sequence[I64 | None], bias: I64 | None) -> I64:
        """Σ (x - x_zp) · (w - w_zp) (+ bias), exactly."""
        x = self.x(xs, 0)
        self.check_range(x, self.x_lo, self.x_hi, 0)
        self.weights()
        return self.conv_sum(x - int(self.x_zp[0]), bias, self.xmax, self.wmax)

    def calib_max(self, xs: Any) -> float:  # pragma: no cover - integer outputs are not scaled
        """Not calibrated."""
        return 0.0


@register
class ConvInteger(_IntConv):
    """Exact integer convolution (int64 output)."""

    op_types = ("ConvInteger",)
    X_ZP, W, W_ZP = 2, 1, 3

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """The exact sums."""
        return self.shifted_sum(xs, None)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One receptive field times one weight row."""
        return self.field_sum(flat, out_shape, src, int(self.x_zp[0]))


@register
class QLinearConv(_IntConv):
    """Integer convolution, int32 bias, requantized to the model's output scale and zero point."""

    op_types = ("QLinearConv",)
    X_ZP, W, W_ZP = 2, 3, 5

    def setup(self) -> None:
        super().setup()
        x_scale = self.const_scale(1, "x_scale")
        w_scale = self.const_scale(4, "w_scale")
        y_scale = self.const_scale(6, "y_scale")
        if x_scale.size != 1 or y_scale.size != 1:
            raise self.fail("x_scale and y_scale must be one value")
        if w_scale.size not in (1, self.oc):
            raise self.fail(f"w_scale has {w_scale.size} values for {self.oc} channels")
        self.rs = self.make_rescale(x_scale[0] * w_scale / y_scale[0])
        self.y_zp = self.const_zp(7, "y_zero_point")
        if self.y_zp.size != 1:
            raise self.fail("y_zero_point must be one value")
        self.y_lo, self.y_hi = self.zp_range(7, "y_zero_point")
        if self.has_input(8) and (not self.is_const(8) or self.info(8).kind != "i"):
            raise self.fail("bias B must be a constant integer tensor")

    def make_params(self) -> dict[str, I64]:
        """Shifted weights, bias (zeros when absent) and the multipliers."""
        b = np.zeros(self.oc, np.int64)
        if self.has_input(8):
            b = np.asarray(self.info(8).const, np.int64).reshape(-1)
            if b.size != self.oc:
                raise self.fail(f"bias has {b.size} values for {self.oc} channels")
        return {"w": self.weights()["w"], "b": b, **self.rs.params()}

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Sum, rescale, add y_zp, clamp."""
        acc = self.shifted_sum(xs, self.params()["b"])
        return _out(acc, self.rs, 1, int(self.y_zp[0]), self.y_lo, self.y_hi)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One receptive field, its bias, its channel's multiplier."""
        oc = unravel(flat, out_shape)[1]
        acc = self.field_sum(flat, out_shape, src, int(self.x_zp[0]))
        return _out_one(acc, oc, src, int(self.y_zp[0]), self.y_lo, self.y_hi)


@register
class QLinearMatMul(_Quantized, MatMulInteger):
    """(A - a_zp) @ (B - b_zp), requantized to the model's output scale and zero point."""

    op_types = ("QLinearMatMul",)
    A, B, AZ, BZ = 0, 3, 2, 5

    def setup(self) -> None:
        super().setup()
        a_scale = self.const_scale(1, "a_scale")
        b_scale = self.const_scale(4, "b_scale")
        y_scale = self.const_scale(6, "y_scale")
        if a_scale.size != 1 or y_scale.size != 1:
            raise self.fail("a_scale and y_scale must be one value")
        if self.b_const:
            n = int(np.asarray(self.info(self.B).const).shape[1])
            if b_scale.size not in (1, n):
                raise self.fail(f"b_scale has {b_scale.size} values for {n} columns")
        elif b_scale.size != 1:
            raise self.fail("a per-column b_scale needs a constant B")
        self.rs = self.make_rescale(a_scale[0] * b_scale / y_scale[0])
        self.y_zp = self.const_zp(7, "y_zero_point")
        if self.y_zp.size != 1:
            raise self.fail("y_zero_point must be one value")
        self.y_lo, self.y_hi = self.zp_range(7, "y_zero_point")
        self.a_lo, self.a_hi = self.zp_range(self.AZ, "a_zero_point")

    def make_params(self) -> dict[str, I64]:
        """Shifted B when constant, and the multipliers."""
        return {**super().make_params(), **self.rs.params()}

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Exact product, rescale per column, add y_zp, clamp."""
        a = xs[self.A]
        if a is not None:
            self.check_range(np.asarray(a, np.int64), self.a_lo, self.a_hi, self.A)
        acc = self.product(xs)
        return _out(acc, self.rs, acc.ndim - 1, int(self.y_zp[0]), self.y_lo, self.y_hi)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One row times one column, that column's multiplier."""
        acc = self.dot(flat, out_shape, src)
        n = flat % out_shape[-1]
        return _out_one(acc, n, src, int(self.y_zp[0]), self.y_lo, self.y_hi)
