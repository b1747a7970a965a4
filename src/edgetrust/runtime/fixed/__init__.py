"""Deterministic fixed-point execution of ONNX graphs: the same bits on every machine.

onnxruntime is not bit-exact across CPUs, so re-executing someone's inference with it cannot
tell a lie from rounding. `FixedExecutor` runs a model in integers - int8 or int16 tensors
with per-tensor scales, per-output-channel weight scales, one rounding rule (half away from
zero) and saturation - and computes every dot product through float BLAS in chunks proven
exact, so the result does not depend on the CPU, the BLAS, the thread count or the run.
Nonlinear ops (Softmax, Erf, Sigmoid, Tanh, Exp, LayerNormalization) use integer tables,
interpolation and integer square roots, never libm. See docs/fixed.md.
"""

from __future__ import annotations

from edgetrust.runtime.fixed._base import OPS as _OPS
from edgetrust.runtime.fixed._base import ElementSource, Op, TensorInfo, node_label
from edgetrust.runtime.fixed._executor import EXECUTOR_NAME, EXECUTOR_VERSION, FixedExecutor
from edgetrust.runtime.fixed._fault import Fault
from edgetrust.runtime.fixed._plan import QMAX, Entry, Precision, QuantPlan, calibration_digest
from edgetrust.runtime.fixed._runtime import FixedRuntime, PlanStore, TraceStore, register

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_OPS))
"""ONNX op types the fixed-point executor implements."""

__all__ = [
    "EXECUTOR_NAME",
    "EXECUTOR_VERSION",
    "QMAX",
    "SUPPORTED_OPS",
    "ElementSource",
    "Entry",
    "Fault",
    "FixedExecutor",
    "FixedRuntime",
    "Op",
    "PlanStore",
    "Precision",
    "QuantPlan",
    "TensorInfo",
    "TraceStore",
    "calibration_digest",
    "node_label",
]

register()  # the "fixed" executor for receipts (edgetrust.runtime.executors)
