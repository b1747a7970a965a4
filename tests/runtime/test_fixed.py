"""The fixed-point executor: accuracy against onnxruntime float, determinism, plans, errors."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from threadpoolctl import threadpool_limits

from edgetrust.errors import InvalidInputError, ResourceLimitError, UnsupportedError
from edgetrust.runtime.fixed import SUPPORTED_OPS, FixedExecutor, QuantPlan
from tests.conftest import ASSETS
from tests.runtime import graphs
from tests.runtime.conftest import cnn_input, sink_input
from tests.runtime.golden import compute_roots

GOLDEN = ASSETS / "runtime" / "fixed_golden.json"
ROOT = Path(__file__).resolve().parents[2]

REQUIRED_OPS = {
    "Gemm", "MatMul", "Conv", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "BatchNormalization", "Reshape", "Flatten", "Transpose", "Concat",
    "Gather", "Softmax", "LayerNormalization", "Erf", "Sigmoid", "Tanh", "Sum", "ConstantOfShape",
    "Constant", "Unsqueeze", "Squeeze",
}  # fmt: skip


def test_every_op_of_the_issue_is_supported() -> None:
    assert REQUIRED_OPS <= set(SUPPORTED_OPS)


@pytest.mark.parametrize(("precision", "max_err"), [("int8", 0.1), ("int16", 1e-3)])
def test_digits_accuracy_against_onnxruntime(
    precision: str, max_err: float, digits: dict[str, Any]
) -> None:
    x = digits["x_test"]
    ref = ort.InferenceSession(digits["onnx"]).run(None, {"input": x})[0]
    ex = FixedExecutor(
        digits["onnx"], precision=precision, calibration=[{"input": digits["x_train"][:256]}]
    )  # type: ignore[arg-type]
    got = ex.run({"input": x})["probabilities"]
    err = float(np.max(np.abs(got - ref)))
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    print(f"digits {precision}: max abs error {err:.2e}, top-1 agreement {agree:.4f} on {len(x)}")
    assert got.dtype == np.float32
    assert err < max_err
    assert agree >= 0.99
    assert float(np.mean(got.argmax(1) == digits["y_test"])) >= digits["acc"] - 0.02


@pytest.mark.parametrize("name", ["resnet", "squeezenet"])
@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_cnns_track_onnxruntime(name: str, precision: str, cnn_models: dict[str, bytes]) -> None:
    model = cnn_models[name]
    ex = FixedExecutor(model, precision=precision, calibration=[cnn_input(10, batch=4)])  # type: ignore[arg-type]
    x = cnn_input(11, batch=8)
    ref = ort.InferenceSession(model).run(None, x)[0]
    got = ex.run(x)["prob"]
    err = float(np.max(np.abs(got - ref)))
    print(f"{name} {precision}: max abs error {err:.2e}")
    assert err < (0.05 if precision == "int8" else 5e-3)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 7 / 8


@pytest.mark.parametrize(("precision", "tol"), [("int8", 0.1), ("int16", 1e-3)])
def test_transformer_ops_track_onnxruntime(
    precision: str, tol: float, cnn_models: dict[str, bytes]
) -> None:
    model = cnn_models["sink"]
    x = sink_input(1)
    ex = FixedExecutor(model, precision=precision, calibration=[sink_input(2), sink_input(3), x])  # type: ignore[arg-type]
    ref = ort.InferenceSession(model).run(None, x)[0]
    got = ex.run(x)["out"]
    assert np.max(np.abs(got - ref)) < tol * np.max(np.abs(ref))


def test_same_trace_root_with_one_and_two_threads(cnn_models: dict[str, bytes]) -> None:
    ex = FixedExecutor(cnn_models["resnet"], precision="int8", calibration=[cnn_input(1)])
    x = cnn_input(2, batch=4)
    with threadpool_limits(limits=1):
        _, t1 = ex.run_traced(x)
    with threadpool_limits(limits=2):
        _, t2 = ex.run_traced(x)
    _, t3 = ex.run_traced(x)
    assert t1.root == t2.root == t3.root


def test_plans_are_deterministic_and_round_trip(cnn_models: dict[str, bytes]) -> None:
    a = FixedExecutor(cnn_models["sink"], precision="int16", calibration=[sink_input(5)])
    b = FixedExecutor(cnn_models["sink"], precision="int16", calibration=[sink_input(5)])
    assert a.plan == b.plan and a.plan.digest == b.plan.digest
    plan = QuantPlan.from_json(a.plan.to_json())
    assert plan == a.plan
    c = FixedExecutor(cnn_models["sink"], precision="int16", plan=plan)
    x = sink_input(6)
    assert c.run_traced(x)[1].root == a.run_traced(x)[1].root
    assert c.descriptor() == a.descriptor()
    other = FixedExecutor(cnn_models["sink"], precision="int16", calibration=[sink_input(7)])
    assert other.plan.digest != a.plan.digest


def test_golden_trace_roots_pin_cross_machine_determinism() -> None:
    """Roots of committed models, plans and inputs: any machine must reproduce them."""
    assert compute_roots() == json.loads(GOLDEN.read_text())


def _blas_settings() -> list[dict[str, str | None]]:
    """OPENBLAS_CORETYPE values to force (None = unset), within what this CPU can run."""
    cores: list[str | None] = [None]
    if platform.machine() in ("x86_64", "AMD64"):
        cores.append("Prescott")  # SSE3: every x86-64 CPU runs it
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        if " avx2" in flags:
            cores.append("Haswell")  # AVX2 kernels; forcing them elsewhere is SIGILL
    return [
        {"OPENBLAS_CORETYPE": core, "threads": str(threads)} for core in cores for threads in (1, 2)
    ]


@pytest.mark.slow
def test_golden_roots_agree_across_blas_kernels_and_thread_counts() -> None:
    """The same golden roots in subprocesses under several BLAS kernels and thread counts."""
    golden = json.loads(GOLDEN.read_text())
    for setting in _blas_settings():
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if setting["OPENBLAS_CORETYPE"] is not None:
            env["OPENBLAS_CORETYPE"] = setting["OPENBLAS_CORETYPE"]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(setting["threads"])
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
        out = subprocess.run(
            [sys.executable, "-m", "tests.runtime.golden"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, (setting, out.stderr[-2000:])
        assert json.loads(out.stdout) == golden, setting


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.runtime import graphs
from edgetrust.runtime.fixed import FixedExecutor
m = graphs.resnet_style(size=32, width=8).SerializeToString()
rng = np.random.default_rng(0)
x = {{"input": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}}
ex = FixedExecutor(m, precision="int8", calibration=[x])
print(ex.run_traced(x)[1].root.hex())
"""


@pytest.mark.slow
def test_same_root_across_processes_with_different_blas_threads() -> None:
    roots = set()
    for threads in ("1", "2"):
        env = dict(
            os.environ,
            OMP_NUM_THREADS=threads,
            OPENBLAS_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
        )
        out = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=str(ROOT))],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        roots.add(out.stdout.strip())
    assert len(roots) == 1


def _model_with(node: onnx.NodeProto) -> bytes:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_unsupported_op_names_the_op_and_node() -> None:
    with pytest.raises(UnsupportedError, match=r"op Sin \(node mysin\)"):
        FixedExecutor(_model_with(helper.make_node("Sin", ["x"], ["y"], "mysin")))
    with pytest.raises(UnsupportedError, match=r"op Cos \(node #0\)"):
        FixedExecutor(_model_with(helper.make_node("Cos", ["x"], ["y"])))


def test_malformed_models_and_settings_are_refused(digits: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        FixedExecutor(b"not a model at all")
    with pytest.raises(InvalidInputError):
        FixedExecutor(digits["onnx"][:100])
    with pytest.raises(InvalidInputError, match="precision"):
        FixedExecutor(digits["onnx"], precision="int4")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="at least one"):
        FixedExecutor(digits["onnx"], calibration=[])
    bad_order = helper.make_graph(
        [helper.make_node("Relu", ["t"], ["y"]), helper.make_node("Relu", ["x"], ["t"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(bad_order, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidInputError, match="topologically"):
        FixedExecutor(model)


def test_bad_inputs_get_clear_errors(digits_int8: FixedExecutor) -> None:
    ex = digits_int8
    x = np.zeros((1, 64), np.float32)
    cases: list[tuple[Any, str]] = [
        ({}, "missing"),
        ({"input": x, "other": x}, "no input 'other'"),
        ({"input": x.astype(np.int64)}, "floating point"),
        ({"input": np.zeros((1, 63), np.float32)}, "expected shape"),
        ({"input": np.full((1, 64), np.nan, np.float32)}, "NaN"),
        ({"input": [["a"] * 64]}, "floating point"),
        ([1, 2], "map input names"),
    ]
    for inputs, msg in cases:
        with pytest.raises(InvalidInputError, match=msg):
            ex.run(inputs)


def test_element_limit(digits: dict[str, Any]) -> None:
    ex = FixedExecutor(
        digits["onnx"], calibration=[{"input": digits["x_train"][:8]}], max_elements=1000
    )
    with pytest.raises(ResourceLimitError):
        ex.run({"input": digits["x_test"][:100]})


def test_plans_for_other_models_or_tampered_are_refused(
    digits: dict[str, Any], cnn_models: dict[str, bytes]
) -> None:
    ex = FixedExecutor(digits["onnx"], calibration=[{"input": digits["x_train"][:8]}])
    with pytest.raises(InvalidInputError, match="different model"):
        FixedExecutor(cnn_models["resnet"], plan=ex.plan)
    with pytest.raises(InvalidInputError, match="int8"):
        FixedExecutor(digits["onnx"], precision="int16", plan=ex.plan)
    with pytest.raises(InvalidInputError, match="not both"):
        FixedExecutor(digits["onnx"], plan=ex.plan, calibration=[{"input": digits["x_train"][:8]}])
    d = ex.plan.to_dict()
    d["scales"]["probabilities"] = 0.5  # Softmax's scale is fixed by the model
    with pytest.raises(InvalidInputError, match="does not match"):
        FixedExecutor(digits["onnx"], plan=QuantPlan.from_json(json.dumps(d)))
    d = ex.plan.to_dict()
    d["scales"]["bogus"] = 1.0
    with pytest.raises(InvalidInputError, match="extra or missing"):
        FixedExecutor(digits["onnx"], plan=QuantPlan.from_json(json.dumps(d)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"type": "x"}',
        '{"type": "https://edgetrust.dev/fixed-plan/v1", "precision": "int4"}',
        '{"type": "https://edgetrust.dev/fixed-plan/v1", "precision": "int8", "scales": {"a": -1}}',
        '{"type": "https://edgetrust.dev/fixed-plan/v1", "precision": "int8", "scales": {"a": true}}',
        '{"type": "https://edgetrust.dev/fixed-plan/v1", "precision": "int8", "scales": {}}',
        '{"type": "https://edgetrust.dev/fixed-plan/v1", "precision": "int8", "scales": {"a": NaN}}',
    ],
)
def test_malformed_plans_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        QuantPlan.from_json(text)


def test_run_and_traced_run_agree(digits_int8: FixedExecutor, digits: dict[str, Any]) -> None:
    x = {"input": digits["x_test"][:7]}
    out, trace = digits_int8.run_traced(x)
    assert np.array_equal(out["probabilities"], digits_int8.run(x)["probabilities"])
    assert [e.label for e in trace.entries] == ["input:input", "gemm0", "relu0", "gemm1", "softmax"]
    assert trace.values[1].dtype == np.int8


def test_nodes_are_named_by_name_or_index(digits_int8: FixedExecutor) -> None:
    assert digits_int8.node_index("gemm1") == 2
    assert digits_int8.node_index(2) == 2
    assert digits_int8.node_index("#3") == 3
    for bad in ("nope", 99, "#99"):
        with pytest.raises(InvalidInputError):
            digits_int8.node_index(bad)


def test_unnamed_nodes_get_index_labels() -> None:
    b = graphs.Builder()
    b.nodes.append(helper.make_node("Relu", ["x"], ["t"]))
    b.nodes.append(helper.make_node("Sigmoid", ["t"], ["y"]))
    model = b.model([("x", TensorProto.FLOAT, [3])], [("y", TensorProto.FLOAT, [3])])
    ex = FixedExecutor(model, calibration=[{"x": np.array([-1.0, 0.0, 2.0], np.float32)}])
    _, trace = ex.run_traced({"x": np.array([-1.0, 0.5, 2.0], np.float32)})
    assert [e.label for e in trace.entries] == ["input:x", "#0", "#1"]
    assert trace.entry_index("#1") == 2
