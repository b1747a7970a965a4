"""HumanAttested from a real log: a confirmed receipt passes, a disputed one fails."""

from __future__ import annotations

import pytest

from edgetrust.errors import VerificationError
from edgetrust.human.policy import HumanAttested, HumanRecord
from edgetrust.human.reviewers import ReviewerRegistry, sign_reviewer_statement
from edgetrust.human.tasks import Verdict, make_task, review_digest, sign_review, sign_task
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.models import ModelCard
from edgetrust.receipts import Bundle, issue_receipt, read_receipt
from edgetrust.runtime.onnx import OnnxExecutor
from edgetrust.verify.policy import AllOf, IssuerIn
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

from .authenticator import SoftAuthenticator

RP, ORIGIN = "edgetrust.local", "https://edgetrust.local"


def _receipts(n: int):  # type: ignore[no-untyped-def]
    device = Identity.from_seed(b"\x05" * 32)
    mlp = digits_mlp_onnx()[0]
    card, ex = ModelCard.from_onnx_bytes(mlp), OnnxExecutor()
    x = load_digits_split()[1]
    out = []
    for i in range(n):
        inputs = {"input": x[i : i + 1]}
        env, _ = issue_receipt(
            issuer=device,
            card=card,
            inputs=inputs,
            outputs=ex.run(card, mlp, inputs),
            executor=ex.descriptor(),
        )
        out.append(read_receipt(Bundle(env)))
    return device, out


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    device, (good, bad) = _receipts(2)
    home = tmp_path_factory.mktemp("home")
    reg = ReviewerRegistry(rp_id=RP, origin=ORIGIN)
    author = Identity.generate()
    people = []
    entries: list[bytes] = []
    for _ in range(5):
        me, auth = Identity.generate(), SoftAuthenticator()
        pk = reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))
        entries.append(sign_reviewer_statement(me, pk).to_json())
        people.append((me, auth))
    for receipt, votes in ((good, ["correct"] * 5), (bad, ["correct", "wrong"] * 2 + ["wrong"])):
        task = make_task(
            receipt.output_digest.removeprefix("sha256:"), "Right digit?", ["correct", "wrong"]
        )
        entries.append(sign_task(author, task).to_json())
        for (me, auth), answer in zip(people, votes, strict=True):
            assertion = auth.get(review_digest(task.digest, answer, 1.0, me.did))
            entries.append(
                sign_review(me, Verdict(task.digest, answer, 1.0, me.did, assertion)).to_json()
            )
    # a replayed vote (same bytes) and a vote by an unregistered DID: refused, not counted
    entries.append(entries[-1])
    with Log.open(home) as log:
        log.append_many(entries)
        stored = log.entries(0, log.size())
    return device, good, bad, HumanRecord.from_entries(stored, rp_id=RP, origin=ORIGIN), stored


def test_confirmed_receipt_passes_and_composes(scene) -> None:  # type: ignore[no-untyped-def]
    device, good, _, record, _ = scene
    HumanAttested(record, min_reviewers=3, min_posterior=0.9).verify(good)
    AllOf(
        [IssuerIn([device.did]), HumanAttested(record, min_reviewers=5, min_posterior=0.5)]
    ).verify(good)


def test_disputed_receipt_fails(scene) -> None:  # type: ignore[no-untyped-def]
    _, _, bad, record, _ = scene
    with pytest.raises(VerificationError, match="human review insufficient"):
        HumanAttested(record, min_reviewers=3, min_posterior=0.9).verify(bad)


def test_too_few_reviewers_fail(scene) -> None:  # type: ignore[no-untyped-def]
    _, good, _, record, _ = scene
    with pytest.raises(VerificationError, match="reviewers < 6"):
        HumanAttested(record, min_reviewers=6, min_posterior=0.5).verify(good)


def test_unreviewed_receipt_fails(scene) -> None:  # type: ignore[no-untyped-def]
    _, others = _receipts(3)
    record = scene[3]
    with pytest.raises(VerificationError, match="no human review"):
        HumanAttested(record, min_reviewers=1, min_posterior=0.5).verify(others[2])


def test_replayed_entry_is_refused_or_deduplicated(scene) -> None:  # type: ignore[no-untyped-def]
    record = scene[3]
    assert all(len(v) == 5 for v in record.verdicts.values())


@pytest.mark.parametrize(("k", "p"), [(0, 0.5), (1, 0.0), (1, 1.5)])
def test_bad_parameters(scene, k: int, p: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        HumanAttested(scene[3], min_reviewers=k, min_posterior=p)


def test_wrong_origin_record_refuses_every_vote(scene) -> None:  # type: ignore[no-untyped-def]
    record = HumanRecord.from_entries(scene[4], rp_id=RP, origin="https://evil.example")
    assert record.verdicts == {}
    assert len(record.refused) == 10
    assert all("origin" in r for r in record.refused)
    with pytest.raises(VerificationError):
        HumanAttested(record, min_reviewers=1, min_posterior=0.5).verify(scene[1])


def test_unregistered_and_tampered_entries_are_refused(scene) -> None:  # type: ignore[no-untyped-def]
    stored = scene[4]
    reviewers_dropped = [e for e in stored if b"human-reviewer" not in _payload(e)]
    record = HumanRecord.from_entries(
        [*reviewers_dropped, b"{garbage", b""], rp_id=RP, origin=ORIGIN
    )
    assert record.verdicts == {}
    assert all("not a registered reviewer" in r for r in record.refused)


def _payload(entry: bytes) -> bytes:
    from edgetrust.dsse import parse_envelope

    return parse_envelope(entry).payload
