"""More element-wise ops: Neg, Abs, LeakyRelu, PRelu, Max, Min, HardSigmoid, HardSwish, the
comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual) and Where.

Integer definitions (q = input integers at scale s, R(x, r) = round_half_away(x · r) by an
integer multiplier, sat = saturation to [-qmax, qmax]):

* Neg: ``-q``; Abs: ``|q|``; both keep the scale (exact).
* LeakyRelu (α) and PRelu (a constant slope, broadcast): ``q`` where q ≥ 0, else
  ``sat(round_shift(q · A, 30))`` with ``A = round(α · 2**30)`` (|α| ≤ 2**16); the scale is kept.
* Max, Min (variadic, real): every input is brought to the largest input scale s_m by
  ``R(q_k, s_k / s_m)`` (a ratio ≤ 1: exact when the scales are equal), then the element-wise
  max/min; the output scale is s_m. Integer inputs: exact max/min.
* HardSigmoid (α, β): ``clip(R(q, α · s · qmax) + round(β · qmax), 0, qmax)`` at the fixed
  scale 1/qmax.
* HardSwish: ``h = clip(R(q, s · 2**15 / 6) + 2**14, 0, 2**15)`` (hardsigmoid in Q15), then
  ``round_shift(q · h, 15)`` at the input's scale (|x · h(x)| ≤ |x|, so nothing saturates).
* Comparisons: 0/1 integers; real inputs compared as ``q_a · W_a`` vs ``q_b · W_b`` with
  ``W_k = round(s_k / s_w)``, ``s_w = max(s_a, s_b) / 2**30``; integers exactly.
* Where: ``cond ≠ 0 ? x : y`` with real branches brought to the larger scale as in Max.
"""

from __future__ import annotations

import numpy as np

from edgetrust.runtime.fixed._arith import (
    I64,
    apply_rescale,
    round_float,
    round_shift,
    saturate,
)
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    ScalePolicy,
    broadcast_index,
    register,
    unravel,
)
from edgetrust.runtime.fixed._elementwise import _Broadcasting, _SameScale

_SLOPE_BITS = 30


@register
class NegAbs(_SameScale):
    """-q and |q|, exact, for real and integer tensors."""

    op_types = ("Neg", "Abs")

    def combine(self, xs: list[I64]) -> I64:
        """Negate or take the absolute value."""
        out: I64 = -xs[0] if self.node.op_type == "Neg" else np.abs(xs[0])
        return out


class _Slope(_SameScale):
    """q where q ≥ 0, else q times a slope in Q30."""

    def setup(self) -> None:
        if self.info(0).kind != "q":
            raise self.fail("input must be a real tensor")

    def slope(self) -> np.ndarray:
        """The slope(s), float64."""
        raise NotImplementedError

    def make_params(self) -> dict[str, I64]:
        """The slope in Q30."""
        a = self.slope()
        if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 2.0**16):
            raise self.fail("the slope must be finite with |slope| ≤ 65536")
        return {"slope": round_float(a * 2.0**_SLOPE_BITS).astype(np.int64)}

    def combine(self, xs: list[I64]) -> I64:
        """The definition, on broadcast arrays."""
        q = xs[0]
        a = self.params()["slope"]
        neg = saturate(round_shift(q * a, _SLOPE_BITS), self.qmax)
        out: I64 = np.where(q >= 0, q, neg)
        return out

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """The element and its slope."""
        idx = unravel(flat, out_shape)
        q = int(src.read_input(0, np.array([flat]))[0])
        if q >= 0:
            return q
        shape = src.param_shape("slope")
        a = int(src.read_param("slope", np.array([broadcast_index(idx, shape)]))[0])
        return int(saturate(round_shift(np.array([q * a], np.int64), _SLOPE_BITS), self.qmax)[0])


@register
class LeakyRelu(_Slope):
    """LeakyRelu (α, default 0.01)."""

    op_types = ("LeakyRelu",)

    def slope(self) -> np.ndarray:
        """α as a scalar array."""
        return np.array(float(self.attrs.get("alpha", 0.01)))


@register
class PRelu(_Slope):
    """PRelu with a constant slope tensor (broadcast to the input, unidirectionally)."""

    op_types = ("PRelu",)

    def setup(self) -> None:
        super().setup()
        if not self.is_const(1):
            raise self.fail("the slope must be a constant")

    def slope(self) -> np.ndarray:
        """The slope tensor."""
        return np.asarray(self.info(1).const, np.float64)

    def run(self, xs: list[I64 | None]) -> I64:  # type: ignore[override]
        """Broadcast the slope to the input."""
        q = self.x(xs, 0)
        a = self.params()["slope"]
        try:
            ok = np.broadcast_shapes(a.shape, q.shape) == q.shape
        except ValueError:
            ok = False
        if not ok:
            raise self.fail(f"slope of shape {a.shape} does not broadcast to {q.shape}")
        return self.combine([q])


@register
class MaxMin(_Broadcasting):
    """Max and Min (variadic), at the largest input scale."""

    op_types = ("Max", "Min")

    def setup(self) -> None:
        if not self.present():
            raise self.fail("needs at least one input")
        kinds = {self.info(k).kind for k in self.present()}
        if len(kinds) > 1:
            raise self.fail("mixes integer and real inputs (add a Cast)")
        if self.out_kind() == "q":
            scales = [float(self.info(k).scale or 1.0) for k in self.present()]
            self.smax = max(scales)
            self.rescales = [self.make_rescale(s / self.smax) for s in scales]

    def scale_policy(self) -> ScalePolicy:
        """The largest input scale."""
        return self.smax if self.out_kind() == "q" else None

    def out_kind(self) -> Kind:
        """Real if the inputs are."""
        return self.info(self.present()[0]).kind

    def combine(self, xs: list[I64]) -> I64:
        """Rescale each to the common scale; reduce."""
        if self.out_kind() == "q":
            xs = [apply_rescale(x, rs) for x, rs in zip(xs, self.rescales, strict=True)]
        fn = np.maximum if self.node.op_type == "Max" else np.minimum
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return np.broadcast_to(out, np.broadcast_shapes(*[x.shape for x in xs])).copy()


@register
class HardSigmoid(_Broadcasting):
    """max(0, min(1, α x + β)) at the fixed scale 1/qmax."""

    op_types = ("HardSigmoid",)

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        assert info.scale is not None
        alpha = float(self.attrs.get("alpha", 0.2))
        beta = float(self.attrs.get("beta", 0.5))
        if not (np.isfinite(alpha) and np.isfinite(beta)) or alpha < 0:
            raise self.fail(f"alpha={alpha:g}, beta={beta:g} are not supported (alpha ≥ 0)")
        self.rs = self.make_rescale(alpha * info.scale * self.qmax)
        self.offset = int(round_float(np.array(beta * self.qmax)))

    def present(self) -> list[int]:
        """One input."""
        return [0]

    def scale_policy(self) -> ScalePolicy:
        """1 / qmax."""
        return 1.0 / self.qmax

    def combine(self, xs: list[I64]) -> I64:
        """clip(R(q, α s qmax) + round(β qmax), 0, qmax)."""
        out: I64 = np.clip(apply_rescale(xs[0], self.rs) + self.offset, 0, self.qmax)
        return out


@register
class HardSwish(_SameScale):
    """x · hardsigmoid(x) with α = 1/6, β = 1/2, at the input's scale."""

    op_types = ("HardSwish",)

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        assert info.scale is not None
        self.rs = self.make_rescale(info.scale * 2.0**15 / 6.0)

    def combine(self, xs: list[I64]) -> I64:
        """round_shift(q · h, 15)."""
        q = xs[0]
        h = np.clip(apply_rescale(q, self.rs) + (1 << 14), 0, 1 << 15)
        return round_shift(q * h, 15)


_CMP = {
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
}


@register
class Compare(_Broadcasting):
    """Equal, Less, Greater, LessOrEqual, GreaterOrEqual: 0/1 integers.

    Real inputs are compared as ``q_a · W_a`` against ``q_b · W_b`` with ``W_k = round(s_k /
    s_w)``, ``s_w = max(s_a, s_b) / 2**30`` (exact int64; with equal scales, q against q).
    """

    op_types = tuple(_CMP)

    def setup(self) -> None:
        kinds = {self.info(0).kind, self.info(1).kind}
        if len(kinds) > 1:
            raise self.fail("compares an integer with a real tensor (add a Cast)")
        self.real = kinds == {"q"}
        if self.real:
            sa, sb = (float(self.info(k).scale or 1.0) for k in (0, 1))
            sw = max(sa, sb) / (1 << 30)
            self.w = [int(round_float(np.array(s / sw))) for s in (sa, sb)]

    def out_kind(self) -> Kind:
        """Integers (booleans as 0/1)."""
        return "i"

    def combine(self, xs: list[I64]) -> I64:
        """The comparison."""
        a, b = xs
        if self.real:
            a, b = a * self.w[0], b * self.w[1]
        return _CMP[self.node.op_type](a, b).astype(np.int64)


@register
class Where(_Broadcasting):
    """cond ? x : y, with x and y at the larger of their scales (as Max)."""

    op_types = ("Where",)

    def setup(self) -> None:
        if self.info(0).kind != "i":
            raise self.fail("the condition must be a boolean (integer) tensor")
        kinds = {self.info(1).kind, self.info(2).kind}
        if len(kinds) > 1:
            raise self.fail("mixes integer and real branches (add a Cast)")
        self.real = kinds == {"q"}
        if self.real:
            scales = [float(self.info(k).scale or 1.0) for k in (1, 2)]
            self.smax = max(scales)
            self.rescales = [self.make_rescale(s / self.smax) for s in scales]

    def out_kind(self) -> Kind:
        """The branches' kind."""
        return "q" if self.real else "i"

    def scale_policy(self) -> ScalePolicy:
        """The larger branch scale."""
        return self.smax if self.real else None

    def combine(self, xs: list[I64]) -> I64:
        """np.where on the rescaled branches."""
        c, x, y = xs
        if self.real:
            x, y = (apply_rescale(v, rs) for v, rs in zip((x, y), self.rescales, strict=True))
        out: I64 = np.where(c != 0, x, y)
        return out
