"""Gemm+Relu fusion in untraced runs (the node-by-node integers, only where the Gemm's output
is read by the Relu alone) and narrow (int8/int16) activations (the int64 integers)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.runtime.fixed import FixedExecutor, _kernels


def _mlp(shared: bool) -> bytes:
    """Gemm→Relu→Gemm; with `shared`, the first Gemm's output is also a graph output."""
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.standard_normal((12, 8)).astype(np.float32), "W0"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B0"),
        numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "W1"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "B0"], ["z0"], name="g0"),
        helper.make_node("Relu", ["z0"], ["h0"], name="r0"),
        helper.make_node("Gemm", ["h0", "W1"], ["y"], name="g1"),
    ]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:
        outs.append(helper.make_tensor_value_info("z0", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 12])],
        outs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("shared", [False, True])
def test_gemm_relu_fusion_gives_the_node_by_node_integers(precision: str, shared: bool) -> None:
    rng = np.random.default_rng(5)
    calib = [{"x": rng.standard_normal((64, 12)).astype(np.float32)}]
    x = {"x": (rng.standard_normal((37, 12)) * 1.5).astype(np.float32)}
    ex = FixedExecutor(_mlp(shared), precision=precision, calibration=calib)  # type: ignore[arg-type]
    kinds = [[ex.nodes[j].op_type for j in chain] for chain, _ in ex._fusions().values()]
    assert kinds == ([] if shared else [["Relu"]])
    fused = ex.run(x)
    plain = FixedExecutor(_mlp(shared), precision=precision, calibration=calib)  # type: ignore[arg-type]
    plain._fusion_map = {}  # node by node
    for name, value in plain.run(x).items():
        np.testing.assert_array_equal(fused[name], value)
    if not shared:  # the fused path runs, compiled and with numpy's epilogue alike
        (run_chain,) = [f for _, f in ex._fusions().values()]
        xs = [ex.quantize_inputs(x)["x"], None, None]
        compiled = run_chain(xs)
        assert compiled is not None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_kernels, "ENABLED", False)
            plain_chain = run_chain(xs)
            assert plain_chain is not None
            np.testing.assert_array_equal(plain_chain, compiled)
            np.testing.assert_array_equal(ex.run(x)["y"], fused["y"])


def _graphs() -> list[tuple[str, bytes, tuple[int, ...]]]:
    from tests.runtime.graphs import resnet_style, squeezenet_style

    return [
        ("resnet", resnet_style(size=32, width=8).SerializeToString(), (1, 3, 32, 32)),
        ("squeezenet", squeezenet_style(size=32).SerializeToString(), (1, 3, 32, 32)),
    ]


@pytest.mark.parametrize("precision", ["int8", "int16"])
@pytest.mark.parametrize("case", _graphs(), ids=lambda c: c[0])
def test_narrow_activations_give_the_int64_integers(
    case: tuple[str, bytes, tuple[int, ...]], precision: str
) -> None:
    """Convs hand on int8/int16 arrays to MaxPool, Relu and Concat (rescaled parts included)
    and the executor widens them for every other op: the outputs and the trace root are
    those of a run where every activation is int64, and narrow arrays really occur."""
    _, model, shape = case
    ex = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    rng = np.random.default_rng(9)
    x = {ex.input_names[0]: rng.standard_normal(shape).astype(np.float32)}
    wide = FixedExecutor(model, precision=precision)  # type: ignore[arg-type]
    for op in wide.ops:
        if hasattr(op, "narrow_out"):
            op.narrow_out = False  # type: ignore[attr-defined]
    wide.__dict__["_kept_narrow"] = set()  # nor do traced runs narrow sums (`kept_narrowing`)
    got, want = ex.run(x), wide.run(x)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
    _, kept = ex._execute(x, keep=True)
    _, kept_wide = wide._execute(x, keep=True)
    assert all(v.dtype == np.int64 for v in kept_wide)
    narrow = [v.dtype for v in kept if v.dtype != np.int64]
    if precision == "int8":  # int16 Convs without the compiled epilogue stay int64
        assert narrow and set(narrow) == {np.dtype(np.int8)}
    for a, b in zip(kept, kept_wide, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ex.run_traced(x)[1].root == wide.run_traced(x)[1].root
