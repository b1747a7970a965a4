"""InstanceNormalization and GroupNormalization: LayerNormalization's integer definition over
the rows of a channel grouping, with a per-channel (or, GroupNormalization before opset 21,
per-group) affine.

For input (N, C, *S) and G groups (InstanceNormalization: G = C), each row is the
(C/G) · |S| integers of one (n, group); ``n_i`` is LayerNormalization's normalized value in
Q16 over that row (same guard bits, same exact integer square root, same ε term), then
``wide = n_i · g_c + b_c`` with γ, β quantized as LayerNormalization quantizes them and
``out = sat(R(wide, s_g / (2**16 · s_out)))``, s_out calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64, Rescale
from edgetrust.runtime.fixed._base import ElementSource, register, unravel
from edgetrust.runtime.fixed._norm import LayerNormalization


@register
class ChannelNorm(LayerNormalization):
    """InstanceNormalization (G = C) and GroupNormalization (num_groups)."""

    op_types = ("InstanceNormalization", "GroupNormalization")  # type: ignore[assignment]

    def setup(self) -> None:
        info = self.info(0)
        if info.kind != "q":
            raise self.fail("input must be a real tensor")
        if not self.is_const(1) or not self.is_const(2):
            raise self.fail("scale and bias must be constants")
        self.eps = float(self.attrs.get("epsilon", 1e-5))
        self.n_gamma = int(np.asarray(self.info(1).const).size)
        if int(np.asarray(self.info(2).const).size) != self.n_gamma:
            raise self.fail("scale and bias differ in length")
        self.instance = self.node.op_type == "InstanceNormalization"
        if self.instance:
            self.groups = self.n_gamma
            self.per_group = False
        else:
            if int(self.attrs.get("stash_type", 1)) != 1:
                raise self.fail("only stash_type=1 is supported")
            self.groups = int(self.attrs.get("num_groups", 0))
            if self.groups < 1:
                raise self.fail("num_groups must be ≥ 1")
            # Opset 18-20: scale and bias per group; from 21 per channel.
            self.per_group = self.settings.opset < 21
            if self.per_group and self.n_gamma != self.groups:
                raise self.fail(f"scale has {self.n_gamma} values for {self.groups} groups")

    def _geometry(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(channels, channels per group, spatial size), checked."""
        if len(shape) < (3 if self.instance else 2):
            raise InvalidInputError(f"{self.node.op_type} node {self.label}: input rank too low")
        c = shape[1]
        if c % self.groups or (not self.per_group and c != self.n_gamma):
            raise InvalidInputError(
                f"{self.node.op_type} node {self.label}: {c} channels do not fit "
                f"{self.groups} groups and {self.n_gamma} scale values"
            )
        return c, c // self.groups, int(np.prod(shape[2:], dtype=np.int64))

    def _gamma_index(self, c: int, cpg: int) -> int:
        return c // cpg if self.per_group else c

    def _affine_per_channel(self, g: I64, b: I64, c: int, cpg: int) -> tuple[I64, I64]:
        if self.per_group:
            g, b = np.repeat(g, cpg), np.repeat(b, cpg)
        return g.reshape(1, c, 1), b.reshape(1, c, 1)

    def _wide(self, x: I64, g: I64, b: I64) -> I64:
        c, cpg, sp = self._geometry(x.shape)
        n = x.shape[0]
        normed = self._norm_rows(x.reshape(n * self.groups, cpg * sp)).reshape(n, c, sp)
        gc, bc = self._affine_per_channel(g, b, c, cpg)
        wide: I64 = normed * gc + bc
        return wide

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """max |n_i · g_c + b_c| · wide scale."""
        a = self.affine()
        g, b, wscale = a["g"], a["b"], a["wscale"]
        assert isinstance(g, np.ndarray) and isinstance(b, np.ndarray) and isinstance(wscale, float)
        wide = self._wide(self.x(xs, 0), g.reshape(-1), b.reshape(-1))
        return float(np.max(np.abs(wide), initial=0)) * wscale

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Row-wise normalization, per-channel affine, requantization."""
        x = self.x(xs, 0)
        p = self.params()
        rs = Rescale.from_params(p["mult"], p["shift"])
        wide = self._wide(x, p["g"].reshape(-1), p["b"].reshape(-1))
        one, zero = np.ones(1, np.int64), np.zeros(1, np.int64)
        return self._finish(wide, one, zero, rs).reshape(x.shape)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as the input."""
        shape = src.input_shape(0)
        self._geometry(shape)
        return shape

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the element's group row and its channel's γ, β."""
        c_all, cpg, sp = self._geometry(out_shape)
        idx = unravel(flat, out_shape)
        n, c = idx[0], idx[1]
        group = c // cpg
        length = cpg * sp
        start = (n * c_all + group * cpg) * sp
        row = src.read_input(0, np.arange(start, start + length, dtype=np.int64))
        k = np.array([self._gamma_index(c, cpg)])
        g, b = src.read_param("g", k), src.read_param("b", k)
        rs = Rescale.from_params(
            src.read_param("mult", np.array([0])), src.read_param("shift", np.array([0]))
        )
        i = flat - start
        normed = self._norm_rows(row[None, :])[:, i : i + 1]
        return int(self._finish(normed, g.reshape(1, 1), b.reshape(1, 1), rs)[0, 0])
