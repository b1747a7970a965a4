"""Concat's rescale of a narrow (int8/int16) part by the compiled loop
(`_kernels.requantize_narrow`) gives the integers of the int64 numpy path, in the part's
own type, and a SqueezeNet-style model's roots do not depend on which path ran."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _kernels
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, saturate
from tests.runtime import fixed_ref as ref
from tests.runtime.graphs import squeezenet_style
from tests.runtime.test_fixed_kernels import MULT, numpy_only


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from([np.int8, np.int16, np.int32]),
    m=MULT,
    shift=st.integers(1, 62),
    size=st.integers(1, 40),
)
def test_requantize_narrow_is_the_int64_path(
    data: st.DataObject, dtype: Any, m: int, shift: int, size: int
) -> None:
    info = np.iinfo(dtype)
    qmax = data.draw(st.integers(0, int(info.max)))
    xs = data.draw(
        st.lists(st.integers(int(info.min), int(info.max)), min_size=size, max_size=size)
    )
    x = np.array(xs, dtype).reshape(1, -1, 1) if size % 2 else np.array(xs, dtype)
    rs = Rescale(np.array([m], np.int64), shift)
    got = _kernels.requantize_narrow(x, rs.mult, shift, qmax)
    assert got is not None and got.dtype == dtype and got.shape == x.shape
    with numpy_only():
        want = saturate(apply_rescale(x.astype(np.int64), rs), qmax)
    assert got.astype(np.int64).tolist() == want.tolist()
    if shift >= 31:
        exact = [ref.sat(ref.rescale(int(v), m, shift), qmax) for v in x.reshape(-1)]
        assert got.reshape(-1).tolist() == exact


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    m=MULT,
    shift=st.integers(1, 62),
    size=st.integers(1, 300),
    inside=st.booleans(),
)
def test_the_int8_table_is_the_int64_path(
    data: st.DataObject, m: int, shift: int, size: int, inside: bool
) -> None:
    """int8 parts from `_TABLE_MIN` elements go through a table of every value in
    [-qmax, qmax]: the same integers; values outside it (only a hand-made input holds them)
    are requantized directly."""
    qmax = data.draw(st.integers(0, 127))
    lo, hi = (-qmax, qmax) if inside else (-128, 127)
    xs = data.draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size))
    x = np.array(xs, np.int8)
    rs = Rescale(np.array([m], np.int64), shift)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_kernels, "_TABLE_MIN", 1)
        got = _kernels.requantize_narrow(x, rs.mult, shift, qmax)
    assert got is not None and got.dtype == np.int8
    assert "gather_channels" not in _kernels._broken  # the table's gather itself ran
    with numpy_only():
        want = saturate(apply_rescale(x.astype(np.int64), rs), qmax)
    assert got.astype(np.int64).tolist() == want.tolist()


@pytest.mark.parametrize(
    ("x", "mult", "qmax"),
    [
        (np.zeros(3, np.int64), np.array([1 << 30]), 127),  # wide: the caller's int64 path
        (np.zeros(3, np.int8), np.array([1, 2]), 127),  # per-channel multipliers
        (np.zeros(3, np.int8), np.array([1 << 30]), 128),  # results beyond the type
        (np.zeros((), np.int8), np.array([1 << 30]), 127),
    ],
)
def test_requantize_narrow_refuses_what_it_does_not_cover(
    x: np.ndarray, mult: np.ndarray, qmax: int
) -> None:
    assert _kernels.requantize_narrow(x, mult.astype(np.int64), 31, qmax) is None


def test_squeezenet_style_same_roots_either_concat_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = squeezenet_style().SerializeToString()
    rng = np.random.default_rng(4)
    x = {"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    calls: list[Any] = []
    narrow = _kernels.requantize_narrow

    def counted(*args: Any) -> Any:
        out = narrow(*args)
        calls.append(out)
        return out

    monkeypatch.setattr(_kernels, "requantize_narrow", counted)
    fast_out = ex.run(x)
    fast_root = ex.run_traced(x)[1].root
    assert calls and all(c is not None for c in calls)  # the narrow path ran
    monkeypatch.setattr(_kernels, "requantize_narrow", lambda *a: None)
    slow_out = ex.run(x)
    for k, v in fast_out.items():
        np.testing.assert_array_equal(v, slow_out[k])
    assert ex.run_traced(x)[1].root == fast_root
