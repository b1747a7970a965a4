"""The fixed executor behind receipts: plans and traces kept in the home, settings, faults."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.models import ModelCard
from edgetrust.runtime.executors import make_executor
from edgetrust.runtime.fixed import Fault, FixedExecutor, FixedRuntime, PlanStore, TraceStore


def test_plan_store_round_trip_and_preference(
    digits_int8: FixedExecutor, edgetrust_home: Path
) -> None:
    store = PlanStore(edgetrust_home)
    digest = digits_int8.model_digest
    assert store.get(digest, "int8") is None and store.preferred(digest) == "int8"
    store.put(digits_int8.plan, preferred=True)
    assert store.get(digest, "int8") == digits_int8.plan
    assert oct(store.path(digest, "int8").stat().st_mode & 0o777) == "0o600"
    store.path(digest, "int16").write_bytes(digits_int8.plan.to_json())  # wrong precision inside
    with pytest.raises(InvalidInputError):
        store.get(digest, "int16")


def test_trace_store_keeps_prunes_and_checks(
    digits_int8: FixedExecutor, digits: dict[str, Any], edgetrust_home: Path
) -> None:
    store = TraceStore(edgetrust_home, max_traces=3)
    roots = []
    for i in range(5):
        x = {"input": digits["x_test"][i : i + 1]}
        _, trace = digits_int8.run_traced(x)
        store.put(
            trace.root,
            x,
            model_digest=digits_int8.model_digest,
            plan_digest=digits_int8.plan.digest,
        )
        os.utime(store.path(trace.root), (time.time() - 10 + i, time.time() - 10 + i))
        roots.append(trace.root)
    store.prune()
    kept = {p.stem for p in store.root.glob("*.npz")}
    assert kept == {r.hex() for r in roots[2:]}
    back = store.get(roots[-1], digits_int8)
    assert back.root == roots[-1]
    with pytest.raises(NotFoundError, match="dispute window"):
        store.get(roots[0], digits_int8)
    store.prune(now=time.time() + 8 * 24 * 3600)
    assert not list(store.root.glob("*.npz"))
    # A liar's trace comes back with its lie; a damaged or misnamed file is refused.
    x = {"input": digits["x_test"][:1]}
    fault = Fault("relu0", 2, 9)
    _, lying = digits_int8.run_traced(x, fault=fault)
    p = store.put(
        lying.root,
        x,
        model_digest=digits_int8.model_digest,
        plan_digest=digits_int8.plan.digest,
        fault=fault,
    )
    assert store.get(lying.root, digits_int8).root == lying.root
    other = store.path(bytes(32))
    other.write_bytes(p.read_bytes())
    with pytest.raises(InvalidInputError, match="does not regenerate"):
        store.get(bytes(32), digits_int8)
    other.write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="damaged"):
        store.get(bytes(32), digits_int8)
    with pytest.raises(InvalidInputError):
        TraceStore(edgetrust_home, window=0)


def test_runtime_plans_once_and_describes_itself(
    digits: dict[str, Any], edgetrust_home: Path
) -> None:
    card = ModelCard.from_onnx_bytes(digits["onnx"])
    rt = FixedRuntime()
    assert rt.descriptor() == {
        "name": "fixed",
        "version": "2",
        "settings": {"trace": "https://edgetrust.dev/trace/v2"},
    }
    out = rt.run(card, digits["onnx"], {"input": digits["x_test"][:2]})
    assert out["probabilities"].shape == (2, 10)
    desc = rt.descriptor()
    assert desc["settings"]["precision"] == "int8"
    assert rt.last_trace_root == rt.last_trace.root_digest
    assert PlanStore(edgetrust_home).get(card.digest, "int8") is not None
    assert (TraceStore(edgetrust_home).path(rt.last_trace.root)).is_file()
    # A verifier rebuilds the identical executor from the receipt's settings alone.
    verifier = make_executor("fixed", desc["settings"])
    again = verifier.run(card, digits["onnx"], {"input": digits["x_test"][:2]})
    assert np.array_equal(again["probabilities"], out["probabilities"])
    assert getattr(verifier, "last_trace_root") == rt.last_trace_root  # noqa: B009
    with pytest.raises(InvalidInputError, match="another model"):
        verifier.run(ModelCard.from_onnx_bytes(_other_model()), _other_model(), {})


def test_a_version_1_receipt_still_re_executes_in_trace_layout_v1(
    digits: dict[str, Any], edgetrust_home: Path
) -> None:
    from edgetrust.runtime.trace import LAYOUT_V1, LAYOUT_V2

    card = ModelCard.from_onnx_bytes(digits["onnx"])
    x = {"input": digits["x_test"][:2]}
    old = FixedRuntime(home=edgetrust_home, trace_layout=LAYOUT_V1)
    old.run(card, digits["onnx"], x)
    desc = old.descriptor()
    assert desc["version"] == "1" and "trace" not in desc["settings"]  # as v1 receipts read
    verifier = make_executor("fixed", desc["settings"])
    verifier.run(card, digits["onnx"], x)
    assert getattr(verifier, "last_trace_root") == old.last_trace_root  # noqa: B009
    assert getattr(verifier, "trace_layout") is LAYOUT_V1  # noqa: B009
    new = FixedRuntime(home=edgetrust_home)
    new.run(card, digits["onnx"], x)
    assert new.descriptor()["settings"]["trace"] == LAYOUT_V2.type
    assert new.last_trace_root != old.last_trace_root
    with pytest.raises(InvalidInputError, match="trace layout"):
        make_executor("fixed", {**desc["settings"], "trace": "https://edgetrust.dev/trace/v9"})


def _other_model() -> bytes:
    from tests.runtime.graphs import single_op

    return single_op("Relu", [(2,)], out_shape=[2]).SerializeToString()


@pytest.mark.parametrize(
    "settings",
    [{"precision": "int4"}, {"plan": "not an object"}, {"plan": {"type": "x"}}],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        make_executor("fixed", settings)


def test_fault_specs() -> None:
    assert Fault.parse("node=gemm1,element=3,delta=-2") == Fault("gemm1", 3, -2)
    assert Fault.parse("node=4, element=0, delta=7") == Fault(4, 0, 7)
    assert Fault.parse("node=input:input,element=1,delta=1").node == "input:input"
    for bad in (
        "",
        "node=a",
        "node=a,element=x,delta=1",
        "node=a,element=1,delta=0",
        "node=a,element=-1,delta=1",
        "node=a,element=1,delta=1,extra=2",
        "node=a,node=b,element=1",
    ):
        with pytest.raises(InvalidInputError):
            Fault.parse(bad)


def test_faults_change_exactly_one_element(
    digits_int8: FixedExecutor, digits: dict[str, Any]
) -> None:
    x = {"input": digits["x_test"][:1]}
    _, honest = digits_int8.run_traced(x)
    _, lying = digits_int8.run_traced(x, fault=Fault("gemm0", 5, 500))  # saturates: still a change
    diff = np.nonzero(lying.values[1].reshape(-1) != honest.values[1].reshape(-1))[0]
    assert diff.tolist() == [5]
    with pytest.raises(InvalidInputError):
        digits_int8.run_traced(x, fault=Fault("gemm0", 10**6, 1))
    with pytest.raises(InvalidInputError):
        digits_int8.run_traced(x, fault=Fault("input:nope", 0, 1))
