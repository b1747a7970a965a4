"""Softmax, LayerNormalization, LpNormalization and LRN: integer definitions over one row (or
channel window) at a time.

Softmax (along `axis`): ``d = max(row) - q``; ``u = R(d, s · 2**16)`` (Q16); ``E = e**-u`` in
Q30 (`_nonlinear.exp_neg_q30`; the row maximum gives exactly 2**30); ``S = Σ E``;
``out = round_div(E · qmax, S)`` at the fixed scale 1/qmax.

LayerNormalization (over the N elements from `axis` on), with G = 8 guard bits and F = 16:
``c_i = q_i · N - Σ q`` (exact, = N · (x_i - mean) / s); ``V = Σ round_shift(c_i, p)²`` where
p is the least shift keeping V below 2**62; ``Z = V + round(ε · N³ / (s² · 4**p))``;
``D = isqrt(floor(Z · 4**G / N))`` (≈ √(Z/N) · 2**G, exact integer square root);
``n_i = round_div(c_i · 2**(F+G), D · 2**p)`` (normalized value in Q16); then
``wide = n_i · g_i + b_i`` with γ quantized to 21 bits (g = round(γ / s_g), s_g = max|γ| /
2**20) and β at the same scale (b = round(β · 2**F / s_g)); ``out = sat(R(wide, s_g / (2**F ·
s_out)))``. The scale s cancels between x - mean and the standard deviation, except in ε.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError, ResourceLimitError
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    I64,
    Rescale,
    apply_rescale,
    requantize,
    round_div,
    round_float,
    round_shift,
)
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Op,
    ScalePolicy,
    norm_axis,
    register,
    unravel,
)


def _row_indices(shape: tuple[int, ...], axis: int, index: tuple[int, ...]) -> np.ndarray:
    """Flat indices of the elements along `axis` through `index`."""
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
    base = sum(
        int(i) * int(s) for d, (i, s) in enumerate(zip(index, strides, strict=True)) if d != axis
    )
    return base + np.arange(shape[axis], dtype=np.int64) * int(strides[axis])


_MIN_EXP_TABLE = 256
"""Softmax inputs from this many elements read e**-u from a table over every d (cached)."""


@register
class Softmax(Op):
    """Softmax along one axis (opset ≥ 13) or over the flattened trailing dims (opset < 13)."""

    op_types = ("Softmax",)

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        assert info.scale is not None
        self.axis = int(self.attrs.get("axis", -1 if self.settings.opset >= 13 else 1))
        self.to_q16 = self.make_rescale(info.scale * (1 << nl.IN_FRAC_BITS))

    def scale_policy(self) -> ScalePolicy:
        """1 / qmax."""
        return 1.0 / self.qmax

    def _exp_table(self) -> I64:
        """``E(d) = exp_neg_q30(R(d, s · 2**16))`` for every d in [0, 2·qmax] (cached)."""
        if not hasattr(self, "_exp"):
            d = np.arange(2 * self.qmax + 1, dtype=np.int64)
            self._exp = nl.exp_neg_q30(apply_rescale(d, self.to_q16))
        return self._exp

    def _softmax_last(self, q: I64) -> I64:
        if q.size:
            table = self.__dict__.get("_exp")
            fast = _kernels.softmax_rows(
                q.reshape(-1, q.shape[-1]),
                self._exp_table() if table is None else table,
                self.qmax,
            )
            if fast is not None:
                return fast.reshape(q.shape)
        d = np.max(q, axis=-1, keepdims=True) - q
        if d.size >= _MIN_EXP_TABLE and int(d.max()) <= 2 * self.qmax:
            # d ≥ 0 is an integer in [0, 2·qmax] for inputs in [-qmax, qmax], and E is
            # element-wise exact: gathering E(d) gives the integers of computing it.
            e = self._exp_table().take(d)
        else:
            e = nl.exp_neg_q30(apply_rescale(d, self.to_q16))
        total = np.sum(e, axis=-1, keepdims=True)
        # round_div(e · qmax, total) for e ≥ 0 and total ≥ 2**30 (the row maximum's E):
        # floor((e · qmax + floor(total / 2)) / total), without round_div's abs and select.
        out: I64 = e * self.qmax
        out += total // 2
        out //= total
        return out

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Row-wise integer softmax."""
        x = self.x(xs, 0)
        axis = norm_axis(self.axis, x.ndim, self.label)
        if self.settings.opset < 13:
            rows = int(np.prod(x.shape[:axis], dtype=np.int64))
            return self._softmax_last(x.reshape(rows, -1)).reshape(x.shape)
        if axis == x.ndim - 1:
            return self._softmax_last(x)
        return np.moveaxis(self._softmax_last(np.moveaxis(x, axis, -1)), -1, axis)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as the input."""
        return src.input_shape(0)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the row; compute it; pick."""
        axis = norm_axis(self.axis, len(out_shape), self.label)
        if self.settings.opset < 13:
            width = int(np.prod(out_shape[axis:], dtype=np.int64))
            start = flat - flat % width
            row = src.read_input(0, np.arange(start, start + width, dtype=np.int64))
            return int(self._softmax_last(row[None, :])[0, flat - start])
        idx = unravel(flat, out_shape)
        row = src.read_input(0, _row_indices(out_shape, axis, idx))
        return int(self._softmax_last(row[None, :])[0, idx[axis]])


_F = 16
_G = 8
_GAMMA_BITS = 20


@register
class LayerNormalization(Op):
    """LayerNormalization (opset 17) over the dimensions from `axis` on."""

    op_types = ("LayerNormalization",)

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        if len([o for o in self.node.output if o]) > 1:
            raise self.fail("only the Y output is supported")
        if not self.is_const(1) or (self.has_input(2) and not self.is_const(2)):
            raise self.fail("scale and bias must be constants")
        self.axis = int(self.attrs.get("axis", -1))
        self.eps = float(self.attrs.get("epsilon", 1e-5))
        self.norm_shape = tuple(int(d) for d in np.asarray(self.info(1).const).shape)

    def affine(self) -> dict[str, Any]:
        """γ and β quantized (cached): g, b and the wide scale 2**-F · s_g."""
        if not hasattr(self, "_affine"):
            gamma = np.asarray(self.info(1).const, np.float64)
            beta = (
                np.asarray(self.info(2).const, np.float64)
                if self.has_input(2)
                else np.zeros_like(gamma)
            )
            beta = np.broadcast_to(beta, gamma.shape)
            gmax = float(np.max(np.abs(gamma), initial=0.0))
            sg = gmax / (1 << _GAMMA_BITS) if gmax > 0 else 1.0
            b = round_float(beta * (1 << _F) / sg)
            if np.any(np.abs(b) >= 2.0**52):
                raise self.fail("bias is too large relative to the scale")
            self._affine = {
                "g": round_float(gamma / sg).astype(np.int64),
                "b": b.astype(np.int64),
                "wscale": sg / (1 << _F),
            }
        return self._affine

    def make_params(self) -> dict[str, I64]:
        """g, b (normalized shape), mult, shift."""
        assert self.out_scale is not None
        a = self.affine()
        wscale = a["wscale"]
        assert isinstance(wscale, float)
        out = {"g": np.asarray(a["g"]), "b": np.asarray(a["b"])}
        out.update(self.make_rescale(wscale / self.out_scale).params())
        return out

    def _norm_rows(self, rows: I64) -> I64:
        """Normalized values n_i (Q16) for a (R, N) array of integer rows."""
        n = rows.shape[1]
        qmax = self.qmax
        if 2 * qmax * n * (1 << (_F + _G)) >= 1 << 62:
            raise ResourceLimitError(
                f"LayerNormalization node {self.label}: {n} elements per row is too many"
            )
        c = rows * n - np.sum(rows, axis=1, keepdims=True)
        cmax = 2 * qmax * n
        p = 0
        while n * (((cmax + (1 << p) - 1) >> p) + 1) ** 2 >= 1 << 62:
            p += 1
        cp = round_shift(c, p)
        v = np.sum(cp * cp, axis=1)
        s = self.info(0).scale
        assert s is not None
        eps_q = float(round_float(np.array(self.eps * float(n) ** 3 / (s * s * 4.0**p))))
        eps_i = int(min(eps_q, 2.0**62))
        d = [max(1, _isqrt((int(z) + eps_i) * (1 << (2 * _G)) // n)) for z in v.tolist()]
        den = np.array(d, dtype=np.int64)[:, None] << p
        return round_div(c << (_F + _G), den)

    def _finish(self, normed: I64, g: I64, b: I64, rs: Rescale) -> I64:
        return requantize(normed * g + b, rs, self.qmax)

    def _split(self, shape: tuple[int, ...]) -> tuple[int, int]:
        axis = norm_axis(self.axis, len(shape), self.label)
        if tuple(shape[axis:]) != self.norm_shape:
            raise InvalidInputError(
                f"LayerNormalization node {self.label}: normalized shape {self.norm_shape} does "
                f"not match input shape {shape} from axis {self.axis}"
            )
        n = int(np.prod(shape[axis:], dtype=np.int64))
        return int(np.prod(shape[:axis], dtype=np.int64)), n

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """max |n_i · g_i + b_i| · wide scale."""
        x = self.x(xs, 0)
        rows, n = self._split(x.shape)
        a = self.affine()
        g, b, wscale = a["g"], a["b"], a["wscale"]
        assert isinstance(g, np.ndarray) and isinstance(b, np.ndarray) and isinstance(wscale, float)
        wide = self._norm_rows(x.reshape(rows, n)) * g.reshape(1, -1) + b.reshape(1, -1)
        return float(np.max(np.abs(wide), initial=0)) * wscale

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Row-wise integer layer norm."""
        x = self.x(xs, 0)
        rows, n = self._split(x.shape)
        p = self.params()
        rs = Rescale.from_params(p["mult"], p["shift"])
        out = self._finish(
            self._norm_rows(x.reshape(rows, n)), p["g"].reshape(1, -1), p["b"].reshape(1, -1), rs
        )
        return out.reshape(x.shape)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as the input."""
        shape = src.input_shape(0)
        self._split(shape)
        return shape

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the row, γ_i, β_i; compute."""
        _, n = self._split(out_shape)
        start = flat - flat % n
        i = flat - start
        row = src.read_input(0, np.arange(start, start + n, dtype=np.int64))
        g = src.read_param("g", np.array([i]))
        b = src.read_param("b", np.array([i]))
        rs = Rescale.from_params(
            src.read_param("mult", np.array([0])), src.read_param("shift", np.array([0]))
        )
        normed = self._norm_rows(row[None, :])[:, i : i + 1]
        return int(self._finish(normed, g, b, rs)[0, 0])


_isqrt = math.isqrt  # floor(√v) of a Python integer, exactly (as `_nonlinear.isqrt_floor`)


_LP_GUARD = 16


@register
class LpNormalization(Op):
    """L2 normalization along `axis`: ``out = round_div(q · qmax · 2**16, isqrt(Σq² · 2**32))``.

    The scale cancels (x / ‖x‖ is scale-free), the output scale is 1/qmax. Only p = 2.
    """

    op_types = ("LpNormalization",)

    def setup(self) -> None:
        if self.info(0).kind != "q":
            raise self.fail("input must be a real tensor")
        if int(self.attrs.get("p", 2)) != 2:
            raise self.fail("only p = 2 is supported")
        self.axis = int(self.attrs.get("axis", -1))

    def scale_policy(self) -> ScalePolicy:
        """1 / qmax."""
        return 1.0 / self.qmax

    def _rows(self, rows: I64) -> I64:
        v = np.sum(rows * rows, axis=1).tolist()
        d = np.array([max(1, _isqrt(int(s) << (2 * _LP_GUARD))) for s in v], np.int64)[:, None]
        return round_div(rows * (self.qmax << _LP_GUARD), d)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Row-wise along the axis."""
        x = self.x(xs, 0)
        axis = norm_axis(self.axis, x.ndim, self.label)
        moved = np.moveaxis(x, axis, -1)
        out = self._rows(moved.reshape(-1, moved.shape[-1])).reshape(moved.shape)
        return np.ascontiguousarray(np.moveaxis(out, -1, axis))

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as the input."""
        return src.input_shape(0)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the row; compute; pick."""
        axis = norm_axis(self.axis, len(out_shape), self.label)
        idx = unravel(flat, out_shape)
        row = src.read_input(0, _row_indices(out_shape, axis, idx))
        return int(self._rows(row[None, :])[0, idx[axis]])


def isqrt_vec(v: I64) -> I64:
    """floor(√v) for int64 0 ≤ v < 2**62, exactly: a float64 estimate, then corrected.

    The estimate (IEEE √, correctly rounded) is within one of the answer; two correction steps
    make it exact, so the result is the integer square root on every machine.
    """
    r = np.sqrt(v.astype(np.float64)).astype(np.int64)
    r = np.minimum(r, np.int64((1 << 31) - 1))
    for _ in range(2):
        r = np.where(r * r > v, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


_LRN_Q = 30  # D**-β in Q30


@register
class LRN(Op):
    """Local response normalization across channels, for β a multiple of 1/4.

    ``S = Σ q²`` over the window of `size` channels (exact); ``D = R(S, α s² 2**F / size) +
    round(bias · 2**F)`` (D in Q_F, F even and chosen at plan time so D < 2**60);
    ``r = isqrt(isqrt(D) · 2**(F/2))`` (= D**(1/4) in Q(F/2)); ``P = round_div(2**(30+F/2), r)``
    (D**(-1/4) in Q30), raised to the 4β-th power in Q30 with a round_shift after each product;
    ``out = sat(R(q · P, s / (2**30 · s_out)))`` with a calibrated s_out.
    """

    op_types = ("LRN",)

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        if "size" not in self.attrs:
            raise self.fail("attribute size is required")
        self.size = int(self.attrs["size"])
        if self.size < 1 or self.size % 2 == 0:
            raise self.fail(f"size={self.size} is not supported (the window must be odd)")
        self.alpha = float(self.attrs.get("alpha", 1e-4))
        self.beta = float(self.attrs.get("beta", 0.75))
        self.bias = float(self.attrs.get("bias", 1.0))
        quarters = self.beta * 4
        if quarters != int(quarters) or not 1 <= quarters <= 8:
            raise self.fail(f"beta={self.beta:g} is not supported (only k/4 for k = 1..8)")
        self.power = int(quarters)
        if not (self.bias >= 1.0 / 16) or not (self.alpha >= 0) or not np.isfinite(self.alpha):
            raise self.fail(f"bias={self.bias:g}, alpha={self.alpha:g} not supported (bias ≥ 1/16)")
        s = info.scale
        assert s is not None
        self.s = s
        k = self.alpha / self.size * s * s
        d_max = self.bias + k * float(self.size) * float(self.qmax) ** 2
        f = 60
        while f > 8 and d_max * 2.0**f >= 2.0**60:
            f -= 2
        if d_max * 2.0**f >= 2.0**60:
            raise self.fail("the window's squared sum is too large for the input scale")
        self.f = f
        ratio = k * 2.0**f
        # S · ratio < 2**60: pre-shift S left so the multiplier's ratio stays ≤ 2**20
        self.pre = max(0, int(np.frexp(ratio)[1]) - 20) if ratio > 0 else 0
        self.k_rs = self.make_rescale(ratio / 2.0**self.pre)
        self.b_fp = int(round_float(np.array(self.bias * 2.0**f)))
        self.half = 1 << (f // 2)

    def make_params(self) -> dict[str, I64]:
        """mult/shift of the output requantization."""
        assert self.out_scale is not None
        return self.make_rescale(self.s / (2.0**_LRN_Q * self.out_scale)).params()

    def _window(self, c: int, channels: int) -> tuple[int, int]:
        lo = max(0, c - (self.size - 1) // 2)
        hi = min(channels - 1, c + self.size // 2)
        return lo, hi

    def _wide(self, x: I64) -> I64:
        """q · P, channels on axis 1."""
        if x.ndim < 3:
            raise InvalidInputError(f"LRN node {self.label}: input rank must be ≥ 3")
        sq = x * x
        channels = x.shape[1]
        csum = np.cumsum(np.concatenate([np.zeros_like(sq[:, :1]), sq], axis=1), axis=1)
        lo = np.array([self._window(c, channels)[0] for c in range(channels)])
        hi = np.array([self._window(c, channels)[1] for c in range(channels)]) + 1
        total = np.take(csum, hi, axis=1) - np.take(csum, lo, axis=1)
        return x * self._power(total)

    def _power(self, total: I64) -> I64:
        d = apply_rescale(total << self.pre, self.k_rs) + self.b_fp
        r = isqrt_vec(isqrt_vec(d) * self.half)
        p1 = round_div(np.full(r.shape, (1 << _LRN_Q) * self.half, np.int64), np.maximum(r, 1))
        p = p1
        for _ in range(self.power - 1):
            p = round_shift(p * p1, _LRN_Q)
        return p

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """max |q · P| · s / 2**30."""
        w = self._wide(self.x(xs, 0))
        return float(np.max(np.abs(w), initial=0)) * self.s / 2.0**_LRN_Q

    def _finish(self, wide: I64, rs: Rescale) -> I64:
        return requantize(wide, rs, self.qmax)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """The whole tensor."""
        p = self.params()
        return self._finish(self._wide(self.x(xs, 0)), Rescale.from_params(p["mult"], p["shift"]))

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as the input."""
        return src.input_shape(0)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the channel window through the element; compute."""
        if len(out_shape) < 3:
            raise InvalidInputError(f"LRN node {self.label}: input rank must be ≥ 3")
        idx = unravel(flat, out_shape)
        c = idx[1]
        lo, hi = self._window(c, out_shape[1])
        plane = int(np.prod(out_shape[2:], dtype=np.int64))
        base = flat - c * plane
        vals = src.read_input(0, base + np.arange(lo, hi + 1, dtype=np.int64) * plane)
        total = np.array([int(np.sum(vals * vals))], np.int64)
        x = vals[c - lo : c - lo + 1]
        rs = Rescale.from_params(
            src.read_param("mult", np.array([0])), src.read_param("shift", np.array([0]))
        )
        return int(self._finish(x * self._power(total), rs)[0])
