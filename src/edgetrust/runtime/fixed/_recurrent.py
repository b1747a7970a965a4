"""LSTM and GRU, unrolled over the sequence, in integers (docs/fixed.md, "LSTM and GRU").

GRU follows the same scheme (gates z, r, h; both linear_before_reset); its definition is
in `GRU.compute` and docs/fixed.md.

Supported: one forward direction, layout 0, default activations (sigmoid, tanh, tanh), no
clip, input_forget 0, no peepholes, no sequence_lens; W, R and B constant. Outputs Y and Y_h
(Y_c is refused when read). Everything else is refused naming the node.

Integer definition (H hidden units, gate order i, o, f, c as in ONNX):

* W, R are quantized per row r (gate unit): scales sw[r], sr[r] = max |row| / qmax.
* h is stored at the fixed scale sh = 2**-(b) (b = 7 for int8, 15 for int16), saturated.
* The gate pre-activation is Q16 (16 fractional bits):
  ``g[r] = rs(Σ x·Wq[r], sx·sw[r]·2**16) + rs(Σ h·Rq[r], sh·sr[r]·2**16) + rha((Wb+Rb)[r]·2**16)``
  where rs(a, ratio) is the executor's exact rescale (`apply_rescale`), sums exact in int64.
* i, o, f = sigmoid_q30(g), c̃ = tanh_q30(g) (the integer tables of `_nonlinear`, Q30).
* c (Q16): ``c = rs30(f·c + i·rs14(c̃))`` with rs_k = round half away of a 2**k division.
* h: ``h = sat(rs_{30-b}(rs30(o · tanh_q30(c))))`` (Q30 product, then to the scale 2**-b).
* initial_h, initial_c (optional) enter as ``sat(rs(h0, s_h0/sh))`` and ``rs(c0, s_c0·2**16)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    I64,
    Rescale,
    apply_rescale,
    quantize,
    round_float,
    round_shift,
    saturate,
)
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    const_param,
    register,
)

_FRAC = 16
_MAX_STEPS = 4096
_DEFAULT_ACTS = ("Sigmoid", "Tanh", "Tanh")


def _q16(values: npt.NDArray[np.float64]) -> I64:
    """rha(values · 2**16) as int64 (exact: float64 scaling by a power of two)."""
    return round_float(np.ldexp(values, _FRAC)).astype(np.int64)


def _acts(value: Any) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in value)


class _Recurrent(Op):
    """What LSTM and GRU share: checks, per-row weights, the gate sums, the traced outputs."""

    gates: ClassVar[int] = 4
    default_acts: ClassVar[tuple[str, ...]] = _DEFAULT_ACTS

    def setup(self) -> None:
        a = self.attrs
        if a.get("direction", b"forward") not in (b"forward", "forward"):
            raise self.fail(f"direction {a['direction']!r} (only forward is supported)")
        if "clip" in a:
            raise self.fail("clip is not supported")
        if "activations" in a and _acts(a["activations"]) != self.default_acts:
            raise self.fail(f"activations {list(_acts(a['activations']))} (only the defaults)")
        if "activation_alpha" in a or "activation_beta" in a:
            raise self.fail("activation_alpha/beta are not supported")
        if int(a.get("input_forget", 0)) != 0:
            raise self.fail("input_forget=1 is not supported")
        if int(a.get("linear_before_reset", 0)) not in (0, 1):
            raise self.fail("linear_before_reset must be 0 or 1")
        if int(a.get("layout", 0)) != 0:
            raise self.fail("layout=1 is not supported")
        if self.has_input(4):
            raise self.fail("sequence_lens is not supported")
        if self.has_input(7):
            raise self.fail("peepholes (input P) are not supported")
        x = self.info(0)
        if x.kind != "q" or x.const is not None:
            raise self.fail("X must be a float activation")
        for k in (1, 2):
            if not self.is_const(k) or self.info(k).kind != "q":
                raise self.fail(f"input {k} (W/R) must be a float constant")
        w = np.asarray(self.info(1).const, np.float64)
        r = np.asarray(self.info(2).const, np.float64)
        if w.ndim != 3 or w.shape[0] != 1 or r.ndim != 3 or r.shape[0] != 1:
            raise self.fail("W and R must have one direction")
        self.hidden = r.shape[2]
        rows = self.gates * self.hidden
        if w.shape[1] != rows or r.shape[1] != rows:
            raise self.fail(f"W and R must have {self.gates}·hidden_size rows")
        if "hidden_size" in a and int(a["hidden_size"]) != self.hidden:
            raise self.fail("hidden_size does not match R")
        if self.has_input(3) and (not self.is_const(3) or self.info(3).kind != "q"):
            raise self.fail("B must be a float constant")
        for k in (5, 6):
            if self.has_input(k) and self.info(k).kind != "q":
                raise self.fail(f"input {k} (initial_h/initial_c) must be float")
        self.bits = 7 if self.qmax == 127 else 15

    def out_kind(self) -> Kind:
        return "q"

    def scale_policy(self) -> ScalePolicy:
        return float(2.0**-self.bits)

    def output_count(self) -> int:
        return 2

    def make_params(self) -> dict[str, I64]:
        w = np.asarray(self.info(1).const, np.float64)[0]
        r = np.asarray(self.info(2).const, np.float64)[0]
        sw = np.array([max(float(np.abs(row).max()), 0.0) / self.qmax for row in w])
        sr = np.array([max(float(np.abs(row).max()), 0.0) / self.qmax for row in r])
        sw = np.where(sw > 0, sw, 1.0)
        sr = np.where(sr > 0, sr, 1.0)
        wq = quantize(w, sw[:, None], self.qmax)
        rq = quantize(r, sr[:, None], self.qmax)
        rows = self.gates * self.hidden
        b = np.zeros(2 * rows)
        if self.has_input(3):
            b = np.asarray(self.info(3).const, np.float64).reshape(-1)
        if b.size != 2 * rows:
            raise self.fail(f"B must have {2 * rows} elements")
        bias = self.bias_params(b[:rows], b[rows:])
        sx = self.info(0).scale
        assert sx is not None
        sh = 2.0**-self.bits
        rx = self.make_rescale(sx * sw * 2.0**_FRAC)
        rh = self.make_rescale(sh * sr * 2.0**_FRAC)
        out = {"w": wq, "r": rq, **bias}
        out.update({f"x_{k}": v for k, v in rx.params().items()})
        out.update({f"h_{k}": v for k, v in rh.params().items()})
        for k, name in ((5, "h0"), (6, "c0")):
            if self.has_input(k):
                s = self.info(k).scale
                assert s is not None
                ratio = s / sh if k == 5 else s * 2.0**_FRAC
                out.update({f"{name}_{n}": v for n, v in self.make_rescale(ratio).params().items()})
                if self.is_const(k):
                    out[f"in{k}"] = const_param(self.info(k), self.qmax)
        return out

    def _rescale(self, x: I64, prefix: str, axis: int | None, rows: slice | None = None) -> I64:
        p = self.params()
        mult = p[f"{prefix}_mult"]
        if rows is not None:
            mult = mult[rows]
        return apply_rescale(x, Rescale.from_params(mult, p[f"{prefix}_shift"]), channel_axis=axis)

    def bias_params(
        self, wb: npt.NDArray[np.float64], rb: npt.NDArray[np.float64]
    ) -> dict[str, I64]:
        """The bias params (Q16) from Wb and Rb."""
        return {"b16": _q16(wb + rb)}

    def compute(self, x: I64, h0: I64 | None, c0: I64 | None) -> tuple[I64, I64]:
        """Y [T, 1, B, H] and Y_h [1, B, H] from X [T, B, I] (all integers)."""
        raise NotImplementedError

    def initial(self, x: I64, h0: I64 | None) -> I64:
        """The initial h at the scale 2**-b."""
        batch = x.shape[1]
        if h0 is None:
            return np.zeros((batch, self.hidden), np.int64)
        h = h0.reshape(batch, self.hidden).astype(np.int64)
        return saturate(self._rescale(h, "h0", None), self.qmax)

    def gate_sums(self, xt: I64, h: I64) -> tuple[I64, I64]:
        """The input and recurrent gate sums for one step, each rescaled to Q16."""
        p = self.params()
        return self._rescale(xt.astype(np.int64) @ p["w"].T, "x", 1), self._rescale(
            h @ p["r"].T, "h", 1
        )

    def _inputs(self, xs: Sequence[I64 | None]) -> tuple[I64, I64 | None, I64 | None]:
        h0 = self.x(xs, 5) if self.has_input(5) else None
        c0 = self.x(xs, 6) if self.has_input(6) else None
        return self.x(xs, 0), h0, c0

    def run(self, xs: Sequence[I64 | None]) -> I64:
        return self.compute(*self._inputs(xs))[0]

    def run_outputs(self, xs: Sequence[I64 | None]) -> list[I64]:
        return list(self.compute(*self._inputs(xs)))

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        t_len, batch = src.input_shape(0)[:2]
        return (t_len, 1, batch, self.hidden)

    def out_shape_of(self, k: int, src: ElementSource) -> tuple[int, ...]:
        if k == 0:
            return self.out_shape(src)
        if k == 1:
            return (1, src.input_shape(0)[1], self.hidden)
        raise self.fail(f"output {k} (Y_c) is not computed")

    def _full(self, src: ElementSource) -> tuple[I64, I64]:
        def whole(k: int) -> I64:
            shape = self.in_shape(src, k)
            n = int(np.prod(shape, dtype=np.int64))
            return self.read(src, k, np.arange(n, dtype=np.int64)).reshape(shape)

        h0 = whole(5) if self.has_input(5) else None
        c0 = whole(6) if self.has_input(6) else None
        return self.compute(whole(0), h0, c0)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        return int(self._full(src)[0].reshape(-1)[flat])

    def element_of(self, k: int, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        if k not in (0, 1):
            raise self.fail(f"output {k} (Y_c) is not computed")
        return int(self._full(src)[k].reshape(-1)[flat])


def _stack(ys: list[I64], batch: int, hn: int) -> I64:
    return np.stack(ys)[:, None, :, :] if ys else np.zeros((0, 1, batch, hn), np.int64)


@register
class LSTM(_Recurrent):
    op_types = ("LSTM",)

    def compute(self, x: I64, h0: I64 | None, c0: I64 | None) -> tuple[I64, I64]:
        p = self.params()
        hn = self.hidden
        t_len, batch = x.shape[0], x.shape[1]
        h = self.initial(x, h0)
        c = np.zeros((batch, hn), np.int64)
        if c0 is not None:
            c = self._rescale(c0.reshape(batch, hn).astype(np.int64), "c0", None)
        if t_len > _MAX_STEPS or (c.size and int(np.abs(c).max()) > _MAX_STEPS << _FRAC):
            # |c| grows by at most 1 per step: this keeps f·c (Q30·Q16) below 2**60
            raise self.fail(f"sequence length and |initial_c| must be at most {_MAX_STEPS}")
        ys = []
        for t in range(t_len):
            gx, gh = self.gate_sums(x[t], h)
            g = gx + gh + p["b16"]
            gi, go, gf, gc = (g[:, k * hn : (k + 1) * hn] for k in range(4))
            i, o, f = nl.sigmoid_q30(gi), nl.sigmoid_q30(go), nl.sigmoid_q30(gf)
            ct = round_shift(nl.tanh_q30(gc), 30 - _FRAC)
            c = round_shift(f * c + i * ct, 30)
            hq30 = round_shift(o * nl.tanh_q30(c), 30)
            h = saturate(round_shift(hq30, 30 - self.bits), self.qmax)
            ys.append(h)
        return _stack(ys, batch, hn), h[None, :, :]


@register
class GRU(_Recurrent):
    op_types = ("GRU",)
    gates = 3
    default_acts = ("Sigmoid", "Tanh")

    def bias_params(
        self, wb: npt.NDArray[np.float64], rb: npt.NDArray[np.float64]
    ) -> dict[str, I64]:
        # z, r: one Q16 bias (Wb + Rb); the candidate keeps Wbh and Rbh apart (Rbh sits inside
        # the reset product when linear_before_reset = 1)
        return {"b16": _q16(wb + rb), "wb16": _q16(wb), "rb16": _q16(rb)}

    def compute(self, x: I64, h0: I64 | None, c0: I64 | None) -> tuple[I64, I64]:
        p = self.params()
        hn = self.hidden
        t_len, batch = x.shape[0], x.shape[1]
        lbr = int(self.attrs.get("linear_before_reset", 0)) == 1
        h = self.initial(x, h0)
        one = np.int64(nl.ONE_Q30)
        ys: list[I64] = []
        for t in range(t_len):
            gx, gh = self.gate_sums(x[t], h)
            zr = gx[:, : 2 * hn] + gh[:, : 2 * hn] + p["b16"][: 2 * hn]
            z, r = nl.sigmoid_q30(zr[:, :hn]), nl.sigmoid_q30(zr[:, hn:])
            if lbr:
                rec = gh[:, 2 * hn :] + p["rb16"][2 * hn :]
                cand = gx[:, 2 * hn :] + p["wb16"][2 * hn :] + round_shift(r * rec, 30)
            else:
                rh = saturate(round_shift(r * h, 30), self.qmax)  # r ⊙ h at the scale 2**-b
                rec = self._rescale(rh @ p["r"][2 * hn :].T, "h", 1, rows=slice(2 * hn, None))
                cand = gx[:, 2 * hn :] + rec + p["wb16"][2 * hn :] + p["rb16"][2 * hn :]
            ht = round_shift(nl.tanh_q30(cand), 30 - self.bits)  # at 2**-b
            h = saturate(round_shift((one - z) * ht + z * h, 30), self.qmax)
            ys.append(h)
        return _stack(ys, batch, hn), h[None, :, :]
