"""A two-input Add/Sub/Sum in one compiled pass (`_kernels.add_requant`), from int8, int16 or
int64 inputs, gives `AddSub.combine`'s integers (numpy, the definition) and Python's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _kernels
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, narrow_dtype, saturate
from edgetrust.runtime.fixed._elementwise import AddSub
from tests.runtime import graphs

_SHAPE = (1, 3, 5, 7)
_CASES = {
    "op_type": st.sampled_from(["Add", "Sub", "Sum"]),
    "precision": st.sampled_from(["int8", "int16"]),
    "ratio": st.sampled_from([1.0, 0.25, 3.0, 1e-3]),
    "dtype": st.sampled_from([np.int8, np.int16, np.int64]),
    "seed": st.integers(0, 2**16),
}


def _op(op_type: str, precision: str, scales: tuple[float, float]) -> AddSub:
    model = graphs.single_op(op_type, [_SHAPE, _SHAPE]).SerializeToString()
    rng = np.random.default_rng(0)
    calib = {
        f"x{k}": (rng.standard_normal(_SHAPE) * s).astype(np.float32) for k, s in enumerate(scales)
    }
    op = FixedExecutor(model, precision=precision, calibration=[calib]).ops[0]  # type: ignore[arg-type]
    assert isinstance(op, AddSub)
    return op


def _python(op: AddSub, a: np.ndarray, b: np.ndarray) -> list[int]:
    """Σ q_k · W_k, rescaled half away from zero and saturated, in Python integers."""
    m, s = int(op.rs.mult.reshape(-1)[0]), op.rs.shift
    out = []
    for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True):
        v = x * op.weights_[0] + y * op.weights_[1]
        r = (abs(v) * m + (1 << (s - 1))) >> s
        out.append(max(-op.qmax, min(op.qmax, r if v >= 0 else -r)))
    return out


def _case(
    op_type: str, precision: str, ratio: float, dtype: type, seed: int
) -> tuple[AddSub, np.ndarray, np.ndarray]:
    """The op and two int64 inputs within `dtype` and ±qmax, their edges included."""
    op = _op(op_type, precision, (1.0, ratio))
    rng = np.random.default_rng(seed)
    hi = min(op.qmax, np.iinfo(dtype).max)
    a = rng.integers(-hi, hi + 1, size=_SHAPE)
    b = rng.integers(-hi, hi + 1, size=_SHAPE)
    a.reshape(-1)[seed % a.size] = hi  # the edges, and ties of the rescale's rounding
    b.reshape(-1)[(seed * 7) % b.size] = -hi
    return op, a, b


@given(**_CASES)
def test_compiled_add_gives_the_numpy_and_python_integers(
    op_type: str, precision: str, ratio: float, dtype: type, seed: int
) -> None:
    op, a, b = _case(op_type, precision, ratio, dtype, seed)
    got = op.run([a.astype(dtype), b.astype(dtype)])
    assert got.dtype == narrow_dtype(op.qmax)  # a planned op hands on int8/int16
    compiled = _kernels.add_requant(
        a.astype(dtype), b.astype(dtype), *op.weights_, op.rs.mult, op.rs.shift, op.qmax
    )
    assert compiled is not None  # the compiled pass applies (numba is a pinned dependency)
    np.testing.assert_array_equal(compiled, got)
    want = op.combine([a, b])  # numpy: the definition
    plain = saturate(apply_rescale(op.wide([a, b]), op.rs), op.qmax)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, plain)
    assert got.reshape(-1).tolist() == _python(op, a, b)


def test_compiled_add_declines_what_its_proof_does_not_cover() -> None:
    """Inputs beyond 2**31 (only a referee's arbitrary opening could hold them), shapes that
    broadcast, and a zero-dimensional input go to numpy, which defines the result."""
    op = _op("Add", "int16", (1.0, 1.0))
    wa, wb = op.weights_
    big = np.full(_SHAPE, 1 << 31, np.int64)
    small = np.ones(_SHAPE, np.int64)
    assert _kernels.add_requant(big, small, wa, wb, op.rs.mult, op.rs.shift, op.qmax) is None
    assert _kernels.add_requant(small, small[:, :1], wa, wb, op.rs.mult, op.rs.shift, 7) is None
    zero = np.array(3, np.int64)
    assert _kernels.add_requant(zero, zero, wa, wb, op.rs.mult, op.rs.shift, op.qmax) is None
    np.testing.assert_array_equal(op.run([big, small]), op.combine([big, small]))


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_add_of_narrow_activations_in_a_residual_graph(precision: str) -> None:
    """A residual graph's Adds read the Convs' int8/int16 arrays themselves: outputs and
    trace root are those of the numpy-only run."""
    model = graphs.resnet_style(size=32, width=8).SerializeToString()
    x = {"input": np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    name = ex.input_names[0]
    x = {name: x["input"]}
    got, root = ex.run(x), ex.run_traced(x)[1].root
    old = _kernels.ENABLED
    _kernels.ENABLED = False
    try:
        plain = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
        want, want_root = plain.run(x), plain.run_traced(x)[1].root
    finally:
        _kernels.ENABLED = old
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)
    assert root == want_root


@given(
    wa=st.integers(-(1 << 30), 1 << 30),
    wb=st.integers(-(1 << 30), 1 << 30),
    mult=st.integers(0, 1 << 31),
    shift=st.integers(1, 62),
    qmax=st.sampled_from([127, 32767, 1 << 40]),  # apply_rescale clamps beyond 2**61
    dtype=st.sampled_from([np.int8, np.int16, np.int32, np.int64]),
    seed=st.integers(0, 2**16),
)
def test_compiled_add_rounds_every_tie_and_edge_as_python(
    wa: int, wb: int, mult: int, shift: int, qmax: int, dtype: type, seed: int
) -> None:
    """Any weights, multiplier and shift the proof covers (ties of the rounding included:
    small shifts make many), against Python integers."""
    rng = np.random.default_rng(seed)
    hi = min(np.iinfo(dtype).max, (1 << 31) - 1)
    a = rng.integers(-hi, hi + 1, size=64).astype(dtype)
    b = rng.integers(-hi, hi + 1, size=64).astype(dtype)
    a[:4] = [hi, -hi, 0, 1]
    b[:4] = [-hi, hi, 1, -1]
    rs = Rescale(np.array([mult], np.int64), shift)
    got = _kernels.add_requant(a, b, wa, wb, rs.mult, shift, qmax)
    assert got is not None
    wide = a.astype(np.int64) * wa + b.astype(np.int64) * wb
    np.testing.assert_array_equal(got, saturate(apply_rescale(wide, rs), qmax))
    if qmax <= 32767:  # (beyond, apply_rescale's clamp for ratios > 1 defines the result)
        want = []
        for v in wide.tolist():
            r = (abs(v) * mult + (1 << (shift - 1))) >> shift
            want.append(max(-qmax, min(qmax, r if v >= 0 else -r)))
        assert got.tolist() == want


@pytest.mark.parametrize("shift", [1, 2, 17, 30, 31, 32, 45, 55])
def test_compiled_add_rounds_exact_ties_away_from_zero(shift: int) -> None:
    """Sums exactly halfway between two integers after the shift, of both signs (random
    draws almost never make them at large shifts): away from zero, as `apply_rescale`."""
    wa = 1 << min(shift - 1, 30)
    odd = np.array([1, 3, 5, 7, 99], np.int64)
    a = odd << max(0, shift - 1 - 30)
    a = np.concatenate([a, -a])  # (2k + 1) · 2**(shift - 1) / wa, both signs
    b = np.zeros_like(a)
    got = _kernels.add_requant(a, b, wa, 0, np.array([1], np.int64), shift, 1 << 40)
    assert got is not None
    half_up = (odd + 1) // 2  # |(2k + 1) / 2| rounded away from zero
    assert got.tolist() == [*half_up.tolist(), *(-half_up).tolist()]


@given(**_CASES)
def test_an_add_and_the_relu_behind_it_in_one_pass_are_the_two_nodes(
    op_type: str, precision: str, ratio: float, dtype: type, seed: int
) -> None:
    """`AddSub.run_relu` (a fused Relu: the clip to [0, qmax]) is max(run, 0)."""
    op, wa, wb = _case(op_type, precision, ratio, dtype, seed)
    a, b = wa.astype(dtype), wb.astype(dtype)
    fused = op.run_relu([a, b])
    assert fused is not None
    assert fused.dtype == narrow_dtype(op.qmax)
    np.testing.assert_array_equal(fused, np.maximum(op.run([a, b]), 0))
    np.testing.assert_array_equal(fused, np.maximum(op.combine([wa, wb]), 0))  # the definition
    # where the pass does not apply (inputs that broadcast), the caller runs the two nodes
    assert op.run_relu([a, b[:, :, :1]]) is None


def test_a_residual_add_then_relu_is_fused_in_untraced_runs_only_with_the_same_results() -> None:
    """A residual block (Conv, Add, Relu): the untraced run fuses the Add and its Relu and
    gives the traced run's outputs (which keeps both values, unfused) and those of a run
    with nothing fused."""
    model = graphs.resnet_style(size=16, width=8).SerializeToString()
    x = {"input": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    for precision in ("int8", "int16"):
        ex = FixedExecutor(model, precision=precision, calibration=[x])  # type: ignore[arg-type]
        heads = [i for i in ex._fusions() if type(ex.ops[i]) is AddSub]
        assert heads, "no Add -> Relu fused in a residual graph"
        out = ex.run(x)
        traced, _ = ex.run_traced(x)
        assert out.keys() == traced.keys()
        for k in out:
            np.testing.assert_array_equal(out[k], traced[k])
        ex2 = FixedExecutor(model, precision=precision, plan=ex.plan)  # type: ignore[arg-type]
        ex2._fusion_map = {}  # nothing fused: every node on its own
        ex2.__dict__.pop("_steps", None)
        for k, v in ex2.run(x).items():
            np.testing.assert_array_equal(out[k], v)
