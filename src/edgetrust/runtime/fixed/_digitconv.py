"""Exact int16 convolution sums through onnxruntime's float32 Conv, by base-256 digits.

An int16 product reaches 2**30, beyond float32's 24 exact bits, so `_ortconv`'s argument does
not apply to it directly. Split every integer into balanced base-256 digits,
``v = 256·h + l`` with ``h = floor((v + 128) / 256)`` and ``l = v - 256·h ∈ [-128, 127]``
(so |h| ≤ floor((vmax + 128) / 256): 128 for |v| ≤ 32767). For one output element

    Σ x·w = 65536·Σ xh·wh + 256·(Σ xh·wl + Σ xl·wh) + Σ xl·wl,

and the cross sums are ``ss - hh - ll`` with ``ss = Σ (xh + xl)·(wh + wl)`` (Karatsuba: three
convolutions instead of four; measured faster than one convolution over the concatenated
channels [xh, xl] with weights [wl, wh], `MODE`). Each digit sum is a convolution of small
integers with fixed digit weights and gets `_ortconv`'s L1 bound with its own digit bounds
(|xh| ≤ hmax, |xl| ≤ 128, |xh + xl| ≤ hmax + 128, and the actual per-output-channel L1 norm of
its digit weights); its input channels are cut into chunks where the bound would exceed 2**24,
so every partial sum of every chunk is an exact float32 integer, whatever order MLAS sums in.
A coefficient's signed power of two is folded into the float32 weights (exact: it moves
exponents only, |values| ≤ 2**40). Padding zeros have zero digits, so padding commutes with
the split.

The digits of x are computed in the same onnxruntime graph (float32 Add, Mul by 1/256, Floor,
Mul, Sub on integers below 2**24: every result exact). The graph returns one float32 tensor
per digit sum and chunk; they are combined in float64 block by block (each intermediate is an
integer of magnitude ≤ Σ_t |coef_t| · bound_t + |b|, checked < 2**53 in the plan), then
converted to int64 and requantized in the same block while it is in cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import (
    BLOCK,
    I64,
    Rescale,
    apply_rescale,
    narrow_dtype,
    tie_free_split,
)
from edgetrust.runtime.fixed._batchnorm import ArithPost
from edgetrust.runtime.fixed._elementwise import KeptRelu, ReluPost
from edgetrust.runtime.fixed._ortconv import l1_chunks, l1_per_channel, make_session

ENABLED = True  # tests switch this off to compare against the BLAS path
ALIGN = 16  # chunk boundaries at whole NCHWc channel blocks where possible
MIN_TERMS = 129
"""Fewest terms per output (Cg·KH·KW) for which the digit path is taken: below, the float64
BLAS path is faster (measured on ResNet50 and SqueezeNet, one thread: the digit path's
per-output combination outweighs its cheaper products when the sums are short)."""
MATMUL = True
"""One-group convolutions run as one exact float64 MatMul over im2col columns (`_matconv`),
except where the columns would be large (then the digits): measured ~1.7x faster than three
digit convolutions for 1×1 kernels and 1.1-1.45x for 3×3 ones (ResNet50, SqueezeNet)."""
MODE = "karatsuba"  # or "concat" / "split": how the cross sums run (measured: karatsuba fastest)
_F64_EXACT = 1 << 53
_LOW = 128  # |low digit| ≤ 128


def split_digits(v: I64) -> tuple[I64, I64]:
    """Balanced base-256 digits (h, l) with v = 256·h + l, l ∈ [-128, 127]."""
    h: I64 = (v + 128) >> 8
    low: I64 = v - (h << 8)
    return h, low


def high_bound(vmax: int) -> int:
    """The bound on |h| for |v| ≤ vmax: 256·h = v - l with l ∈ [-128, 127]."""
    return (vmax + 128) >> 8


def _fold(coef: int) -> tuple[int, int]:
    """coef = scale · odd with scale = ±2**k: (scale, odd ≥ 1). Scaling float32 weights by
    ±2**k keeps every product and partial sum exact (the exponent moves, the significand of
    each integer below 2**24 does not), so only the odd factor is left for the combination."""
    odd = abs(coef)
    while odd and odd % 2 == 0:
        odd //= 2
    return coef // odd, odd


@dataclass
class _Term:
    """One digit convolution: input `source`, float32 weights (scaled by the coefficient's
    signed power of two), the odd factor left, channel chunks."""

    source: str
    w: npt.NDArray[Any]  # float32 digit weights (float64 for `_matconv`)
    odd: int
    chunks: list[tuple[int, int]]


class DigitConv:
    """One Conv node's digit convolutions, as one cached onnxruntime graph per geometry; the
    float32 sums are combined in float64 and int64 by blocks of output channels."""

    def __init__(self, terms: list[_Term], group: int, kernel: tuple[int, int], bias: I64 | None):
        self.terms = terms
        self.group = group
        self.kernel = kernel
        self.bias = None if bias is None else bias.astype(np.float64).reshape(-1, 1)
        self.bias_int = None if bias is None else np.asarray(bias, np.int64).reshape(-1)
        # Graph outputs (one per term and chunk) grouped by the odd factor they share.
        groups: dict[int, list[int]] = {}
        k = 0
        for term in terms:
            groups.setdefault(term.odd, []).extend(range(k, k + len(term.chunks)))
            k += len(term.chunks)
        self.groups = sorted(groups.items(), reverse=True)
        self.n_parts = k
        # Each graph output's odd factor, in output order (the compiled epilogue's).
        self.odd = np.array([t.odd for t in terms for _ in t.chunks], np.int64)
        self._sessions: dict[tuple[Any, ...], ort.InferenceSession] = {}
        self._buffers: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()  # the buffers are reused: one run at a time

    @classmethod
    def plan(cls, w4: I64, group: int, xmax: int, bias: I64 | None) -> DigitConv | None:
        """The digit path for weights `w4` (OC, Cg, KH, KW) and inputs |x| ≤ xmax, or None
        when a digit sum has no exact chunking or the float64 combination could be inexact."""
        if MATMUL and group == 1:
            from edgetrust.runtime.fixed._matconv import MatConv  # a subclass: imported late

            mat = MatConv.plan_matmul(w4, group, xmax, bias)
            if mat is not None and w4.shape[2:] != (1, 1):
                # Kept for inputs whose im2col columns would be too large (`_matconv`).
                mat.fallback = cls.plan_digits(w4, group, xmax, bias)
            return mat
        return cls.plan_digits(w4, group, xmax, bias)

    @classmethod
    def plan_digits(cls, w4: I64, group: int, xmax: int, bias: I64 | None) -> DigitConv | None:
        """`plan` without the MatMul path: the digit convolutions."""
        if 0 in w4.shape or not 0 <= xmax < 1 << 24 or w4[0].size < MIN_TERMS:
            return None
        wh, wl = split_digits(w4)
        hx = high_bound(xmax)
        hh = l1_per_channel(wh, hx)
        ll = l1_per_channel(wl, _LOW)
        specs: list[tuple[str, I64, int, I64]] = [("xh", wh, 65536, hh), ("xl", wl, 1, ll)]
        if MODE == "karatsuba":
            # 65536·hh + 256·(ss - hh - ll) + ll, ss = Σ (xh + xl)·(wh + wl)
            ws = wh + wl
            specs = [
                ("xh", wh, 65536 - 256, hh),
                ("xl", wl, 1 - 256, ll),
                ("xs", ws, 256, l1_per_channel(ws, hx + _LOW)),
            ]
        elif group == 1 and MODE == "concat":
            cat_w = np.concatenate([wl, wh], axis=1)
            cat_b = np.concatenate([l1_per_channel(wl, hx), l1_per_channel(wh, _LOW)], axis=1)
            specs.append(("xc", cat_w, 256, cat_b))
        else:
            specs += [
                ("xh", wl, 256, l1_per_channel(wl, hx)),
                ("xl", wh, 256, l1_per_channel(wh, _LOW)),
            ]
        terms: list[_Term] = []
        total = 0 if bias is None else int(np.abs(bias).max(initial=0))
        for source, wd, coef, per_c in specs:
            if not per_c.any():
                continue  # an all-zero digit contributes nothing
            chunks = l1_chunks(per_c, group, align=ALIGN)
            if chunks is None:
                return None
            # Every float64 partial result is a partial sum of the terms' contributions.
            total += abs(coef) * int(per_c.sum(axis=1).max())
            scale, odd = _fold(coef)
            wf = np.ascontiguousarray(wd * scale, np.float32)  # exact: ±2**k · |wd| ≤ 2**40
            terms.append(_Term(source, wf, odd, chunks))
        if total >= _F64_EXACT or not terms:
            return None
        return cls(terms, group, (int(w4.shape[2]), int(w4.shape[3])), bias)

    def _parts(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> npt.NDArray[np.float32]:
        """Each term's and chunk's exact float32 sums (P, N, OC, OH, OW), in a buffer the next
        call overwrites (hold `_lock`); `pads` = (t, l, b, r)."""
        key = (pads, tuple(strides), tuple(dilations))
        sess = self._sessions.get(key)
        if sess is None:
            attrs: dict[str, Any] = {
                "pads": list(pads),
                "strides": list(strides),
                "dilations": list(dilations),
                "kernel_shape": list(self.kernel),
            }
            sess = make_session(self._graph(attrs, x.shape[1]))
            self._sessions[key] = sess
        # Input and output buffers kept per geometry and shape: fresh multi-megabyte arrays on
        # every run would cost more in page faults than the arithmetic they hold.
        bkey = (*key, x.shape)
        bufs = self._buffers.get(bkey)
        if bufs is None:
            n, _, h, w = x.shape
            (kh, kw), (sh, sw), (dh, dw) = self.kernel, strides, dilations
            oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
            ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
            oc = self.terms[0].w.shape[0]
            xf = np.empty(x.shape, np.float32)
            outs = np.empty((self.n_parts, n, oc, oh, ow), np.float32)
            binding = sess.io_binding()
            binding.bind_cpu_input("x", xf)
            for i, buf in enumerate(outs):
                binding.bind_output(f"y{i}", "cpu", 0, np.float32, buf.shape, buf.ctypes.data)
            bufs = (xf, outs, binding)
            self._buffers[bkey] = bufs
        xf, outs, binding = bufs
        np.copyto(xf, x, casting="unsafe")  # exact: |x| < 2**24
        sess.run_with_iobinding(binding)
        return outs

    def sums(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
        finish: Callable[[npt.NDArray[np.float64], I64, int, int], None] | None = None,
    ) -> I64:
        """Σ x·w (+ b) per output element (N, OC, OH, OW), exact int64, or, with `finish`,
        ``finish(sums, out, c0, c1)`` writing each block of channels [c0, c1) of the result
        into `out` from its float64 sums (the requantization)."""
        with self._lock:
            parts = self._parts(x, pads, strides, dilations)
            if isinstance(finish, Requantizer):
                fast = finish.compiled(parts, self.odd, self.bias_int)
                if fast is not None:
                    return fast
            shape = parts[0].shape
            n, oc = shape[0], shape[1]
            flat = [p.reshape(n, oc, -1) for p in parts]
            inner = flat[0].shape[2]
            result: I64 = np.empty((n, oc, inner), np.int64)
            step = max(1, BLOCK // max(inner, 1))
            d_buf = np.empty(min(oc, step) * inner, np.float64)
            t_buf = np.empty_like(d_buf) if len(self.groups) > 1 else d_buf
            for o in range(n):
                for c0 in range(0, oc, step):
                    c1 = min(oc, c0 + step)
                    size = (c1 - c0) * inner
                    d = d_buf[:size].reshape(c1 - c0, inner)
                    t = t_buf[:size].reshape(c1 - c0, inner)
                    self._combine([p[o, c0:c1] for p in flat], d, t, c0, c1)
                    if finish is None:
                        np.copyto(result[o, c0:c1], d, casting="unsafe")  # exact: below 2**53
                    else:
                        finish(d, result[o, c0:c1], c0, c1)
            return result.reshape(shape)

    def _combine(
        self,
        blocks: list[npt.NDArray[np.float32]],
        d: npt.NDArray[np.float64],
        t: npt.NDArray[np.float64],
        c0: int,
        c1: int,
    ) -> None:
        """d = Σ_groups odd · Σ parts (+ b) for one block, in float64: every intermediate is
        an integer below the plan's bound < 2**53, so each operation is exact."""
        # Groups with an odd factor first (summed, then multiplied); the parts with factor 1
        # (last, `self.groups` is sorted that way) are added straight into d.
        for g, (odd, idx) in enumerate(self.groups):
            if g and odd == 1:
                for i in idx:
                    d += blocks[i]
                continue
            buf = d if g == 0 else t
            if len(idx) == 1:
                np.copyto(buf, blocks[idx[0]])
            else:
                np.add(blocks[idx[0]], blocks[idx[1]], out=buf, dtype=np.float64)
                for i in idx[2:]:
                    buf += blocks[i]
            if odd != 1:
                buf *= float(odd)
            if g:
                d += t
        if self.bias is not None:
            d += self.bias[c0:c1]

    def _graph(self, attrs: dict[str, Any], channels: int) -> Any:
        """x → digits → digit convolutions by chunks → one float32 output per chunk."""
        f32 = TensorProto.FLOAT
        inits = [
            numpy_helper.from_array(np.array(128.0, np.float32), "c128"),
            numpy_helper.from_array(np.array(1.0 / 256.0, np.float32), "c_inv256"),
            numpy_helper.from_array(np.array(256.0, np.float32), "c256"),
        ]
        nodes = [
            helper.make_node("Add", ["x", "c128"], ["x_shift"]),
            helper.make_node("Mul", ["x_shift", "c_inv256"], ["x_div"]),
            helper.make_node("Floor", ["x_div"], ["xh"]),
            helper.make_node("Mul", ["xh", "c256"], ["xh256"]),
            helper.make_node("Sub", ["x", "xh256"], ["xl"]),
        ]
        if any(t.source == "xs" for t in self.terms):
            nodes.append(helper.make_node("Add", ["xh", "xl"], ["xs"]))
        if any(t.source == "xc" for t in self.terms):
            nodes.append(helper.make_node("Concat", ["xh", "xl"], ["xc"], axis=1))
        outputs: list[str] = []
        for i, term in enumerate(self.terms):
            for j, (c0, c1) in enumerate(term.chunks):
                name = f"t{i}c{j}"
                out = f"y{len(outputs)}"
                src = term.source
                if len(term.chunks) > 1:
                    for k, v in (("s", c0), ("e", c1), ("a", 1)):
                        inits.append(numpy_helper.from_array(np.array([v], np.int64), f"{name}{k}"))
                    nodes.append(
                        helper.make_node(
                            "Slice", [src, f"{name}s", f"{name}e", f"{name}a"], [f"{name}x"]
                        )
                    )
                    src = f"{name}x"
                inits.append(
                    numpy_helper.from_array(np.ascontiguousarray(term.w[:, c0:c1]), f"{name}w")
                )
                nodes.append(
                    helper.make_node("Conv", [src, f"{name}w"], [out], group=self.group, **attrs)
                )
                outputs.append(out)
        return helper.make_graph(
            nodes,
            "exact_digit_conv",
            [helper.make_tensor_value_info("x", f32, ["n", channels, "h", "w"])],
            [helper.make_tensor_value_info(name, f32, None) for name in outputs],
            inits,
        )


class Requantizer:
    """A `DigitConv.sums` finish: ``out = sat(apply_rescale(sums (+ bias)))`` for one block
    of channels [c0, c1) (per-channel multipliers), then `post(out, c0, c1)` if given.

    `bound` is a proven bound on |sums + bias| (the plan's). Where `_arith.tie_free_split`
    admits it for that bound, the block is rescaled in place as `_arith._mul_shift_split`
    does (m = mh·2**t + ml: ``(x·mh + ((x·ml + 2**(s-1)) >> t)) >> (s - t)``, no tie and no
    overflow for |x| ≤ bound, hence round half away from zero), with one reused temporary;
    elsewhere by `apply_rescale` itself. The same integers either way.

    `compiled` does the digit combination, this requantization and a Relu or
    BatchNormalization (`_batchnorm.ArithPost`) post in one compiled pass over the whole
    tensor, into int16 with `narrow` (the same integers: `_kernels.digit_epilogue`).
    """

    def __init__(
        self,
        rs: Rescale,
        bound: int,
        qmax: int,
        post: Callable[[I64, int, int], None] | None = None,
        bias: I64 | None = None,
        narrow: bool = False,
    ) -> None:
        self.rs = rs
        self.bound = bound
        self.qmax = qmax
        self.post = post
        self.narrow = narrow
        self.b = None if bias is None else bias.reshape(-1, 1)
        self._split: list[int | None] = []  # tie_free_split's bit, found on first use
        self.mult = rs.mult.reshape(-1, 1) if rs.mult.size > 1 else rs.mult.reshape(())
        self._tmp: list[I64] = []

    def __call__(self, d: npt.NDArray[Any], out: I64, c0: int, c1: int) -> None:
        np.copyto(out, d, casting="unsafe")  # exact: integers below 2**53
        if self.b is not None:
            out += self.b[c0:c1]
        s, tmp = self.rs.shift, self._tmp
        if not self._split:
            ok = s >= 31 and self.bound < 1 << 62
            self._split.append(tie_free_split(self.bound, self.rs) if ok else None)
        t = self._split[0]
        m = self.mult[c0:c1] if self.mult.ndim else self.mult
        if t is None:
            sub = Rescale(m.reshape(-1), s)
            np.copyto(out, apply_rescale(out, sub, channel_axis=0, bound=self.bound))
        else:
            if not tmp or tmp[0].size < out.size:
                tmp[:] = [np.empty(out.size, np.int64)]
            lo = tmp[0][: out.size].reshape(out.shape)
            np.multiply(out, m & ((1 << t) - 1), out=lo)
            lo += np.int64(1 << (s - 1))
            lo >>= t
            out *= m >> t
            out += lo
            out >>= s - t
        np.clip(out, -self.qmax, self.qmax, out=out)
        if self.post is not None:
            self.post(out, c0, c1)

    def compiled(
        self, parts: npt.NDArray[Any], odd: I64, bias: I64 | None
    ) -> npt.NDArray[Any] | None:
        """The finished tensor (N, OC, ...) from exact float parts (P, N, OC, ...) summed as
        ``Σ_p parts[p] · odd[p] + bias`` (+ this finisher's own bias), in one compiled pass;
        None where that does not apply (then the blocks run through `__call__`)."""
        post = self.post
        bn: tuple[I64, I64, int, int] | None = None
        relu = False
        if isinstance(post, ReluPost):
            relu = True
        elif isinstance(post, ArithPost):
            if post.qmax != self.qmax or post.rs.mult.size != 1:
                return None
            bn = (post.a, post.b, int(post.rs.mult.reshape(-1)[0]), post.rs.shift)
            relu = post.relu
        elif post is not None and not isinstance(post, KeptRelu):
            return None
        if self.b is not None:
            own = self.b.reshape(-1)
            bias = own if bias is None else bias + own
        dtype = narrow_dtype(self.qmax) if self.narrow else np.int64
        rs = self.rs
        if isinstance(post, KeptRelu):  # no post; the Relu behind it into post.relu, same pass
            both = _kernels.digit_epilogue_relu(
                parts, odd, bias, rs.mult, rs.shift, self.qmax, dtype
            )
            if both is None:
                return None
            post.relu = both[1]
            return both[0]
        return _kernels.digit_epilogue(
            parts, odd, bias, rs.mult, rs.shift, self.qmax, bn=bn, relu=relu, dtype=dtype
        )


def requant_blocks(
    y: npt.NDArray[Any],
    rs: Rescale,
    bound: int,
    qmax: int,
    post: Callable[[I64, int, int], None] | None = None,
    bias: I64 | None = None,
    narrow: bool = False,
) -> I64:
    """`Requantizer` applied to a whole tensor of exact float sums (N, OC, ...): in one
    compiled pass where it applies (int16 with `narrow`), else by blocks."""
    finish = Requantizer(rs, bound, qmax, post, bias, narrow)
    if y.dtype in (np.float32, np.float64):
        fast = finish.compiled(y[None], np.ones(1, np.int64), None)
        if fast is not None:
            return fast
    n, oc = y.shape[0], y.shape[1]
    src = y.reshape(n, oc, -1)
    out: I64 = np.empty(src.shape, np.int64)
    step = max(1, BLOCK // max(src.shape[2], 1))
    for o in range(n):
        for c0 in range(0, oc, step):
            c1 = min(oc, c0 + step)
            finish(src[o, c0:c1], out[o, c0:c1], c0, c1)
    return out.reshape(y.shape)
