"""Federated learning under consent: admission, budget, usage records and the consent audit."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.collab.audit import audit_log
from edgetrust.collab.dp import DPConfig, PrivacyAccountant
from edgetrust.collab.rounds import RoundRecord
from edgetrust.collab.session import ClientWorker, Coordinator, SessionSpec
from edgetrust.data.consent import (
    Admission,
    ConsentError,
    TrainConsent,
    audit_consent,
    run_round,
    train_job_id,
)
from edgetrust.data.dataset import digest_table
from edgetrust.data.grant import issue_grant, revoke
from edgetrust.data.jobs import read_usage
from edgetrust.dsse import Envelope
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log import Log
from edgetrust.statement import open_signed_statement

DP = DPConfig(clip=1.0, noise_multiplier=2.0)
ROUND_EPS = PrivacyAccountant(DP).round_epsilon()


def _ident(tag: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(tag.encode()).digest())


@dataclass
class World:
    log: Log
    home: Path
    coordinator: Coordinator
    devices: dict[str, Identity]
    workers: dict[str, ClientWorker]
    datasets: dict[str, str]

    def grant(self, did: str, **kw: Any) -> Envelope:
        base: dict[str, Any] = {
            "audience": self.coordinator.identity.did,
            "dataset": self.datasets[did],
            "actions": ["train"],
            "expires": int(time.time()) + 3600,
            "algorithms": [self.coordinator.base_model],
            "eps_per_use": 2 * ROUND_EPS,
            "eps_total": 10 * ROUND_EPS,
        }
        base.update(kw)
        return issue_grant(self.devices[did], **base)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    from edgetrust.zoo import load_digits_split

    x_tr, _, y_tr, _ = load_digits_split()
    log = Log.open(tmp_path)
    spec = SessionSpec(rounds=5, secagg=False, dp=DP, hidden=(8,), local_epochs=1)
    coordinator = Coordinator(spec=spec, identity=_ident("coord"), log=log, home=tmp_path)
    devices, workers, datasets = {}, {}, {}
    for i in range(3):
        ident = _ident(f"device{i}")
        sl = slice(60 * i, 60 * (i + 1))
        devices[ident.did] = ident
        workers[ident.did] = ClientWorker(identity=ident, x=x_tr[sl], y=y_tr[sl])
        datasets[ident.did] = digest_table({"x": x_tr[sl], "label": y_tr[sl]})
    yield World(log, tmp_path, coordinator, devices, workers, datasets)
    log.close()


def _consent(world: World, **grants: Envelope) -> TrainConsent:
    chains = {did: [world.grant(did)] for did in world.devices}
    chains.update({k: [v] for k, v in grants.items()})
    gate = TrainConsent(world.log, chains)
    world.coordinator.consent = gate
    return gate


def test_honest_rounds_cite_grants_log_usage_and_audit(world: World) -> None:
    _consent(world)
    run_round(world.coordinator, world.workers)
    run_round(world.coordinator, world.workers)
    report = audit_consent(world.log)
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.uses == 3 for r in report.rounds)
    assert set(report.rounds[0].grants) == set(world.devices)
    assert report.rounds[0].epsilon == pytest.approx(ROUND_EPS)
    # the collab audit still passes, the consent field riding along
    assert len(audit_log(world.log, home=world.home).rounds) == 2
    uses = []
    for i in range(world.log.size()):
        try:
            uses.append(read_usage(world.log.entry(i))[0])
        except Exception:
            continue
    assert len(uses) == 6
    assert {u.action for u in uses} == {"train"}
    configs = {
        RoundRecord.from_predicate(
            open_signed_statement(world.log.entry(r.index)).statement.predicate
        ).config
        for r in report.rounds
    }
    assert {u.job for u in uses} == {train_job_id(c, d) for c in configs for d in world.devices}


def test_participant_without_grant_is_refused_before_anything_is_logged(world: World) -> None:
    gate = _consent(world)
    missing = sorted(world.devices)[1]
    del gate.chains[missing]
    size = world.log.size()
    with pytest.raises(ConsentError) as exc:
        run_round(world.coordinator, world.workers)
    assert exc.value.participant == missing
    assert exc.value.step == "1 consent"
    assert world.log.size() == size
    assert world.coordinator.round == 0


def test_revoked_grant_is_refused(world: World) -> None:
    gate = _consent(world)
    run_round(world.coordinator, world.workers)
    did = sorted(world.devices)[0]
    world.log.append(revoke(gate.chains[did][0], world.devices[did]).to_json())
    size = world.log.size()
    with pytest.raises(ConsentError) as exc:
        run_round(world.coordinator, world.workers)
    assert exc.value.participant == did
    assert exc.value.step == "5 revocation"
    assert world.log.size() == size


@pytest.mark.parametrize(
    ("kw", "step"),
    [
        ({"eps_per_use": ROUND_EPS / 2}, "6 budget"),
        ({"eps_total": ROUND_EPS * 1.5}, "6 budget"),
        ({"max_uses": 1}, "6 uses"),
    ],
)
def test_budget_too_small_is_refused(world: World, kw: dict[str, Any], step: str) -> None:
    did = sorted(world.devices)[2]
    _consent(world, **{did: world.grant(did, **kw)})
    if kw.get("eps_per_use") is None:
        run_round(world.coordinator, world.workers)  # the first round fits
    size = world.log.size()
    with pytest.raises(ConsentError) as exc:
        run_round(world.coordinator, world.workers)
    assert exc.value.participant == did
    assert exc.value.step == step
    assert world.log.size() == size


def test_round_without_dp_is_refused_by_an_eps_cap(tmp_path: Path, world: World) -> None:
    spec = SessionSpec(rounds=2, secagg=False, hidden=(8,), local_epochs=1)
    coordinator = Coordinator(spec=spec, identity=_ident("coord"), log=world.log, home=tmp_path)
    world.coordinator = coordinator
    gate = _consent(world)
    with pytest.raises(ConsentError, match="no DP noise"):
        run_round(coordinator, world.workers)
    # a grant without ε caps admits it
    for did in world.devices:
        gate.chains[did] = (world.grant(did, eps_per_use=None, eps_total=None),)
    run_round(coordinator, world.workers)
    assert audit_consent(world.log).rounds[0].epsilon is None


def test_wrong_model_and_wrong_action_are_refused(world: World) -> None:
    did = sorted(world.devices)[0]
    _consent(world, **{did: world.grant(did, algorithms=["sha256:" + "0" * 64])})
    with pytest.raises(ConsentError, match="algorithm") as exc:
        run_round(world.coordinator, world.workers)
    assert exc.value.participant == did
    _consent(world, **{did: world.grant(did, actions=["stats"])})
    with pytest.raises(ConsentError, match="train"):
        run_round(world.coordinator, world.workers)


def test_foreign_grant_is_refused(world: World) -> None:
    a, b = sorted(world.devices)[:2]
    # b presents a's grant (issued by a, over a's data): not b's consent
    _consent(world, **{b: world.grant(a)})
    with pytest.raises(ConsentError, match="owner") as exc:
        run_round(world.coordinator, world.workers)
    assert exc.value.participant == b


class _LyingGate(TrainConsent):
    """A coordinator that skips the checks and cites whatever chain it holds."""

    def admit(self, coordinator: Any, participants: Any) -> Admission:
        eps = coordinator.accountant.round_epsilon()
        grants = {}
        for did in participants:
            from edgetrust.data.grant import grant_digest

            self.log.append(self.chains[did][0].to_json())
            grants[did] = (grant_digest(self.chains[did][0]),)
        return Admission(int(time.time()), coordinator.base_model, eps, grants)


def test_audit_fails_for_a_round_citing_a_revoked_grant(world: World) -> None:
    chains = {did: [world.grant(did)] for did in world.devices}
    world.coordinator.consent = _LyingGate(world.log, chains)
    run_round(world.coordinator, world.workers)
    did = sorted(world.devices)[1]
    world.log.append(revoke(chains[did][0], world.devices[did]).to_json())
    run_round(world.coordinator, world.workers)
    with pytest.raises(ConsentError) as exc:
        audit_consent(world.log)
    assert exc.value.participant == did
    assert exc.value.step == "5 revocation"


def test_audit_fails_for_a_round_citing_a_foreign_grant(world: World) -> None:
    a, b = sorted(world.devices)[:2]
    chains = {did: [world.grant(did)] for did in world.devices}
    chains[b] = [world.grant(a)]
    world.coordinator.consent = _LyingGate(world.log, chains)
    run_round(world.coordinator, world.workers)
    with pytest.raises(ConsentError) as exc:
        audit_consent(world.log)
    assert exc.value.participant == b


def test_audit_fails_for_an_overspent_budget(world: World) -> None:
    did = sorted(world.devices)[0]
    chains = {d: [world.grant(d)] for d in world.devices}
    chains[did] = [world.grant(did, eps_total=ROUND_EPS * 1.5)]
    world.coordinator.consent = _LyingGate(world.log, chains)
    run_round(world.coordinator, world.workers)
    run_round(world.coordinator, world.workers)
    with pytest.raises(ConsentError, match="budget") as exc:
        audit_consent(world.log)
    assert exc.value.participant == did


def test_admission_parsing_refuses_malformed_consent() -> None:
    good = Admission(1, "sha256:" + "a" * 64, 0.5, {_ident("x").did: ("sha256:" + "b" * 64,)})
    assert Admission.from_predicate(good.to_predicate()) == good
    for bad in (
        {},
        {**good.to_predicate(), "extra": 1},
        {**good.to_predicate(), "time": -1},
        {**good.to_predicate(), "time": True},
        {**good.to_predicate(), "epsilon": -1.0},
        {**good.to_predicate(), "epsilon": float("nan")},
        {**good.to_predicate(), "grants": {}},
        {**good.to_predicate(), "grants": {"did:key:zBAD": ["sha256:" + "b" * 64]}},
        {**good.to_predicate(), "grants": {_ident("x").did: []}},
        {**good.to_predicate(), "model": "md5:00"},
    ):
        with pytest.raises(InvalidInputError):
            Admission.from_predicate(bad)


def test_fl_audit_cli_passes_honest_and_fails_naming_the_participant(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from edgetrust.cli._app import run

    _consent(world)
    run_round(world.coordinator, world.workers)
    assert run(["fl", "audit", "--home", str(world.home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rounds"]
    assert set(rows[0]["consent"]["grants"]) == set(world.devices)
    a, b = sorted(world.devices)[:2]
    chains = {did: [world.grant(did)] for did in world.devices}
    chains[b] = [world.grant(a)]
    world.coordinator.consent = _LyingGate(world.log, chains)
    run_round(world.coordinator, world.workers)
    assert run(["fl", "audit", "--home", str(world.home)]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert b[:24] in err and "verification failed" in err


def test_jobs_and_rounds_share_one_grant_budget(world: World, tmp_path: Path) -> None:
    from edgetrust.data.jobs import DataOwner, make_job
    from edgetrust.data.ledger import BudgetExhaustedError
    from edgetrust.zoo import load_digits_split

    x_tr, _, y_tr, _ = load_digits_split()
    owner = DataOwner(tmp_path / "owner", log=world.log)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x_tr[300:360], label=y_tr[300:360])
    card, _ = owner.add_dataset(npz)
    researcher = world.coordinator.identity
    grant = issue_grant(
        owner.identity,
        audience=researcher.did,
        dataset=card.digest,
        actions=["stats", "train"],
        expires=int(time.time()) + 3600,
        eps_total=ROUND_EPS + 0.3,
        max_uses=3,
    )
    workers = dict(world.workers)
    workers[owner.identity.did] = ClientWorker(
        identity=owner.identity, x=x_tr[300:360], y=y_tr[300:360]
    )
    gate = _consent(world)
    gate.chains[owner.identity.did] = (grant,)
    run_round(world.coordinator, workers)

    def job(eps: float) -> dict[str, Any]:
        params = {"columns": ["label"], "epsilon": eps, "bounds": {"label": [0, 9]}}
        body = make_job(researcher, [grant], action="stats", algorithm="mean", params=params)
        return owner.run_job(body)

    # the owner's ledger counts the round's ε (logged by the coordinator) against the grant
    with pytest.raises(BudgetExhaustedError):
        job(0.5)
    job(0.2)
    # and the gate counts the owner's job against the round after
    with pytest.raises(ConsentError, match="budget") as exc:
        run_round(world.coordinator, workers)
    assert exc.value.participant == owner.identity.did
    owner.close()
