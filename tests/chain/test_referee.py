"""Referee: registration, a dispute over a logged receipt, the final step, bonds, timeouts."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from edgetrust.chain import Chain, RevertError
from edgetrust.chain._digits import digits_executor
from edgetrust.chain.referee import ReceiptClaim, Referee, RefereeParams, op_table
from edgetrust.chain.referee_play import ChallengerSide, DeviceSide, play_dispute
from edgetrust.dsse import sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import VerificationError
from edgetrust.identity import Identity
from edgetrust.log.merkle import inclusion_proof, leaf_hash, root_from_leaves
from edgetrust.runtime.fixed import Fault
from edgetrust.runtime.trace import Trace
from edgetrust.zoo import load_digits_split
from tests.chain.conftest import BOND, Deployed, funded

CBOND = BOND // 10
WINDOW = 600


@cache
def _traces() -> tuple[Trace, Trace]:
    ex = digits_executor()
    _, x_test, _, _ = load_digits_split()
    x = {"input": x_test[7:8]}
    _, honest = ex.run_traced(x)
    _, lying = ex.run_traced(x, fault=Fault(0, 5, 40))
    return honest, lying


class Setup:
    """LogAnchor with a log, a Referee, a registered device, one logged receipt per trace."""

    def __init__(
        self, chain: Chain, ex: Any = None, traces: tuple[Trace, Trace] | None = None
    ) -> None:
        self.d = Deployed(chain)
        self.chain = chain
        self.referee, self.deploy_tx = Referee.deploy(
            chain,
            self.d.deployer,
            self.d.anchor.address,
            RefereeParams(min_bond=BOND, challenge_bond=CBOND, response_window=WINDOW),
        )
        self.device: LocalAccount = funded(chain)
        self.challenger: LocalAccount = funded(chain)
        self.identity = Identity.generate("device")
        self.register_tx = self.referee.register_device(self.device, self.identity, bond=BOND)
        self.ex = ex or digits_executor()
        self.honest, self.lying = traces or _traces()
        self.envelopes = [self._envelope(t, i) for i, t in enumerate((self.honest, self.lying))]
        leaves = [leaf_hash(b"other entry %d" % i) for i in range(5)]
        leaves += [leaf_hash(e) for e in self.envelopes]
        self.leaves = leaves
        self.size = len(leaves)
        self.d.anchor.anchor(
            self.d.operator, origin=self.d.origin, size=self.size, root=root_from_leaves(leaves)
        )

    def _envelope(self, trace: Trace, i: int) -> bytes:
        payload = canonical_json({"traceRoot": "sha256:" + trace.root.hex(), "n": i})
        return sign_envelope(payload, "application/json", self.identity).to_json()

    def claim(self, trace: Trace) -> ReceiptClaim:
        return ReceiptClaim.of(self.ex, trace.root)

    def open_args(self, which: int, **over: Any) -> dict[str, Any]:
        trace = (self.honest, self.lying)[which]
        env = self.envelopes[which]
        index = 5 + which
        args: dict[str, Any] = {
            "device": self.device.address,
            "envelope": env,
            "log_id": self.d.anchor.log_id(self.d.origin),
            "tree_size": self.size,
            "index": index,
            "proof": inclusion_proof(index, self.leaves),
            "cosignature": self.referee.cosign(self.device, env, self.claim(trace)),
        }
        args.update(over)
        return args

    def open(self, which: int, **over: Any) -> tuple[int, ReceiptClaim]:
        trace = (self.honest, self.lying)[which]
        claim = over.pop("claim", self.claim(trace))
        did, _ = self.referee.open_dispute(
            self.challenger, claim=claim, **self.open_args(which, **over)
        )
        return did, claim


@pytest.fixture
def setup(eth_tester_chain: Chain) -> Setup:
    return Setup(eth_tester_chain)


def _play(s: Setup, which: int, challenger_trace: Trace) -> Any:
    trace = (s.honest, s.lying)[which]
    return play_dispute(
        s.referee,
        device=s.device,
        device_side=DeviceSide(trace),
        challenger=s.challenger,
        challenger_side=ChallengerSide(s.ex, challenger_trace),
        open_args=s.open_args(which),
        claim=s.claim(trace),
    )


# -- registration ---------------------------------------------------------------------------


def test_registration_binds_did_to_account_and_bond(setup: Setup) -> None:
    reg = setup.referee.verify_registration(setup.device.address)
    assert reg.did == setup.identity.did
    assert reg.bond == BOND
    assert setup.referee.account_of(setup.identity.public_bytes) == setup.device.address


def test_registration_is_logged(setup: Setup) -> None:
    from edgetrust.dsse import parse_envelope
    from edgetrust.encoding import parse_json

    class Log:
        def __init__(self) -> None:
            self.entries: list[bytes] = []

        def append(self, entry: bytes) -> int:
            self.entries.append(entry)
            return len(self.entries) - 1

    log = Log()
    s = setup
    assert s.referee.log_registration(s.identity, s.device.address, log) == 0
    env = parse_envelope(log.entries[0])
    body = parse_json(env.payload, what="binding")
    assert body["did"] == s.identity.did and body["account"] == s.device.address
    with pytest.raises(VerificationError, match="another did:key"):
        s.referee.log_registration(Identity.generate("x"), s.device.address, log)


def test_registration_reverts(setup: Setup) -> None:
    s = setup
    with pytest.raises(RevertError, match="AlreadyRegistered"):
        s.referee.register_device(s.device, s.identity, bond=BOND)
    other = funded(s.chain)
    with pytest.raises(RevertError, match="KeyAlreadyBound"):
        s.referee.register_device(other, s.identity, bond=BOND)
    with pytest.raises(RevertError, match="BondTooSmall"):
        s.referee.register_device(other, Identity.generate("x"), bond=BOND - 1)


def test_registration_with_a_forged_binding_fails_verification(setup: Setup) -> None:
    s = setup
    other = funded(s.chain)
    key = Identity.generate("victim")
    fn = s.referee.contract.functions.register_device(key.public_bytes, bytes(64))
    s.chain.transact(other, fn, action="register", value=BOND)
    with pytest.raises(VerificationError, match="did not sign"):
        s.referee.verify_registration(other.address)


def test_withdraw_refused_while_disputed(setup: Setup) -> None:
    s = setup
    s.open(1)
    fn = s.referee.contract.functions.withdraw_bond()
    with pytest.raises(RevertError, match="DisputeOpen"):
        s.chain.transact(s.device, fn, action="withdraw")


# -- the op table and the co-signature ------------------------------------------------------


def test_op_table_has_both_gemms() -> None:
    ex = digits_executor()
    recs = op_table(ex)
    assert len(recs) == len(ex.entries)
    kinds = [int.from_bytes(r[:32], "big") for r in recs]
    assert kinds.count(1) == 2


def test_cosignature_digest_matches_contract(setup: Setup) -> None:
    import hashlib

    from eth_account.messages import _hash_eip191_message, encode_typed_data

    s = setup
    claim = s.claim(s.honest)
    env = s.envelopes[0]
    want = s.referee._view("receipt_digest", hashlib.sha256(env).digest(), claim.args())
    msg = encode_typed_data(full_message=s.referee.typed_data(env, claim))
    assert _hash_eip191_message(msg) == bytes(want)


# -- full disputes --------------------------------------------------------------------------


def test_lying_device_loses_its_bond(setup: Setup) -> None:
    s = setup
    before = s.chain.balance(s.challenger.address)
    out = _play(s, 1, s.honest)
    assert out.convicted and out.reason == "recomputed"
    assert out.claimed != out.recomputed
    assert s.referee.bond_of(s.device.address) == 0
    assert s.referee.phase(out.dispute_id) == "settled"
    # The challenger got the device's bond and its own back, minus gas.
    assert s.chain.balance(s.challenger.address) > before + BOND - 10**16
    assert out.challenger_gas <= 1_500_000
    assert out.gas["final"] <= 300_000


def test_false_challenge_costs_the_challenger(setup: Setup) -> None:
    s = setup
    # The challenger "re-executed" with a lie of its own and disputes an honest receipt.
    out = _play(s, 0, s.lying)
    assert not out.convicted
    assert out.claimed == out.recomputed
    assert s.referee.bond_of(s.device.address) == BOND


def test_silent_device_loses_by_timeout(setup: Setup) -> None:
    s = setup
    out = play_dispute(
        s.referee,
        device=s.device,
        device_side=None,
        challenger=s.challenger,
        challenger_side=ChallengerSide(s.ex, s.honest),
        open_args=s.open_args(1),
        claim=s.claim(s.lying),
    )
    assert out.convicted and out.reason == "timeout"
    assert s.referee.bond_of(s.device.address) == 0


def test_silent_challenger_loses_its_bond(setup: Setup) -> None:
    s = setup
    did, claim = s.open(1)
    s.referee.reveal_entries(s.device, did, claim, DeviceSide(s.lying).entry_hashes())
    with pytest.raises(RevertError, match="DeadlineNotPassed"):
        s.referee.claim_timeout(s.device, did)
    s.chain.advance_time(WINDOW + 1)
    before = s.chain.balance(s.device.address)
    out = s.referee.claim_timeout(s.device, did)
    assert not out.convicted and out.reason == "timeout"
    assert s.chain.balance(s.device.address) > before
    with pytest.raises(RevertError, match="NotOpen"):
        s.referee.claim_timeout(s.device, did)


# -- named reverts --------------------------------------------------------------------------


def test_open_reverts(setup: Setup) -> None:
    s = setup
    with pytest.raises(RevertError, match="WrongBond"):
        s.open(1, bond=CBOND - 1)
    with pytest.raises(RevertError, match="NotRegistered"):
        s.open(1, device=s.challenger.address)
    with pytest.raises(RevertError, match="RootNotAnchored"):
        s.open(1, tree_size=s.size - 1, proof=[])
    with pytest.raises(RevertError, match="ReceiptNotInLog"):
        s.open(1, envelope=s.envelopes[1] + b" ")
    with pytest.raises(RevertError, match="ReceiptNotInLog"):
        s.open(1, index=5, proof=inclusion_proof(5, s.leaves))
    with pytest.raises(RevertError, match="BadAuditPath"):
        s.open(1, proof=[*inclusion_proof(6, s.leaves), bytes(32)])
    wrong = s.claim(s.honest)
    with pytest.raises(RevertError, match="BadCoSignature"):
        s.open(1, claim=wrong)
    s.open(1)
    with pytest.raises(RevertError, match="DisputeReplayed"):
        s.open(1)


def test_move_reverts(setup: Setup) -> None:
    s = setup
    did, claim = s.open(1)
    dev = DeviceSide(s.lying)
    hashes = dev.entry_hashes()
    with pytest.raises(RevertError, match="OutOfTurn"):
        s.referee.reveal_entries(s.challenger, did, claim, hashes)
    with pytest.raises(RevertError, match="OutOfTurn"):
        s.referee.name_entry(s.challenger, did, claim, 1)
    with pytest.raises(RevertError, match="ClaimMismatch"):
        s.referee.reveal_entries(s.device, did, s.claim(s.honest), hashes)
    with pytest.raises(RevertError, match="EntriesDoNotHash"):
        s.referee.reveal_entries(s.device, did, claim, DeviceSide(s.honest).entry_hashes())
    s.referee.reveal_entries(s.device, did, claim, hashes)
    k = ChallengerSide(s.ex, s.honest).pick_entry(hashes)
    s.referee.name_entry(s.challenger, did, claim, k)
    leaf, path, chunks = dev.entry(k)
    with pytest.raises(RevertError, match="LeafNotInTrace"):
        s.referee.reveal_entry(s.device, did, claim, DeviceSide(s.honest).entry(k))
    with pytest.raises(RevertError, match="ChunksDoNotHash"):
        s.referee.reveal_entry(s.device, did, claim, (leaf, path, [bytes(32)] * len(chunks)))
    s.referee.reveal_entry(s.device, did, claim, (leaf, path, chunks))
    s.referee.name_chunk(s.challenger, did, claim, 0)
    leaf, data, cpath = dev.chunk(k, 0)
    with pytest.raises(RevertError, match="ChunkNotInTensor"):
        s.referee.reveal_chunk(s.device, did, claim, (leaf, bytes(len(data)), cpath))
    s.chain.advance_time(WINDOW + 1)
    with pytest.raises(RevertError, match="DeadlinePassed"):
        s.referee.reveal_chunk(s.device, did, claim, (leaf, data, cpath))
    assert s.referee.claim_timeout(s.challenger, did).convicted


def test_final_step_reverts_on_bad_openings(setup: Setup) -> None:
    s = setup
    did, claim = s.open(1)
    dev, ch = DeviceSide(s.lying), ChallengerSide(s.ex, s.honest)
    s.referee.reveal_entries(s.device, did, claim, dev.entry_hashes())
    k = ch.pick_entry(dev.entry_hashes())
    s.referee.name_entry(s.challenger, did, claim, k)
    leaf, path, chunks = dev.entry(k)
    s.referee.reveal_entry(s.device, did, claim, (leaf, path, chunks))
    c = ch.pick_chunk(k, leaf, chunks)
    s.referee.name_chunk(s.challenger, did, claim, c)
    _, data, cpath = dev.chunk(k, c)
    s.referee.reveal_chunk(s.device, did, claim, (leaf, data, cpath))
    j = ch.pick_element(k, leaf, c, data)
    good = ch.final_args(k, leaf, data, j)

    def bad(i: int, value: Any) -> list[Any]:
        args = list(good)
        args[i] = value
        return args

    cases = {
        "ChunkMismatch": bad(1, bytes(len(data))),
        "OpNotInTable": bad(4, [bytes(32)] * len(good[4])),
        "LeafNotInTrace": bad(5, (good[5][0], [bytes(32)] * len(good[5][1]))),
        "InputsDoNotOpen": bad(6, (bytes(len(good[6][0])), good[6][1])),
        "ParamNotInWeights": bad(7, (good[7][0], [bytes(32)] * len(good[7][1]))),
        "ParamDoesNotOpen": bad(8, (bytes(len(good[8][0])), good[8][1])),
    }
    for name, args in cases.items():
        with pytest.raises(RevertError, match=name):
            s.referee.final_step(s.challenger, did, claim, args)
    out, _ = s.referee.final_step(s.challenger, did, claim, good)
    assert out.convicted


@cache
def _cnn() -> tuple[Any, Trace, Trace]:
    import numpy as np

    from edgetrust.runtime.fixed import FixedExecutor
    from edgetrust.zoo import small_cnn

    ex = FixedExecutor(small_cnn(size=8).SerializeToString())
    x = {ex.input_names[0]: np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("f4")}
    _, honest = ex.run_traced(x)
    _, lying = ex.run_traced(x, fault=Fault(0, 259, 1))
    return ex, honest, lying


def test_conv_element_convicts_a_lying_device(eth_tester_chain: Chain) -> None:
    ex, honest, lying = _cnn()
    kinds = [int.from_bytes(r[:32], "big") for r in op_table(ex)]
    assert 2 in kinds
    s = Setup(eth_tester_chain, ex, (honest, lying))
    out = _play(s, 1, s.honest)
    assert out.convicted and out.reason == "recomputed"
    assert out.gas["final"] <= 600_000
    assert s.referee.bond_of(s.device.address) == 0
    # And a false challenge of the honest CNN receipt costs the challenger.
    s2 = Setup(connect_fresh(), ex, (honest, lying))
    assert not _play(s2, 0, s2.lying).convicted


def connect_fresh() -> Chain:
    from edgetrust.chain import connect

    return connect(None)
