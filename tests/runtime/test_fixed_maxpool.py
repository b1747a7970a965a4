"""MaxPool's compiled pass (`_jitdata.max_pool2d`) against the numpy tap fold it replaces and
against onnxruntime's MaxPool (an independent implementation) on integer-valued floats."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.runtime.fixed import FixedExecutor, _kernels
from edgetrust.runtime.fixed._pool import _NEG, MaxPool
from tests.runtime import graphs

DTYPES = {np.int8: 127, np.int16: 32767, np.int64: 1 << 40}


def _op(shape: tuple[int, ...], attrs: dict[str, object]) -> tuple[MaxPool, bytes]:
    model = graphs.single_op("MaxPool", [shape], **attrs).SerializeToString()
    calib = {"x0": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    try:
        op = FixedExecutor(model, precision="int8", calibration=[calib]).ops[0]
    except (InvalidInputError, UnsupportedError):
        assume(False)  # a window of padding alone: refused (tested in test_fixed_fast)
    assert isinstance(op, MaxPool)
    return op, model


@st.composite
def geometries(draw: st.DrawFn) -> tuple[tuple[int, ...], dict[str, object]]:
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    pads[2] = draw(st.integers(0, kernel[0] - 1))
    pads[3] = draw(st.integers(0, kernel[1] - 1))
    attrs: dict[str, object] = {
        "kernel_shape": kernel,
        "strides": [draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        "dilations": [draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        "pads": pads,
        "ceil_mode": draw(st.integers(0, 1)),
    }
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        *draw(st.tuples(*[st.integers(1, 9)] * 2)),
    )
    return shape, attrs


@settings(max_examples=200, deadline=None)
@given(geometries(), st.sampled_from(list(DTYPES)), st.integers(0, 2**32 - 1))
def test_compiled_max_pool_is_the_tap_fold(
    geometry: tuple[tuple[int, ...], dict[str, object]], dtype: type, seed: int
) -> None:
    """Any kernel, stride, dilation, padding and ceil mode the executor accepts; values at
    the dtype's edges (the minimum must never lose to padding)."""
    shape, attrs = geometry
    op, _ = _op(shape, attrs)
    span = DTYPES[dtype]
    x = np.random.default_rng(seed).integers(-span, span + 1, size=shape).astype(dtype)
    x.reshape(-1)[seed % x.size] = -span
    try:
        got = op.run([x])
    except InvalidInputError:
        assume(False)  # a dilated window missing the input once shapes are known
    assert got.dtype == x.dtype
    want = op._tap_fold(x.astype(np.int64), _NEG, np.maximum)
    np.testing.assert_array_equal(got, want)
    old = _kernels.ENABLED
    _kernels.ENABLED = False
    try:
        np.testing.assert_array_equal(op.run([x]), want)  # the numpy path: the same integers
    finally:
        _kernels.ENABLED = old


@settings(max_examples=60, deadline=None)
@given(geometries(), st.integers(0, 2**32 - 1))
def test_compiled_max_pool_agrees_with_onnxruntime(
    geometry: tuple[tuple[int, ...], dict[str, object]], seed: int
) -> None:
    """onnxruntime's float MaxPool on the same integers (exact in float32 below 2**24)."""
    shape, attrs = geometry
    op, model = _op(shape, attrs)
    x = np.random.default_rng(seed).integers(-127, 128, size=shape).astype(np.int8)
    try:
        got = op.run([x])
    except InvalidInputError:
        assume(False)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = session.run(None, {"x0": x.astype(np.float32)})[0]
    assert want.shape == got.shape
    np.testing.assert_array_equal(got.astype(np.float32), want)


def test_a_window_without_an_inside_tap_is_refused_by_the_kernel() -> None:
    """The kernel's own guard (the op refuses such geometries before it is called): False,
    so the caller would fall back to numpy rather than write an undefined maximum."""
    x = np.arange(4, dtype=np.int16).reshape(1, 1, 1, 4)
    # a 1×2 window dilated by 5 starting at column -1 reads columns -1 and 4: none inside
    assert _kernels.max_pool2d(x, (1, 2), (1, 1), (1, 5), (0, 1), (1, 1)) is None
    assert _kernels.max_pool2d(x, (1, 1), (1, 1), (1, 1), (0, 0), (1, 4)) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_the_kernel_takes_signed_integers_only(dtype: type) -> None:
    x = np.zeros((1, 1, 2, 2), dtype)
    assert _kernels.max_pool2d(x, (1, 1), (1, 1), (1, 1), (0, 0), (2, 2)) is None


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
    st.sampled_from(list(DTYPES)),
    st.integers(0, 2**32 - 1),
)
def test_global_average_pool_takes_narrow_arrays(
    shape: tuple[int, int, int, int], dtype: type, seed: int
) -> None:
    """GlobalAveragePool on int8/int16 activations (as a Conv hands them on) sums in int64:
    round half away from zero of the mean, the integers of the int64 input, ties included."""
    from edgetrust.runtime.fixed._pool import GlobalAveragePool

    model = graphs.single_op("GlobalAveragePool", [shape]).SerializeToString()
    calib = {"x0": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    op = FixedExecutor(model, precision="int16", calibration=[calib]).ops[0]
    assert isinstance(op, GlobalAveragePool) and op.narrow_inputs
    span = DTYPES[dtype]
    x = np.random.default_rng(seed).integers(-span, span + 1, size=shape).astype(dtype)
    x[..., 0, 0] = -span  # sums far from zero in both directions: no wrap in x's width
    x[..., -1, -1] = -span
    got = op.run([x])
    np.testing.assert_array_equal(got, op.run([x.astype(np.int64)]))
    count = shape[2] * shape[3]
    sums = x.astype(np.int64).sum(axis=(2, 3)).reshape(-1).tolist()
    want = [(abs(s) + count // 2) // count * (1 if s >= 0 else -1) for s in sums]
    assert got.reshape(-1).tolist() == want
