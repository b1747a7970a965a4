"""Two fixes: a refused model leaves the home as it was; a scalar (0-d) entry's honest header
is not convicted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.device import Device
from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import Fault, FixedExecutor
from edgetrust.verify.dispute import (
    Claim,
    DeviceResponder,
    DisputeGame,
    DisputeHeader,
    HonestChallenger,
    Move,
    play,
)
from tests.runtime import graphs


def _tree(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        )
        for p in sorted(home.rglob("*"))
    }


def test_refused_model_leaves_the_home_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "softsign.onnx"
    bad.write_bytes(graphs.single_op("Softsign", [(1, 4)], out_shape=[1, 4]).SerializeToString())
    good = tmp_path / "relu.onnx"
    good.write_bytes(graphs.single_op("Relu", [(1, 4)], out_shape=[1, 4]).SerializeToString())
    x = {"x0": np.ones((1, 4), np.float32)}
    with Device(home) as dev:
        before = _tree(home)
        with pytest.raises(UnsupportedError, match=r"op Softsign \(node y\)"):
            dev.infer(str(bad), x, executor="fixed")
        assert _tree(home) == before
        # A model that runs still keeps its copy and the salt, before the receipt is logged.
        result = dev.infer(str(good), x, executor="fixed")
        added = set(_tree(home)) - set(before)
        assert any(p.startswith("models/") and p.endswith(".onnx") for p in added)
        assert any(p.startswith("openings/") and p.endswith(".salt") for p in added)
        assert dev.reveal(result.bundle).salt  # the salt opens the receipt


def _scalar_model() -> bytes:
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], "sum", keepdims=0),  # 0-d
        helper.make_node("Mul", ["s", "c"], ["m"], "mul"),  # 0-d
        helper.make_node("Add", ["x", "m"], ["y"], "add"),
    ]
    graph = helper.make_graph(
        nodes,
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


class _HeaderChallenger(HonestChallenger):
    """Disputes the header of whatever entry the game reaches (a dishonest challenger)."""

    def __call__(self, game: DisputeGame) -> Move | None:
        if game.phase == "entry":
            return DisputeHeader()
        return super().__call__(game)


@pytest.mark.parametrize("node", ["sum", "mul"])
def test_scalar_entries_in_disputes(node: str) -> None:
    x = {"x": np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)}
    ex = FixedExecutor(_scalar_model(), precision="int8", calibration=[x])
    out, honest = ex.run_traced(x)
    assert out["y"].shape == (1, 4)
    _, lying = ex.run_traced(x, fault=Fault(node, 0, 5))
    w = ex.weight_commitments()
    # The liar is convicted on the scalar's element...
    game = DisputeGame(ex, Claim(lying.root, w.root, w.size), inputs=x)
    verdict = play(game, DeviceResponder(ex, lying), HonestChallenger(honest))
    assert verdict.device_convicted and verdict.node == node
    # ...and the honest device's header [1] for a 0-d entry matches the referee's shape.
    game = DisputeGame(ex, Claim(honest.root, w.root, w.size), inputs=x)
    verdict = play(game, DeviceResponder(ex, honest), _HeaderChallenger(lying))
    assert not verdict.device_convicted, verdict.reason
    assert verdict.node == node
