"""Split (`_split`): every output is traced, re-verified and disputable."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import Fault, FixedExecutor, QuantPlan
from edgetrust.verify.dispute import Claim, DeviceResponder, DisputeGame, HonestChallenger, play
from tests.runtime.conftest import FullSource, node_io


def _model(opset: int = 13, sizes: list[int] | None = None, **attrs: int) -> bytes:
    inits = []
    ins = ["x"]
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        ins.append("sizes")
    nodes = [
        helper.make_node("Split", ins, ["a", "b", "c"], "split", axis=1, **attrs),
        helper.make_node("Relu", ["a"], ["ra"], "ra"),
        helper.make_node("Relu", ["b"], ["rb"], "rb"),
        helper.make_node("Neg", ["c"], ["nc"], "nc"),
    ]
    graph = helper.make_graph(
        nodes,
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("ra", "rb", "nc")]
        + [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


X = {"x": np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)}


@pytest.mark.parametrize(
    ("opset", "sizes", "attrs"),
    [(13, [1, 2, 3], {}), (13, None, {}), (18, None, {"num_outputs": 3})],
)
def test_split_is_slicing_and_tracks_the_reference(
    opset: int, sizes: list[int] | None, attrs: dict[str, int]
) -> None:
    model = _model(opset, sizes, **attrs)
    ex = FixedExecutor(model, precision="int8", calibration=[X])
    ints = ex.run_integers(X)
    split = ex.entry_index("split")
    assert [e.label for e in ex.entries[split : split + 3]] == ["split", "split/1", "split/2"]
    cuts = np.cumsum(sizes or [2, 2, 2])[:-1]
    for k, part in enumerate(np.split(ints[0].astype(np.int64), cuts, axis=1)):
        assert np.array_equal(ints[split + k], part)
    ins, _ = node_io(ex, ints, 0)
    src = FullSource(ex.ops[0], ins)
    for k in range(3):
        out = ints[split + k]
        assert ex.ops[0].out_shape_of(k, src) == out.shape
        for j in range(out.size):
            assert ex.ops[0].element_of(k, j, out.shape, src) == int(out.reshape(-1)[j])
    # movement and Relu/Neg are exact on the integers: only input quantization, half a step
    step = ex.infos["x"].scale
    assert step is not None
    got = ex.run(X)
    for name, want in zip(ex.output_names, ReferenceEvaluator(model).run(None, X), strict=True):
        assert float(np.max(np.abs(got[name] - want))) <= step / 2 + 1e-7


def test_a_lie_in_a_later_output_is_convicted() -> None:
    model = _model(13, [1, 2, 3])
    ex = FixedExecutor(model, precision="int8", calibration=[X])
    _, honest = ex.run_traced(X)
    verifier = FixedExecutor(model, precision="int8", plan=QuantPlan.from_json(ex.plan.to_json()))
    _, again = verifier.run_traced(X)
    assert again.root == honest.root
    fault = Fault("split", 5, 3, output=2)
    _, lying = ex.run_traced(X, fault=fault)
    w = verifier.weight_commitments()
    game = DisputeGame(verifier, Claim(lying.root, w.root, w.size), inputs=X)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(again))
    assert verdict.device_convicted, verdict
    entry = ex.entry_index("split", 2)
    assert (verdict.entry, verdict.element) == (entry, 5)
    assert verdict.referee_value == int(honest.values[entry].reshape(-1)[5])


def test_unread_outputs_are_not_traced() -> None:
    """Only outputs something reads get an entry: models that ran before keep their roots."""
    graph = helper.make_graph(
        [helper.make_node("Split", ["x"], ["a", "b"], "split", axis=1)],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 4])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    ex = FixedExecutor(m.SerializeToString(), precision="int8", calibration=[X])
    assert [e.label for e in ex.entries] == ["input:x", "split"]


def test_bad_sizes_name_the_node() -> None:
    with pytest.raises(UnsupportedError, match="Split node split: 2 split sizes for 3 outputs"):
        FixedExecutor(_model(13, [3, 3]))
