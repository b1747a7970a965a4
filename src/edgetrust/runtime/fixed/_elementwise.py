"""Element-wise ops: Add, Sub, Sum, Mul, Div, Relu, Clip, Cast, and the nonlinear Erf,
Sigmoid, Tanh, Exp (BatchNormalization, defined below, lives in `_batchnorm`).

Integer definitions (q = input integers, s = scales, R(x, r) = round_half_away(x · r) by an
integer multiplier, sat = saturation to [-qmax, qmax]):

* Add/Sub/Sum: ``wide = Σ ±q_k · W_k`` with W_k = round(s_k / s_w), s_w = max_k s_k / 2**30;
  ``out = sat(R(wide, s_w / s_out))``.
* Mul: ``out = sat(R(q_a · q_b, s_a · s_b / s_out))``. Div by a constant c is Mul by the
  constant 1/c (computed in float64, correctly rounded). Integer tensors use exact integer
  arithmetic (Div truncates toward zero, as ONNX does).
* Relu: ``max(q, 0)``; Clip: ``clip(q, round(lo / s), round(hi / s))``; both keep the scale.
* BatchNormalization: per channel ``a = γ / √(var + ε)``, ``b = β - mean · a`` in float64
  at plan time; ``wide = q · A_c + B_c`` with A_c = round(a_c·s/s_w), B_c = round(b_c/s_w).
* Erf, Sigmoid, Tanh: the argument goes to Q16 (``R(q, s · 2**16)``), the function is a table
  in Q30 (`_nonlinear`), and ``out = round(v · qmax / 2**30)`` with the fixed scale 1/qmax.
* Exp: ``e**x = m · 2**(k - 30)`` from the 2**f table; ``out = sat(round(m · 2**k / (2**30 ·
  s_out)))`` with a calibrated s_out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _arith as arith
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    I64,
    MIN_BLOCKED,
    apply_rescale,
    narrow_dtype,
    quantize,
    requantize_block,
    round_float,
    round_shift,
    round_shift_nonneg,
    saturate,
)
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    broadcast_index,
    broadcast_shapes,
    const_scale,
    register,
    unravel,
)
from edgetrust.runtime.fixed._lut import const_pattern, lut_run


class _Broadcasting(Op):
    """Ops whose output element depends on one broadcast element of each input."""

    def present(self) -> list[int]:
        """Indices of the inputs that are given."""
        return [k for k, i in enumerate(self.infos) if i is not None]

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """numpy broadcasting of all input shapes."""
        return broadcast_shapes(
            [self.in_shape(src, k) for k in self.present()], lambda: f"node {self.label}"
        )

    def combine(self, xs: list[I64]) -> I64:
        """The integer definition on broadcast-compatible arrays."""
        raise NotImplementedError

    lut = False
    """Whether `run` may evaluate `combine` by table (`_lut`): element-wise, real output."""

    def lut_pattern(self, vals: list[I64], ndim: int) -> tuple[int, ...] | None:
        """Shape (rank `ndim`) along which the op's constants vary: the constant inputs'."""
        present = self.present()
        return const_pattern(
            [vals[i].shape for i, k in enumerate(present) if self.is_const(k)], ndim
        )

    def set_out_scale(self, scale: float | None) -> None:
        """Fix the output scale (and forget any table built for another)."""
        self.__dict__.pop("_lut_cache", None)
        super().set_out_scale(scale)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Broadcast and combine (by table when `lut` applies: the same integers)."""
        vals = [self.x(xs, k) for k in self.present()]
        broadcast_shapes([v.shape for v in vals], lambda: f"node {self.label}")
        if self.lut and self.out_kind() == "q":
            present = self.present()
            var = [i for i, k in enumerate(present) if not self.is_const(k)]
            if var and all(self.info(present[i]).kind == "q" for i in var):
                cache = self.__dict__.setdefault("_lut_cache", {})
                pattern = self.lut_pattern(vals, vals[var[0]].ndim)
                out = lut_run(cache, vals, var, pattern, self.qmax, self.combine)
                if out is not None:
                    return out
        return self.combine(vals)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read one element per input; combine."""
        idx = unravel(flat, out_shape)
        vals = []
        for k in self.present():
            shape = self.in_shape(src, k)
            vals.append(self.read(src, k, [broadcast_index(idx, shape)]).reshape(()))
        return int(self.combine(vals))


class _Rescaled(_Broadcasting):
    """Element-wise ops on real inputs whose wide result is requantized to a calibrated scale."""

    lut = True

    def wide_scale(self) -> float:
        """Real value of one step of the wide (pre-requantization) integer."""
        raise NotImplementedError

    def wide(self, xs: list[I64]) -> I64:
        """The exact wide integer result."""
        raise NotImplementedError

    def set_out_scale(self, scale: float | None) -> None:
        """Fix the output scale and derive the requantization multiplier."""
        super().set_out_scale(scale)
        if scale is not None and self.out_kind() == "q":
            self.rs = self.make_rescale(self.wide_scale() / scale)

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """max |wide| · wide scale."""
        w = self.wide([self.x(xs, k) for k in self.present()])
        return float(np.max(np.abs(w), initial=0)) * self.wide_scale()

    def combine(self, xs: list[I64]) -> I64:
        """Wide result, requantized (in place, by blocks, on a large fresh wide array)."""
        if self.out_kind() == "i":
            return self.int_combine(xs)
        w = self.wide(xs)
        if (
            w.size >= MIN_BLOCKED
            and self.rs.mult.size == 1
            and w.dtype == np.int64
            and w.flags.c_contiguous
            and w.flags.writeable
            and not any(np.may_share_memory(w, x) for x in xs)
        ):
            flat = w.reshape(-1)
            for i in range(0, flat.size, arith.BLOCK):
                requantize_block(flat[i : i + arith.BLOCK], self.rs, self.qmax)
            return w
        return saturate(apply_rescale(w, self.rs), self.qmax)

    def int_combine(self, xs: list[I64]) -> I64:
        """Exact integer version (shape arithmetic)."""
        raise self.fail("integer inputs are not supported")

    def check_kinds(self) -> None:
        """Inputs must be all real or all integer."""
        kinds = {self.info(k).kind for k in self.present()}
        if len(kinds) > 1:
            raise self.fail("mixes integer and real inputs (add a Cast)")


@register
class AddSub(_Rescaled):
    """Add, Sub and Sum (variadic)."""

    op_types = ("Add", "Sub", "Sum")
    narrow_inputs = True
    """Two same-shape real inputs go through one compiled pass in any integer width (a
    residual sum of two Conv outputs); every other path reads them widened to int64."""
    narrow_out = False
    """Set by the executor once planned: that pass may write int8/int16 (as `Conv`'s)."""

    def x(self, xs: Sequence[I64 | None], k: int) -> I64:
        """Input `k` as int64 (a narrow activation widened)."""
        v = super().x(xs, k)
        return v if v.dtype == np.int64 else v.astype(np.int64)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Two same-shape real inputs: ``sat(R(q_0 · W_0 + q_1 · W_1))`` in one compiled pass
        (`_kernels.add_requant`, the same integers as `combine`); else `combine`."""
        out = self._compiled(xs, relu=False)
        return out if out is not None else super().run(xs)

    def run_relu(self, xs: Sequence[I64 | None]) -> I64 | None:
        """``max(run(xs), 0)`` - this node and a Relu reading it alone - in the compiled
        pass (clipping to [0, qmax]: the same integers); None where that pass does not
        apply (the caller then runs the two nodes)."""
        return self._compiled(xs, relu=True)

    def _compiled(self, xs: Sequence[I64 | None], relu: bool) -> I64 | None:
        present = self.present()
        rs = self.__dict__.get("rs")
        if len(present) != 2 or self.out_kind() != "q" or rs is None or rs.mult.size != 1:
            return None
        a, b = (super(AddSub, self).x(xs, k) for k in present)
        if a.shape != b.shape:
            return None
        wa, wb = self.weights_
        dtype = narrow_dtype(self.qmax) if self.narrow_out else np.int64
        return _kernels.add_requant(
            a, b, wa, wb, rs.mult, rs.shift, self.qmax, relu=relu, dtype=dtype
        )

    def setup(self) -> None:
        if not self.present():
            raise self.fail("needs at least one input")
        self.check_kinds()
        if self.out_kind() == "q":
            scales = [self.info(k).scale or 1.0 for k in self.present()]
            self._wscale = max(scales) / (1 << 30)
            signs = [1] * len(scales)
            if self.node.op_type == "Sub":
                signs[1] = -1
            self.weights_ = [
                sign * int(round_float(np.array(s / self._wscale)))
                for sign, s in zip(signs, scales, strict=True)
            ]

    def wide_scale(self) -> float:
        """max input scale / 2**30."""
        return self._wscale

    def wide(self, xs: list[I64]) -> I64:
        """Σ ±q_k · W_k: |result| ≤ n · qmax · 2**30 < 2**62."""
        total = xs[0] * self.weights_[0]
        for x, w in zip(xs[1:], self.weights_[1:], strict=True):
            if np.broadcast_shapes(total.shape, x.shape) == total.shape:
                total += x * w  # the same int64 sum, without a new full-size array
            else:
                total = total + x * w
        return total

    def combine(self, xs: list[I64]) -> I64:
        """Wide result, requantized (by blocks when the inputs share one shape)."""
        if (
            self.out_kind() == "q"
            and xs[0].size >= MIN_BLOCKED
            and self.rs.mult.size == 1
            and all(x.shape == xs[0].shape for x in xs)
        ):
            return self._blocked(xs)
        return super().combine(xs)

    def _blocked(self, xs: list[I64]) -> I64:
        """`combine` block by block: ``w = Σ ±q_k · W_k`` (the same int64 operations, in the
        same order, as `wide`) written into the output, then `requantize_block` in place."""
        flat = [np.ascontiguousarray(x).reshape(-1) for x in xs]
        out = np.empty(xs[0].shape, np.int64)
        of = out.reshape(-1)
        tmp = np.empty(min(arith.BLOCK, of.size), np.int64)
        for i in range(0, of.size, arith.BLOCK):
            w = of[i : i + arith.BLOCK]
            np.multiply(flat[0][i : i + arith.BLOCK], self.weights_[0], out=w)
            for f, weight in zip(flat[1:], self.weights_[1:], strict=True):
                part = tmp[: w.size]
                np.multiply(f[i : i + arith.BLOCK], weight, out=part)
                w += part
            requantize_block(w, self.rs, self.qmax)
        return out

    def int_combine(self, xs: list[I64]) -> I64:
        """Exact integer sum or difference."""
        if self.node.op_type == "Sub":
            return xs[0] - xs[1]
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


@register
class Mul(_Rescaled):
    """Mul: the exact product, requantized."""

    op_types = ("Mul",)

    def setup(self) -> None:
        self.check_kinds()
        if self.out_kind() == "q":
            sa, sb = self.info(0).scale, self.info(1).scale
            assert sa is not None and sb is not None
            self._wscale = sa * sb

    def wide_scale(self) -> float:
        """s_a · s_b."""
        return self._wscale

    def wide(self, xs: list[I64]) -> I64:
        """q_a · q_b."""
        return xs[0] * xs[1]

    def int_combine(self, xs: list[I64]) -> I64:
        """Exact integer product."""
        return xs[0] * xs[1]


@register
class Div(_Rescaled):
    """Div: by a constant (as Mul by its reciprocal), or exact integer division."""

    op_types = ("Div",)

    def setup(self) -> None:
        self.check_kinds()
        if self.out_kind() == "i":
            return
        if not self.is_const(1):
            raise self.fail("division by a non-constant real tensor is not supported")
        c = np.asarray(self.info(1).const, np.float64)
        if np.any(c == 0):
            raise self.fail("division by zero")
        self.recip = 1.0 / c
        self.recip_scale = const_scale(self.recip, self.qmax)
        sa = self.info(0).scale
        assert sa is not None
        self._wscale = sa * self.recip_scale

    def make_params(self) -> dict[str, I64]:
        """The quantized reciprocal replaces the constant divisor."""
        out = super().make_params()
        if self.out_kind() == "q":
            out["in1"] = quantize(self.recip, self.recip_scale, self.qmax)
        return out

    def wide_scale(self) -> float:
        """s_a · s_(1/c)."""
        return self._wscale

    def wide(self, xs: list[I64]) -> I64:
        """q_a · q_(1/c)."""
        return xs[0] * xs[1]

    def int_combine(self, xs: list[I64]) -> I64:
        """Integer division truncating toward zero."""
        a, b = np.broadcast_arrays(xs[0], xs[1])
        if np.any(b == 0):
            raise InvalidInputError(f"Div node {self.label}: integer division by zero")
        q = np.abs(a) // np.abs(b)
        out: I64 = np.where((a < 0) != (b < 0), -q, q)
        return out


class _SameScale(_Broadcasting):
    """Ops that keep the first input's scale."""

    def scale_policy(self) -> ScalePolicy:
        """The input's scale (None for integers)."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def out_kind(self) -> Kind:
        """The input's kind."""
        return self.info(0).kind

    def present(self) -> list[int]:
        """Only the data input is element-wise."""
        return [0]


@register
class Relu(_SameScale):
    """max(q, 0)."""

    op_types = ("Relu",)
    narrow_inputs = True  # max(q, 0) in the input's own integer type

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """max(q, 0), without the broadcasting machinery (one input)."""
        out: I64 = np.maximum(self.x(xs, 0), 0)
        return out

    def combine(self, xs: list[I64]) -> I64:
        """max(q, 0)."""
        return np.maximum(xs[0], 0)


class ReluPost:
    """``max(w, 0)`` on a block ``w`` of channels [c0, c1) in place: a Relu fused behind a
    Conv (a class, so that a compiled Conv epilogue can recognize it and clip to [0, qmax]
    in its own pass: `_kernels.channel_epilogue`)."""

    def __call__(self, w: I64, c0: int, c1: int) -> None:
        """Rewrite the block."""
        np.maximum(w, 0, out=w)


RELU_POST = ReluPost()


class KeptRelu:
    """A Relu behind a Conv in a run that keeps both values (`_steps.kept_relus`). As a post
    it leaves each block as it is - the Conv's own output is kept - and a compiled Conv
    epilogue that recognizes it also writes ``max(·, 0)`` of its results into `relu` in the
    same pass. `relu` stays None where no compiled epilogue ran (the Relu then runs itself).
    One instance per call: it holds that call's result."""

    def __init__(self) -> None:
        self.relu: I64 | None = None

    def __call__(self, w: I64, c0: int, c1: int) -> None:
        """Nothing: the block is the Conv's output."""


@register
class Clip(_SameScale):
    """clip(q, lo, hi) with the bounds quantized to the input's scale."""

    op_types = ("Clip",)

    def setup(self) -> None:
        info = self.info(0)
        lo: float | None
        hi: float | None
        if self.settings.opset < 11:
            lo = float(self.attrs.get("min", -np.inf))
            hi = float(self.attrs.get("max", np.inf))
        else:
            lo = self._bound(1)
            hi = self._bound(2)
        big = self.qmax if info.kind == "q" else 1 << 62
        self.lo, self.hi = -big, big
        for which, v in (("lo", lo), ("hi", hi)):
            if v is None or not np.isfinite(v):
                continue
            if info.kind == "q":
                assert info.scale is not None
                q = int(np.clip(round_float(np.array(v / info.scale)), -big, big))
            else:
                q = int(np.ceil(v)) if which == "lo" else int(np.floor(v))
            setattr(self, which, q)

    def _bound(self, k: int) -> float | None:
        if not self.has_input(k):
            return None
        if not self.is_const(k):
            raise self.fail("min and max must be constants")
        c = np.asarray(self.info(k).const, np.float64).reshape(-1)
        if c.size != 1:
            raise self.fail("min and max must be scalars")
        return float(c[0])

    def make_params(self) -> dict[str, I64]:
        """Bounds are folded into the op; no params."""
        return {}

    def combine(self, xs: list[I64]) -> I64:
        """clip(q, lo, hi)."""
        return np.clip(xs[0], self.lo, self.hi)


_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_INT_TYPES = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
}


@register
class Cast(_Broadcasting):
    """Cast between integer and real tensors.

    Integer → real: the integers themselves at scale 1, saturated to ±qmax (so masks and
    small counts are exact). Real → integer: truncation toward zero of q · s, as ONNX does.
    Real → real and integer → integer: unchanged.
    """

    op_types = ("Cast",)

    def setup(self) -> None:
        to = int(self.attrs.get("to", 0))
        if to in _FLOAT_TYPES:
            self.to: Kind = "q"
        elif to in _INT_TYPES:
            self.to = "i"
        else:
            raise self.fail(f"cast to type {to} is not supported")

    def out_kind(self) -> Kind:
        """The target kind."""
        return self.to

    def scale_policy(self) -> ScalePolicy:
        """Scale 1 for integers turned real; the input's scale otherwise."""
        if self.to == "i":
            return None
        return self.info(0).scale if self.info(0).kind == "q" else 1.0

    def combine(self, xs: list[I64]) -> I64:
        """Convert."""
        src = self.info(0).kind
        if src == self.to:
            return xs[0]
        if self.to == "q":
            return np.clip(xs[0], -self.qmax, self.qmax)
        scale = self.info(0).scale
        assert scale is not None
        return np.trunc(xs[0].astype(np.float64) * scale).astype(np.int64)


class _Unary(_Broadcasting):
    """Nonlinear functions of one real input, through Q16 arguments."""

    lut = True

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        assert info.scale is not None
        self.to_q16 = self.make_rescale(info.scale * (1 << nl.IN_FRAC_BITS))

    def present(self) -> list[int]:
        """One input."""
        return [0]

    def q16(self, x: I64) -> I64:
        """The argument in Q16, clamped to ±2**40 (far beyond every table's range)."""
        return np.clip(apply_rescale(x, self.to_q16), -(1 << 40), 1 << 40)


class _UnitRange(_Unary):
    """Functions with values in [-1, 1]: fixed output scale 1/qmax."""

    def scale_policy(self) -> ScalePolicy:
        """1 / qmax."""
        return 1.0 / self.qmax

    def q30(self, u: I64) -> I64:
        """The function in Q30."""
        raise NotImplementedError

    def combine(self, xs: list[I64]) -> I64:
        """round(f(x) · qmax)."""
        return round_shift(self.q30(self.q16(xs[0])) * self.qmax, 30)


@register
class Erf(_UnitRange):
    """erf by table (GELU graphs use it as x · (1 + erf(x / √2)) / 2)."""

    op_types = ("Erf",)

    def q30(self, u: I64) -> I64:
        """erf in Q30."""
        return nl.erf_q30(u)


@register
class Sigmoid(_UnitRange):
    """1 / (1 + e**-x)."""

    op_types = ("Sigmoid",)

    def q30(self, u: I64) -> I64:
        """sigmoid in Q30."""
        return nl.sigmoid_q30(u)


@register
class Tanh(_UnitRange):
    """tanh."""

    op_types = ("Tanh",)

    def q30(self, u: I64) -> I64:
        """tanh in Q30."""
        return nl.tanh_q30(u)


@register
class Exp(_Unary):
    """e**x with a calibrated output scale."""

    op_types = ("Exp",)

    def scale_policy(self) -> ScalePolicy:
        """Calibrated."""
        return "calibrate"

    def parts(self, x: I64) -> tuple[I64, I64]:
        """(m, k) with e**x = m · 2**(k - 30)."""
        return nl.exp_q30_parts(self.q16(x))

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """Largest e**x."""
        m, k = self.parts(self.x(xs, 0))
        if m.size == 0:
            return 0.0
        return float(np.max(np.ldexp(m.astype(np.float64), (k - 30).astype(np.int32))))

    def set_out_scale(self, scale: float | None) -> None:
        """Multiplier for 2**-30 / s_out."""
        super().set_out_scale(scale)
        if scale is not None:
            self.rs = self.make_rescale((2.0**-30) / scale)

    def combine(self, xs: list[I64]) -> I64:
        """round(m · mult / 2**(shift - k)), saturated."""
        m, k = self.parts(xs[0])
        mult = int(self.rs.mult.reshape(-1)[0])
        s = self.rs.shift - k
        prod = m * mult  # ≤ 2**31 · 2**31
        small = round_shift_nonneg(prod, np.clip(s, 0, 62))
        out = np.where(s < 1, np.int64(self.qmax), np.where(s > 62, 0, small))
        return saturate(out, self.qmax)


def q16_of(x: npt.ArrayLike) -> I64:
    """Helper for tests: real values to Q16 integers."""
    return round_float(np.asarray(x, np.float64) * (1 << nl.IN_FRAC_BITS)).astype(np.int64)
