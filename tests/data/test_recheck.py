"""The device re-checks its own grant before it trains: revoked, stale, spent, wrong party."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgetrust.collab.dp import DPConfig, PrivacyAccountant
from edgetrust.collab.session import Coordinator, SessionSpec
from edgetrust.data.consent import ConsentError, TrainConsent, run_round
from edgetrust.data.dataset import digest_table
from edgetrust.data.grant import grant_digest, issue_grant, revoke
from edgetrust.data.recheck import ConsentedWorker, DeviceConsent
from edgetrust.dsse import Envelope
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log import Log
from edgetrust.log.checkpoint import NoteSigner

DP = DPConfig(clip=1.0, noise_multiplier=2.0)
ROUND_EPS = PrivacyAccountant(DP).round_epsilon()


def _ident(tag: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(tag.encode()).digest())


@dataclass
class Devices:
    log: Log
    coordinator: Coordinator
    idents: dict[str, Identity]
    grants: dict[str, Envelope]
    workers: dict[str, ConsentedWorker]


def _devices(tmp_path: Path, *, linked: bool = True, **grant_kw: Any) -> Devices:
    """Three consenting devices; no coordinator gate, so only the devices' own checks run."""
    from edgetrust.zoo import load_digits_split

    x_tr, _, y_tr, _ = load_digits_split()
    log = Log.open(tmp_path)
    spec = SessionSpec(rounds=5, secagg=False, dp=DP, hidden=(8,), local_epochs=1)
    coord = Coordinator(spec=spec, identity=_ident("coord"), log=log, home=tmp_path)
    idents, grants, workers = {}, {}, {}
    for i in range(3):
        ident = _ident(f"device{i}")
        sl = slice(60 * i, 60 * (i + 1))
        kw: dict[str, Any] = {
            "audience": coord.identity.did,
            "dataset": digest_table({"x": x_tr[sl], "label": y_tr[sl]}),
            "actions": ["train"],
            "expires": int(time.time()) + 3600,
            "algorithms": [coord.base_model],
            "eps_per_use": 2 * ROUND_EPS,
            "eps_total": 10 * ROUND_EPS,
            **grant_kw,
        }
        g = issue_grant(ident, **kw)
        consent = DeviceConsent(ident.did, [g], log_key=log.verifier_key)
        consent.refresh(log)
        idents[ident.did], grants[ident.did] = ident, g
        workers[ident.did] = ConsentedWorker(
            consent=consent, log=log if linked else None, identity=ident, x=x_tr[sl], y=y_tr[sl]
        )
    return Devices(log, coord, idents, grants, workers)


@pytest.fixture
def devices(tmp_path: Path) -> Any:
    d = _devices(tmp_path)
    yield d
    d.log.close()


def test_devices_train_under_their_grant_and_count_each_use_once(devices: Devices) -> None:
    devices.coordinator.consent = TrainConsent(
        devices.log, {did: [g] for did, g in devices.grants.items()}
    )
    run_round(devices.coordinator, devices.workers)
    run_round(devices.coordinator, devices.workers)
    for did, w in devices.workers.items():
        w.consent.refresh(devices.log)  # the coordinator's usage records are now in view too
        uses, eps = w.consent.spent(grant_digest(devices.grants[did]))
        assert uses == 2  # its own count and the logged records are the same two jobs
        assert eps == pytest.approx(2 * ROUND_EPS)


def test_revoked_grant_is_refused_by_the_device_even_if_the_coordinator_does_not_check(
    devices: Devices,
) -> None:
    run_round(devices.coordinator, devices.workers)  # no gate at the coordinator
    did = sorted(devices.idents)[1]
    devices.log.append(revoke(devices.grants[did], devices.idents[did]).to_json())
    with pytest.raises(ConsentError) as exc:
        run_round(devices.coordinator, devices.workers)
    assert exc.value.participant == did
    assert exc.value.step == "5 revocation"
    # it trained nothing: its count of uses is still the first round's
    assert devices.workers[did].consent.spent(grant_digest(devices.grants[did]))[0] == 1


def test_a_revocation_once_seen_stands_even_offline(devices: Devices) -> None:
    did = sorted(devices.idents)[0]
    devices.log.append(revoke(devices.grants[did], devices.idents[did]).to_json())
    w = devices.workers[did]
    w.consent.refresh(devices.log)
    w.log = None  # the device goes offline; its view is fresh and holds the revocation
    with pytest.raises(ConsentError, match="revoked"):
        run_round(devices.coordinator, devices.workers)


def test_stale_checkpoint_is_refused(tmp_path: Path) -> None:
    d = _devices(tmp_path, linked=False)
    try:
        for w in d.workers.values():  # last checkpoint verified 1000 s ago, T = 300 s
            w.consent.view.observed_at = time.time() - 1000
        with pytest.raises(ConsentError, match="freshness") as exc:
            run_round(d.coordinator, d.workers)
        assert exc.value.step == "5 revocation"
        # a refresh against a fresh checkpoint lets it train
        for w in d.workers.values():
            w.consent.refresh(d.log)
        run_round(d.coordinator, d.workers)
    finally:
        d.log.close()


def test_uses_are_counted_by_the_device_itself(tmp_path: Path) -> None:
    d = _devices(tmp_path, linked=False, max_uses=1)
    try:
        run_round(d.coordinator, d.workers)
        with pytest.raises(ConsentError) as exc:
            run_round(d.coordinator, d.workers)
        assert exc.value.step == "6 uses"
    finally:
        d.log.close()


def test_budget_below_one_round_is_refused(tmp_path: Path) -> None:
    d = _devices(tmp_path, eps_per_use=ROUND_EPS / 2, eps_total=None)
    try:
        with pytest.raises(ConsentError) as exc:
            run_round(d.coordinator, d.workers)
        assert exc.value.step == "6 budget"
    finally:
        d.log.close()


def test_checkpoint_signed_by_another_key_is_refused(devices: Devices) -> None:
    w = devices.workers[sorted(devices.workers)[0]]
    w.consent.log_key = NoteSigner(devices.log.latest().origin, _ident("impostor")).vkey
    with pytest.raises(ConsentError, match="log does not verify"):
        run_round(devices.coordinator, devices.workers)


def test_a_session_joined_late_without_the_log_is_refused(tmp_path: Path) -> None:
    d = _devices(tmp_path, linked=False)
    try:
        run_round(d.coordinator, d.workers)
        # a new device object that never saw round 1 and cannot read the log
        did = sorted(d.workers)[2]
        old = d.workers[did]
        fresh = DeviceConsent(did, [d.grants[did]], log_key=d.log.verifier_key)
        fresh.view.observed_at = time.time()
        d.workers[did] = ConsentedWorker(consent=fresh, identity=d.idents[did], x=old.x, y=old.y)
        with pytest.raises(ConsentError, match="first model"):
            run_round(d.coordinator, d.workers)
        # reading the log (round 1's config is there) settles it
        fresh.refresh(d.log)
        run_round(d.coordinator, d.workers)
    finally:
        d.log.close()


def test_device_refuses_a_chain_it_did_not_issue(devices: Devices) -> None:
    a, b = sorted(devices.idents)[:2]
    old = devices.workers[b]
    # holding a's grant does not make it b's consent
    consent = DeviceConsent(b, [devices.grants[a]], log_key=devices.log.verifier_key)
    consent.refresh(devices.log)
    devices.workers[b] = ConsentedWorker(
        consent=consent, identity=devices.idents[b], x=old.x, y=old.y
    )
    with pytest.raises(ConsentError, match="owner") as exc:
        run_round(devices.coordinator, devices.workers)
    assert exc.value.participant == b


@pytest.mark.parametrize("gate", [True, False])
def test_simulate_consented_refuses_the_revoked_device_and_goes_on(
    tmp_path: Path, gate: bool
) -> None:
    from edgetrust.data.flsim import simulate_consented

    result = simulate_consented(home=tmp_path, clients=3, rounds=3, revoke_after=1, gate=gate)
    ran, refused, after = result.rounds
    assert ran.refused is None and ran.record_index is not None
    assert refused.refused == result.revoked[0]
    assert refused.step == "5 revocation"
    # with the coordinator's gate it refuses first; without it, the device's own check does
    assert refused.by == ("coordinator" if gate else "device")
    assert after.refused is None and after.participants == 2
    assert result.audited == (2 if gate else 0)
    # the FL audit passes either way; a round the device refused after its config was logged
    # is listed as abandoned, and the next round took its number
    from edgetrust.collab.audit import audit_log
    from edgetrust.log import Log

    with Log.open(tmp_path) as log:
        report = audit_log(log, home=tmp_path, require_artifacts=True)
    assert [r.round for r in report.rounds] == [1, 2]
    if gate:
        assert report.abandoned == ()
    else:
        ((session, number, _),) = report.abandoned
        assert session == result.session and number == 2


def test_only_the_latest_planned_round_can_be_abandoned(devices: Devices) -> None:
    plan = devices.coordinator.plan_round(sorted(devices.workers))
    other = dataclasses.replace(
        plan, config=dataclasses.replace(plan.config, round=plan.config.round + 1)
    )
    with pytest.raises(InvalidInputError, match="latest planned round"):
        devices.coordinator.abandon_round(other)
    devices.coordinator.abandon_round(plan)
    assert devices.coordinator.plan_round(sorted(devices.workers)).config.round == plan.config.round


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--clients", "1"], "clients"),
        (["--rounds", "0"], "rounds"),
        (["--revoke-after", "9"], "revoke-after"),
        (["--noise-multiplier", "-1"], "noise"),
        (["--clients", "two"], ""),
    ],
)
def test_data_simulate_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], match: str
) -> None:
    from edgetrust.cli import run

    code = run(["data", "simulate", *args, "--home", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err
    assert "Traceback" not in err


def test_data_simulate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edgetrust.cli import run

    args = ["--clients", "3", "--rounds", "2", "--revoke-after", "1", "--json"]
    code = run(["data", "simulate", *args, "--home", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["refused"] is None for r in out["rounds"]] == [True, False]
    assert out["rounds"][1]["by"] == "coordinator" and out["audited"] == 1
