"""BatchNormalization (inference mode), folded per channel into one affine map.

Integer definition: per channel ``a = γ / √(var + ε)``, ``b = β - mean · a`` in float64 at
plan time; ``wide = q · A_c + B_c`` with A_c = round(a_c·s/s_w), B_c = round(b_c/s_w),
s_w = max_c |a_c| · s / 2**30; ``out = sat(R(wide, s_w / s_out))``. int8 runs by table
(`_lut`); int16 (whose table would be too large) block by block (`_arith.requantize_block`).
"""

from __future__ import annotations

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import (
    I64,
    MIN_BLOCKED,
    Rescale,
    apply_rescale,
    channel_blocks,
    requantize_block,
    round_float,
    saturate,
)
from edgetrust.runtime.fixed._base import ElementSource, register, unravel
from edgetrust.runtime.fixed._elementwise import _Rescaled
from edgetrust.runtime.fixed._lut import MAX_TABLE


@register
class BatchNormalization(_Rescaled):
    """Inference-mode batch normalization, folded per channel into y = a·x + b."""

    op_types = ("BatchNormalization",)

    def setup(self) -> None:
        if self.info(0).kind != "q":
            raise self.fail("input must be a real tensor")
        if int(self.attrs.get("training_mode", 0)):
            raise self.fail("training_mode is not supported")
        if len([o for o in self.node.output if o]) > 1:
            raise self.fail("only the Y output is supported")
        for k in range(1, 5):
            if not self.is_const(k):
                raise self.fail("scale, bias, mean and var must be constants")
        self.eps = float(self.attrs.get("epsilon", 1e-5))
        self.channels = int(np.asarray(self.info(1).const).size)

    def present(self) -> list[int]:
        """Only X is element-wise; the rest are per-channel params."""
        return [0]

    def folded(self) -> dict[str, I64]:
        """A_c, B_c and the wide scale, from the constants (cached)."""
        if not hasattr(self, "_folded"):
            g, b, mean, var = (
                np.asarray(self.info(k).const, np.float64).reshape(-1) for k in range(1, 5)
            )
            a = g / np.sqrt(var + self.eps)
            bb = b - mean * a
            s = self.info(0).scale
            assert s is not None
            amax = float(np.max(np.abs(a) * s, initial=0.0))
            wscale = amax / (1 << 30) if amax > 0 else 1.0
            big = round_float(bb / wscale)
            if np.any(np.abs(big) >= 2.0**52):
                raise self.fail("shift b is too large for the wide scale")
            self._folded = {
                "a": round_float(a * s / wscale).astype(np.int64),
                "b": big.astype(np.int64),
                "wscale": np.array([wscale]),
            }
        return self._folded

    def wide_scale(self) -> float:
        """max |a_c| · s / 2**30."""
        return float(self.folded()["wscale"][0])

    def set_out_scale(self, scale: float | None) -> None:
        """Requantization goes through params (it depends on the constants)."""
        self.__dict__.pop("_lut_cache", None)
        self.__dict__.pop("_post", None)
        self.__dict__.pop("_tables", None)
        self.out_scale = scale

    def lut_pattern(self, vals: list[I64], ndim: int) -> tuple[int, ...] | None:
        """A_c and B_c vary along the channel axis (1)."""
        if ndim < 2:
            return None
        return (1, self.channels) + (1,) * (ndim - 2)

    def make_params(self) -> dict[str, I64]:
        """a, b (per channel), mult, shift."""
        assert self.out_scale is not None
        f = self.folded()
        out = {"a": f["a"], "b": f["b"]}
        out.update(self.make_rescale(self.wide_scale() / self.out_scale).params())
        return out

    def _chan(self, arr: I64, ndim: int) -> I64:
        shape = [1] * ndim
        shape[1] = arr.size
        return arr.reshape(shape)

    def wide(self, xs: list[I64]) -> I64:
        """q · A_c + B_c: |result| ≤ qmax · 2**30 + 2**52 < 2**62."""
        x = xs[0]
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise InvalidInputError(
                f"BatchNormalization node {self.label}: expected {self.channels} channels on "
                f"axis 1, got shape {x.shape}"
            )
        f = self.folded()
        return x * self._chan(f["a"], x.ndim) + self._chan(f["b"], x.ndim)

    def combine(self, xs: list[I64]) -> I64:
        """Requantize with the committed multiplier (by blocks: the same integers)."""
        p = self.params()
        rs = Rescale.from_params(p["mult"], p["shift"])
        x = xs[0]
        if x.ndim >= 2 and x.shape[1] == self.channels and rs.mult.size == 1:
            f = self.folded()
            m = int(rs.mult.reshape(-1)[0])
            fast = _kernels.affine_requantize(x, f["a"], f["b"], m, rs.shift, self.qmax)
            if fast is not None:
                return fast
        if (
            x.ndim >= 2
            and x.size >= MIN_BLOCKED
            and x.shape[1] == self.channels
            and rs.mult.size == 1
        ):
            return self._blocked(x, rs)
        return saturate(apply_rescale(self.wide(xs), rs), self.qmax)

    def _blocked(self, x: I64, rs: Rescale) -> I64:
        """`combine` block by block: ``w = q · A_c + B_c`` written into the output, then
        `requantize_block` in place. Every step is element-wise exact int64, so the blocks
        give the integers of the whole-tensor path; only the output is a full-size array."""
        f = self.folded()
        a, b = f["a"].reshape(-1, 1), f["b"].reshape(-1, 1)
        outer, inner = x.shape[0], x.size // (x.shape[0] * self.channels)
        xv = np.ascontiguousarray(x).reshape(outer, self.channels, inner)
        out = np.empty(x.shape, np.int64)
        ov = out.reshape(outer, self.channels, inner)
        for o, c0, c1, i0, i1 in channel_blocks(outer, self.channels, inner):
            w = ov[o, c0:c1, i0:i1]
            np.multiply(xv[o, c0:c1, i0:i1], a[c0:c1], out=w)
            w += b[c0:c1]
            requantize_block(w, rs, self.qmax)
        return out

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Same as X."""
        return src.input_shape(0)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One element and its channel's A, B."""
        c = unravel(flat, out_shape)[1]
        x = int(src.read_input(0, np.array([flat]))[0])
        a = int(src.read_param("a", np.array([c]))[0])
        b = int(src.read_param("b", np.array([c]))[0])
        rs = Rescale.from_params(
            src.read_param("mult", np.array([0])), src.read_param("shift", np.array([0]))
        )
        return int(saturate(apply_rescale(np.array([x * a + b]), rs), self.qmax)[0])

    def channel_table(self, channels: int, relu: bool = False) -> I64 | None:
        """`combine` (then max(·, 0) if `relu`) of every (channel, input integer), entry
        ``c·nv + q + qmax`` (nv = 2·qmax + 1), cached; None where it would be too large or
        the channels differ. A fused Conv gathers its requantized output from it."""
        nv = 2 * self.qmax + 1
        if channels != self.channels or channels * nv > MAX_TABLE:
            return None
        cache: dict[bool, I64] = self.__dict__.setdefault("_tables", {})
        if relu not in cache:
            grid = np.ascontiguousarray(
                np.broadcast_to(
                    np.arange(-self.qmax, self.qmax + 1, dtype=np.int64), (1, channels, nv)
                )
            )
            table = np.ascontiguousarray(self.combine([grid]).reshape(-1))
            if relu:
                np.maximum(table, 0, out=table)
            cache[relu] = table
        return cache[relu]

    def channel_post(self, channels: int, relu: bool = False) -> TablePost | ArithPost | None:
        """This node (then a Relu, if `relu`) as an in-place rewrite of blocks of its input's
        channels [c0, c1), for a Conv that fuses it, so that the integers are those of the
        nodes run one by one: a gather from `channel_table` at int8, else (int16, whose
        tables would be too large) `combine`'s arithmetic by blocks (`ArithPost`). None where
        the channels differ or the multiplier is per channel."""
        if channels != self.channels:
            return None
        cache: dict[bool, TablePost | ArithPost] = self.__dict__.setdefault("_post", {})
        if relu in cache:
            return cache[relu]
        post: TablePost | ArithPost | None = None
        if self.qmax <= 127:
            table = self.channel_table(channels, relu)
            post = None if table is None else TablePost(table, self.qmax)
        if post is None:
            p = self.params()
            rs = Rescale.from_params(p["mult"], p["shift"])
            if rs.mult.size != 1:
                return None
            post = ArithPost(p["a"], p["b"], rs, self.qmax, relu)
        cache[relu] = post
        return post


class ArithPost:
    """``w ← sat(R(w · A_c + B_c))`` (then max(·, 0) if `relu`) on blocks ``w`` of channels
    [c0, c1) in place: `BatchNormalization.combine`'s blocked path (`_blocked`) on a block,
    so the same integers. Its parameters are public so that a compiled Conv epilogue can
    apply it in the same pass (`_kernels.digit_epilogue`)."""

    def __init__(self, a: I64, b: I64, rs: Rescale, qmax: int, relu: bool) -> None:
        self.a = np.ascontiguousarray(a, np.int64).reshape(-1)
        self.b = np.ascontiguousarray(b, np.int64).reshape(-1)
        self.rs = rs
        self.qmax = qmax
        self.relu = relu

    def __call__(self, w: I64, c0: int, c1: int) -> None:
        """Rewrite the block (C, ...) of channels [c0, c1) (|w| ≤ qmax: |w·A + B| < 2**62)."""
        a, b = self.a[c0:c1], self.b[c0:c1]
        m, s = int(self.rs.mult.reshape(-1)[0]), self.rs.shift
        if w.ndim >= 1 and w.shape[0] == c1 - c0 and w.flags.c_contiguous:
            v = w.reshape(1, c1 - c0, -1)
            if (
                _kernels.affine_requantize(v, a, b, m, s, self.qmax, relu=self.relu, out=v)
                is not None
            ):
                return
        shape = (c1 - c0,) + (1,) * (w.ndim - 1)
        np.multiply(w, self.a[c0:c1].reshape(shape), out=w)
        w += self.b[c0:c1].reshape(shape)
        requantize_block(w, self.rs, self.qmax)
        if self.relu:
            np.maximum(w, 0, out=w)


class TablePost:
    """``w ← table[c·nv + w + qmax]`` on blocks ``w`` of channels [c0, c1) in place (nv =
    2·qmax + 1): a BatchNormalization (and Relu) behind a Conv, by `channel_table`. The
    table is public so that a compiled Conv epilogue can gather from it in the same pass
    (`_kernels.channel_epilogue`)."""

    def __init__(self, table: I64, qmax: int) -> None:
        self.table = table
        self.qmax = qmax
        self.nv = 2 * qmax + 1
        self.channels = table.size // self.nv
        self.base = (np.arange(self.channels, dtype=np.int64) * self.nv + qmax).reshape(-1, 1)

    def __call__(self, w: I64, c0: int, c1: int) -> None:
        """Rewrite the block (numpy's ``take(mode="clip")``, compiled when available)."""
        if w.ndim == 2:
            v = w[None]
            if _kernels.gather_channels(v, self.table, c0, self.nv, self.qmax, v) is not None:
                return
        w += self.base[c0:c1]  # |w| ≤ qmax: every index is in the table
        np.take(self.table, w, out=w, mode="clip")
