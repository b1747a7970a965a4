"""`TraceResponders` (a device answering from its home) and `RemoteDevice`'s argument checks.

The HTTP side - a real node, lying and honest devices, bad requests - is tests/node/test_traces.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.identity import Identity
from edgetrust.models import ModelRegistry
from edgetrust.runtime.fixed import Fault, FixedExecutor, PlanStore, TraceStore
from edgetrust.verify.dispute import DeviceResponder, Query, SplitAnswer
from edgetrust.verify.remote import (
    RemoteDevice,
    TraceResponders,
    TraceUnavailableError,
    parse_trace_root,
)
from edgetrust.zoo import digits_mlp_onnx, load_digits_split


def _keep(home: Path, n: int) -> tuple[FixedExecutor, list[bytes]]:
    """A device home with the digits model, its plan and `n` kept (lying) traces."""
    model, _ = digits_mlp_onnx()
    ModelRegistry(home).add_bytes(model, publisher=Identity.from_seed(b"\x01" * 32))
    ex = FixedExecutor(model, precision="int8")
    PlanStore(home).put(ex.plan)
    store = TraceStore(home)
    x_test = load_digits_split()[1]
    roots = []
    for i in range(n):
        x = {"input": x_test[i : i + 1]}
        fault = Fault("gemm0", i, 1)
        _, trace = ex.run_traced(x, fault=fault)
        store.put(
            trace.root, x, model_digest=ex.model_digest, plan_digest=ex.plan.digest, fault=fault
        )
        roots.append(trace.root)
    return ex, roots


def test_responders_answer_cache_and_describe(tmp_path: Path) -> None:
    ex, roots = _keep(tmp_path, 3)
    traces = TraceResponders(tmp_path, cache=2)
    info = traces.describe(roots[0])
    assert (info["model"], info["plan"]) == (ex.model_digest, ex.plan.digest)
    assert info["kept_until"] > time.time()
    ans = traces.answer(roots[0], Query("split", None, 0, len(ex.entries)))
    assert isinstance(ans, SplitAnswer)
    assert traces.is_cached(roots[0])
    first = traces.responder(roots[0])
    assert traces.responder(roots[0]) is first
    traces.responder(roots[1])
    traces.responder(roots[2])
    assert not traces.is_cached(roots[0]) and traces.is_cached(roots[2])
    with pytest.raises(NotFoundError):
        traces.responder(bytes(32))
    with pytest.raises(InvalidInputError, match="entry index"):
        traces.answer(roots[1], Query("chunk", 99, 0, 1))


def test_traces_that_cannot_be_rebuilt(tmp_path: Path) -> None:
    ex, roots = _keep(tmp_path, 4)
    traces = TraceResponders(tmp_path)
    # Damaged file.
    traces.store.path(roots[0]).write_bytes(b"garbage")
    for call in (traces.describe, traces.responder):
        with pytest.raises(TraceUnavailableError, match="damaged"):
            call(roots[0])
    # Outside the window: not found, like a trace never kept.
    old = time.time() - 3600
    os.utime(traces.store.path(roots[1]), (old, old))
    with pytest.raises(NotFoundError, match="window"):
        TraceResponders(tmp_path, window=60).responder(roots[1])
    # The model was re-planned since (its old plan is gone).
    plans = PlanStore(tmp_path)
    assert plans.find(ex.model_digest, ex.plan.digest) == ex.plan
    plans.path(ex.model_digest, "int8").unlink()
    with pytest.raises(TraceUnavailableError, match="plan"):
        traces.responder(roots[2])
    plans.put(ex.plan)
    # The model file is gone.
    (ModelRegistry(tmp_path).root / f"{ex.model_digest.split(':')[1]}.onnx").unlink()
    with pytest.raises(TraceUnavailableError, match="no model"):
        traces.responder(roots[3])
    with pytest.raises(InvalidInputError, match="cache"):
        TraceResponders(tmp_path, cache=0)


def test_responder_refuses_queries_outside_the_trace(tmp_path: Path) -> None:
    ex, _ = _keep(tmp_path, 0)
    _, trace = ex.run_traced({"input": np.zeros((1, 64), np.float32)})
    device = DeviceResponder(ex, trace)
    n = len(ex.entries)
    for q in (
        Query("split", None, 0, n + 1),
        Query("split", None, 0, 1),
        Query("split", None, 3, 2),
        Query("chunk", None, 0, 1),
        Query("chunk", n, 0, 1),
        Query("chunk", 1, 5, 6),
        Query("split", 1, 0, 2),  # entry 1 has one chunk
        Query("open", 2, element=10**6),
        Query("header", 2, element=0),
    ):
        with pytest.raises(InvalidInputError):
            device(q)
    assert device(Query("open", 2, element=0)) is not None


def test_trace_roots_and_remote_arguments() -> None:
    root = bytes(range(32))
    assert parse_trace_root(root) == root
    assert parse_trace_root(root.hex()) == root
    assert parse_trace_root("sha256:" + root.hex()) == root
    for bad in (b"short", root.hex().upper(), root.hex()[:-1], "sha256:xyz", "z" * 64):
        with pytest.raises(InvalidInputError):
            parse_trace_root(bad)
    with pytest.raises(InvalidInputError, match="url"):
        RemoteDevice("ftp://device", root)
    with pytest.raises(InvalidInputError, match="timeout"):
        RemoteDevice("http://device", root, timeout=0)
    with RemoteDevice("http://device:8080/", root) as remote:
        assert remote.url == f"http://device:8080/v1/traces/{root.hex()}"


def test_a_cached_trace_answers_while_another_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    ex, roots = _keep(tmp_path, 2)
    traces = TraceResponders(tmp_path)
    traces.responder(roots[0])  # cached
    started, release = threading.Event(), threading.Event()
    real_get = traces.store.get

    def slow_get(root: bytes, executor: FixedExecutor) -> object:
        started.set()
        release.wait(10)
        return real_get(root, executor)

    monkeypatch.setattr(traces.store, "get", slow_get)
    rebuild = threading.Thread(target=traces.responder, args=(roots[1],))
    rebuild.start()
    try:
        assert started.wait(10)
        begun = time.monotonic()
        assert traces.answer(roots[0], Query("split", None, 0, len(ex.entries))) is not None
        assert time.monotonic() - begun < 5  # did not wait for the rebuild
    finally:
        release.set()
        rebuild.join(10)
    assert traces.is_cached(roots[1])


def test_unparseable_device_urls_are_the_callers_error() -> None:
    for bad in ("http://[::1", "http://", "https:///path", "device:8080"):
        with pytest.raises(InvalidInputError, match="url"):
            RemoteDevice(bad, bytes(32))
