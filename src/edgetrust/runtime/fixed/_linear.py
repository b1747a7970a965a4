"""Gemm, MatMul and the part of Conv they share: exact integer dot products, per-channel scales.

Integer definition (all three): ``acc = Σ_k a_k · w_k + b`` in exact integers, where weights
are quantized per output channel (scale s_w[c] = max|W[c, :]| / qmax) and the bias at the
accumulator scale s_a · s_w[c] (int64, ``round_half_away(bias / (s_a · s_w[c]))``); then
``out = saturate(rescale(acc, s_a · s_w[c] / s_out))``. The sums run through float BLAS in
K-chunks proven exact (`_arith.exact_matmul`), so they are the same integers on every machine.
Conv (`_conv`) shares this machinery.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _kernels, _ortgemm
from edgetrust.runtime.fixed._arith import (
    F64,
    I64,
    Rescale,
    apply_rescale,
    as_float,
    exact_matmul,
    matmul_chunk,
    quantize,
    requantize,
    round_float,
    saturate,
)
from edgetrust.runtime.fixed._base import ElementSource, Op, broadcast_shapes, register, unravel


def quantize_rows(w: F64, qmax: int) -> tuple[I64, F64]:
    """Quantize each row (output channel) of a 2-D float matrix with its own scale."""
    amax = np.max(np.abs(w), axis=1) if w.shape[1] else np.zeros(w.shape[0])
    scales = np.where(amax > 0, amax / qmax, 1.0)
    return quantize(w, scales[:, None], qmax), scales


def quantize_bias(bias: F64, acc_scales: F64) -> I64:
    """A bias at the accumulator scale (int64), rounded half away from zero."""
    q = round_float(np.asarray(bias, np.float64) / acc_scales)
    if np.any(np.abs(q) >= 2.0**52):
        raise InvalidInputError("a bias is too large for its accumulator scale")
    return q.astype(np.int64)


class _Dense(Op):
    """Shared machinery: weights (N, K) per channel or a second activation, bias, rescale."""

    def channel_weights(self, rows: F64, bias_input: int = 2) -> dict[str, Any]:
        """Quantized weight rows (one per output channel), the bias of input `bias_input`
        (zeros when absent) at each channel's accumulator scale, and those scales."""
        sa = self.info(0).scale
        assert sa is not None
        w, sw = quantize_rows(rows, self.qmax)
        acc = sa * sw
        bias = np.zeros(rows.shape[0])
        if self.has_input(bias_input):
            bias = np.asarray(self.info(bias_input).const, np.float64).reshape(-1)
            if bias.shape[0] != rows.shape[0]:
                raise self.fail("bias length differs from the output channels")
        return {"w": w, "b": quantize_bias(bias, acc), "acc_scales": acc}

    def weights(self) -> dict[str, Any]:
        """Channel weights and bias before the output scale is known (for calibration)."""
        raise NotImplementedError

    def _conv_weight_shape(self, what: str) -> tuple[int, int, int, int]:
        """Check a 2-D (transposed) convolution's inputs; the shape of its constant weights."""
        if self.info(0).kind != "q":
            raise self.fail("input X must be a real tensor")
        if not self.is_const(1):
            raise self.fail("weights W must be constant")
        if self.has_input(2) and not self.is_const(2):
            raise self.fail("a non-constant bias B is not supported")
        wshape = np.asarray(self.info(1).const).shape
        if len(wshape) != 4:
            raise self.fail(f"only 2-D {what} (4-D weights) is supported")
        a, b, c, d = (int(n) for n in wshape)
        return a, b, c, d

    def _wide_scales(self) -> F64:
        return np.asarray(self.weights()["acc_scales"], np.float64)

    def make_params(self) -> dict[str, I64]:
        """Weights (w, b) when constant, and the requantization multipliers (mult, shift)."""
        assert self.out_scale is not None
        wts = self.weights()
        rs = self.make_rescale(self._wide_scales() / self.out_scale)
        out = {k: v for k, v in wts.items() if k in ("w", "b")}
        out.update(rs.params())
        return out

    def _rescale_from(self, p: dict[str, I64]) -> Rescale:
        return Rescale.from_params(p["mult"], p["shift"])

    def _acc(self, xs: Sequence[I64 | None]) -> I64:
        raise NotImplementedError

    def _max_real(self, acc: I64) -> float:
        if acc.size == 0:
            return 0.0
        per_c = np.max(
            np.abs(np.moveaxis(acc, self.channel_axis(acc.ndim), -1)).reshape(
                -1, acc.shape[self.channel_axis(acc.ndim)]
            ),
            axis=0,
        )
        scales = self._wide_scales()
        return float(np.max(per_c.astype(np.float64) * (scales if scales.size > 1 else scales[0])))

    def channel_axis(self, ndim: int) -> int:
        """Axis of the output channels (per-channel multipliers)."""
        return ndim - 1

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """Largest |real| accumulator value."""
        return self._max_real(self._acc(xs))

    def calib_pass(self, xs: Sequence[I64 | None]) -> tuple[float, Any]:
        """Keep the accumulator: the GEMM is the expensive part."""
        acc = self._acc(xs)
        return self._max_real(acc), acc

    def _requant(self, acc: I64) -> I64:
        rs = self._rescale_from(self.params())
        return requantize(acc, rs, self.qmax, channel_axis=self.channel_axis(acc.ndim))

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Accumulate, then requantize per channel."""
        return self._requant(self._acc(xs))

    def run_calibrated(self, xs: Sequence[I64 | None], state: Any) -> I64:
        """Requantize the kept accumulator."""
        return self._requant(state)

    def _rows(self, xs: Sequence[I64 | None]) -> I64 | None:
        """The input as the (M, K) rows the constant weights multiply (None: not 2-D-able)."""
        raise NotImplementedError

    def _run_compiled(self, xs: Sequence[I64 | None], relu: bool = False) -> I64 | None:
        """For constant weights: one float matmul (onnxruntime's where it pays, `_ortgemm`),
        then bias, requantization (and Relu) in one compiled pass - or numpy's: the integers
        of `_requant(_acc(xs))` (exact_matmul's single chunk). Output rows keep the input's
        leading shape. None where no single exact chunk covers K."""
        p = self.params()
        if self.__dict__.get("_compiled_for") is not p:  # prepared once per set of params
            wf = self.weights_float_t()
            _, chunk = matmul_chunk(self.qmax, self.qmax)
            self._compiled = None
            if wf is not None and wf.shape[0] <= chunk:
                mult = np.ascontiguousarray(np.broadcast_to(p["mult"].reshape(-1), wf.shape[1:]))
                bias = self.weights().get("b")
                mm = _ortgemm.OrtMatMul(wf)
                self._compiled = (wf, bias, mult, int(p["shift"][0]), mm)
            self._compiled_for = p
        if self._compiled is None:
            return None
        wf, bias, mult, shift, mm = self._compiled
        a = self._rows(xs)
        if a is None or a.shape[1] != wf.shape[0]:
            return None
        q = self.qmax
        lo = 0 if relu else -q

        def finish(acc: npt.NDArray[Any]) -> I64:
            out = _kernels.gemm_epilogue(acc, bias, mult, shift, lo, q)
            if out is None:
                wide = acc.astype(np.int64)
                out = self._requant(wide if bias is None else wide + bias)
                if relu:
                    np.maximum(out, 0, out=out)
            return out

        tune = mm.applies(a.shape)  # else too small a product for a session
        use_ort = tune and mm.tuner.pick(a.shape[0])
        start = time.perf_counter()
        done = mm.bound(a, q, finish, session=use_ort) if tune else None
        if done is None:
            done = finish(
                _ortgemm.matmul(as_float(a, q, wf.dtype.type), wf, mm if use_ort else None)
            )
        if tune:
            mm.tuner.record(a.shape[0], use_ort, time.perf_counter() - start)
        return done

    def weights_float_t(self) -> npt.NDArray[Any] | None:
        """The quantized weights transposed (K, N) in the exact float format, cached: the
        conversion would otherwise cost as much as a small GEMM on every run."""
        if not hasattr(self, "_wf"):
            dtype, _ = matmul_chunk(self.qmax, self.qmax)
            w = self.weights().get("w")
            self._wf = (
                None if w is None or dtype is None else np.ascontiguousarray(w.T, dtype=dtype)
            )
        return self._wf


@register
class Gemm(_Dense):
    """Y = alpha · A' · B' + beta · C, with A' = A or Aᵀ, B' = B or Bᵀ (2-D)."""

    op_types = ("Gemm",)

    def setup(self) -> None:
        a = self.info(0)
        if a.kind != "q":
            raise self.fail("input A must be a real tensor")
        self.trans_a = bool(self.attrs.get("transA", 0))
        self.trans_b = bool(self.attrs.get("transB", 0))
        self.alpha = float(self.attrs.get("alpha", 1.0))
        self.beta = float(self.attrs.get("beta", 1.0))
        self.b_const = self.is_const(1)
        if self.has_input(2) and not self.is_const(2):
            raise self.fail("a non-constant C input is not supported")
        if not self.b_const:
            if self.info(1).kind != "q":
                raise self.fail("input B must be a real tensor")
            if self.has_input(2):
                raise self.fail("C with a non-constant B is not supported")
            if self.alpha <= 0:
                raise self.fail("alpha must be positive when B is not constant")

    def _bias_vec(self, n: int) -> F64:
        if not self.has_input(2):
            return np.zeros(n)
        c = np.asarray(self.info(2).const, np.float64) * self.beta
        if c.size == 1:
            return np.full(n, float(c.reshape(-1)[0]))
        if c.size == n and (c.ndim == 1 or c.shape[:-1] == (1,) * (c.ndim - 1)):
            return c.reshape(-1)
        raise self.fail(f"C of shape {c.shape} is not a per-column bias")

    def weights(self) -> dict[str, Any]:
        """Quantized weights (N, K), bias and accumulator scales."""
        if not hasattr(self, "_weights"):
            sa = self.info(0).scale
            assert sa is not None
            if self.b_const:
                b = np.asarray(self.info(1).const, np.float64)
                if b.ndim != 2:
                    raise self.fail("B must be 2-D")
                wk = (b.T if not self.trans_b else b) * self.alpha  # (N, K)
                w, sw = quantize_rows(wk, self.qmax)
                acc = sa * sw
                bias = quantize_bias(self._bias_vec(wk.shape[0]), acc)
                self._weights = {"w": w, "b": bias, "acc_scales": acc}
            else:
                sb = self.info(1).scale
                assert sb is not None
                self._weights = {"acc_scales": np.array([sa * sb * self.alpha])}
        return self._weights

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Accumulate, then requantize per channel (`_run_compiled` where it applies)."""
        fast = self._run_compiled(xs) if self.b_const else None
        return fast if fast is not None else self._requant(self._acc(xs))

    def run_relu(self, xs: Sequence[I64 | None]) -> I64 | None:
        """``max(run(xs), 0)`` - this node and a Relu reading it alone - in the compiled
        epilogue (clipping to [0, qmax] instead of [-qmax, qmax]: the same integers); None
        where that path does not apply (the caller then runs the two nodes)."""
        return self._run_compiled(xs, relu=True) if self.b_const else None

    def _rows(self, xs: Sequence[I64 | None]) -> I64 | None:
        return self._a2d(self.x(xs, 0))

    def _a2d(self, a: I64) -> I64:
        if a.ndim != 2:
            raise InvalidInputError(f"Gemm node {self.label}: A must be 2-D, got shape {a.shape}")
        return a.T if self.trans_a else a

    def _acc(self, xs: Sequence[I64 | None]) -> I64:
        a = self._a2d(self.x(xs, 0))
        wts = self.weights()
        if self.b_const:
            w = wts["w"]
            if a.shape[1] != w.shape[1]:
                raise InvalidInputError(
                    f"Gemm node {self.label}: A has {a.shape[1]} columns, B has {w.shape[1]} rows"
                )
            acc = exact_matmul(a, None, self.qmax, self.qmax, b_float=self.weights_float_t())
        else:
            b = self.x(xs, 1)
            b = b.T if self.trans_b else b
            if b.ndim != 2 or a.shape[1] != b.shape[0]:
                raise InvalidInputError(f"Gemm node {self.label}: A and B do not multiply")
            return exact_matmul(a, b, self.qmax, self.qmax)
        out: I64 = acc + wts["b"]
        return out

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(M, N)."""
        a = src.input_shape(0)
        m = a[1] if self.trans_a else a[0]
        if self.b_const:
            return (m, src.param_shape("w")[0])
        b = src.input_shape(1)
        return (m, b[0] if self.trans_b else b[1])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One dot product of K terms."""
        m, n = unravel(flat, out_shape)
        ashape = src.input_shape(0)
        if self.trans_a:
            k = ashape[0]
            a = src.read_input(0, np.arange(k) * ashape[1] + m)
        else:
            k = ashape[1]
            a = src.read_input(0, m * k + np.arange(k))
        if self.b_const:
            w = src.read_param("w", n * k + np.arange(k))
        else:
            bshape = src.input_shape(1)
            idx = n * bshape[1] + np.arange(k) if self.trans_b else np.arange(k) * bshape[1] + n
            w = src.read_input(1, idx)
        acc = int(np.dot(a, w))
        if self.b_const:
            acc += int(src.read_param("b", np.array([n]))[0])
        return _rescale_one(acc, n, src, self.qmax)


def _rescale_one(acc: int, channel: int, src: ElementSource, qmax: int) -> int:
    """Requantize one accumulator with its channel's multiplier, read from the params."""
    nmult = src.param_shape("mult")[0]
    mult = src.read_param("mult", np.array([channel if nmult > 1 else 0]))
    shift = src.read_param("shift", np.arange(1))
    rs = Rescale.from_params(mult, shift)
    out = apply_rescale(np.array([acc], np.int64), rs, channel_axis=None)
    return int(saturate(out, qmax)[0])


@register
class MatMul(_Dense):
    """Y = A @ B (numpy semantics for rank ≥ 2): per-channel weights when B is constant."""

    op_types = ("MatMul",)

    def setup(self) -> None:
        if self.info(0).kind != "q" or self.info(1).kind != "q":
            raise self.fail("both inputs must be real tensors")
        self.b_const = self.is_const(1)
        if self.b_const and np.asarray(self.info(1).const).ndim != 2:
            raise self.fail("a constant B must be 2-D")

    def weights(self) -> dict[str, Any]:
        """Per-channel weights when B is constant; otherwise one accumulator scale."""
        if not hasattr(self, "_weights"):
            sa = self.info(0).scale
            assert sa is not None
            if self.b_const:
                w, sw = quantize_rows(np.asarray(self.info(1).const, np.float64).T, self.qmax)
                self._weights = {"w": w, "acc_scales": sa * sw}
            else:
                sb = self.info(1).scale
                assert sb is not None
                self._weights = {"acc_scales": np.array([sa * sb])}
        return self._weights

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Accumulate, then requantize per channel (`_run_compiled` where it applies)."""
        if self.b_const:
            x = self.x(xs, 0)
            fast = self._run_compiled(xs)
            if fast is not None:
                return fast.reshape(*x.shape[:-1], fast.shape[-1])
        return self._requant(self._acc(xs))

    def _rows(self, xs: Sequence[I64 | None]) -> I64 | None:
        a = self.x(xs, 0)
        return a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else None

    def _acc(self, xs: Sequence[I64 | None]) -> I64:
        a = self.x(xs, 0)
        if a.ndim < 2:
            raise InvalidInputError(f"MatMul node {self.label}: 1-D inputs are not supported")
        if self.b_const:
            w = self.weights()["w"]
            if a.shape[-1] != w.shape[1]:
                raise InvalidInputError(f"MatMul node {self.label}: inner dimensions differ")
            return exact_matmul(a, None, self.qmax, self.qmax, b_float=self.weights_float_t())
        b = self.x(xs, 1)
        if b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise InvalidInputError(f"MatMul node {self.label}: inner dimensions differ")
        broadcast_shapes([a.shape[:-2], b.shape[:-2]], lambda: f"MatMul node {self.label}")
        return exact_matmul(a, b, self.qmax, self.qmax)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Broadcast batch dimensions, then (M, N)."""
        a = src.input_shape(0)
        if self.b_const:
            return (*a[:-1], src.param_shape("w")[0])
        b = src.input_shape(1)
        batch = broadcast_shapes([a[:-2], b[:-2]], lambda: f"MatMul node {self.label}")
        return (*batch, a[-2], b[-1])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Row of A times column of B (or weight row)."""
        idx = unravel(flat, out_shape)
        ashape = src.input_shape(0)
        k = ashape[-1]
        a_batch = _batch_flat(idx[:-2], ashape[:-2])
        a = src.read_input(0, (a_batch * ashape[-2] + idx[-2]) * k + np.arange(k))
        n = idx[-1]
        if self.b_const:
            w = src.read_param("w", n * k + np.arange(k))
        else:
            bshape = src.input_shape(1)
            b_batch = _batch_flat(idx[:-2], bshape[:-2])
            w = src.read_input(1, (b_batch * k + np.arange(k)) * bshape[-1] + n)
        return _rescale_one(int(np.dot(a, w)), n, src, self.qmax)


def _batch_flat(out_batch: Sequence[int], in_batch: Sequence[int]) -> int:
    """Flat batch index, in an input's batch dims, of a broadcast output batch index."""
    if not in_batch:
        return 0
    offset = len(out_batch) - len(in_batch)
    idx = [0 if d == 1 else out_batch[offset + i] for i, d in enumerate(in_batch)]
    return int(np.ravel_multi_index(tuple(idx), tuple(in_batch)))
