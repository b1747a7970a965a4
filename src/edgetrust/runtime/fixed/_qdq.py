"""QuantizeLinear and DequantizeLinear: pre-quantized (QDQ) models at their own scales.

* **QuantizeLinear** (x real at scale s; y_scale, y_zero_point constant, per tensor):
  ``y = clamp(round_half_even(q · s / y_scale) + zp, lo, hi)`` in exact rationals, an exact
  integer tensor; [lo, hi] is the range of the zero point's type (uint8 when absent; int8,
  uint16, int16 too). A constant x (per-axis scales allowed) is folded at plan time in float64.
* **DequantizeLinear** (x integers; x_scale, x_zero_point constant, per tensor): the real
  tensor at scale x_scale with integers ``x - zp`` (exact), saturated to ±qmax: at int16 every
  8-bit model is exact; at int8 the one value x - zp = -128 (and beyond 127, for uint8 zero
  points far from 128) saturates. A constant x (weights, int32 biases; per-axis scales allowed)
  is folded at plan time to float64 ``(x - zp) · scale`` (exact: 32-bit integers times a
  float32 scale), which the consuming Conv/Gemm quantizes per channel as any float weight:
  symmetric int8 weights come out as the very same integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from edgetrust.runtime.fixed._arith import I64, quantize
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    const_scale,
    register,
)
from edgetrust.runtime.fixed._lut import LazyTable

_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255),
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767),
}
_ZP_TYPES: dict[str, int] = {
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
}


class _QDQ(Op):
    def _const(self, k: int) -> npt.NDArray[Any]:
        if not self.is_const(k):
            raise self.fail(f"input {k} (scale or zero point) must be a constant")
        return np.asarray(self.info(k).const)

    def _zero_point(self, size: int) -> npt.NDArray[np.int64]:
        if not self.has_input(2):
            return np.zeros(size, np.int64)
        return np.asarray(self._const(2), np.int64).reshape(-1)

    def _axis_shape(self, ndim: int, size: int) -> list[int]:
        axis = int(self.attrs.get("axis", 1))
        axis = axis + ndim if axis < 0 else axis
        if size > 1 and not 0 <= axis < ndim:
            raise self.fail(f"axis {axis} is out of range")
        shape = [1] * ndim
        if size > 1:
            shape[axis] = size
        return shape

    def make_params(self) -> dict[str, I64]:
        """The data input only (scales and zero points are part of the definition)."""
        out = super().make_params()
        return {k: v for k, v in out.items() if k == "in0"}

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as x."""
        return self.in_shape(src, 0)

    def const_out(self) -> I64 | None:
        """For a constant x, the output integers (the folded value, as the trace holds it)."""
        info = self.info(0)
        if info.const is None:
            return None
        if "_const_out" not in self.__dict__:
            v = self.fold([np.asarray(info.const)])
            if self.out_kind() == "q":
                assert self.out_scale is not None
                v = quantize(v, self.out_scale, self.qmax)
            self._const_out = np.asarray(v, np.int64)
        return self._const_out

    def can_fold(self) -> bool:
        """Constants fold at plan time."""
        return True


@register
class QuantizeLinear(_QDQ):
    """Real → integers at the model's own scale and zero point."""

    op_types = ("QuantizeLinear",)

    def setup(self) -> None:
        self.y_scale = np.asarray(self._const(1), np.float64).reshape(-1)
        if np.any(~np.isfinite(self.y_scale)) or np.any(self.y_scale <= 0):
            raise self.fail("y_scale must be positive and finite")
        zp_type: int = int(TensorProto.UINT8)
        if self.has_input(2):
            self._const(2)
            zp_type = _ZP_TYPES.get(self.info(2).dtype or "", -1)
        out_type = self.attrs.get("output_dtype")
        if out_type:
            zp_type = int(out_type)
        if zp_type not in _RANGES:
            raise self.fail("only 8- and 16-bit integer outputs are supported")
        self.lo, self.hi = _RANGES[zp_type]
        self.zp = self._zero_point(self.y_scale.size)
        if self.info(0).const is None and (self.y_scale.size != 1 or self.zp.size != 1):
            raise self.fail("per-axis quantization of an activation is not supported")

    def out_kind(self) -> Kind:
        """Exact integers."""
        return "i"

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """float64, per axis: rint(x / scale) + zp, clamped."""
        x = np.asarray(consts[0], np.float64)
        shape = self._axis_shape(x.ndim, self.y_scale.size)
        y = np.rint(x / self.y_scale.reshape(shape)) + self.zp.reshape(shape)
        return np.clip(y, self.lo, self.hi).astype(np.int64)

    def entry(self, q: int) -> int:
        """clamp(round_half_even(q · s / y_scale) + zp)."""
        s = self.info(0).scale
        assert s is not None
        v = Fraction(q) * Fraction(s) / Fraction(float(self.y_scale[0]))
        return max(self.lo, min(self.hi, round(v) + int(self.zp[0])))  # round(): half to even

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """By table over the integers seen."""
        c = self.const_out()
        if c is not None:
            return c.copy()
        if "_table" not in self.__dict__:
            self._table = LazyTable(self.qmax, self.entry)
        return self._table(self.x(xs, 0))

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One element."""
        c = self.const_out()
        if c is not None:
            return int(c.reshape(-1)[flat])
        return self.entry(int(self.read(src, 0, [flat])[0]))


@register
class DequantizeLinear(_QDQ):
    """Integers → real at the model's own scale (folded for constants)."""

    op_types = ("DequantizeLinear",)

    def setup(self) -> None:
        self.x_scale = np.asarray(self._const(1), np.float64).reshape(-1)
        if np.any(~np.isfinite(self.x_scale)) or np.any(self.x_scale <= 0):
            raise self.fail("x_scale must be positive and finite")
        self.zp = self._zero_point(self.x_scale.size)
        info = self.info(0)
        if info.const is None:
            if info.kind != "i":
                raise self.fail("x must be an integer tensor")
            if self.x_scale.size != 1 or self.zp.size != 1:
                raise self.fail("per-axis dequantization of an activation is not supported")
        else:
            self._folded = self.fold([np.asarray(info.const)])

    def out_kind(self) -> Kind:
        """Real."""
        return "q"

    def scale_policy(self) -> ScalePolicy:
        """x_scale (the model's own); for constants, their own max / qmax."""
        if self.info(0).const is not None:
            return const_scale(self._folded, self.qmax)
        return float(self.x_scale[0])

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """(x - zp) · scale in float64, per axis."""
        x = np.asarray(consts[0], np.int64)
        shape = self._axis_shape(x.ndim, self.x_scale.size)
        out: npt.NDArray[Any] = (x - self.zp.reshape(shape)).astype(
            np.float64
        ) * self.x_scale.reshape(shape)
        return out

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """x - zp, saturated to ±qmax."""
        c = self.const_out()
        if c is not None:
            return c.copy()
        x = self.x(xs, 0)
        out: I64 = np.clip(x - int(self.zp[0]), -self.qmax, self.qmax)
        return out

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One element."""
        c = self.const_out()
        if c is not None:
            return int(c.reshape(-1)[flat])
        x = int(self.read(src, 0, [flat])[0])
        return max(-self.qmax, min(self.qmax, x - int(self.zp[0])))
