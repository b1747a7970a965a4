"""Softmax and LayerNormalization: integer definitions over one row at a time.

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

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError, ResourceLimitError
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    I64,
    Rescale,
    apply_rescale,
    round_div,
    round_float,
    round_shift,
    saturate,
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

    def _softmax_last(self, q: I64) -> I64:
        d = np.max(q, axis=-1, keepdims=True) - q
        e = nl.exp_neg_q30(apply_rescale(d, self.to_q16))
        total = np.sum(e, axis=-1, keepdims=True)
        return round_div(e * self.qmax, total)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Row-wise integer softmax."""
        x = self.x(xs, 0)
        axis = norm_axis(self.axis, x.ndim, self.label)
        if self.settings.opset < 13:
            rows = int(np.prod(x.shape[:axis], dtype=np.int64))
            return self._softmax_last(x.reshape(rows, -1)).reshape(x.shape)
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
        return saturate(apply_rescale(normed * g + b, rs), self.qmax)

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


def _isqrt(v: int) -> int:
    return nl.isqrt_floor([v])[0]


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
