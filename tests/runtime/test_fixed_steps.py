"""The flat steps of an untraced run (`_steps.Steps`) give the general path's outputs and
errors: `FixedExecutor._execute` (node by node, with the same fusions) is the definition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError, ResourceLimitError
from edgetrust.runtime.fixed import FixedExecutor, _executor, _kernels
from edgetrust.runtime.fixed._arith import quantize
from edgetrust.runtime.fixed._steps import Steps, kept_narrowing, kept_norms
from tests.runtime.graphs import kitchen_sink, resnet_style, squeezenet_style


def _general(ex: FixedExecutor, x: dict[str, Any]) -> dict[str, np.ndarray]:
    env, _ = ex._execute(x, keep=False)
    return ex._outputs(env)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


def _cases() -> list[tuple[str, Any]]:
    return [
        ("resnet", resnet_style(size=32, width=8)),
        ("squeezenet", squeezenet_style(size=32)),
        ("sink", kitchen_sink()),
    ]


def _sample(ex: FixedExecutor, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in ex.input_names:
        shape = tuple(d or 2 for d in ex.input_dims[name] or [1])
        if ex.input_kind(name) == "q":
            out[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            out[name] = rng.integers(0, 4, shape).astype(np.int64)
    return out


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_steps_give_the_general_path_outputs(case: tuple[str, Any], precision: str) -> None:
    _, model = case
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    steps = Steps.of(ex)
    assert steps is not None
    for seed in range(2):
        x = _sample(ex, seed)
        _same(steps.run(x), _general(ex, x))
        _same(ex.run(x), _general(ex, x))
    # without fusions, and with numpy alone, still the same integers
    x = _sample(ex, 7)
    want = _general(ex, x)
    ex._fusion_map = {}
    assert Steps.of(ex) is not steps  # rebuilt for the new fusions
    _same(ex.run(x), want)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_kernels, "ENABLED", False)
        _same(ex.run(x), want)


def test_steps_on_the_digits_mlp(digits: dict[str, Any], digits_int8: FixedExecutor) -> None:
    x = {"input": digits["x_test"]}
    _same(digits_int8.run(x), _general(digits_int8, x))
    # a Mapping that is no dict, a float64 array, a list: the general path's values
    _same(digits_int8.run({"input": digits["x_test"].astype(np.float64)}), _general(digits_int8, x))
    one = {"input": digits["x_test"][:3].tolist()}
    _same(digits_int8.run(one), _general(digits_int8, one))


def test_a_fused_chain_that_does_not_apply_runs_node_by_node() -> None:
    ex = FixedExecutor(resnet_style(size=32, width=8))
    x = _sample(ex, 3)
    want = _general(ex, x)
    assert ex._fusions()
    calls: list[int] = []

    def refuse(head: int) -> Any:
        def run(xs: Any) -> None:
            calls.append(head)

        return run

    ex._fusion_map = {i: (chain, refuse(i)) for i, (chain, _) in ex._fusions().items()}
    _same(ex.run(x), want)
    assert sorted(calls) == sorted(ex._fusions())


def _bad_inputs(ex: FixedExecutor) -> list[Any]:
    x = _sample(ex, 0)
    name = ex.input_names[0]
    nan = dict(x)
    nan[name] = x[name].copy()
    nan[name].reshape(-1)[1] = np.nan
    inf = dict(x)
    inf[name] = x[name].copy()
    inf[name].reshape(-1)[-1] = -np.inf
    return [
        nan,
        inf,
        {**x, name: x[name][..., :1]},  # wrong shape
        {**x, name: x[name].astype(np.int32)},  # integers for a real input
        {**x, name: x[name][None]},  # wrong rank
        {**x, "extra": x[name]},
        {k: v for k, v in x.items() if k != name},  # missing
        {**x, name: "not an array"},
        [x[name]],
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_bad_inputs_give_the_general_path_errors(case: tuple[str, Any]) -> None:
    ex = FixedExecutor(case[1])
    for bad in _bad_inputs(ex):
        with pytest.raises(InvalidInputError) as want:
            ex._execute(bad, keep=False)
        with pytest.raises(InvalidInputError) as got:
            ex.run(bad)
        assert str(got.value) == str(want.value)


def test_size_limits_hold_on_the_steps() -> None:
    ex = FixedExecutor(resnet_style(size=32, width=8))
    x = _sample(ex, 0)
    ex.run(x)
    ex.max_elements = x["input"].size  # the limit is read on every run
    with pytest.raises(ResourceLimitError, match="would produce"):
        ex.run(x)
    ex.max_elements = 100
    with pytest.raises(ResourceLimitError, match="input"):
        ex.run(x)


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.sampled_from(
    [0.5, -0.5, 1.5, -2.5, 2.0**52 + 1, -0.0, 5e-324, 126.5, -127.5, 127.49999999999999]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(FINITE, min_size=1, max_size=40),
    st.floats(min_value=1e-30, max_value=1e30),
    st.sampled_from([127, 32767]),
    st.booleans(),
    st.sampled_from([None, np.nan, np.inf, -np.inf]),
)
def test_quantize_kernel_is_quantize_or_refuses_non_finite(
    xs: list[float], scale: float, qmax: int, single: bool, odd: float | None
) -> None:
    if odd is not None:
        xs = [*xs, odd]
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.array(xs, np.float32 if single else np.float64)
        got = _kernels.quantize(x, scale, qmax)
        want = quantize(x, scale, qmax)
    if odd is not None or not np.all(np.isfinite(x)):  # float32 may overflow to inf
        assert got is None
    else:
        assert got is not None
        assert got.tolist() == want.tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=40),
    st.floats(min_value=1e-40, max_value=1e30),
    st.sampled_from([np.int8, np.int16, np.int64]),
)
def test_dequantize_kernel_is_numpy(xs: list[int], scale: float, dtype: Any) -> None:
    info = np.iinfo(dtype)
    q = np.array([min(max(v, info.min), info.max) for v in xs], dtype)
    got = _kernels.dequantize(q, scale)
    with np.errstate(over="ignore"):
        want = (np.asarray(q, np.float64) * scale).astype(np.float32)
    assert got is not None
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_kept_norms_give_the_node_by_node_trace(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traced runs compute a BatchNormalization and the Relu behind it in one pass, and
    keep residual sums narrow: every kept value, the outputs and the trace root are those of
    the nodes run one by one on int64 arrays."""
    monkeypatch.setattr(_executor, "_NARROW_MIN", 0)  # this graph's sums are small
    model = resnet_style(size=32, width=8)
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    plain = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    plain.__dict__["_kept_norms"] = {}  # node by node
    plain.__dict__["_kept_narrow"] = set()  # and int64 sums
    assert kept_narrowing(ex)
    assert any(j is not None for j in kept_norms(ex).values())
    x = _sample(ex, 4)
    _, kept = ex._execute(x, keep=True)
    _, want = plain._execute(x, keep=True)
    assert len(kept) == len(want)
    for a, b in zip(kept, want, strict=True):
        np.testing.assert_array_equal(a, b)
    if precision == "int8":  # int16 tables would be too large: node by node
        narrow = {
            ex.nodes[e.node_index].op_type
            for e, v in zip(ex.entries, kept, strict=True)
            if e.node_index is not None and v.dtype == np.int8
        }
        assert {"BatchNormalization", "Add"} <= narrow
    out, trace = ex.run_traced(x)
    out_plain, trace_plain = plain.run_traced(x)
    _same(out, out_plain)
    assert trace.root == trace_plain.root
    assert ex.run_integers(x)[5].tolist() == plain.run_integers(x)[5].tolist()


def test_a_fault_in_a_kept_norm_is_followed_downstream(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgetrust.runtime.fixed import Fault

    monkeypatch.setattr(_executor, "_NARROW_MIN", 0)

    ex = FixedExecutor(resnet_style(size=32, width=8))
    plain = FixedExecutor(resnet_style(size=32, width=8))
    plain.__dict__["_kept_norms"] = {}
    plain.__dict__["_kept_narrow"] = set()
    x = _sample(ex, 5)
    for bn in [i for i, j in kept_norms(ex).items() if j is not None][:2]:
        for node in (bn, bn - 1):
            fault = Fault(node, element=3, delta=5)
            got = ex.run_traced(x, fault=fault)[1]
            want = plain.run_traced(x, fault=fault)[1]
            assert got.root == want.root
            assert got.root != ex.run_traced(x)[1].root


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(0, 9),
    st.sampled_from([(np.int8, 127), (np.int16, 300), (np.int64, 127)]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_gather_relu_is_take_then_maximum(
    outer: int, channels: int, inner: int, kind: tuple[Any, int], relu: bool, seed: int
) -> None:
    dtype, qmax = kind
    rng = np.random.default_rng(seed)
    nv = 2 * qmax + 1
    table = rng.integers(-qmax, qmax + 1, channels * nv).astype(np.int64)
    x = rng.integers(-qmax, qmax + 1, (outer, channels, inner)).astype(dtype)
    got = _kernels.gather_relu(x, table, nv, qmax, relu)
    assert got is not None
    idx = np.arange(channels).reshape(1, -1, 1) * nv + qmax + x.astype(np.int64)
    want = table[idx]
    assert got[0].dtype == x.dtype
    np.testing.assert_array_equal(got[0], want)
    if relu:
        assert got[1] is not None
        np.testing.assert_array_equal(got[1], np.maximum(want, 0))
    else:
        assert got[1] is None
    if x.size:  # outside its range: refused
        y = x.copy()
        y.reshape(-1)[0] = qmax + 1 if dtype is not np.int8 else -128
        assert _kernels.gather_relu(y, table, nv, qmax, relu) is None
        big = table.copy()
        big[:] = 1 << 40
        assert (_kernels.gather_relu(x, big, nv, qmax, relu) is None) == (dtype is not np.int64)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-200, 200), max_size=40),
    st.sampled_from([(np.int8, 127), (np.int16, 32767), (np.int16, 127)]),
)
def test_narrow_keeps_the_integers_or_refuses(xs: list[int], kind: tuple[Any, int]) -> None:
    dtype, qmax = kind
    x = np.array(xs, np.int64)
    got = _kernels.narrow(x, qmax, dtype)
    if all(-qmax <= v <= qmax for v in xs):
        assert got is not None
        assert got.dtype == dtype
        assert got.tolist() == xs
    else:
        assert got is None
