"""The demo digits MLP run in fixed point and committed as a referee commitment v1.

A stand-in for the deterministic executor's own trace until `edgetrust.runtime.fixed` exposes
its plan and trace: the same integer definition (per-output-channel weight scales, bias at the
accumulator scale, integer multipliers from frexp as in `_arith.make_rescale`, rounding half
away from zero, saturation), with fixed activation scales instead of calibrated ones. Used by
the chain demo, tests and benchmark to drive the on-chain referee with a real model.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from edgetrust.chain.dispute import (
    DenseNode,
    RefereeCommitment,
    TensorCommitment,
    referee_element,
)
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

QMAX = 127
MULT_BITS = 31


def _quantize(x: npt.NDArray[Any], scale: npt.NDArray[Any] | float) -> npt.NDArray[np.int64]:
    v = np.asarray(x, np.float64) / scale
    t = np.trunc(v)
    r = t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)
    out: npt.NDArray[np.int64] = np.clip(r, -QMAX, QMAX).astype(np.int64)
    return out


def _rescale(ratios: npt.NDArray[Any], bound: int) -> tuple[npt.NDArray[np.int64], int, int]:
    pre = max(0, int(bound).bit_length() - MULT_BITS)
    _, e = math.frexp(float(ratios.max()))
    shift = MULT_BITS - e - pre
    mult = np.array([round(math.ldexp(float(r), MULT_BITS - e)) for r in ratios], np.int64)
    return mult, shift, pre


@cache
def digits_gemms() -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    model = onnx.load_from_string(digits_mlp_onnx()[0])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            w = inits[node.input[1]].astype(np.float64)
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            w = w if trans_b else w.T  # as (N, K)
            out.append((w, inits[node.input[2]].astype(np.float64)))
    return out


def digits_run(sample: int = 0, *, lie_at: tuple[int, int] | None = None) -> RefereeCommitment:
    """Run the quantized MLP on one test digit; `lie_at=(node, element)` alters one output."""
    _, x_test, _, _ = load_digits_split()
    x = x_test[sample].astype(np.float64)
    s_a = 1.0 / QMAX
    a = _quantize(x, s_a)
    tensors = [TensorCommitment.of(1, a.size, a.tolist())]
    nodes = []
    calib = [4.0, 8.0]
    for i, (w, b) in enumerate(digits_gemms()):
        n, k = w.shape
        s_w = np.max(np.abs(w), axis=1) / QMAX
        wq = _quantize(w, s_w[:, None])
        acc_scale = s_a * s_w
        bq = np.round(b / acc_scale).astype(np.int64)
        s_out = calib[i] / QMAX
        bound = k * QMAX * QMAX + int(np.max(np.abs(bq)))
        mult, shift, pre = _rescale(acc_scale / s_out, bound)
        y = [
            referee_element(
                a.tolist(),
                wq[c].tolist(),
                int(bq[c]),
                mult=int(mult[c]),
                shift=shift,
                pre=pre,
                saturating=False,
                qmax=QMAX,
            )
            for c in range(n)
        ]
        if lie_at is not None and lie_at[0] == i:
            y[lie_at[1]] += 1 if y[lie_at[1]] < QMAX else -1
        nodes.append(
            DenseNode(
                input_index=len(tensors) - 1,
                output_index=len(tensors),
                weights=TensorCommitment.of(n, k, wq.reshape(-1).tolist()),
                bias=TensorCommitment.of(1, n, bq.tolist()),
                mult=TensorCommitment.of(1, n, mult.tolist()),
                shift=shift,
                pre=pre,
                saturating=False,
                qmax=QMAX,
            )
        )
        tensors.append(TensorCommitment.of(1, n, y))
        relu = [max(0, v) for v in y]
        tensors.append(TensorCommitment.of(1, n, relu))
        a = np.array(relu, np.int64)
        s_a = s_out
    return RefereeCommitment(nodes=tuple(nodes), tensors=tuple(tensors))
