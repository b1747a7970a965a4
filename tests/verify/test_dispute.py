"""The dispute game: lying devices are convicted, honest devices never, misbehaviour loses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError
from edgetrust.identity import Keystore
from edgetrust.log import Log
from edgetrust.runtime.fixed import Fault, FixedExecutor
from edgetrust.runtime.trace import CHUNK_BYTES, ChunkOpening, LeafOpening, Trace
from edgetrust.statement import open_signed_statement
from edgetrust.verify.dispute import (
    VERDICT_PREDICATE_TYPE,
    Claim,
    Descend,
    DeviceResponder,
    DisputeElement,
    DisputeGame,
    DisputeHeader,
    HonestChallenger,
    OpenAnswer,
    Query,
    SplitAnswer,
    log_verdict,
    max_rounds,
    play,
    sign_verdict,
)
from edgetrust.zoo import digits_mlp_onnx, load_digits_split
from tests.runtime import graphs


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


@pytest.fixture(scope="module")
def mlp() -> dict[str, Any]:
    onnx_bytes, _ = digits_mlp_onnx()
    x_tr, x_te, _, _ = load_digits_split()
    ex = FixedExecutor(onnx_bytes, precision="int8", calibration=[{"input": x_tr[:128]}])
    x = {"input": x_te[:1]}
    _, honest = ex.run_traced(x)
    return {"ex": ex, "x": x, "honest": honest, "x_test": x_te}


@pytest.fixture(scope="module")
def cnn() -> dict[str, Any]:
    model = graphs.resnet_style(size=16, width=8).SerializeToString()
    rng = np.random.default_rng(0)
    x = {"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ex = FixedExecutor(model, precision="int16", calibration=[x])
    _, honest = ex.run_traced(x)
    return {"ex": ex, "x": x, "honest": honest}


def claim_for(ex: FixedExecutor, trace: Trace) -> Claim:
    w = ex.weight_commitments()
    return Claim(trace.root, w.root, w.size)


def game_for(ex: FixedExecutor, trace: Trace, x: dict[str, Any], **kw: Any) -> DisputeGame:
    return DisputeGame(ex, claim_for(ex, trace), inputs=x, **kw)


def _check_bound(ex: FixedExecutor, trace: Trace, verdict: Any) -> None:
    elements = trace.values[verdict.entry].size if verdict.entry is not None else 1
    assert verdict.rounds <= max_rounds(len(ex.entries), elements), verdict


def _random_fault(rng: np.random.Generator, ex: FixedExecutor, honest: Trace) -> tuple[int, Fault]:
    entry = int(rng.integers(0, len(ex.entries)))
    e = ex.entries[entry]
    node: str | int = f"input:{e.tensor}" if e.node_index is None else e.node_index
    size = honest.values[entry].size
    delta = int(rng.choice([-1, 1])) * int(rng.integers(1, 50))
    return entry, Fault(node, int(rng.integers(0, size)), delta)


def test_a_thousand_random_faults_are_all_convicted(mlp: dict[str, Any]) -> None:
    ex, x, honest = mlp["ex"], mlp["x"], mlp["honest"]
    rng = np.random.default_rng(1)
    challenger = HonestChallenger(honest)
    for _ in range(1000):
        entry, fault = _random_fault(rng, ex, honest)
        _, lying = ex.run_traced(x, fault=fault)
        verdict = play(
            game_for(ex, lying, x), DeviceResponder(ex, lying), challenger, clock=Clock()
        )
        assert verdict.device_convicted, (fault, verdict)
        assert (verdict.entry, verdict.element) == (entry, fault.element)
        assert verdict.referee_value == int(honest.values[entry].reshape(-1)[fault.element])
        _check_bound(ex, lying, verdict)


def test_faults_in_a_cnn_with_multi_chunk_entries(cnn: dict[str, Any]) -> None:
    ex, x, honest = cnn["ex"], cnn["x"], cnn["honest"]
    rng = np.random.default_rng(2)
    challenger = HonestChallenger(honest)
    assert max(v.nbytes for v in honest.values) >= 4 * CHUNK_BYTES
    for _ in range(60):
        entry, fault = _random_fault(rng, ex, honest)
        _, lying = ex.run_traced(x, fault=fault)
        verdict = play(
            game_for(ex, lying, x), DeviceResponder(ex, lying), challenger, clock=Clock()
        )
        assert verdict.device_convicted and (verdict.entry, verdict.element) == (
            entry,
            fault.element,
        )
        _check_bound(ex, lying, verdict)
        op = ex.nodes[verdict.node_index].op_type if verdict.node_index is not None else "input"
        if op in ("Conv", "Gemm"):
            assert 0 < verdict.referee_macs <= 9 * 32  # one receptive field, never the model


class RandomChallenger:
    """A lying challenger: random sides, random header disputes, random elements."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, game: DisputeGame) -> Any:
        if game.phase == "entry":
            return DisputeHeader() if self.rng.random() < 0.3 else Descend("left")
        if game.phase in ("trace", "elements"):
            return Descend("left" if self.rng.random() < 0.5 else "right")
        assert game.leaf is not None
        per = CHUNK_BYTES // game.leaf.itemsize
        hi = min(game.leaf.size, (game.lo + 1) * per)
        return DisputeElement(int(self.rng.integers(game.lo * per, hi)))


def test_a_thousand_honest_devices_are_never_convicted(mlp: dict[str, Any]) -> None:
    ex, honest_default = mlp["ex"], mlp["honest"]
    rng = np.random.default_rng(3)
    traces = []
    for i in range(20):
        x = {"input": mlp["x_test"][i : i + 1]}
        traces.append((x, ex.run_traced(x)[1]))
    for i in range(1000):
        x, honest = traces[i % len(traces)]
        if i % 2:
            # A challenger that re-executed wrongly (or lies): its own trace has a fault.
            _, fault = _random_fault(rng, ex, honest)
            challenger: Any = HonestChallenger(ex.run_traced(x, fault=fault)[1])
        else:
            challenger = RandomChallenger(rng)
        verdict = play(
            game_for(ex, honest, x), DeviceResponder(ex, honest), challenger, clock=Clock()
        )
        assert verdict.loser == "challenger", verdict
        _check_bound(ex, honest, verdict)
    assert honest_default.root == traces[0][1].root


def test_honest_cnn_devices_survive_random_challengers(cnn: dict[str, Any]) -> None:
    ex, x, honest = cnn["ex"], cnn["x"], cnn["honest"]
    rng = np.random.default_rng(4)
    for _ in range(60):
        verdict = play(
            game_for(ex, honest, x),
            DeviceResponder(ex, honest),
            RandomChallenger(rng),
            clock=Clock(),
        )
        assert verdict.loser == "challenger", verdict


def _lying_setup(mlp: dict[str, Any]) -> tuple[FixedExecutor, dict[str, Any], Trace, Trace]:
    ex, x, honest = mlp["ex"], mlp["x"], mlp["honest"]
    _, lying = ex.run_traced(x, fault=Fault("gemm1", 3, 5))
    return ex, x, honest, lying


def test_a_refusing_or_crashing_device_loses(mlp: dict[str, Any]) -> None:
    ex, x, honest, lying = _lying_setup(mlp)
    for stop_at in range(6):
        calls = {"n": 0}
        real = DeviceResponder(ex, honest)

        def device(q: Query, stop_at: int = stop_at, calls: Any = calls, real: Any = real) -> Any:
            calls["n"] += 1
            if calls["n"] > stop_at:
                if stop_at % 2:
                    raise RuntimeError("device crashed")
                return None
            return real(q)

        verdict = play(game_for(ex, honest, x), device, HonestChallenger(lying), clock=Clock())
        if calls["n"] > stop_at:
            assert verdict.device_convicted
            assert "refused" in verdict.reason


def test_a_late_device_or_challenger_loses(mlp: dict[str, Any]) -> None:
    ex, x, honest, _ = _lying_setup(mlp)
    game = game_for(ex, honest, x, timeout=10.0, now=0.0)
    game.answer(DeviceResponder(ex, honest)(game.query()), now=11.0)
    assert game.verdict is not None and game.verdict.device_convicted
    assert "within 10 s" in game.verdict.reason
    game = game_for(ex, honest, x, timeout=10.0, now=0.0)
    game.answer(DeviceResponder(ex, honest)(game.query()), now=1.0)
    game.tick(now=20.0)
    assert game.verdict is not None and game.verdict.loser == "challenger"
    with pytest.raises(InvalidInputError):
        game_for(ex, honest, x, timeout=0)
    # With the default (monotonic) clock, a prompt game is decided on the merits.
    verdict = play(game_for(ex, honest, x), DeviceResponder(ex, honest), HonestChallenger(honest))
    assert verdict.loser == "challenger" and "within" not in verdict.reason


def test_answers_inconsistent_with_commitments_lose(mlp: dict[str, Any]) -> None:
    ex, x, honest, lying = _lying_setup(mlp)
    real = DeviceResponder(ex, lying)

    def swap_hashes(q: Query) -> Any:
        a = real(q)
        if isinstance(a, SplitAnswer):
            return replace(a, left=a.right, right=a.left)
        return a

    verdict = play(game_for(ex, lying, x), swap_hashes, HonestChallenger(honest), clock=Clock())
    assert verdict.device_convicted and "do not hash" in verdict.reason

    def wrong_leaf(q: Query) -> Any:
        a = real(q)
        if isinstance(a, SplitAnswer) and a.left_leaf is not None:
            return replace(a, left_leaf=a.left_leaf + b" ")
        return a

    verdict = play(game_for(ex, lying, x), wrong_leaf, HonestChallenger(honest), clock=Clock())
    assert verdict.device_convicted

    # A device answering from another trace than the one it committed to.
    other = DeviceResponder(ex, honest)
    verdict = play(game_for(ex, lying, x), other, HonestChallenger(honest), clock=Clock())
    assert verdict.device_convicted


def _corrupt_opening(ans: OpenAnswer, where: str) -> OpenAnswer:
    if where == "entry-path" and ans.entries:
        k, op = next(iter(ans.entries.items()))
        path = list(op.path)
        path[0] = bytes(32)
        return replace(ans, entries={**ans.entries, k: LeafOpening(op.index, op.data, tuple(path))})
    if where == "chunk" and ans.entry_chunks:
        k2, ch = next(iter(ans.entry_chunks.items()))
        data = bytearray(ch.data)
        data[0] ^= 1
        return replace(
            ans, entry_chunks={**ans.entry_chunks, k2: ChunkOpening(ch.index, bytes(data), ch.path)}
        )
    if where == "param-path" and ans.params:
        k3, op = next(iter(ans.params.items()))
        path = list(op.path)
        path[-1] = bytes(32)
        return replace(ans, params={**ans.params, k3: LeafOpening(op.index, op.data, tuple(path))})
    if where == "param-chunk" and ans.param_chunks:
        k4, ch = next(iter(ans.param_chunks.items()))
        return replace(
            ans,
            param_chunks={**ans.param_chunks, k4: ChunkOpening(ch.index, ch.data[:-1], ch.path)},
        )
    if where == "missing":
        return OpenAnswer()
    if where == "other-param" and ans.params:
        name, op = next(iter(ans.params.items()))
        return replace(
            ans, params={**ans.params, name: LeafOpening(op.index + 1, op.data, op.path)}
        )
    raise AssertionError(where)


@pytest.mark.parametrize(
    "where", ["entry-path", "chunk", "param-path", "param-chunk", "missing", "other-param"]
)
def test_a_bad_audit_path_loses(mlp: dict[str, Any], where: str) -> None:
    ex, x, honest, _ = _lying_setup(mlp)
    real = DeviceResponder(ex, honest)

    def device(q: Query) -> Any:
        a = real(q)
        return _corrupt_opening(a, where) if isinstance(a, OpenAnswer) else a

    # The challenger disputes gemm1[0] (an honest value): only a bad opening can lose it.
    _, wrong = ex.run_traced(x, fault=Fault("gemm1", 0, 7))
    verdict = play(game_for(ex, honest, x), device, HonestChallenger(wrong), clock=Clock())
    assert verdict.device_convicted, verdict
    assert verdict.node == "gemm1"


def test_header_disputes(mlp: dict[str, Any]) -> None:
    ex, x, honest, _ = _lying_setup(mlp)
    # An honest device's header survives a header dispute.
    verdict = play(
        game_for(ex, honest, x),
        DeviceResponder(ex, honest),
        RandomChallengerHeaders(),
        clock=Clock(),
    )
    assert verdict.loser == "challenger" and "match" in verdict.reason
    # A device that commits to a wrong shape is convicted on the header.
    vals = [v.copy() for v in honest.values]
    vals[3] = vals[3].reshape(-1)  # gemm1 output (1, 10) committed as (10,)
    bad = Trace(ex.entries, vals)
    verdict = play(
        game_for(ex, bad, x), DeviceResponder(ex, bad), HonestChallenger(honest), clock=Clock()
    )
    assert verdict.device_convicted and "referee computes int8[1, 10]" in verdict.reason
    assert verdict.node == "gemm1" and verdict.node_index == 2


class RandomChallengerHeaders:
    def __call__(self, game: DisputeGame) -> Any:
        if game.phase == "entry":
            return DisputeHeader()
        return Descend("right")


def test_input_faults_need_the_raw_input(mlp: dict[str, Any]) -> None:
    ex, x, honest = mlp["ex"], mlp["x"], mlp["honest"]
    _, lying = ex.run_traced(x, fault=Fault("input:input", 5, 3))
    verdict = play(
        game_for(ex, lying, x), DeviceResponder(ex, lying), HonestChallenger(honest), clock=Clock()
    )
    assert verdict.device_convicted and verdict.node == "input:input" and verdict.element == 5
    game = DisputeGame(ex, claim_for(ex, lying), inputs=None)
    with pytest.raises(InvalidInputError, match="raw input"):
        play(game, DeviceResponder(ex, lying), HonestChallenger(honest), clock=Clock())


def test_invalid_challenger_moves_lose(mlp: dict[str, Any]) -> None:
    ex, x, honest, lying = _lying_setup(mlp)

    def wrong_move(game: DisputeGame) -> Any:
        return DisputeElement(0) if game.phase == "trace" else Descend("left")

    verdict = play(game_for(ex, lying, x), DeviceResponder(ex, lying), wrong_move, clock=Clock())
    assert verdict.loser == "challenger"

    def out_of_chunk(game: DisputeGame) -> Any:
        if game.phase == "chunk":
            return DisputeElement(10**6)
        return HonestChallenger(honest)(game)

    verdict = play(game_for(ex, lying, x), DeviceResponder(ex, lying), out_of_chunk, clock=Clock())
    assert verdict.loser == "challenger" and "not in chunk" in verdict.reason
    game = game_for(ex, lying, x)
    with pytest.raises(InvalidInputError):
        game.move(Descend("left"), now=0.0)


def test_verdicts_are_signed_statements_and_logged(
    mlp: dict[str, Any], edgetrust_home: Any
) -> None:
    ex, x, honest, lying = _lying_setup(mlp)
    verdict = play(
        game_for(ex, lying, x), DeviceResponder(ex, lying), HonestChallenger(honest), clock=Clock()
    )
    referee = Keystore(edgetrust_home).load_or_create("referee")
    env = sign_verdict(verdict, claim_for(ex, lying), ex, referee, receipt="sha256:" + "0" * 64)
    opened = open_signed_statement(env.to_json())
    assert opened.statement.predicate_type == VERDICT_PREDICATE_TYPE
    assert opened.signer == referee.did
    p = opened.statement.predicate
    assert p["loser"] == "device" and p["node"] == "gemm1" and p["element"] == 3
    assert opened.statement.subjects[0].sha256 == lying.root.hex()
    with Log.open(edgetrust_home) as log:
        index = log_verdict(env, log)
        assert log.entry(index) == env.to_json()


def test_games_played_over_json_wire_forms(mlp: dict[str, Any], cnn: dict[str, Any]) -> None:
    """Every query, answer and move through canonical JSON and back: same verdicts."""
    from edgetrust.encoding import canonical_json
    from edgetrust.verify.dispute import parse_answer, parse_move, parse_query

    for setup, fault in ((mlp, Fault("gemm0", 9, 4)), (cnn, Fault(7, 100, -3))):
        ex, x, honest = setup["ex"], setup["x"], setup["honest"]
        _, lying = ex.run_traced(x, fault=fault)
        real_device, real_challenger = DeviceResponder(ex, lying), HonestChallenger(honest)

        def device(q: Query, real_device: Any = real_device) -> Any:
            q2 = parse_query(canonical_json(q.to_dict()))
            assert q2 == q
            a = real_device(q2)
            return parse_answer(canonical_json(a.to_dict()))

        def challenger(game: DisputeGame, real_challenger: Any = real_challenger) -> Any:
            mv = real_challenger(game)
            return parse_move(canonical_json(mv.to_dict()))

        direct = play(game_for(ex, lying, x), real_device, real_challenger, clock=Clock())
        wire = play(game_for(ex, lying, x), device, challenger, clock=Clock())
        assert wire.device_convicted and (wire.entry, wire.element) == (
            direct.entry,
            direct.element,
        )
        assert wire.bytes_exchanged == direct.bytes_exchanged


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=6)
        ),
        max_leaves=20,
    ),
    st.sampled_from(["query", "answer", "move"]),
    st.sampled_from([None, "split", "chunk", "open", "descend", "element", "header"]),
)
def test_malformed_wire_messages_are_refused_cleanly(
    body: Any, which: str, tag: str | None
) -> None:
    from edgetrust.encoding import canonical_json
    from edgetrust.verify.dispute import parse_answer, parse_move, parse_query

    if isinstance(body, dict) and tag is not None:
        body = {**body, {"query": "kind", "answer": "type", "move": "move"}[which]: tag}
    parser = {"query": parse_query, "answer": parse_answer, "move": parse_move}[which]
    try:
        text = canonical_json(body)
    except InvalidInputError:
        return
    try:
        parser(text)
    except InvalidInputError:
        pass
