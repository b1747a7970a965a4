"""The demo digits MLP run by the deterministic executor, committed for the on-chain referee.

Used by the chain demo, tests and benchmark: a real `FixedExecutor` run (int8, calibrated on
training digits), its trace and dense nodes committed in the referee v1 layout; a lying device
is the executor's own `Fault` (a consistent liar that computes downstream from its lie).
"""

from __future__ import annotations

from functools import cache

from edgetrust.chain.dispute import RefereeCommitment
from edgetrust.runtime.fixed import Fault, FixedExecutor
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

GEMM_NODES = (0, 2)
"""Graph indices of the two Gemm nodes (Gemm → Relu → Gemm → Softmax)."""


@cache
def digits_executor() -> FixedExecutor:
    """The demo MLP's fixed-point executor, calibrated on 32 training digits (cached)."""
    model, _ = digits_mlp_onnx()
    x_train, _, _, _ = load_digits_split()
    return FixedExecutor(model, calibration=[{"input": x_train[:32]}])


@cache
def digits_run(sample: int = 0, *, lie_at: tuple[int, int] | None = None) -> RefereeCommitment:
    """Commit the run on test digit `sample`; `lie_at=(node, element)` alters that output."""
    _, x_test, _, _ = load_digits_split()
    fault = None if lie_at is None else Fault(lie_at[0], lie_at[1], 1)
    return RefereeCommitment.from_executor(
        digits_executor(), {"input": x_test[sample : sample + 1]}, fault=fault
    )
