from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.collab.audit import audit_log
from edgetrust.collab.dp import DPConfig, PrivacyBudgetExceededError, epsilon_after
from edgetrust.collab.local import simulate
from edgetrust.collab.rounds import (
    ROUND_PREDICATE_TYPE,
    ArtifactStore,
    RoundConfig,
    RoundRecord,
    sign_round_record,
)
from edgetrust.collab.session import SessionSpec
from edgetrust.dsse import parse_envelope
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Keystore
from edgetrust.statement import parse_statement


class ListLog:
    def __init__(self) -> None:
        self.entries: list[bytes] = []

    def append(self, entry: bytes) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1

    def size(self) -> int:
        return len(self.entries)

    def entry(self, index: int) -> bytes:
        return self.entries[index]


DP = DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=10.0)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ListLog, object]:
    home = tmp_path_factory.mktemp("flhome")
    log = ListLog()
    spec = SessionSpec(rounds=2, dp=DP, local_epochs=1)
    result = simulate(spec, num_clients=6, dropout=0.34, home=home, log=log, wire=True)
    return home, log, result


def _records(log: ListLog, ptype: str) -> list[int]:
    out = []
    for i, e in enumerate(log.entries):
        st = parse_statement(parse_envelope(e).payload)
        if st.predicate_type == ptype:
            out.append(i)
    return out


def test_session_runs_and_audits(session: tuple[Path, ListLog, object]) -> None:
    home, log, result = session
    assert len(result.rounds) == 2  # type: ignore[attr-defined]
    report = audit_log(log, home=home, require_artifacts=True)
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.model_recomputed for r in report.rounds)
    # two clients drop each round; those that drop after sending their input still count
    assert all(r.survivors + r.dropped == 6 and r.survivors >= 4 for r in report.rounds)
    assert report.rounds[1].input_model == report.rounds[0].output_model
    assert report.rounds[1].epsilon == pytest.approx(epsilon_after(2, noise_multiplier=1.0))


def test_audit_without_artifacts_skips_recompute(
    session: tuple[Path, ListLog, object], tmp_path: Path
) -> None:
    _, log, _ = session
    report = audit_log(log, home=tmp_path)
    assert not any(r.model_recomputed for r in report.rounds)
    with pytest.raises(VerificationError, match="no "):
        audit_log(log, home=tmp_path, require_artifacts=True)


def _resign(home: Path, log: ListLog, index: int, change: dict[str, object]) -> ListLog:
    coordinator = Keystore(home).load("fl-coordinator")
    st = parse_statement(parse_envelope(log.entries[index]).payload)
    record = dataclasses.replace(RoundRecord.from_predicate(st.predicate), **change)  # type: ignore[arg-type]
    forged = ListLog()
    forged.entries = list(log.entries)
    forged.entries[index] = sign_round_record(record, "digits-fl", coordinator).to_json()
    return forged


def test_audit_catches_wrong_epsilon(session: tuple[Path, ListLog, object]) -> None:
    home, log, _ = session
    last = _records(log, ROUND_PREDICATE_TYPE)[-1]
    forged = _resign(home, log, last, {"epsilon": 1.0})
    with pytest.raises(VerificationError) as info:
        audit_log(forged, home=home)
    assert info.value.step == "5 privacy"


def test_audit_catches_model_not_matching_aggregate(session: tuple[Path, ListLog, object]) -> None:
    home, log, _ = session
    first = _records(log, ROUND_PREDICATE_TYPE)[0]
    st = parse_statement(parse_envelope(log.entries[first]).payload)
    rec = RoundRecord.from_predicate(st.predicate)
    other = ArtifactStore(home).put(np.zeros(2410, np.uint32))
    forged = _resign(home, log, first, {"aggregate": other})
    with pytest.raises(VerificationError) as info:
        audit_log(forged, home=home)
    assert info.value.step in ("7 model", "aggregate")
    assert rec.aggregate != other


def test_audit_catches_forged_commitment_and_broken_chain(
    session: tuple[Path, ListLog, object],
) -> None:
    home, log, _ = session
    first, second = _records(log, ROUND_PREDICATE_TYPE)[:2]
    st = parse_statement(parse_envelope(log.entries[first]).payload)
    rec = RoundRecord.from_predicate(st.predicate)
    bad = dataclasses.replace(rec.commitments[0], digest="00" * 32)
    forged = _resign(home, log, first, {"commitments": (bad, *rec.commitments[1:])})
    with pytest.raises(VerificationError) as info:
        audit_log(forged, home=home)
    assert info.value.step == "4 commitments"
    # dropping round 1's record breaks round 2's link to it
    gap = ListLog()
    gap.entries = [e for i, e in enumerate(log.entries) if i != first]
    with pytest.raises(VerificationError):
        audit_log(gap, home=home)
    # a record signed by someone else
    other = Keystore(home).load_or_create("intruder")
    st2 = parse_statement(parse_envelope(log.entries[second]).payload)
    forged2 = ListLog()
    forged2.entries = list(log.entries)
    forged2.entries[second] = sign_round_record(
        RoundRecord.from_predicate(st2.predicate), "digits-fl", other
    ).to_json()
    with pytest.raises(VerificationError) as info:
        audit_log(forged2, home=home)
    assert info.value.step == "1 signature"


def test_audit_catches_tampered_entry_bytes(session: tuple[Path, ListLog, object]) -> None:
    home, log, _ = session
    idx = _records(log, ROUND_PREDICATE_TYPE)[0]
    env = json.loads(log.entries[idx])
    env["signatures"][0]["sig"] = env["signatures"][0]["sig"][:-4] + "AAA="
    forged = ListLog()
    forged.entries = list(log.entries)
    forged.entries[idx] = json.dumps(env).encode()
    with pytest.raises(VerificationError):
        audit_log(forged, home=home)


def test_run_over_budget_never_starts(tmp_path: Path) -> None:
    log = ListLog()
    spec = SessionSpec(rounds=10, dp=DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=8.0))
    with pytest.raises(PrivacyBudgetExceededError, match="Nothing was run") as info:
        simulate(spec, num_clients=4, home=tmp_path, log=log)
    assert info.value.epsilon > 8.0
    assert log.entries == []


def test_stop_at_budget_refuses_the_round_over_it(tmp_path: Path) -> None:
    log = ListLog()
    spec = SessionSpec(
        rounds=5, dp=DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=8.0), local_epochs=1
    )
    result = simulate(spec, num_clients=4, home=tmp_path, log=log, stop_at_budget=True)
    assert len(result.rounds) == 2 and result.rounds[-1].epsilon is not None
    assert result.rounds[-1].epsilon <= 8.0 < epsilon_after(3, noise_multiplier=1.0)
    assert result.stopped_early is not None and "round 3 refused" in result.stopped_early
    assert audit_log(log, home=tmp_path).rounds[-1].round == 2


def test_plain_robust_aggregation_session(tmp_path: Path) -> None:
    log = ListLog()
    spec = SessionSpec(rounds=2, secagg=False, aggregator="median", local_epochs=1)
    result = simulate(spec, num_clients=5, dropout=0.2, home=tmp_path, log=log)
    assert len(result.rounds) == 2
    report = audit_log(log, home=tmp_path, require_artifacts=True)
    assert all(r.model_recomputed for r in report.rounds)


def test_spec_validation() -> None:
    with pytest.raises(InvalidInputError, match="`aggregator`"):
        SessionSpec(aggregator="vote")
    with pytest.raises(InvalidInputError, match="turn off `secagg`"):
        SessionSpec(aggregator="median")
    with pytest.raises(InvalidInputError, match="`rounds`"):
        SessionSpec(rounds=0)
    with pytest.raises(InvalidInputError, match="`sampling_rate`"):
        SessionSpec(dp=DPConfig(clip=1.0, noise_multiplier=1.0, sampling_rate=0.5))
    with pytest.raises(InvalidInputError, match="threshold"):
        simulate(SessionSpec(rounds=1), num_clients=4, dropout=0.6)


def test_config_predicate_rejects_malformed(session: tuple[Path, ListLog, object]) -> None:
    _, log, _ = session
    from edgetrust.collab.rounds import ROUND_CONFIG_PREDICATE_TYPE

    idx = _records(log, ROUND_CONFIG_PREDICATE_TYPE)[0]
    pred = dict(parse_statement(parse_envelope(log.entries[idx]).payload).predicate)
    RoundConfig.from_predicate(pred)
    for key, value in [
        ("round", "1"),
        ("participants", ["nope"]),
        ("session", "zz"),
        ("aggregator", "x"),
        ("dp", None),
    ]:
        bad = {**pred, key: value}
        with pytest.raises(InvalidInputError):
            RoundConfig.from_predicate(bad)


def test_coordinator_refuses_round_over_budget_before_logging(tmp_path: Path) -> None:
    from edgetrust.collab.session import Coordinator
    from tests.collab.conftest import make_identities

    log = ListLog()
    spec = SessionSpec(rounds=5, dp=DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=5.0))
    coordinator = Coordinator(
        spec=spec, identity=make_identities(1, "coord")[0], log=log, home=tmp_path
    )
    before = log.size()  # the initial model card
    coordinator.accountant.rounds_done = 1  # ε(2 rounds) = 6.57 > 5
    with pytest.raises(PrivacyBudgetExceededError, match="round 2"):
        coordinator.plan_round([i.did for i in make_identities(4, "p")])
    assert log.size() == before
