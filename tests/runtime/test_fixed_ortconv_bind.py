"""`_ortconv.OrtConv` through IOBinding with kept buffers gives the sums of
`InferenceSession.run` with fresh arrays, never hands its buffers on, and stays correct from
several threads and in a forked child (where a lock held at the fork must not block it)."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.runtime.fixed import _ortconv
from edgetrust.runtime.fixed._conv import Conv
from tests.runtime.test_fixed_ortconv import _conv_op, _direct


def _sums(op: Conv, x: np.ndarray, xmax: int, bind: bool) -> np.ndarray:
    old = _ortconv.BIND
    _ortconv.BIND = bind
    try:
        return op.conv_sum(x, op.weights()["b"], xmax, op.qmax)
    finally:
        _ortconv.BIND = old


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    cin=st.integers(1, 6),
    cout=st.integers(1, 5),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    pad=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_bound_buffers_give_the_sums_of_fresh_arrays(
    data: st.DataObject, cin: int, cout: int, k: int, stride: int, pad: int, seed: int
) -> None:
    op = _conv_op(cin, cout, 1, k, seed, strides=[stride, stride], pads=[pad] * 4)
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    per_c = int(np.abs(w4).reshape(op.oc, op.cg, -1).sum(axis=2).max())
    # the int8 range and one where the channels need several chunks (each its own buffers)
    xmax = max(1, data.draw(st.sampled_from([op.qmax, (1 << 24) // (per_c * max(1, cin - 1))])))
    rng = np.random.default_rng(seed)
    results = []
    # several shapes (batch and size) in a row, then the first again: buffers kept per shape
    shapes = [
        (n, cin, s, s)
        for n, s in data.draw(
            st.lists(st.tuples(st.integers(1, 2), st.integers(k + 2, 8)), min_size=1, max_size=3)
        )
    ]
    for shape in [*shapes, shapes[0]]:
        x = rng.integers(-xmax, xmax + 1, size=shape)
        bound = _sums(op, x, xmax, True)
        np.testing.assert_array_equal(bound, _sums(op, x, xmax, False))
        np.testing.assert_array_equal(bound, _direct(x, w4, op.weights()["b"], op))
        results.append((x, bound.copy(), bound))
    for _, copy, handed in results:  # later runs did not overwrite what was handed on
        np.testing.assert_array_equal(handed, copy)


def test_fused_run_hands_on_a_new_array_each_time() -> None:
    op = _conv_op(4, 3, 1, 3, seed=3, pads=[1, 1, 1, 1])
    rng = np.random.default_rng(0)
    xs = [rng.integers(-127, 128, size=(1, 4, 9, 9)) for _ in range(3)]
    outs = [op.run([x, None, None]) for x in xs]
    copies = [o.copy() for o in outs]
    for x, out, copy in zip(xs, outs, copies, strict=True):
        np.testing.assert_array_equal(out, copy)
        np.testing.assert_array_equal(out, op.run([x, None, None]))
    assert len({id(o) for o in outs}) == 3


def test_threads_share_one_conv() -> None:
    op = _conv_op(5, 4, 1, 3, seed=7, pads=[1, 1, 1, 1])
    rng = np.random.default_rng(1)
    xs = [rng.integers(-127, 128, size=(1 + i % 2, 5, 9, 9)) for i in range(8)]
    want = [_sums(op, x, op.qmax, False) for x in xs]
    got: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        got[i] = [_sums(op, xs[(i + j) % 8], op.qmax, True) for j in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, outs in got.items():
        for j, out in enumerate(outs):
            np.testing.assert_array_equal(out, want[(i + j) % 8])
    assert len(got) == 4


def _child(op: Conv, x: np.ndarray, queue: Any) -> None:
    queue.put(_sums(op, x, op.qmax, True))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_does_not_wait_for_the_parents_lock() -> None:
    op = _conv_op(3, 2, 1, 3, seed=11, pads=[1, 1, 1, 1])
    x = np.random.default_rng(2).integers(-127, 128, size=(1, 3, 9, 9))
    want = _sums(op, x, op.qmax, True)  # makes the parent's buffers and lock
    fast = op._ort_conv(op.qmax, op.weights()["b"])
    assert fast is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    lock, _ = fast._proc.get()
    with lock:  # as if another thread were mid-run at the fork
        child = ctx.Process(target=_child, args=(op, x, queue), daemon=True)
        child.start()
        try:
            out = queue.get(timeout=60)
            child.join(timeout=60)
        finally:
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0
    np.testing.assert_array_equal(out, want)


def _env_allocators(opts: Any) -> bool:
    try:
        return bool(opts.get_session_config_entry("session.use_env_allocators") == "1")
    except RuntimeError:  # onnxruntime: no such entry
        return False


def test_shared_arena_gives_the_same_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(-127, 128, size=(2, 4, 9, 9))
    sums = []
    for shared in (True, False):
        monkeypatch.setattr(_ortconv, "SHARED_ARENA", shared)
        opts = _ortconv.session_options()
        assert _env_allocators(opts) == (shared and _ortconv._shared_arena())
        op = _conv_op(4, 3, 1, 3, seed=9, pads=[1, 1, 1, 1])  # new sessions with these options
        sums.append(_sums(op, x, op.qmax, True))
    np.testing.assert_array_equal(sums[0], sums[1])
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    np.testing.assert_array_equal(sums[0], _direct(x, w4, op.weights()["b"], op))


@settings(max_examples=20, deadline=None)
@given(
    cin=st.integers(1, 20),
    cout=st.integers(1, 20),
    k=st.integers(1, 3),
    group=st.sampled_from([1, 2]),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    seed=st.integers(0, 1000),
)
def test_both_layouts_and_the_tuner_give_the_direct_sums(
    cin: int, cout: int, k: int, group: int, stride: int, pad: int, seed: int
) -> None:
    """onnxruntime's blocked (NCHWc) and plain layouts, and the tuner taking turns between
    them over a Conv's first runs, all give the direct sums (onnxruntime blocks only some
    grouped Convs: for those both sessions are plain)."""
    cin, cout = cin * group, cout * group
    op = _conv_op(cin, cout, group, k, seed, strides=[stride, stride], pads=[pad] * 4)
    w4 = op.weights()["w"].reshape(op.oc, op.cg, op.kh, op.kw)
    x = np.random.default_rng(seed).integers(-op.qmax, op.qmax + 1, size=(1, cin, 9, 9))
    want = _direct(x, w4, op.weights()["b"], op)
    with pytest.MonkeyPatch.context() as mp:
        for mode in ("all", "none", *["tune"] * (2 * _ortconv.TUNE_RUNS + 3)):
            mp.setattr(_ortconv, "BLOCKED_CONV", mode)
            np.testing.assert_array_equal(_sums(op, x, op.qmax, True), want)
            np.testing.assert_array_equal(_sums(op, x, op.qmax, False), want)
    fast = op._ort_conv(op.qmax, op.weights()["b"])
    assert fast is not None and len(fast.tuner.chosen) == 1  # the runs above went through it
    # the losing layout's sessions and buffers are gone (both were made by the runs above)
    (chosen,) = fast.tuner.chosen.values()
    assert {blocked for blocked, _ in fast._sessions} == {chosen}
    assert {k[0] for k in fast._proc.get()[1]} == {chosen}


def test_without_binding_the_fixed_layout_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """`BIND` off (fresh arrays per call) takes the layout `BLOCKED_CONV` fixes, untimed."""
    for mode, blocked in (("none", False), ("all", True)):
        monkeypatch.setattr(_ortconv, "BLOCKED_CONV", mode)
        op = _conv_op(4, 3, 1, 3, seed=2, pads=[1, 1, 1, 1])
        x = np.random.default_rng(1).integers(-127, 128, size=(1, 4, 8, 8))
        _sums(op, x, op.qmax, False)
        fast = op._ort_conv(op.qmax, op.weights()["b"])
        assert fast is not None
        assert {b for b, _ in fast._sessions} == {blocked}
        assert not fast.tuner.chosen


def test_the_tuner_takes_turns_then_keeps_the_faster_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ortconv, "BLOCKED_CONV", "tune")
    tuner = _ortconv.LayoutTuner()
    picks = []
    decided = []
    for run in range(2 * (_ortconv.TUNE_RUNS + 1)):
        blocked = tuner.pick(("g", "k"))
        picks.append(blocked)
        assert tuner.layouts("g") == {True, False}  # both are being timed
        # the plain layout is faster, except on its first (untimed) run
        decided.append(tuner.record(("g", "k"), blocked, 2.0 if blocked or run == 1 else 1.0))
    assert picks == [True, False] * (_ortconv.TUNE_RUNS + 1)
    assert decided == [False] * (2 * _ortconv.TUNE_RUNS + 1) + [True]
    assert tuner.chosen == {("g", "k"): False}
    assert tuner.layouts("g") == {False}
    assert tuner.layouts("other") == set()
    assert [tuner.pick(("g", "k")) for _ in range(3)] == [False] * 3
    assert not tuner.record(("g", "k"), True, 0.0)  # after the choice, timings change nothing
    assert tuner.pick(("g", "k")) is False
    assert tuner.pick(("g", "other")) is True  # each key is tuned on its own
    monkeypatch.setattr(_ortconv, "BLOCKED_CONV", "none")
    assert tuner.pick(("g", "other")) is False
    monkeypatch.setattr(_ortconv, "BLOCKED_CONV", "all")
    assert tuner.pick(("g", "k")) is True
