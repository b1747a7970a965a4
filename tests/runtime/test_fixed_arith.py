"""The integer arithmetic under every op: rounding, rescaling, exact BLAS products, tables."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import ResourceLimitError
from edgetrust.runtime.fixed import _nonlinear as nl
from edgetrust.runtime.fixed._arith import (
    Rescale,
    _mul_shift,
    apply_rescale,
    exact_matmul,
    make_rescale,
    matmul_chunk,
    quantize,
    round_div,
    round_float,
    round_shift,
)
from tests.runtime import fixed_ref as ref

pytestmark = pytest.mark.usefixtures("both_kernel_paths")


I62 = st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1)


@given(st.lists(I62, min_size=1, max_size=20), st.integers(0, 62))
def test_round_shift_is_half_away_from_zero(xs: list[int], shift: int) -> None:
    got = round_shift(np.array(xs, np.int64), shift).tolist()
    assert got == [ref.rha(Fraction(x, 2**shift)) for x in xs]


@given(st.lists(st.integers(-(2**50), 2**50), min_size=1, max_size=20), st.integers(1, 2**20))
def test_round_div_is_half_away_from_zero(xs: list[int], d: int) -> None:
    assert round_div(np.array(xs, np.int64), d).tolist() == [ref.rdiv(x, d) for x in xs]


def test_rounding_ties_go_away_from_zero() -> None:
    assert round_shift(np.array([1, -1, 3, -3, 2, -2], np.int64), 1).tolist() == [
        1,
        -1,
        2,
        -2,
        1,
        -1,
    ]
    assert round_div(np.array([5, -5, 4, -4], np.int64), 2).tolist() == [3, -3, 2, -2]
    assert round_float(np.array([0.5, -0.5, 1.5, -2.5, 0.49999999999999994])).tolist() == [
        1.0,
        -1.0,
        2.0,
        -3.0,
        0.0,
    ]


@settings(max_examples=300)
@given(
    st.lists(st.integers(-(2**61) + 1, 2**61 - 1), min_size=1, max_size=8),
    st.floats(min_value=2.0**-40, max_value=2.0**20, allow_nan=False),
)
def test_apply_rescale_is_exact(xs: list[int], ratio: float) -> None:
    rs = make_rescale(ratio)
    got = apply_rescale(np.array(xs, np.int64), rs).tolist()
    mult = int(rs.mult[0])
    for x, g in zip(xs, got, strict=True):
        want = ref.rescale(x, mult, rs.shift)
        if abs(want) < 2**60:
            assert g == want
        else:  # documented: huge results only keep their sign and magnitude ≥ 2**60
            assert g * want > 0 and abs(g) >= 2**60


@given(st.floats(min_value=2.0**-60, max_value=2.0**28, allow_nan=False))
def test_make_rescale_keeps_31_bits(ratio: float) -> None:
    rs = make_rescale(ratio)
    approx = Fraction(int(rs.mult[0]), 2**rs.shift)
    if ratio >= 2.0**-31:
        assert abs(approx - Fraction(ratio)) <= Fraction(ratio) * Fraction(1, 2**29)
    assert 31 <= rs.shift <= 62 or ratio >= 1


def test_make_rescale_rejects_bad_ratios() -> None:
    for bad in (float("nan"), -1.0, 2.0**40):
        with pytest.raises(ValueError):
            make_rescale(bad)
    zero = make_rescale(0.0)
    assert apply_rescale(np.array([12345], np.int64), zero).tolist() == [0]


def test_per_channel_rescale_shares_the_shift() -> None:
    rs = make_rescale(np.array([1e-3, 2e-3, 1e-6]))
    x = np.arange(-6, 6, dtype=np.int64).reshape(2, 3, 2) * 10**6
    got = apply_rescale(x, rs, channel_axis=1)
    for idx in np.ndindex(x.shape):
        assert got[idx] == ref.rescale(int(x[idx]), int(rs.mult[idx[1]]), rs.shift)
    back = Rescale.from_params(**rs.params())
    assert back.shift == rs.shift and back.mult.tolist() == rs.mult.tolist()


def test_chunk_bounds_match_the_proof() -> None:
    assert matmul_chunk(127, 127) == (np.float32, 1040)
    assert 1040 * 127 * 127 <= 2**24 < 1041 * 127 * 127
    dtype, k = matmul_chunk(32767, 32767)
    assert dtype is np.float64 and k * 32767**2 <= 2**53 < (k + 1) * 32767**2


@pytest.mark.parametrize(("qmax", "k"), [(127, 3000), (32767, 700)])
def test_exact_matmul_at_the_worst_case(qmax: int, k: int) -> None:
    # All products at +qmax·qmax: every partial sum is as large as the bound allows.
    rng = np.random.default_rng(0)
    a = np.full((3, k), qmax, np.int64)
    a[1] = rng.integers(-qmax, qmax + 1, k)
    b = np.full((k, 4), qmax, np.int64)
    b[:, 2] = -qmax
    b[:, 3] = rng.integers(-qmax, qmax + 1, k)
    got = exact_matmul(a, b, qmax, qmax)
    want = [
        [sum(int(x) * int(y) for x, y in zip(a[i], b[:, j], strict=True)) for j in range(4)]
        for i in range(3)
    ]
    assert got.tolist() == want


def test_exact_matmul_refuses_int64_overflow() -> None:
    with pytest.raises(ResourceLimitError):
        exact_matmul(np.zeros((1, 4), np.int64), np.zeros((4, 1), np.int64), 2**31, 2**31)


def test_exact_matmul_int64_fallback_for_wide_operands() -> None:
    a = np.array([[2**30, -(2**30)]], np.int64)
    b = np.array([[3], [5]], np.int64)
    assert exact_matmul(a, b, 2**30, 2**26).tolist() == [[3 * 2**30 - 5 * 2**30]]


def test_quantize_saturates_and_rounds() -> None:
    assert quantize(np.array([0.5, -0.5, 1000.0, -1000.0, 0.25]), 1.0, 127).tolist() == [
        1,
        -1,
        127,
        -127,
        0,
    ]


def test_tables_are_accurate() -> None:
    xs = np.linspace(-5, 5, 2001)
    u = np.round(xs * 2**16).astype(np.int64)
    real = u / 2**16
    erf = nl.erf_q30(u) / 2**30
    assert np.max(np.abs(erf - np.array([math.erf(v) for v in real]))) < 2**-17
    sig = nl.sigmoid_q30(u) / 2**30
    assert np.max(np.abs(sig - 1 / (1 + np.exp(-real)))) < 2**-19
    tanh = nl.tanh_q30(u) / 2**30
    assert np.max(np.abs(tanh - np.tanh(real))) < 2**-18
    e = nl.exp_neg_q30(np.abs(u)) / 2**30
    assert np.max(np.abs(e - np.exp(-np.abs(real)))) < 2**-20
    m, k = nl.exp_q30_parts(u)
    approx = np.ldexp(m.astype(np.float64), (k - 30).astype(np.int32))
    assert np.max(np.abs(approx / np.exp(real) - 1)) < 2**-19


def test_exp_at_zero_is_exactly_one() -> None:
    assert nl.exp_neg_q30(np.array([0], np.int64)).tolist() == [2**30]


@given(st.integers(-(2**22), 2**22))
def test_tables_match_the_python_integer_reference(u: int) -> None:
    arr = np.array([u], np.int64)
    assert int(nl.exp_neg_q30(np.abs(arr))[0]) == ref.exp_neg_q30(abs(u))
    assert int(nl.erf_q30(arr)[0]) == ref.erf_q30(u)
    assert int(nl.sigmoid_q30(arr)[0]) == ref.sigmoid_q30(u)
    assert int(nl.tanh_q30(arr)[0]) == ref.tanh_q30(u)
    m, k = nl.exp_q30_parts(arr)
    assert (int(m[0]), int(k[0])) == ref.exp_parts(u)


@settings(max_examples=300)
@given(
    st.lists(st.integers(-(2**33), 2**33), min_size=1, max_size=8),
    st.floats(min_value=2.0**-40, max_value=0.999, allow_nan=False),
)
def test_apply_rescale_fused_path_is_exact(xs: list[int], ratio: float) -> None:
    """Accumulator-sized inputs take the one-pass path (|x|·mult < 2**63); same bits."""
    rs = make_rescale(ratio)
    got = apply_rescale(np.array(xs, np.int64), rs).tolist()
    mult = int(rs.mult[0])
    assert got == [ref.rescale(x, mult, rs.shift) for x in xs]


def test_apply_rescale_fused_path_edges() -> None:
    """Ties, negatives, zero multipliers and the path boundary, per channel."""
    rs = Rescale(np.array([0, 1 << 30, (1 << 31) - 1, 1 << 31], np.int64), 31)
    vals = [0, 1, -1, 2, -2, 3, -3, (1 << 31) - 1, -(1 << 31) + 1, 1 << 31, -(1 << 31)]
    x = np.array([[v] * 4 for v in vals], np.int64)
    got = apply_rescale(x, rs, channel_axis=1)
    for i, j in np.ndindex(x.shape):
        assert got[i, j] == ref.rescale(int(x[i, j]), int(rs.mult[j]), 31)


def _abs_path(x: np.ndarray, rs: Rescale, channel_axis: int | None = None) -> np.ndarray:
    """The two-sided reference: `_mul_shift` on |x|, negated where x < 0 (shift ≥ 31)."""
    mult = rs.mult.reshape(()) if rs.mult.size == 1 else rs.mult
    if rs.mult.size > 1 and channel_axis is not None:
        shape = [1] * x.ndim
        shape[channel_axis] = rs.mult.size
        mult = rs.mult.reshape(shape)
    r = _mul_shift(np.abs(x), mult, rs.shift)
    return np.where(x < 0, -r, r)


@settings(max_examples=300)
@given(
    st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=8),
    st.floats(min_value=2.0**-40, max_value=0.999, allow_nan=False),
)
def test_apply_rescale_signed_split_path_is_exact(xs: list[int], ratio: float) -> None:
    """Wide inputs (|x|·mult ≥ 2**63) take the signed split: the integers of the |x| path,
    and of the Python-integer reference wherever the result is below 2**60."""
    rs = make_rescale(ratio)
    x = np.array(xs, np.int64)
    got = apply_rescale(x, rs)
    assert got.tolist() == _abs_path(x, rs).tolist()
    assert apply_rescale(x, rs, bound=2**62 - 1).tolist() == got.tolist()
    mult = int(rs.mult[0])
    for v, g in zip(xs, got.tolist(), strict=True):
        want = ref.rescale(v, mult, rs.shift)
        if abs(want) < 2**60:
            assert g == want


def test_apply_rescale_signed_split_edges_per_channel() -> None:
    """Ties at the 2**31 split, extreme magnitudes, zero and maximal multipliers."""
    rs = Rescale(np.array([0, 1, 1 << 30, (1 << 31) - 1, 1 << 31], np.int64), 40)
    edge = [0, 1, -1, (1 << 31) - 1, -(1 << 31), 1 << 31, -(1 << 31) - 1, (1 << 62) - 1]
    vals = [*edge, -(1 << 62) + 1, 3 << 39, -(3 << 39), 1 << 39, -(1 << 39)]
    x = np.array([[v] * 5 for v in vals], np.int64)
    got = apply_rescale(x, rs, channel_axis=1)
    assert got.tolist() == _abs_path(x, rs, channel_axis=1).tolist()
    for i, j in np.ndindex(x.shape):
        want = ref.rescale(int(x[i, j]), int(rs.mult[j]), 40)
        if abs(want) < 2**60:
            assert got[i, j] == want
