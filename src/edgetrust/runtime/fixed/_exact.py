"""Unary real functions defined exactly per input integer: Pow (constant integer exponent),
Sqrt, Elu, Floor, Ceil and Gelu.

Each is a function of one real input, so its output integer is a function of the input integer
q alone (2·qmax + 2 storable values). The integer definition fixes that output for every q
from exact arithmetic on x = q · s (s is a float64, an exact binary fraction), with rounding
half away from zero (rha) and saturation (sat) to ±qmax:

* Pow (exponent a constant integer 0 ≤ n ≤ 16): ``sat(rha(x**n / s_out))`` in exact rationals;
  s_out calibrated.
* Sqrt: ``sat(rha(√(x / s_out²)))`` computed as ``(isqrt(floor(4·x / s_out²)) + 1) // 2``
  (exact integer square root); x ≤ 0 gives 0 (NaN is not representable); s_out calibrated.
* Elu (α): ``q`` for q ≥ 0, else ``sat(rha(α·(e**x - 1) / s))`` at the input's scale s.
* Floor, Ceil: ``floor(x)`` / ``ceil(x)`` at the fixed scale 1 (exact integers), for inputs
  whose range s · qmax is at most qmax (else the node is refused: the result would not be exact).
* Gelu (approximate "none"): ``sat(rha(x · (1 + erf(x / √2)) / (2 · s_out)))``; ("tanh"):
  ``x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) / 2``; s_out calibrated.

Transcendental values (e**x, erf, tanh, √2) are computed with Python's `decimal` at 50 digits:
`exp` and `sqrt` are correctly rounded there, and the erf series is fixed term by term, so
every machine gets the same table. The executor fills the table lazily (only the q it sees);
the referee computes the one entry an element needs. Calibration takes the exact output
maxima converted to float.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import numpy as np

from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import I64
from edgetrust.runtime.fixed._base import Kind, ScalePolicy, register
from edgetrust.runtime.fixed._elementwise import _Broadcasting
from edgetrust.runtime.fixed._lut import LazyTable

_PREC = 50
_MAX_POW = 16


def rha(f: Fraction | Decimal) -> int:
    """Round half away from zero (exact)."""
    if isinstance(f, Decimal):
        f = Fraction(f)
    a = abs(f)
    r = math.floor(a + Fraction(1, 2))
    return r if f >= 0 else -r


class _Table(_Broadcasting):
    """One real input; output integer = `entry(q)`, cached per q."""

    def setup(self) -> None:
        if self.info(0).kind != "q":
            raise self.fail("input must be a real tensor")
        self.check()

    def check(self) -> None:
        """Attribute checks (subclasses)."""

    def present(self) -> list[int]:
        """The data input only (constant exponents are attributes of the definition)."""
        return [0]

    def out_kind(self) -> Kind:
        """Real."""
        return "q"

    @property
    def s_float(self) -> float:
        """The input scale."""
        s = self.info(0).scale
        assert s is not None
        return s

    @property
    def s_in(self) -> Fraction:
        """The input scale, exactly."""
        return Fraction(self.s_float)

    def real(self, q: int) -> Fraction | Decimal:
        """The exact (or 50-digit) real output for input integer q."""
        raise NotImplementedError

    def entry(self, q: int) -> int:
        """The output integer for input integer q: sat(rha(real / s_out)) by default."""
        assert self.out_scale is not None
        v = self.real(q)
        if isinstance(v, Decimal):
            v = Fraction(v)
        return max(-self.qmax, min(self.qmax, rha(v / Fraction(self.out_scale))))

    def calib_max(self, xs: Any) -> float:
        """max |real| over the input integers present."""
        q = self.x(xs, 0)
        vals = [abs(float(self.real(int(v)))) for v in np.unique(q)]
        return max(vals, default=0.0)

    def set_out_scale(self, scale: float | None) -> None:
        """Fix the output scale; forget the table."""
        self.__dict__.pop("_table", None)
        super().set_out_scale(scale)

    def combine(self, xs: list[I64]) -> I64:
        """Look every input integer up, filling missing entries."""
        if "_table" not in self.__dict__:
            self._table = LazyTable(self.qmax, self.entry)
        return self._table(xs[0])


@register
class Pow(_Table):
    """x ** n for a constant integer exponent 0 ≤ n ≤ 16."""

    op_types = ("Pow",)

    def check(self) -> None:
        if not self.is_const(1):
            raise self.fail("the exponent must be a constant")
        e = np.asarray(self.info(1).const, np.float64).reshape(-1)
        if e.size != 1 or not float(e[0]).is_integer() or not 0 <= e[0] <= _MAX_POW:
            raise self.fail(f"the exponent must be one integer in 0..{_MAX_POW}, got {e.tolist()}")
        self.n = int(e[0])

    def make_params(self) -> dict[str, I64]:
        """The exponent (committed beside the node)."""
        return {"exponent": np.array([self.n], np.int64)}

    def real(self, q: int) -> Fraction:
        """(q · s) ** n."""
        return (q * self.s_in) ** self.n


@register
class Sqrt(_Table):
    """√x (0 for x ≤ 0)."""

    op_types = ("Sqrt",)

    def real(self, q: int) -> Decimal:
        """√(q · s), 50 digits."""
        if q <= 0:
            return Decimal(0)
        with localcontext() as ctx:
            ctx.prec = _PREC
            return (Decimal(q) * Decimal(self.s_float)).sqrt()

    def entry(self, q: int) -> int:
        """(isqrt(floor(4·q·s / s_out²)) + 1) // 2, saturated."""
        if q <= 0:
            return 0
        assert self.out_scale is not None
        t = q * self.s_in / Fraction(self.out_scale) ** 2
        return min(self.qmax, (math.isqrt(math.floor(4 * t)) + 1) // 2)


@register
class Elu(_Table):
    """x for x ≥ 0, α(e**x - 1) below, at the input's scale."""

    op_types = ("Elu",)

    def check(self) -> None:
        self.alpha = float(self.attrs.get("alpha", 1.0))
        if not math.isfinite(self.alpha):
            raise self.fail("alpha must be finite")

    def scale_policy(self) -> ScalePolicy:
        """The input's scale."""
        return self.info(0).scale

    def real(self, q: int) -> Decimal:
        """q · s, or α(e**(q·s) - 1)."""
        with localcontext() as ctx:
            ctx.prec = _PREC
            x = Decimal(q) * Decimal(self.s_float)
            return x if q >= 0 else Decimal(self.alpha) * (x.exp() - 1)

    def entry(self, q: int) -> int:
        """q itself for q ≥ 0."""
        return max(-self.qmax, min(self.qmax, q)) if q >= 0 else super().entry(q)


@register
class FloorCeil(_Table):
    """floor(x), ceil(x) at scale 1."""

    op_types = ("Floor", "Ceil")

    def check(self) -> None:
        s = self.info(0).scale
        assert s is not None
        if s > 1.0:
            raise self.fail(
                f"input range ±{s * self.qmax:.4g} exceeds ±{self.qmax}: the integers would not "
                "be exact at this precision"
            )

    def scale_policy(self) -> ScalePolicy:
        """1: the outputs are integers."""
        return 1.0

    def real(self, q: int) -> Fraction:
        """floor(q·s) or ceil(q·s), exactly."""
        x = q * self.s_in
        return Fraction(math.floor(x) if self.node.op_type == "Floor" else math.ceil(x))


_TANH_C = Decimal("0.044715")


@register
class Gelu(_Table):
    """x · Φ(x) (exact erf), or the tanh approximation."""

    op_types = ("Gelu",)

    def check(self) -> None:
        raw = self.attrs.get("approximate", b"none")
        self.approx = raw.decode() if isinstance(raw, bytes) else str(raw)
        if self.approx not in ("none", "tanh"):
            raise self.fail(f"approximate={self.approx!r} is not supported")

    def real(self, q: int) -> Decimal:
        """The Gelu of q · s in 50 digits."""
        with localcontext() as ctx:
            ctx.prec = _PREC + 10
            x = Decimal(q) * Decimal(self.s_float)
            if abs(x) > 8:  # erfc(8/√2) < 1e-14 · 2**-30: the series would cancel badly
                inner = Decimal(1 if x > 0 else -1)
            elif self.approx == "none":
                inner = nl._erf_decimal(x / Decimal(2).sqrt())
            else:
                z = (2 / nl._PI).sqrt() * (x + _TANH_C * x**3)
                if z > 60:
                    inner = Decimal(1)
                elif z < -60:
                    inner = Decimal(-1)
                else:
                    e2 = (2 * z).exp()
                    inner = (e2 - 1) / (e2 + 1)
            return +(x * (1 + inner) / 2)
