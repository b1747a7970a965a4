"""Exact int16 convolution sums through onnxruntime's float32 Conv, by base-256 digits.

An int16 product reaches 2**30, beyond float32's 24 exact bits, so `_ortconv`'s argument does
not apply to it directly. Split every integer into balanced base-256 digits,
``v = 256·h + l`` with ``h = floor((v + 128) / 256)`` and ``l = v - 256·h ∈ [-128, 127]``
(so |h| ≤ floor((vmax + 128) / 256): 128 for |v| ≤ 32767). For one output element

    Σ x·w = 65536·Σ xh·wh + 256·(Σ xh·wl + Σ xl·wh) + Σ xl·wl,

and each of the four digit sums is a convolution of small integers with the fixed digit
weights. Each one gets `_ortconv`'s L1 bound with its own digit bounds (|xh| ≤ hmax, |xl| ≤
128, and the actual per-output-channel L1 norm of its digit weights), and its input channels
are cut into chunks where the bound would exceed 2**24: every partial sum of every chunk is an
exact float32 integer, whatever order MLAS sums in. The two cross sums run as one convolution
over the concatenated channels [xh, xl] with weights [wl, wh] (group 1; grouped convolutions
run them as two). Padding zeros have zero digits, so padding commutes with the split.

Everything else happens inside the same onnxruntime graph and is exact too: the digits of x
(float32 Add, Mul by 1/256, Floor, Mul, Sub of integers below 2**24: each result is exact),
and the combination in float64 (Cast of exact float32 integers, Mul by a power of two, Sum,
the bias) whose every partial result is an integer of magnitude below the plan's checked
bound Σ_t coef_t · bound_t + |b| < 2**53. The caller reads one float64 tensor of exact
integer sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed._arith import BLOCK, I64, Rescale, apply_rescale
from edgetrust.runtime.fixed._ortconv import l1_chunks, l1_per_channel, make_session

ENABLED = True  # tests switch this off to compare against the BLAS path
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


@dataclass
class _Term:
    """One digit convolution: input `source`, float32 weights, coefficient, channel chunks."""

    source: str
    w: npt.NDArray[np.float32]
    coef: int
    chunks: list[tuple[int, int]]
    bound: int  # max_o of the whole sum's magnitude bound (all chunks)


class DigitConv:
    """One Conv node's digit convolutions, as one cached onnxruntime graph per geometry."""

    def __init__(self, terms: list[_Term], group: int, kernel: tuple[int, int], bias: I64 | None):
        self.terms = terms
        self.group = group
        self.kernel = kernel
        self.bias = bias
        self._sessions: dict[tuple[Any, ...], ort.InferenceSession] = {}

    @classmethod
    def plan(cls, w4: I64, group: int, xmax: int, bias: I64 | None) -> DigitConv | None:
        """The digit path for weights `w4` (OC, Cg, KH, KW) and inputs |x| ≤ xmax, or None
        when a digit sum has no exact chunking or the float64 combination could be inexact."""
        if 0 in w4.shape or not 0 <= xmax < 1 << 24:
            return None
        wh, wl = split_digits(w4)
        hx = high_bound(xmax)
        hh = l1_per_channel(wh, hx)
        ll = l1_per_channel(wl, _LOW)
        hl = l1_per_channel(wl, hx)
        lh = l1_per_channel(wh, _LOW)
        specs: list[tuple[str, I64, int, I64]] = [("xh", wh, 65536, hh), ("xl", wl, 1, ll)]
        if MODE == "karatsuba":
            ws = wh + wl
            specs = [
                ("xh", wh, 65536 - 256, hh),
                ("xl", wl, 1 - 256, ll),
                ("xs", ws, 256, l1_per_channel(ws, hx + _LOW)),
            ]
        elif group == 1 and MODE == "concat":
            cat_w = np.concatenate([wl, wh], axis=1)
            specs.append(("xc", cat_w, 256, np.concatenate([hl, lh], axis=1)))
        else:
            specs += [("xh", wl, 256, hl), ("xl", wh, 256, lh)]
        terms: list[_Term] = []
        total = 0 if bias is None else int(np.abs(bias).max(initial=0))
        for source, wd, coef, per_c in specs:
            if not per_c.any():
                continue  # an all-zero digit contributes nothing
            chunks = l1_chunks(per_c, group)
            if chunks is None:
                return None
            bound = int(per_c.sum(axis=1).max())
            total += abs(coef) * bound
            terms.append(_Term(source, np.ascontiguousarray(wd, np.float32), coef, chunks, bound))
        if total >= _F64_EXACT or not terms:
            return None
        return cls(terms, group, (int(w4.shape[2]), int(w4.shape[3])), bias)

    def sums(
        self,
        x: I64,
        pads: tuple[int, int, int, int],
        strides: list[int],
        dilations: list[int],
    ) -> npt.NDArray[np.float64]:
        """Σ x·w (+ b) per output element (N, OC, OH, OW), exact integers in float64;
        `pads` = (t, l, b, r)."""
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
        y: npt.NDArray[np.float64] = sess.run(None, {"x": x.astype(np.float32)})[0]
        return y

    def _graph(self, attrs: dict[str, Any], channels: int) -> Any:
        """x → digits → digit convolutions by chunks → float64 combination (+ bias) → y."""
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
        parts: list[str] = []
        for i, term in enumerate(self.terms):
            sums: list[str] = []
            for j, (c0, c1) in enumerate(term.chunks):
                name = f"t{i}c{j}"
                src = term.source
                if len(term.chunks) > 1:
                    for k, v in (("s", c0), ("e", c1)):
                        inits.append(numpy_helper.from_array(np.array([v], np.int64), f"{name}{k}"))
                    inits.append(numpy_helper.from_array(np.array([1], np.int64), f"{name}a"))
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
                    helper.make_node(
                        "Conv", [src, f"{name}w"], [f"{name}y"], group=self.group, **attrs
                    )
                )
                nodes.append(
                    helper.make_node("Cast", [f"{name}y"], [f"{name}d"], to=TensorProto.DOUBLE)
                )
                sums.append(f"{name}d")
            total = sums[0]
            if len(sums) > 1:
                total = f"t{i}sum"
                nodes.append(helper.make_node("Sum", sums, [total]))
            if term.coef != 1:
                inits.append(numpy_helper.from_array(np.array(float(term.coef)), f"t{i}k"))
                nodes.append(helper.make_node("Mul", [total, f"t{i}k"], [f"t{i}m"]))
                total = f"t{i}m"
            parts.append(total)
        if self.bias is not None:
            b = self.bias.astype(np.float64).reshape(1, -1, 1, 1)
            inits.append(numpy_helper.from_array(b, "bias"))
            parts.append("bias")
        if len(parts) > 1:
            nodes.append(helper.make_node("Sum", parts, ["y"]))
        else:
            nodes.append(helper.make_node("Identity", parts, ["y"]))
        return helper.make_graph(
            nodes,
            "exact_digit_conv",
            [helper.make_tensor_value_info("x", f32, ["n", channels, "h", "w"])],
            [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
            inits,
        )


def requant_blocks(
    y: npt.NDArray[np.float64],
    rs: Rescale,
    bound: int,
    qmax: int,
    post: Callable[[I64, int, int], None] | None = None,
) -> I64:
    """``sat(apply_rescale(y))`` per output channel (N, OC, ...), block by block
    (`_arith.BLOCK` elements) so that the passes run in cache; `bound` is a proven bound on
    |y| (the plan's), so every block takes the path `apply_rescale` takes for the whole
    tensor with that bound - the same integers. `post(block, c0, c1)`, if given, then
    rewrites each block of channels [c0, c1) in place."""
    n, oc = y.shape[0], y.shape[1]
    src = y.reshape(n, oc, -1)
    out: I64 = np.empty(src.shape, np.int64)
    inner = src.shape[2]
    step = max(1, BLOCK // max(inner, 1))
    per_channel = rs.mult.size > 1
    for o in range(n):
        for c0 in range(0, oc, step):
            c1 = min(oc, c0 + step)
            w = out[o, c0:c1]
            np.copyto(w, src[o, c0:c1], casting="unsafe")  # exact: integers below 2**53
            sub = Rescale(rs.mult[c0:c1], rs.shift) if per_channel else rs
            r = apply_rescale(w, sub, channel_axis=0, bound=bound)
            np.clip(r, -qmax, qmax, out=w)
            if post is not None:
                post(w, c0, c1)
    return out.reshape(y.shape)
