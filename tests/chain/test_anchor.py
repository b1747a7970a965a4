"""LogAnchor: anchoring, equivocation, append-only challenges, on eth-tester and on anvil."""

from __future__ import annotations

import hashlib

import pytest

from edgetrust.chain import RevertError
from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from tests.chain import rfc9162
from tests.chain.conftest import BOND, WINDOW, Deployed

LEAVES = [rfc9162.leaf(i.to_bytes(4, "big")) for i in range(64)]


def root(n: int) -> bytes:
    return rfc9162.mth(LEAVES[:n])


def test_anchor_happy_path(deployed: Deployed) -> None:
    d = deployed
    assert d.anchor.latest(d.origin) == (0, bytes(32))
    assert d.anchor.operator(d.origin) == d.operator.address
    for n in (3, 7, 7, 20):
        tx = d.anchor.anchor(d.operator, origin=d.origin, size=n, root=root(n))
        assert tx.gas_used < 55_000
    assert d.anchor.latest(d.origin) == (20, root(20))
    assert d.anchor.root_at(d.origin, 7) == root(7)
    assert d.anchor.root_at(d.origin, 8) is None
    history = d.anchor.history(d.origin)
    assert [(a.size, a.root) for a in history] == [(n, root(n)) for n in (3, 7, 7, 20)]
    assert d.anchor.equivocations(d.origin) == []
    d.anchor.verify_registration(d.origin)
    reg = d.anchor.registration(d.origin)
    assert reg.operator == d.operator.address and reg.bond == BOND


def test_non_operator_cannot_anchor(deployed: Deployed) -> None:
    d = deployed
    with pytest.raises(RevertError, match="not the log operator") as info:
        d.anchor.anchor(d.other, origin=d.origin, size=3, root=root(3))
    assert info.value.reason == "not the log operator"
    with pytest.raises(RevertError, match="not the log operator"):
        d.anchor.anchor(d.operator, origin="other.example/log", size=3, root=root(3))
    assert d.anchor.latest(d.origin) == (0, bytes(32))


def test_size_never_decreases(deployed: Deployed) -> None:
    d = deployed
    d.anchor.anchor(d.operator, origin=d.origin, size=10, root=root(10))
    with pytest.raises(RevertError, match="size decreased"):
        d.anchor.anchor(d.operator, origin=d.origin, size=9, root=root(9))
    assert d.anchor.latest(d.origin) == (10, root(10))


def test_bad_arguments_are_refused_before_sending(deployed: Deployed) -> None:
    d = deployed
    with pytest.raises(InvalidInputError, match="root"):
        d.anchor.anchor(d.operator, origin=d.origin, size=1, root=b"short")
    with pytest.raises(InvalidInputError, match="size"):
        d.anchor.anchor(d.operator, origin=d.origin, size=-1, root=root(1))
    with pytest.raises(InvalidInputError, match="origin"):
        d.anchor.anchor(d.operator, origin="x" * 200, size=1, root=root(1))
    with pytest.raises(RevertError, match="root is zero"):
        d.anchor.anchor(d.operator, origin=d.origin, size=1, root=bytes(32))


def test_registration_rules(deployed: Deployed) -> None:
    d = deployed
    from tests.chain.conftest import note_key_for

    key = note_key_for(d.log_key, d.origin)
    with pytest.raises(RevertError, match="origin already registered"):
        d.anchor.register_log(
            d.other, origin=d.origin, note_key=key, log_identity=d.log_key, bond=BOND
        )
    with pytest.raises(RevertError, match="bond below minimum"):
        d.anchor.register_log(
            d.other, origin="b.example/log", note_key=key, log_identity=d.log_key, bond=1
        )
    with pytest.raises(NotFoundError):
        d.anchor.registration("nobody.example/log")


def test_equivocation_reported_and_slashed(deployed: Deployed) -> None:
    d = deployed
    forged = hashlib.sha256(b"a different tree").digest()
    d.anchor.anchor(d.operator, origin=d.origin, size=5, root=root(5))
    d.anchor.anchor(d.operator, origin=d.origin, size=5, root=forged)
    assert d.anchor.latest(d.origin) == (5, root(5))  # the first root stays the record
    assert d.anchor.equivocations(d.origin) == [(5, root(5), forged)]
    # A report that names roots which were not both anchored is refused.
    with pytest.raises(RevertError, match="not anchored"):
        d.anchor.report_equivocation(
            d.other, origin=d.origin, size=5, root_a=root(5), root_b=root(6)
        )
    with pytest.raises(RevertError, match="roots are equal"):
        d.anchor.report_equivocation(
            d.other, origin=d.origin, size=5, root_a=root(5), root_b=root(5)
        )
    before = d.chain.balance(d.other.address)
    tx = d.anchor.report_equivocation(
        d.other, origin=d.origin, size=5, root_a=forged, root_b=root(5)
    )
    gas_price = d.chain.w3.eth.get_transaction_receipt(tx.tx_hash)["effectiveGasPrice"]
    assert d.chain.balance(d.other.address) == before + BOND - tx.gas_used * gas_price
    assert d.anchor.is_slashed(d.origin) and d.anchor.bond(d.origin) == 0
    assert d.anchor.operator(d.origin) is None
    with pytest.raises(RevertError, match="not the log operator"):
        d.anchor.anchor(d.operator, origin=d.origin, size=6, root=root(6))
    with pytest.raises(RevertError, match="already slashed"):
        d.anchor.report_equivocation(
            d.other, origin=d.origin, size=5, root_a=forged, root_b=root(5)
        )


def test_no_equivocation_without_two_roots(deployed: Deployed) -> None:
    d = deployed
    d.anchor.anchor(d.operator, origin=d.origin, size=5, root=root(5))
    d.anchor.anchor(d.operator, origin=d.origin, size=5, root=root(5))  # same root: no-op
    with pytest.raises(RevertError, match="no equivocation"):
        d.anchor.report_equivocation(
            d.other, origin=d.origin, size=5, root_a=root(5), root_b=root(6)
        )
    assert not d.anchor.is_slashed(d.origin)


def _challenge(d: Deployed, n1: int, n2: int) -> int:
    for n in (n1, n2):
        d.anchor.anchor(d.operator, origin=d.origin, size=n, root=root(n))
    cid, _ = d.anchor.challenge(d.other, origin=d.origin, size1=n1, size2=n2)
    return cid


def test_challenge_answered_correctly(deployed: Deployed) -> None:
    d = deployed
    cid = _challenge(d, 6, 13)
    state = d.anchor.challenge_state(cid)
    assert state.open and (state.size1, state.size2) == (6, 13)
    assert [c.challenge_id for c in d.anchor.open_challenges(d.origin)] == [cid]
    before = d.chain.balance(d.operator.address)
    tx = d.anchor.answer_challenge(
        d.operator, challenge_id=cid, proof=rfc9162.proof(6, LEAVES[:13])
    )
    gas_price = d.chain.w3.eth.get_transaction_receipt(tx.tx_hash)["effectiveGasPrice"]
    # The challenger's bond rewards the answerer (here the operator).
    assert d.chain.balance(d.operator.address) == before + BOND // 10 - tx.gas_used * gas_price
    assert not d.anchor.challenge_state(cid).open
    assert d.anchor.open_challenges(d.origin) == []
    d.chain.advance_time(WINDOW + 10)
    with pytest.raises(RevertError, match="challenge is not open"):
        d.anchor.claim_timeout(d.other, challenge_id=cid)
    assert not d.anchor.is_slashed(d.origin)


def test_challenge_answered_with_bad_proof(deployed: Deployed) -> None:
    d = deployed
    cid = _challenge(d, 6, 13)
    good = rfc9162.proof(6, LEAVES[:13])
    bad = [*good[:-1], bytes(a ^ 1 if i == 0 else a for i, a in enumerate(good[-1]))]
    for proof in (bad, good[:-1], [*good, good[0]], rfc9162.proof(5, LEAVES[:13])):
        with pytest.raises(RevertError, match="consistency proof does not verify"):
            d.anchor.answer_challenge(d.operator, challenge_id=cid, proof=proof)
    assert d.anchor.challenge_state(cid).open
    # The operator cannot answer, so the deadline passes and the challenger takes the bond.
    d.chain.advance_time(WINDOW + 1)
    d.anchor.claim_timeout(d.other, challenge_id=cid)
    assert d.anchor.is_slashed(d.origin)


def test_forked_log_cannot_answer_and_is_slashed(deployed: Deployed) -> None:
    d = deployed
    d.anchor.anchor(d.operator, origin=d.origin, size=6, root=root(6))
    forked = [*LEAVES[:5], rfc9162.leaf(b"rewritten"), *LEAVES[6:13]]
    d.anchor.anchor(d.operator, origin=d.origin, size=13, root=rfc9162.mth(forked))
    cid, _ = d.anchor.challenge(d.other, origin=d.origin, size1=6, size2=13)
    for proof in (rfc9162.proof(6, forked), rfc9162.proof(6, LEAVES[:13])):
        with pytest.raises(RevertError, match="does not verify"):
            d.anchor.answer_challenge(d.operator, challenge_id=cid, proof=proof)
    with pytest.raises(RevertError, match="deadline not passed"):
        d.anchor.claim_timeout(d.other, challenge_id=cid)
    d.chain.advance_time(WINDOW + 1)
    with pytest.raises(RevertError, match="deadline passed"):
        d.anchor.answer_challenge(d.operator, challenge_id=cid, proof=rfc9162.proof(6, forked))
    before = d.chain.balance(d.other.address)
    tx = d.anchor.claim_timeout(d.other, challenge_id=cid)
    gas_price = d.chain.w3.eth.get_transaction_receipt(tx.tx_hash)["effectiveGasPrice"]
    # Bond plus the challenger's own challenge bond back.
    assert d.chain.balance(d.other.address) == (
        before + BOND + BOND // 10 - tx.gas_used * gas_price
    )
    assert d.anchor.is_slashed(d.origin)


def test_challenge_not_answered_before_deadline(deployed: Deployed) -> None:
    d = deployed
    cid = _challenge(d, 2, 9)
    d.chain.advance_time(WINDOW + 1)
    d.anchor.claim_timeout(d.other, challenge_id=cid)
    assert d.anchor.is_slashed(d.origin)
    with pytest.raises(RevertError, match="challenge is not open"):
        d.anchor.claim_timeout(d.other, challenge_id=cid)


def test_challenge_rules(deployed: Deployed) -> None:
    d = deployed
    d.anchor.anchor(d.operator, origin=d.origin, size=4, root=root(4))
    with pytest.raises(RevertError, match="size2 not anchored"):
        d.anchor.challenge(d.other, origin=d.origin, size1=4, size2=5)
    with pytest.raises(RevertError, match="0 < size1 < size2"):
        d.anchor.challenge(d.other, origin=d.origin, size1=4, size2=4)
    with pytest.raises(RevertError, match="log not registered"):
        d.anchor.challenge(d.other, origin="nobody.example/log", size1=1, size2=2)
    with pytest.raises(NotFoundError):
        d.anchor.challenge_state(99)


def test_on_chain_proofs_match_reference(deployed: Deployed) -> None:
    """Every consistency and inclusion proof of small trees verifies on chain; a tamper fails."""
    d = deployed
    for n2 in (1, 2, 3, 7, 8, 9, 16, 17):
        for n1 in range(1, n2 + 1):
            p = rfc9162.proof(n1, LEAVES[:n2])
            d.anchor.verify_consistency(size1=n1, size2=n2, root1=root(n1), root2=root(n2), proof=p)
            if p:
                with pytest.raises(VerificationError):
                    d.anchor.verify_consistency(
                        size1=n1,
                        size2=n2,
                        root1=root(n1),
                        root2=root(n2),
                        proof=p[::-1] if len(p) > 1 else [bytes(32)],
                    )
        for i in range(n2):
            p = rfc9162.path(i, LEAVES[:n2])
            d.anchor.verify_inclusion(index=i, size=n2, leaf_hash=LEAVES[i], root=root(n2), proof=p)
            with pytest.raises(VerificationError):
                d.anchor.verify_inclusion(
                    index=i, size=n2, leaf_hash=LEAVES[i + 1], root=root(n2), proof=p
                )
