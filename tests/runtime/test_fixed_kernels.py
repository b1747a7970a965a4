"""The compiled kernels (`_kernels`, numba) give the integers of the numpy path they replace
and of the Python-integer reference, and the executor falls back to numpy bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import FixedExecutor, _kernels, _ortconv, _ortgemm
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, quantize, requantize, saturate
from edgetrust.zoo import digits_mlp_onnx, load_digits_split
from tests.runtime import fixed_ref as ref
from tests.runtime.graphs import kitchen_sink, resnet_style, single_op, squeezenet_style

I62 = st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1)
# Multipliers with many trailing zero bits too (exact ties need them), up to 2**31.
MULT = st.one_of(
    st.integers(0, 2**31),
    st.builds(
        lambda odd, k: min((2 * odd + 1) << k, 2**31), st.integers(0, 2**20), st.integers(0, 30)
    ),
    st.sampled_from([0, 1, 2**30, 2**31 - 1, 2**31]),
)


@contextmanager
def numpy_only() -> Iterator[None]:
    """Neither the numba kernels nor onnxruntime's MatMul: numpy alone."""
    old = _kernels.ENABLED, _ortgemm.ENABLED
    _kernels.ENABLED = _ortgemm.ENABLED = False
    try:
        yield
    finally:
        _kernels.ENABLED, _ortgemm.ENABLED = old


@pytest.fixture
def ort_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's MatMul for every constant-weight Gemm, however small."""
    monkeypatch.setattr(_ortgemm, "MIN_WORK", 0)


def test_numba_is_available() -> None:
    assert _kernels._jit() is not None  # a pinned dependency: the compiled path is the default


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(I62, min_size=1, max_size=4), min_size=1, max_size=6),
    st.lists(MULT, min_size=1, max_size=4),
    st.integers(2, 62),
    st.integers(1, 2**40),
)
def test_requantize_matches_numpy_and_reference(
    rows: list[list[int]], mults: list[int], shift: int, qmax: int
) -> None:
    width = min(len(mults), *(len(r) for r in rows))
    x = np.array([r[:width] for r in rows], np.int64)
    mult = np.array(mults[:width], np.int64)
    rs = Rescale(mult, shift)
    got = _kernels.requantize(x, mult, shift, -qmax, qmax, channel_axis=1)
    assert got is not None
    with numpy_only():
        want = saturate(apply_rescale(x, rs, channel_axis=1), qmax)
    assert got.tolist() == want.tolist()
    exact = [
        [ref.sat(ref.rescale(int(v), int(mult[c]), shift), qmax) for c, v in enumerate(r)]
        for r in x
    ]
    if shift >= 31:  # below, apply_rescale clamps |x| first; results agree after saturation
        assert got.tolist() == exact


@settings(max_examples=100, deadline=None)
@given(st.lists(I62, min_size=1, max_size=30), MULT, st.integers(2, 62), st.integers(1, 2**31))
def test_requantize_per_tensor_is_requantize(xs: list[int], m: int, shift: int, qmax: int) -> None:
    x = np.array(xs, np.int64)
    rs = Rescale(np.array([m], np.int64), shift)
    with numpy_only():
        want = requantize(x, rs, qmax)
    assert requantize(x, rs, qmax).tolist() == want.tolist()
    assert want.tolist() == saturate(apply_rescale(x, rs), qmax).tolist()


def test_requantize_outside_its_proof_falls_back() -> None:
    x = np.array([1, -(2**62)], np.int64)
    assert _kernels.requantize(x, np.array([2**30]), 40, -127, 127) is None
    rs = Rescale(np.array([2**30], np.int64), 40)
    with numpy_only():
        want = requantize(x, rs, 127)
    assert requantize(x, rs, 127).tolist() == want.tolist()


FLOATS = st.floats(allow_nan=False, width=64) | st.sampled_from(
    [0.5, -0.5, 1.5, -2.5, 2.0**52 + 1, -0.0, 5e-324, 126.5, -127.5, 127.49999999999999]
)
SCALES = st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(FLOATS, min_size=1, max_size=40),
    SCALES,
    st.sampled_from([127, 32767, 2**31 - 1]),
    st.booleans(),
)
def test_quantize_matches_numpy_and_reference(
    xs: list[float], scale: float, qmax: int, single: bool
) -> None:
    with np.errstate(over="ignore", invalid="ignore"):  # inf inputs: numpy warns, the kernel not
        x = np.array(xs, np.float32 if single else np.float64)
        got = quantize(x, scale, qmax)
        with numpy_only():
            want = quantize(x, scale, qmax)
    assert got.dtype == want.dtype == np.int64
    assert got.tolist() == want.tolist()
    # the definition: IEEE x / scale (one correctly rounded division), rounded half away
    for v, g in zip(x.astype(np.float64).tolist(), got.tolist(), strict=True):
        d = v / scale
        expect = qmax if d >= qmax else -qmax if d <= -qmax else ref.rha(Fraction(d))
        assert g == expect


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-40000, 40000), min_size=1, max_size=30),
    SCALES,
    st.sampled_from([127, 32767]),
    st.lists(st.integers(-3, 3), min_size=1, max_size=30),
)
def test_quantize_near_rounding_boundaries_is_the_division(
    ks: list[int], scale: float, qmax: int, steps: list[int]
) -> None:
    """Values at and a few ulps beside (k + 1/2)·scale: the kernel's rounding of x / scale
    at ties and next to them is the definition's."""
    base = np.array([(k + 0.5) * scale for k in ks], np.float64)
    x = base.copy()
    for i, n in enumerate(steps[: x.size]):
        for _ in range(abs(n)):
            x[i] = np.nextafter(x[i], np.inf if n > 0 else -np.inf)
    got = _kernels.quantize(x, scale, qmax)
    assert got is not None
    with numpy_only():
        want = quantize(x, scale, qmax)
    assert got.tolist() == want.tolist()
    for v, g in zip(x.tolist(), got.tolist(), strict=True):
        d = v / scale
        expect = qmax if d >= qmax else -qmax if d <= -qmax else ref.rha(Fraction(d))
        assert g == expect


def test_quantize_nan_falls_back_to_numpy() -> None:
    x = np.array([1.0, np.nan, 3.0])
    assert _kernels.quantize(x, 0.5, 127) is None
    with numpy_only(), np.errstate(invalid="ignore"):
        want = quantize(x, 0.5, 127)
    with np.errstate(invalid="ignore"):
        assert quantize(x, 0.5, 127).tolist() == want.tolist()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 8),
    st.integers(0, 2**31),
    st.integers(31, 62),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64]),
)
def test_gemm_epilogue_matches_numpy(
    rows: int, cols: int, m0: int, shift: int, seed: int, dtype: Any
) -> None:
    rng = np.random.default_rng(seed)
    bound = 2**24 if dtype is np.float32 else 2**53
    acc = rng.integers(-bound, bound, size=(rows, cols)).astype(dtype)
    bias = rng.integers(-(2**40), 2**40, size=cols)
    mult = (rng.integers(0, 2**31, size=cols) if seed % 2 else np.array([m0])).astype(np.int64)
    got = _kernels.gemm_epilogue(acc, bias, mult, shift, -127, 127)
    assert got is not None
    if dtype is np.float32:  # the int32 conversion's bound: larger float32 sums are refused
        first = acc[0, 0]
        acc[0, 0] = 2.0**31
        assert _kernels.gemm_epilogue(acc, bias, mult, shift, -127, 127) is None
        acc[0, 0] = -(2.0**31)
        assert _kernels.gemm_epilogue(acc, bias, mult, shift, -127, 127) is None
        acc[0, 0] = np.float32(2.0**31 - 128)  # the largest float32 below 2**31: converted
        big = _kernels.gemm_epilogue(acc, bias, mult, shift, -(2**31), 2**31)
        with numpy_only():
            ref_big = apply_rescale(
                acc.astype(np.int64) + bias, Rescale(mult, shift), channel_axis=1
            )
        assert big is not None and big.tolist() == np.clip(ref_big, -(2**31), 2**31).tolist()
        acc[0, 0] = first
    with numpy_only():
        want = saturate(
            apply_rescale(acc.astype(np.int64) + bias, Rescale(mult, shift), channel_axis=1), 127
        )
    assert got.tolist() == want.tolist()


def _run_both(model: bytes, precision: str, feeds: dict[str, np.ndarray], calib: Any) -> None:
    ex = FixedExecutor(model, precision=precision, calibration=calib)  # type: ignore[arg-type]
    fast = ex.run_integers(feeds)
    fast_out = ex.run(feeds)
    with numpy_only():
        ex2 = FixedExecutor(model, precision=precision, calibration=calib)  # type: ignore[arg-type]
        slow = ex2.run_integers(feeds)
        slow_out = ex2.run(feeds)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for k in slow_out:
        assert np.array_equal(fast_out[k], slow_out[k])


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_digits_mlp_same_bits_either_path(precision: str) -> None:
    model, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    _run_both(model, precision, {"input": x_te[:100]}, [{"input": x_tr[:256]}])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int8", "int16"]),
)
def test_softmax_same_bits_either_path(rows: int, n: int, seed: int, precision: str) -> None:
    rng = np.random.default_rng(seed)
    model = single_op("Softmax", [(rows, n)], axis=-1).SerializeToString()
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    _run_both(model, precision, {"x0": x}, [{"x0": x}])


def test_softmax_matches_reference() -> None:
    rng = np.random.default_rng(3)
    model = single_op("Softmax", [(3, 17)], axis=-1).SerializeToString()
    x = (rng.standard_normal((3, 17)) * 3).astype(np.float32)
    ex = FixedExecutor(model, precision="int8", calibration=[{"x0": x}])
    q, out = ex.run_integers({"x0": x})
    rs = ex.ops[0].to_q16  # type: ignore[attr-defined]
    mult, shift = int(rs.mult[0]), rs.shift
    want = [ref.softmax_row(r, mult, shift, ex.qmax) for r in q.tolist()]
    assert out.tolist() == want


def test_broken_kernels_fall_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(ModuleType):
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any) -> bool:
                raise RuntimeError("compile failed")

            return fail

    model, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    ex = FixedExecutor(model, precision="int8", calibration=[{"input": x_tr[:64]}])
    want = ex.run_integers({"input": x_te[:20]})
    monkeypatch.setitem(_kernels._state, "jit", Broken("broken"))
    monkeypatch.setattr(_kernels, "_broken", set())
    got = ex.run_integers({"input": x_te[:20]})
    assert {"quantize", "gemm_epilogue"} <= _kernels._broken  # not tried again
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**24), 2**24), min_size=0, max_size=30), st.integers(0, 2**24))
def test_to_float_is_astype_within_its_bound(xs: list[int], amax: int) -> None:
    a = np.array(xs, np.int64)
    for dtype in (np.float32, np.float64):
        got = _kernels.to_float(a, amax, dtype)
        if a.size and int(np.abs(a).max()) > amax:
            assert got is None
        else:
            assert got is not None and got.dtype == dtype
            assert np.array_equal(got, a.astype(dtype))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 40),
    st.integers(1, 7),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int8", "int16"]),
)
def test_gemm_same_bits_either_path(
    m: int, k: int, n: int, trans_a: bool, trans_b: bool, seed: int, precision: str
) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    shape = (k, m) if trans_a else (m, k)
    model = single_op(
        "Gemm", [shape], consts={1: w, 2: c}, transA=int(trans_a), transB=int(trans_b)
    ).SerializeToString()
    x = rng.standard_normal(shape).astype(np.float32)
    _run_both(model, precision, {"x0": x}, [{"x0": x}])


@pytest.mark.parametrize("build", [resnet_style, squeezenet_style, kitchen_sink])
@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_graphs_same_bits_either_path(build: Any, precision: str) -> None:
    model = build()
    rng = np.random.default_rng(1)
    feeds: dict[str, np.ndarray] = {}
    for i in model.graph.input:
        shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[i.name] = rng.integers(0, 10, shape)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    _run_both(model.SerializeToString(), precision, feeds, [feeds])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 9), st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_lut_ops_same_bits_either_path(channels: int, side: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (1, channels, side, side)
    per_c = rng.standard_normal((1, channels, 1, 1)).astype(np.float32)
    models = [
        single_op("Add", [shape, shape]),
        single_op("Mul", [shape], consts={1: per_c}),
        single_op(
            "BatchNormalization",
            [shape],
            consts={
                1: rng.standard_normal(channels).astype(np.float32),
                2: rng.standard_normal(channels).astype(np.float32),
                3: rng.standard_normal(channels).astype(np.float32),
                4: (rng.random(channels) + 0.5).astype(np.float32),
            },
        ),
    ]
    for model in models:
        feeds = {i.name: rng.standard_normal(shape).astype(np.float32) for i in model.graph.input}
        _run_both(model.SerializeToString(), "int8", feeds, [feeds])


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(0, 9),
    st.integers(0, 3),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_gather_channels_is_take_clip(
    outer: int, channels: int, inner: int, first: int, seed: int, wild: bool
) -> None:
    rng = np.random.default_rng(seed)
    qmax, nv = 7, 15
    table = rng.integers(-100, 100, size=(first + channels) * nv)
    span = 40 if wild else qmax  # wild: values beyond qmax, clipped as numpy's take clips
    x = rng.integers(-span, span + 1, size=(outer, channels, inner))
    base = ((first + np.arange(channels)) * nv + qmax).reshape(1, -1, 1)
    want = np.take(table, x + base, mode="clip")
    inside = bool(np.all(np.abs(x) <= qmax))
    out = np.empty_like(x)
    assert _kernels.gather_channels(x, table, first, nv, qmax, out) is inside
    assert np.array_equal(out, want)
    assert _kernels.gather_channels(x, table, first, nv, qmax, x) is inside  # in place
    assert np.array_equal(x, want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-9, 9), st.integers(-9, 9)), max_size=30))
def test_gather_pairs_is_take(pairs: list[tuple[int, int]]) -> None:
    qmax, nv = 7, 15
    table = np.arange(nv * nv, dtype=np.int64) * 3 - 5
    x = np.array([p[0] for p in pairs], np.int64)
    y = np.array([p[1] for p in pairs], np.int64)
    got = _kernels.gather_pairs(x, y, table, qmax)
    if x.size and max(int(np.abs(x).max()), int(np.abs(y).max())) > qmax:
        assert got is None
    else:
        assert got is not None
        assert got.tolist() == table.take((x + qmax) * nv + y + qmax).tolist()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 6),
    st.integers(1, 30),
    st.lists(MULT, min_size=6, max_size=6),
    st.integers(31, 62),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["none", "relu", "table"]),
)
def test_channel_epilogue_is_f32requant_then_post(
    n: int, channels: int, inner: int, mults: list[int], shift: int, seed: int, post: str
) -> None:
    rng = np.random.default_rng(seed)
    qmax = 127
    acc = rng.integers(-(2**24), 2**24, size=(n, channels, inner)).astype(np.float32)
    bias = rng.integers(-(2**30), 2**30, size=channels)
    mult = np.array(mults[:channels], np.int64)
    rs = Rescale(mult, shift)
    table = rng.integers(-qmax, qmax + 1, size=channels * (2 * qmax + 1))
    got = _kernels.channel_epilogue(
        acc, bias, mult, shift, qmax, relu=post == "relu", table=table if post == "table" else None
    )
    assert got is not None
    with numpy_only():
        want = saturate(
            apply_rescale(acc.astype(np.int64) + bias[None, :, None], rs, channel_axis=1), qmax
        )
    if post == "relu":
        want = np.maximum(want, 0)
    elif post == "table":
        want = table.take(want + (np.arange(channels) * (2 * qmax + 1) + qmax)[None, :, None])
    assert got.tolist() == want.tolist()
    rq = _ortconv.F32Requant.plan(rs, bias, qmax, 2**24 + 2**30)
    if rq is not None and post == "none":
        assert rq(acc).tolist() == got.tolist()


def _exact_epilogue(acc: np.ndarray, *args: Any, **kw: Any) -> Any:
    old = _kernels.FLOAT_EPILOGUE
    _kernels.FLOAT_EPILOGUE = False
    try:
        return _kernels.channel_epilogue(acc, *args, **kw)
    finally:
        _kernels.FLOAT_EPILOGUE = old


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 300),
    st.lists(MULT, min_size=5, max_size=5),
    st.integers(31, 62),
    st.sampled_from([127, 32767]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_the_float64_epilogue_is_the_integer_one_or_declines(
    channels: int,
    inner: int,
    mults: list[int],
    shift: int,
    qmax: int,
    relu: bool,
    keep: bool,
    seed: int,
) -> None:
    """`_jit.channel_epilogue_float` gives `channel_epilogue`'s integers wherever it accepts
    the call (ties, their near misses, NaN and huge sums it declines), for int8 and int16,
    with and without Relu and a kept Relu; and it does accept ordinary calls."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**24), 2**24, size=(1, channels, inner)).astype(np.float32)
    bias = rng.integers(-(2**40), 2**40, size=channels)
    mult = np.array(mults[:channels], np.int64)
    if seed % 3 == 0:  # exact ties within [-qmax, qmax]: v / 2 for odd v (mult 2**30, shift 31)
        mult[0], bias[0] = 1 << 30, 0
        acc[0, 0, ::2] = rng.integers(0, qmax, size=acc[0, 0, ::2].size) * 2 + 1
        shift = 31
    out = np.empty(acc.shape, np.int64)
    kept = np.empty(acc.shape if keep and not relu else (0, 0, 0), np.int64)
    lo = 0 if relu else -qmax
    ok = _kernels._call("channel_epilogue_float", acc, bias, mult, shift, lo, qmax, out, kept)
    if keep and not relu:
        old = _kernels.FLOAT_EPILOGUE
        _kernels.FLOAT_EPILOGUE = False  # the integer kernel's Conv and kept Relu
        try:
            want = _kernels.channel_epilogue_relu(acc, bias, mult, shift, qmax, np.int64)
        finally:
            _kernels.FLOAT_EPILOGUE = old
        assert want is not None
        want_out, want_kept = want
    else:
        want_out, want_kept = _exact_epilogue(acc, bias, mult, shift, qmax, relu=relu), None
    assert want_out is not None
    if ok:
        np.testing.assert_array_equal(out, want_out)
        if want_kept is not None:
            np.testing.assert_array_equal(kept, want_kept)
    if seed % 3 == 0:
        assert not ok  # the ties are declined
    # whichever ran, the epilogue's result is the integer one
    got = _kernels.channel_epilogue(acc, bias, mult, shift, qmax, relu=relu)
    np.testing.assert_array_equal(got, _exact_epilogue(acc, bias, mult, shift, qmax, relu=relu))


def test_the_float64_epilogue_accepts_ordinary_sums() -> None:
    rng = np.random.default_rng(7)
    acc = rng.integers(-(2**20), 2**20, size=(1, 8, 500)).astype(np.float32)
    bias = rng.integers(-1000, 1000, size=8)
    mult = rng.integers(2**29, 2**31, size=8)
    out = np.empty(acc.shape, np.int8)
    empty = np.zeros((0, 0, 0), np.int8)
    assert _kernels._call("channel_epilogue_float", acc, bias, mult, 45, 0, 127, out, empty)
    np.testing.assert_array_equal(out, _exact_epilogue(acc, bias, mult, 45, 127, relu=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 2.0**31, 0.5, -2.75])
def test_the_float64_epilogue_and_the_integer_one_agree_on_odd_sums(bad: float) -> None:
    """A sum the proofs never give (NaN, ±Inf, ≥ 2**31, not an integer): the epilogue's
    result (or its refusal) is the same whether the float64 pass is tried first or not."""
    rng = np.random.default_rng(8)
    acc = rng.integers(-(2**20), 2**20, size=(1, 4, 50)).astype(np.float32)
    acc[0, 1, 7] = bad
    acc[0, 1, :7] = rng.integers(-100, 100, size=7)
    bias = rng.integers(-10, 10, size=4)
    mult = np.full(4, 2**31, np.int64)  # at shift 31: the rescale is the identity
    got = _kernels.channel_epilogue(acc, bias, mult, 31, 127)
    want = _exact_epilogue(acc, bias, mult, 31, 127)
    assert (got is None) == (want is None)
    if got is not None:
        np.testing.assert_array_equal(got, want)


def test_batchnorm_channel_table_is_its_post() -> None:
    rng = np.random.default_rng(5)
    c = 3
    model = single_op(
        "BatchNormalization",
        [(1, c, 4, 4)],
        consts={k: (rng.random(c) + 0.5).astype(np.float32) for k in range(1, 5)},
    )
    x = {"x0": rng.standard_normal((1, c, 4, 4)).astype(np.float32)}
    ex = FixedExecutor(model.SerializeToString(), precision="int8", calibration=[x])
    bn = ex.ops[0]
    for relu in (False, True):
        table = bn.channel_table(c, relu)  # type: ignore[attr-defined]
        post = bn.channel_post(c, relu)  # type: ignore[attr-defined]
        w = np.tile(np.arange(-127, 128, dtype=np.int64), (c, 1))
        want = table.take(w + (np.arange(c) * 255 + 127)[:, None])
        post(w, 0, c)
        assert w.tolist() == want.tolist()


def test_gemm_run_relu_is_relu_of_run() -> None:
    model, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    ex = FixedExecutor(model, precision="int8", calibration=[{"input": x_tr[:64]}])
    gemm = ex.ops[0]
    q = ex.quantize_inputs({"input": x_te[:50]})["input"]
    fused = gemm.run_relu([q, None, None])  # type: ignore[attr-defined]
    assert fused is not None
    assert np.array_equal(fused, np.maximum(gemm.run([q, None, None]), 0))


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_softmax_exact_quotients(precision: str) -> None:
    """Constant rows make E·qmax + S // 2 an exact multiple of S for some widths (n = 2 at
    int8: 64 exactly): the float quotient must not truncate below it."""
    for n in range(1, 70):
        model = single_op("Softmax", [(2, n)], axis=-1).SerializeToString()
        x = np.full((2, n), 0.25, np.float32)
        x[1, 0] = 1.0
        ex = FixedExecutor(model, precision=precision, calibration=[{"x0": x}])
        q, out = ex.run_integers({"x0": x})
        rs = ex.ops[0].to_q16  # type: ignore[attr-defined]
        want = [ref.softmax_row(r, int(rs.mult[0]), rs.shift, ex.qmax) for r in q.tolist()]
        assert out.tolist() == want


def test_softmax_kernel_refuses_tables_outside_its_proof() -> None:
    q = np.zeros((1, 3), np.int64)
    assert _kernels.softmax_rows(q, np.array([2**31], np.int64), 127) is None
    assert _kernels.softmax_rows(q, np.array([0], np.int64), 127) is None
    assert _kernels.softmax_rows(q, np.array([-1], np.int64), 127) is None


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("kernels", [True, False])
def test_ort_matmul_same_bits(precision: str, kernels: bool, ort_everywhere: None) -> None:
    """onnxruntime's MatMul (float32 at int8, float64 at int16) gives numpy's integers, with
    the compiled epilogue or numpy's."""
    model, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    old = _kernels.ENABLED
    _kernels.ENABLED = kernels
    try:
        _run_both(model, precision, {"input": x_te[:200]}, [{"input": x_tr[:256]}])
    finally:
        _kernels.ENABLED = old


def test_ort_matmul_bound_is_numpy_matmul() -> None:
    """`OrtMatMul.bound`: the int64 input converted into the bound buffer, the sums handed to
    `finish` - numpy's integers at the float32 bound and for several row counts (more than
    the kept shapes, so buffers are dropped and remade); None where the input is not
    exactly convertible or the call would not pay."""
    rng = np.random.default_rng(10)
    k, q = 1040, 127
    w = (rng.choice([-1, 1], size=(k, 8)) * q).astype(np.float32)
    mm = _ortgemm.OrtMatMul(w)
    for rows in (64, 33, 64, 40, 41, 42, 64):
        a = rng.integers(-q, q + 1, size=(rows, k))
        a[0] = q
        for session in (True, False):  # onnxruntime's MatMul, or numpy's into the same buffers
            got = mm.bound(a, q, lambda y: y.astype(np.int64), session=session)
            assert got is not None
            assert np.array_equal(got, a @ w.astype(np.int64))
    a = rng.integers(-q, q + 1, size=(64, k))
    a[3, 5] = q + 1  # beyond amax: refused, nothing computed
    assert mm.bound(a, q, lambda y: y.copy()) is None
    assert mm.bound(a[:1], q, lambda y: y.copy()) is None  # 1·K·N below MIN_WORK
    assert mm.bound(a[:, :-1], q, lambda y: y.copy()) is None  # wrong K


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_the_matmul_library_is_tuned_and_gives_the_same_bits(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Gemm's product library (onnxruntime or numpy) is chosen per row count after its
    first runs, and every run on the way gives the integers of either library alone."""
    model, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    x, calib = {"input": x_te}, [{"input": x_tr[:256]}]
    want = {}
    for library in ("all", "none"):
        monkeypatch.setattr(_ortgemm, "LIBRARY", library)
        want[library] = FixedExecutor(model, precision=precision, calibration=calib).run(x)
    monkeypatch.setattr(_ortgemm, "LIBRARY", "tune")
    ex = FixedExecutor(model, precision=precision, calibration=calib)
    for _ in range(2 * (_ortconv.TUNE_RUNS + 1)):
        got = ex.run(x)
        for library in want:
            assert all(np.array_equal(got[k], want[library][k]) for k in got)
    tuned = [op._compiled[4].tuner for op in ex.ops if getattr(op, "_compiled", None)]
    applies = [t for t in tuned if t.chosen or t._times]
    assert applies, "no Gemm took a tunable product"
    assert all(set(t.chosen) == {x_te.shape[0]} for t in applies)


def test_ort_matmul_is_numpy_matmul_at_the_bound() -> None:
    """The worst case the float32 proof allows (K·127² ≤ 2**24: K = 1040), all ±127."""
    rng = np.random.default_rng(9)
    for dtype, k, q in ((np.float32, 1040, 127), (np.float64, 4096, 32767)):
        w = (rng.choice([-1, 1], size=(k, 8)) * q).astype(dtype)
        a = (rng.choice([-1, 1], size=(64, k)) * q).astype(dtype)
        a[0] = q
        w[:, 0] = q
        mm = _ortgemm.OrtMatMul(w)
        got = _ortgemm.matmul(a, w, mm)
        want = a.astype(np.int64) @ w.astype(np.int64)
        assert got.dtype == dtype
        assert np.array_equal(got.astype(np.int64), want)
        assert got[0, 0] == k * q * q


_EDGE = [0, 1, -1, 2**24, -(2**24), 2**31 - 1, -(2**31 - 1), -(2**31), 2**31, 2**31 + 1, 2**53]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(_EDGE) | st.integers(-(2**53), 2**53), min_size=1, max_size=30),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**53]),
)
def test_to_float64_either_side_of_the_int32_path(xs: list[int], amax: int) -> None:
    """float64 conversions take int32 below amax 2**31 and int64 from there: the values are
    astype's either way, and a value beyond amax (e.g. 2**31 under amax 2**31 - 1, which
    int32 would wrap) is refused, not converted."""
    a = np.array(xs, np.int64)
    out = np.full(a.shape, np.nan)
    got = _kernels.to_float(a, amax, np.float64, out=out)
    if int(np.abs(a).max()) > amax:
        assert got is None
    else:
        assert got is out
        assert np.array_equal(out, a.astype(np.float64))


def test_to_float_refuses_an_out_of_another_shape_or_dtype() -> None:
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    for bad in (np.empty((3, 2)), np.empty((2, 3), np.float32), np.empty((2, 6))[:, ::2]):
        assert _kernels.to_float(a, 8, np.float64, out=bad) is None


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.integers(1, 30),
    st.integers(1, 7),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int8", "int16"]),
)
def test_matmul_same_bits_either_path(
    lead: list[int], k: int, n: int, seed: int, precision: str
) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    shape = (*lead, k)
    model = single_op("MatMul", [shape], consts={1: w}).SerializeToString()
    x = rng.standard_normal(shape).astype(np.float32)
    _run_both(model, precision, {"x0": x}, [{"x0": x}])


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_matmul_through_ort_same_bits(precision: str, ort_everywhere: None) -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((24, 6)).astype(np.float32)
    model = single_op("MatMul", [(2, 5, 24)], consts={1: w}).SerializeToString()
    x = rng.standard_normal((2, 5, 24)).astype(np.float32)
    _run_both(model, precision, {"x0": x}, [{"x0": x}])
