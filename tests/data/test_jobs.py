"""Compute-to-data jobs in process: checks, limits, exactly-once usage records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgetrust.data.grant import GrantError, delegate, issue_grant
from edgetrust.data.jobs import DataOwner, make_job, read_usage
from edgetrust.data.ledger import BudgetExhaustedError
from edgetrust.data.stats import GroupTooSmallError
from edgetrust.dsse import Envelope
from edgetrust.encoding import canonical_json, digest_bytes
from edgetrust.errors import Error, InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.identity import Identity
from edgetrust.verify.verifier import Verifier

from .conftest import linear_onnx, write_features, write_people

MEAN = {"columns": ["age"], "epsilon": 0.5, "bounds": {"age": [0, 100]}}


def people(owner: DataOwner, tmp_path: Path) -> str:
    card, _ = owner.add_dataset(write_people(tmp_path / "people.csv"))
    return card.digest


def grant(owner: DataOwner, who: Identity, ds: str, **kw: Any) -> Envelope:
    args: dict[str, Any] = {
        "audience": who.did,
        "dataset": ds,
        "actions": ["stats"],
        "expires": int(time.time()) + 3600,
        "max_uses": 5,
        "eps_per_use": 1.0,
        "eps_total": 3.0,
        "min_group": 10,
    }
    args.update(kw)
    return issue_grant(owner.identity, **args)


def usage_count(owner: DataOwner) -> int:
    return len(owner.usage())


def test_stats_job_answers_with_a_logged_usage_record(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds)
    body = make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN)
    answer = owner.run_job(json.dumps(body).encode())
    (group,) = answer["result"]["groups"]
    assert 0 <= group["age"] <= 100  # noisy, then clipped to the job's bounds
    precise = owner.run_job(
        make_job(
            researcher,
            [grant(owner, researcher, ds, eps_per_use=None, eps_total=None)],
            action="stats",
            algorithm="mean",
            params={**MEAN, "epsilon": 80},
        )
    )
    true_mean = owner.store.table(ds)["age"].mean()
    # Laplace scales at ε = 80: sum 100/40, count 1/40; |error| > 1 has probability < 1e-9
    assert abs(precise["result"]["groups"][0]["age"] - true_mean) < 1
    rec, signer = read_usage(json.dumps(answer["usage"]).encode())
    assert signer == owner.identity.did
    assert rec.grant == rec.chain[-1] and rec.dataset == ds and rec.epsilon == 0.5
    assert rec.result == digest_bytes(canonical_json(answer["result"]))
    # a replay is answered from the ledger: same answer, no second use, no second record
    assert owner.run_job(body) == answer
    assert usage_count(owner) == 2
    assert owner.ledger.used(rec.grant) == (1, 0.5)


def test_grouped_stats_and_k(owner: DataOwner, researcher: Identity, tmp_path: Path) -> None:
    ds = people(owner, tmp_path)  # 60 rows, groups of 30
    params = {**MEAN, "groupBy": "group"}
    ok = owner.run_job(
        make_job(
            researcher,
            [grant(owner, researcher, ds)],
            action="stats",
            algorithm="mean",
            params=params,
        )
    )
    assert [g["group"] for g in ok["result"]["groups"]] == [0, 1]
    strict = grant(owner, researcher, ds, min_group=31)
    with pytest.raises(GroupTooSmallError):
        owner.run_job(
            make_job(researcher, [strict], action="stats", algorithm="mean", params=params)
        )
    assert usage_count(owner) == 1
    assert owner.ledger.used(digest_bytes(strict.payload)) == (0, 0.0)


def test_uses_and_budget_run_out(owner: DataOwner, researcher: Identity, tmp_path: Path) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds, max_uses=2)
    for _ in range(2):
        owner.run_job(make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN))
    with pytest.raises(GrantError, match="no use left"):
        owner.run_job(make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN))
    b = grant(owner, researcher, ds, eps_total=1.0)
    big = {**MEAN, "epsilon": 0.6}
    owner.run_job(make_job(researcher, [b], action="stats", algorithm="mean", params=big))
    with pytest.raises(BudgetExhaustedError):
        owner.run_job(make_job(researcher, [b], action="stats", algorithm="mean", params=big))
    with pytest.raises(BudgetExhaustedError):  # per-use cap
        owner.run_job(
            make_job(
                researcher,
                [grant(owner, researcher, ds)],
                action="stats",
                algorithm="mean",
                params={**MEAN, "epsilon": 2},
            )
        )
    assert usage_count(owner) == 3


def test_delegates_share_the_parents_uses(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds, max_uses=2)
    helpers = [Identity.generate(f"h{i}") for i in range(3)]
    ran = 0
    for h in helpers:  # each delegate is given 2 uses, but together they have the parent's 2
        d = delegate(g, researcher, audience=h.did, max_uses=2)
        try:
            owner.run_job(make_job(h, [g, d], action="stats", algorithm="mean", params=MEAN))
            ran += 1
        except GrantError:
            pass
    assert ran == 2


def test_revoked_grant_is_refused(owner: DataOwner, researcher: Identity, tmp_path: Path) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds)
    owner.run_job(make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN))
    owner.revoke(g, reason="consent withdrawn")
    with pytest.raises(GrantError, match="revoked"):
        owner.run_job(make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN))
    assert usage_count(owner) == 1


def test_revocation_logged_by_a_delegator_stops_a_grant_already_verified(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    """The owner remembers a verified grant's signature, never its standing: a revocation
    that reaches the log any way (here by the delegating researcher, not through the owner)
    refuses the next job."""
    from edgetrust.data.grant import revoke

    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds)
    helper = Identity.generate("helper")
    d = delegate(g, researcher, audience=helper.did)
    owner.run_job(make_job(helper, [g, d], action="stats", algorithm="mean", params=MEAN))
    owner.log.append(revoke(d, researcher).to_json())
    with pytest.raises(GrantError, match="revoked"):
        owner.run_job(make_job(helper, [g, d], action="stats", algorithm="mean", params=MEAN))
    assert usage_count(owner) == 1


def test_refusals_write_nothing(owner: DataOwner, researcher: Identity, tmp_path: Path) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds, algorithms=["mean"])
    thief = Identity.generate("thief")
    cases: list[dict[str, Any]] = [
        make_job(thief, [g], action="stats", algorithm="mean", params=MEAN),  # wrong audience
        make_job(researcher, [g], action="stats", algorithm="sum", params=MEAN),  # algorithm
        make_job(researcher, [g], action="infer", algorithm="sha256:" + "0" * 64),  # action
        make_job(researcher, [g], action="stats", algorithm="mean", params={"columns": ["age"]}),
        make_job(researcher, [g], action="stats", algorithm="mean", params={**MEAN, "bounds": {}}),
        make_job(
            researcher, [g], action="stats", algorithm="mean", params={**MEAN, "columns": ["nope"]}
        ),
        make_job(researcher, [g], action="stats", algorithm="mean", params={**MEAN, "x": 1}),
    ]
    forged = make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN)
    forged["job"]["signatures"][0]["keyid"] = thief.did  # claims another signer
    cases.append(forged)
    swapped = make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN)
    swapped["grants"] = [grant(owner, researcher, ds).to_dict()]  # not the leaf the job names
    cases.append(swapped)
    other = Identity.generate("other-owner")
    foreign = issue_grant(
        other,
        audience=researcher.did,
        dataset="sha256:" + "1" * 64,
        actions=["stats"],
        expires=2**40,
    )
    cases.append(make_job(researcher, [foreign], action="stats", algorithm="mean", params=MEAN))
    for body in cases:
        with pytest.raises(Error):
            owner.run_job(body)
    for raw in (b"", b"{", b"[]", b'{"job": 1, "grants": []}', b"x" * (17 * 2**20)):
        with pytest.raises(InvalidInputError):
            owner.run_job(raw)
    assert usage_count(owner) == 0
    assert owner.ledger.used(digest_bytes(g.payload)) == (0, 0.0)


def test_infer_job_returns_a_disputable_receipt(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    card, _ = owner.add_dataset(write_features(tmp_path / "f.npz"))
    model = linear_onnx(16, 2)
    mdig = digest_bytes(model)
    g = grant(owner, researcher, card.digest, actions=["infer"], algorithms=[mdig], eps_total=None)
    answer = owner.run_job(
        make_job(
            researcher, [g], action="infer", algorithm=mdig, params={"column": "x"}, model=model
        )
    )
    y = answer["result"]["outputs"]["y"]
    assert y["shape"] == [40, 2]
    from edgetrust.receipts import parse_bundle

    bundle = parse_bundle(json.dumps(answer["receipt"]).encode())
    # signed by the owner, logged in the owner's log, for this model, on the fixed executor
    verified = Verifier(log_keys=[owner.log.verifier_key], require_log=True).verify(
        bundle, model=model
    )
    assert verified.receipt.issuer == owner.identity.did
    assert verified.receipt.model_digest == mdig
    assert verified.receipt.executor["name"] == "fixed"
    rec, _ = read_usage(json.dumps(answer["usage"]).encode())
    assert rec.receipt == digest_bytes(canonical_json(answer["receipt"]["envelope"]))
    assert rec.action == "infer" and rec.epsilon == 0


def test_infer_output_bound_and_model_not_granted(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    card, _ = owner.add_dataset(write_features(tmp_path / "f.npz"))
    wide = linear_onnx(16, 16)  # as many outputs as inputs: could copy the records out
    wdig = digest_bytes(wide)
    g = grant(owner, researcher, card.digest, actions=["infer"], eps_total=None)
    with pytest.raises(ResourceLimitError):
        owner.run_job(make_job(researcher, [g], action="infer", algorithm=wdig, model=wide))
    narrow = grant(owner, researcher, card.digest, actions=["infer"], algorithms=[wdig])
    other = linear_onnx(16, 2, seed=3)
    with pytest.raises(GrantError):
        owner.run_job(
            make_job(
                researcher, [narrow], action="infer", algorithm=digest_bytes(other), model=other
            )
        )
    with pytest.raises(InvalidInputError):  # upload does not match the named digest
        owner.run_job(make_job(researcher, [g], action="infer", algorithm=wdig, model=other))
    with pytest.raises(NotFoundError):  # no such model at the owner
        owner.run_job(make_job(researcher, [g], action="infer", algorithm="sha256:" + "2" * 64))
    assert usage_count(owner) == 0
    assert owner.ledger.used(digest_bytes(g.payload)) == (0, 0.0)


def test_concurrent_jobs_never_overspend(
    owner: DataOwner, researcher: Identity, tmp_path: Path
) -> None:
    ds = people(owner, tmp_path)
    g = grant(owner, researcher, ds, max_uses=3)
    bodies = [
        make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN) for _ in range(8)
    ]
    results: list[str] = []

    def go(b: dict[str, Any]) -> None:
        try:
            owner.run_job(b)
            results.append("ok")
        except GrantError:
            results.append("refused")

    threads = [threading.Thread(target=go, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 5
    assert usage_count(owner) == 3
