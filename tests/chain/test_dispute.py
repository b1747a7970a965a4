"""DisputeGame: the final step convicts a lying device and clears an honest one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.chain import Chain, RevertError
from edgetrust.chain._digits import GEMM_NODES, digits_run
from edgetrust.chain.dispute import (
    CHUNK,
    DisputeGame,
    DisputeParams,
    TensorCommitment,
    encode_int64,
    range_proof,
    referee_element,
    requantize,
)
from edgetrust.log.merkle import inclusion_proof, leaf_hash, root_from_leaves
from edgetrust.runtime.fixed._arith import Rescale, apply_rescale, saturate
from tests.chain.conftest import funded

STAKE = 10**18
BOND = 10**17
WINDOW = 600


class Game:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.device = funded(chain)
        self.challenger = funded(chain)
        self.game, _ = DisputeGame.deploy(
            chain,
            funded(chain),
            DisputeParams(min_stake=STAKE, challenge_bond=BOND, response_window=WINDOW),
        )
        self.game.stake(self.device, STAKE)


@pytest.fixture
def game(chain: Chain) -> Game:
    return Game(chain)


def _open(g: Game, run, node: int, element: int) -> int:  # type: ignore[no-untyped-def]
    sig = g.game.sign_commitment(g.device, run)
    did, _ = g.game.open_dispute(
        g.challenger,
        device=g.device.address,
        commitment=run,
        device_sig=sig,
        node_index=node,
        element=element,
    )
    return did


@pytest.mark.parametrize("node,element", [(0, 5), (2, 3)])
def test_lying_device_is_convicted(game: Game, node: int, element: int) -> None:
    g = game
    run = digits_run(lie_at=(node, element))
    did = _open(g, run, node, element)
    assert g.game.state(did).status == "open"
    before = g.chain.balance(g.challenger.address)
    with pytest.raises(RevertError, match="a dispute is open"):
        g.game.withdraw(g.device, 1)
    verdict = g.game.resolve(g.challenger, did, run.final_step(node, element))
    assert verdict.convicted and verdict.reason == "recomputed"
    assert abs(verdict.claimed - verdict.recomputed) == 1
    assert verdict.tx.gas_used <= 300_000
    price = g.chain.w3.eth.get_transaction_receipt(verdict.tx.tx_hash)["effectiveGasPrice"]
    assert g.chain.balance(g.challenger.address) == (
        before + STAKE + BOND - verdict.tx.gas_used * price
    )
    assert g.game.stake_of(g.device.address) == 0
    assert g.game.state(did).status == "convicted"
    with pytest.raises(RevertError, match="dispute is not open"):
        g.game.resolve(g.challenger, did, run.final_step(node, element))


def test_honest_device_is_cleared(game: Game) -> None:
    g = game
    run = digits_run()
    did = _open(g, run, 0, 7)
    verdict = g.game.resolve(g.device, did, run.final_step(0, 7))
    assert not verdict.convicted and verdict.claimed == verdict.recomputed
    assert g.game.stake_of(g.device.address) == STAKE
    assert g.game.state(did).status == "cleared"
    g.game.withdraw(g.device, STAKE)  # no dispute open any more
    assert g.game.stake_of(g.device.address) == 0


def test_forged_openings_are_refused(game: Game) -> None:
    g = game
    honest = digits_run()
    lying = digits_run(lie_at=(2, 2))
    did = _open(g, lying, 2, 2)
    # The liar tries to defend with the honest trace's openings: they do not open its roots.
    with pytest.raises(RevertError, match="not in trace"):
        g.game.resolve(g.device, did, honest.final_step(2, 2))
    step = lying.final_step(2, 2)
    w_vals, w_proof = step.w
    tampered = bytes([w_vals[0] ^ 1]) + w_vals[1:]
    bad = type(step)(**{**step.__dict__, "w": (tampered, w_proof)})
    with pytest.raises(RevertError, match="weights do not open"):
        g.game.resolve(g.device, did, bad)
    bad = type(step)(**{**step.__dict__, "node_proof": step.node_proof[:-1] or [bytes(32)]})
    with pytest.raises(RevertError):
        g.game.resolve(g.device, did, bad)
    assert g.game.state(did).status == "open"


def test_unanswered_dispute_times_out(game: Game) -> None:
    g = game
    run = digits_run()
    did = _open(g, run, 2, 0)
    with pytest.raises(RevertError, match="deadline not passed"):
        g.game.claim_timeout(g.challenger, did)
    g.chain.advance_time(WINDOW + 1)
    with pytest.raises(RevertError, match="deadline passed"):
        g.game.resolve(g.device, did, run.final_step(2, 0))
    verdict = g.game.claim_timeout(g.challenger, did)
    assert verdict.convicted and verdict.reason == "timeout"
    assert g.game.state(did).status == "timed-out"


def test_dispute_needs_device_signature_and_stake(game: Game) -> None:
    g = game
    run = digits_run()
    other = digits_run(sample=1)
    wrong_sig = g.game.sign_commitment(g.device, other)
    with pytest.raises(RevertError, match="not signed by the device"):
        g.game.open_dispute(
            g.challenger,
            device=g.device.address,
            commitment=run,
            device_sig=wrong_sig,
            node_index=0,
            element=0,
        )
    unstaked = funded(g.chain)
    sig = g.game.sign_commitment(unstaked, run)
    with pytest.raises(RevertError, match="stake below minimum"):
        g.game.open_dispute(
            g.challenger,
            device=unstaked.address,
            commitment=run,
            device_sig=sig,
            node_index=0,
            element=0,
        )
    sig = g.game.sign_commitment(g.device, run)
    with pytest.raises(RevertError, match="node index out of range"):
        g.game.open_dispute(
            g.challenger,
            device=g.device.address,
            commitment=run,
            device_sig=sig,
            node_index=5,
            element=0,
        )


# -- the rule and the proofs, against independent references --------------------------------


@pytest.fixture(scope="module")
def tester_game() -> DisputeGame:
    from edgetrust.chain import connect

    chain = connect(None)
    game, _ = DisputeGame.deploy(chain, funded(chain))
    return game


@settings(max_examples=150, deadline=None)
@given(
    acc=st.integers(min_value=-(2**61), max_value=2**61),
    mult=st.integers(min_value=0, max_value=2**31),
    shift=st.integers(min_value=2, max_value=62),
    qmax=st.sampled_from([127, 32767]),
)
def test_contract_rescale_matches_the_executor(
    tester_game: DisputeGame, acc: int, mult: int, shift: int, qmax: int
) -> None:
    """Contract, Python referee and the executor's own numpy arithmetic agree bit for bit."""
    rs = Rescale(np.array([mult], np.int64), shift)
    executor = int(saturate(apply_rescale(np.array([acc], np.int64), rs), qmax)[0])
    assert requantize(acc, mult=mult, shift=shift, qmax=qmax) == executor
    assert tester_game.requantize(acc, mult=mult, shift=shift, qmax=qmax) == executor


def test_referee_recomputes_every_element_of_the_executor_trace() -> None:
    """For every output of both Gemm nodes, the opened values recompute the traced value."""
    run = digits_run(sample=3)
    for node in GEMM_NODES:
        record = run.nodes[node]
        assert record is not None
        y = run.tensors[record.output_index]
        for element in range(y.rows * y.cols):
            step = run.final_step(node, element)
            m, n = divmod(element, record.n)
            k = record.k
            a = run.tensors[record.input_index].values[m * k : (m + 1) * k]
            w = record.weights.values[n * k : (n + 1) * k]
            got = referee_element(
                a,
                w,
                record.bias.values[n],
                mult=record.mult.values[n],
                shift=record.shift,
                qmax=record.qmax,
            )
            assert got == y.values[element]
            assert step.y[0]  # the opening carries the committed chunk
    assert run.nodes[1] is None and run.nodes[3] is None  # Relu, Softmax: not refereed on chain


@settings(deadline=None)
@given(st.data())
def test_range_proofs_against_rfc9162(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=70))
    start = data.draw(st.integers(min_value=0, max_value=size - 1))
    count = data.draw(st.integers(min_value=1, max_value=size - start))
    t = TensorCommitment.of(1, size * CHUNK, list(range(-size * 4, size * 4)))
    leaves = t.levels[0]
    assert t.root == root_from_leaves(leaves)
    assert leaves[0] == leaf_hash(encode_int64(t.values[:CHUNK]))
    if count == 1:
        assert range_proof(t.levels, start, 1) == inclusion_proof(start, leaves)
    # Recompute the root from the range the way the contract does (independent code path).
    values, proof = t.opening(start * CHUNK + 3, (count - 1) * CHUNK + 1)
    assert len(values) == 8 * CHUNK * count
    step = 8 * CHUNK
    nodes = [leaf_hash(values[step * j : step * j + step]) for j in range(count)]
    from edgetrust.log.merkle import node_hash

    lo, sz, p = start, size, 0
    while sz > 1:
        nxt, i = [], 0
        if lo % 2:
            nxt.append(node_hash(proof[p], nodes[0]))
            p, i = p + 1, 1
        while i < len(nodes):
            if i + 1 < len(nodes):
                nxt.append(node_hash(nodes[i], nodes[i + 1]))
                i += 2
            elif lo + i + 1 < sz:
                nxt.append(node_hash(nodes[i], proof[p]))
                p, i = p + 1, i + 1
            else:
                nxt.append(nodes[i])
                i += 1
        nodes, lo, sz = nxt, lo // 2, (sz + 1) // 2
    assert p == len(proof) and nodes == [t.root]


def test_verdict_is_mirrored_into_the_log(eth_tester_chain: Chain, edgetrust_home) -> None:  # type: ignore[no-untyped-def]
    from edgetrust.chain._digits import digits_executor
    from edgetrust.chain.dispute import mirror_verdict
    from edgetrust.identity import Identity
    from edgetrust.log.service import Log
    from edgetrust.statement import open_signed_statement
    from edgetrust.verify.dispute import VERDICT_PREDICATE_TYPE

    g = Game(eth_tester_chain)
    run = digits_run(lie_at=(2, 1))
    did = _open(g, run, 2, 1)
    verdict = g.game.resolve(g.challenger, did, run.final_step(2, 1))
    referee = Identity.generate("referee")
    with Log.open(edgetrust_home) as log:
        envelope, index = mirror_verdict(
            verdict,
            game=g.game,
            commitment=run,
            executor=digits_executor(),
            node_index=2,
            element=1,
            signer=referee,
            log=log,
        )
        assert index is not None
        stored = log.entry(index)
    assert stored == envelope.to_json()
    signed = open_signed_statement(stored)
    assert signed.statement.predicate_type == VERDICT_PREDICATE_TYPE
    p = signed.statement.predicate
    assert p["loser"] == "device" and p["node_index"] == 2 and p["element"] == 1
    assert p["chain"]["tx"] == verdict.tx.tx_hash and p["chain"]["dispute_id"] == did
    assert p["device_value"] == verdict.claimed != p["referee_value"]


@pytest.fixture(scope="module")
def cnn() -> tuple[object, dict[str, np.ndarray]]:
    from edgetrust.runtime.fixed import FixedExecutor
    from edgetrust.zoo import small_cnn

    ex = FixedExecutor(small_cnn(size=8).SerializeToString())
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    return ex, {ex.input_names[0]: x}


@pytest.mark.parametrize("node,element", [(0, 0), (3, 259), (3, 511)])
def test_conv_final_step(game: Game, cnn, node: int, element: int) -> None:  # type: ignore[no-untyped-def]
    """Conv on chain, padding corners included: an honest device cleared, a liar convicted."""
    from edgetrust.chain.dispute import RefereeCommitment
    from edgetrust.runtime.fixed import Fault

    ex, inputs = cnn
    g = game
    honest = RefereeCommitment.from_executor(ex, inputs)
    lying = RefereeCommitment.from_executor(ex, inputs, fault=Fault(node, element, 1))
    for run, guilty in ((honest, False), (lying, True)):
        g.game.stake(g.device, STAKE)
        did = _open(g, run, node, element)
        verdict = g.game.resolve(g.challenger, did, run.final_step(node, element))
        assert verdict.convicted is guilty
        assert (verdict.claimed == verdict.recomputed) is not guilty


def test_conv_taps_match_the_executor(cnn) -> None:  # type: ignore[no-untyped-def]
    """Every output of both Conv nodes recomputes from the runs the contract will open."""
    from edgetrust.chain.dispute import ConvNode, RefereeCommitment

    ex, inputs = cnn
    run = RefereeCommitment.from_executor(ex, inputs)
    for node in (0, 3):
        rec = run.nodes[node]
        assert isinstance(rec, ConvNode)
        x = run.tensors[rec.input_index].values
        y = run.tensors[rec.output_index]
        cg = rec.c_in // rec.group
        for element in range(y.rows * y.cols):
            ox = element % rec.ow
            oc = (element // (rec.ow * rec.oh)) % rec.oc
            ix0 = ox * rec.strides[1] - rec.pads[1]
            acc = rec.bias.values[oc if rec.bias.cols > 1 else 0]
            runs = iter(rec.taps(element))
            oy = (element // rec.ow) % rec.oh
            for c in range(cg):
                for ky in range(rec.kh):
                    iy = oy * rec.strides[0] + ky * rec.dilations[0] - rec.pads[0]
                    if not 0 <= iy < rec.h:
                        continue
                    start, count = next(runs)
                    lo = max(0, -ix0)
                    for j in range(count):
                        kx = lo + j
                        acc += (
                            x[start + j]
                            * rec.weights.values[oc * rec.k + (c * rec.kh + ky) * rec.kw + kx]
                        )
            got = requantize(
                acc,
                mult=rec.mult.values[oc if rec.mult.cols > 1 else 0],
                shift=rec.shift,
                qmax=rec.qmax,
            )
            assert got == y.values[element]
