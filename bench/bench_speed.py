"""Issue 13's speed targets: the fixed executor beside onnxruntime on real light models.

ResNet50 and SqueezeNet from the onnx wheel's light models (random weights in place of their
placeholders, as the coverage test builds them) and the digits MLP, at int8 and int16, one
thread each (onnxruntime intra-op 1, BLAS by threadpoolctl), medians in one run. Targets:
int8 ≤ 2.5×, int16 ≤ 4×, digits MLP ≤ 3×, traced ≤ 1.2× untraced.
"""

from __future__ import annotations

import os

import numpy as np
from tests.runtime import light
from threadpoolctl import threadpool_limits

from bench._util import interleaved_medians, ort_session, table
from edgetrust.runtime.fixed import FixedExecutor, _ortconv
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

TARGETS = {"int8": 2.5, "int16": 4.0, "mlp": 3.0, "traced": 1.2}
_TUNING_RUNS = 2 * (_ortconv.TUNE_RUNS + 1)
"""Runs in which each Conv's onnxruntime layout is still being tuned (`_ortconv.LayoutTuner`):
run before timing, so that the medians are of the steady state."""


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.1f}"


def _verdict(value: float, target: float) -> str:
    return f"{value:.1f}× (≤ {target}×: {'met' if value <= target else 'missed'})"


def run() -> str:
    rows: list[list[str]] = []
    cases: list[tuple[str, bytes, dict[str, np.ndarray], list[dict[str, np.ndarray]], int]] = []
    onnx_bytes, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    cases.append(("digits MLP (450×64)", onnx_bytes, {"input": x_te}, [{"input": x_tr[:256]}], 20))
    for name in ("resnet50", "squeezenet"):
        model = light.light_model(name)
        x = light.light_input(model)
        cases.append((name, model.SerializeToString(), x, [x], 2 if name == "resnet50" else 5))
    with threadpool_limits(limits=1):
        for name, model_bytes, x, calib, repeat in cases:
            sess = ort_session(model_bytes)
            for precision in ("int8", "int16"):
                ex = FixedExecutor(model_bytes, precision=precision, calibration=calib)  # type: ignore[arg-type]
                for _ in range(_TUNING_RUNS):  # past the Convs' layout tuning: steady state
                    ex.run(x)
                t_ort, t_fixed, t_traced = interleaved_medians(
                    [
                        lambda sess=sess, x=x: sess.run(None, x),
                        lambda ex=ex, x=x: ex.run(x),
                        lambda ex=ex, x=x: ex.run_traced(x),
                    ],
                    repeat,
                )
                target = TARGETS["mlp"] if name.startswith("digits") else TARGETS[precision]
                rows.append(
                    [
                        name,
                        precision,
                        _ms(t_ort),
                        _ms(t_fixed),
                        _verdict(t_fixed / t_ort, target),
                        _ms(t_traced),
                        _verdict(t_traced / t_fixed, TARGETS["traced"]),
                    ]
                )
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return "\n".join(
        [
            "## Fixed executor speed targets (issue 13)",
            "",
            "One thread each (onnxruntime intra-op 1, BLAS by threadpoolctl), medians, same run, "
            "onnxruntime, fixed and traced timed in turns (rounds of one warm-up and 5 timed "
            "calls each; the onnxruntime column is each row's own, as its ratio is). "
            "ResNet50 and SqueezeNet are the onnx wheel's light models with random weights. "
            "`traced` also builds the per-node Merkle commitments receipts and disputes need; "
            "it hashes on one more thread (native SHA-256, GIL released) while it computes. "
            f"The fixed executor is timed after {_TUNING_RUNS} runs, in which each Conv's "
            "onnxruntime layout is tuned (NCHWc or plain, the faster kept: the same sums). "
            f"Load average at the end: {load} (2 cores, shared).",
            "",
            table(
                [
                    "model",
                    "precision",
                    "onnxruntime ms",
                    "fixed ms",
                    "ratio (target)",
                    "traced ms",
                    "traced / untraced",
                ],
                rows,
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
