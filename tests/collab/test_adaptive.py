"""Adaptive clipping (Andrew et al. 2021): the rule, its privacy cost, its session and audit."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.cli import run
from edgetrust.collab.adaptive import AdaptiveClip
from edgetrust.collab.audit import audit_log
from edgetrust.collab.dp import DPConfig
from edgetrust.collab.local import simulate
from edgetrust.collab.rounds import (
    ROUND_CONFIG_PREDICATE_TYPE,
    ROUND_PREDICATE_TYPE,
    RoundConfig,
    RoundRecord,
    sign_round_record,
)
from edgetrust.collab.session import SessionSpec
from edgetrust.dsse import parse_envelope
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Keystore
from edgetrust.statement import parse_statement
from tests.collab.test_session import ListLog

RULE = AdaptiveClip(count_noise=1.0, target_quantile=0.5, learning_rate=0.2)


@given(
    z=st.floats(0.05, 50.0),
    sigma_b=st.floats(0.05, 100.0),
)
@settings(max_examples=200, deadline=None)
def test_update_noise_keeps_the_round_at_z(z: float, sigma_b: float) -> None:
    """z_Δ⁻² + (2σ_b)⁻² = z⁻²: the update and the count are one mechanism of multiplier z."""
    rule = AdaptiveClip(count_noise=sigma_b)
    if 2 * sigma_b <= z:
        with pytest.raises(InvalidInputError, match="`count_noise`"):
            rule.update_noise_multiplier(z)
        return
    z_update = rule.update_noise_multiplier(z)
    assert z_update >= z
    assert math.isclose(z_update**-2 + (2 * sigma_b) ** -2, z**-2, rel_tol=1e-9)


def test_the_rule_moves_the_clip_towards_the_quantile() -> None:
    assert RULE.next_clip(1.0, 0.5) == 1.0  # at the target: unchanged
    assert RULE.next_clip(1.0, 0.9) < 1.0  # most updates unclipped: the clip shrinks
    assert RULE.next_clip(1.0, 0.1) > 1.0  # most clipped: it grows
    assert math.isclose(RULE.next_clip(2.0, 1.0), 2.0 * math.exp(-0.1))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"count_noise": 1.0, "target_quantile": 1.0}, "`target_quantile`"),
        ({"count_noise": 1.0, "target_quantile": float("nan")}, "`target_quantile`"),
        ({"count_noise": 1.0, "learning_rate": 0.0}, "`learning_rate`"),
        ({"count_noise": -1.0}, "`count_noise`"),
        ({"count_noise": True}, "`count_noise`"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        AdaptiveClip(**kwargs)  # type: ignore[arg-type]


def test_adaptive_clipping_needs_user_level_dp_with_noise() -> None:
    with pytest.raises(InvalidInputError, match="user-level"):
        DPConfig(clip=1.0, noise_multiplier=1.0, level="sample", adaptive=RULE)
    with pytest.raises(InvalidInputError, match="needs DP noise"):
        DPConfig(clip=1.0, noise_multiplier=0.0, adaptive=RULE)
    with pytest.raises(InvalidInputError, match="`count_noise` 1 is too small"):
        DPConfig(clip=1.0, noise_multiplier=3.0, adaptive=RULE)


def _opened(log: ListLog, ptype: str) -> list[tuple[int, dict[str, object]]]:
    out = []
    for i, e in enumerate(log.entries):
        statement = parse_statement(parse_envelope(e).payload)
        if statement.predicate_type == ptype:
            out.append((i, statement.predicate))
    return out


@pytest.fixture(scope="module")
def adaptive_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ListLog]:
    home = tmp_path_factory.mktemp("adaptive")
    log = ListLog()
    dp = DPConfig(clip=5.0, noise_multiplier=1.0, adaptive=RULE)
    simulate(SessionSpec(rounds=4, local_epochs=1, dp=dp), num_clients=8, home=home, log=log)
    return home, log


def test_each_round_clip_follows_from_the_last_count(
    adaptive_session: tuple[Path, ListLog],
) -> None:
    home, log = adaptive_session
    configs = [RoundConfig.from_predicate(p) for _, p in _opened(log, ROUND_CONFIG_PREDICATE_TYPE)]
    records = [RoundRecord.from_predicate(p) for _, p in _opened(log, ROUND_PREDICATE_TYPE)]
    assert configs[0].clip == 5.0 and all(c.adaptive == RULE for c in configs)
    for before, after, rec in zip(configs, configs[1:], records, strict=False):
        assert rec.clipped_fraction is not None
        assert after.clip == RULE.next_clip(before.clip, rec.clipped_fraction)
    # one-epoch updates are far below norm 5: nearly all unclipped, so the clip shrinks
    # (the count's noise, σ_b/8 ≈ 0.13 on the fraction, is far below the 0.5 margin)
    assert [c.clip for c in configs] == sorted((c.clip for c in configs), reverse=True)
    assert configs[-1].clip < 5.0
    # the clipped bit travels as one more coordinate of every client's masked input
    assert {c.length for r in records for c in r.commitments} == {64 * 32 + 32 + 32 * 10 + 11}
    report = audit_log(log, home=home, require_artifacts=True)
    assert len(report.rounds) == 4 and all(r.model_recomputed for r in report.rounds)


def _forge(home: Path, log: ListLog, which: int, **change: object) -> ListLog:
    index, predicate = _opened(log, ROUND_PREDICATE_TYPE)[which]
    record = dataclasses.replace(RoundRecord.from_predicate(predicate), **change)  # type: ignore[arg-type]
    forged = ListLog()
    forged.entries = list(log.entries)
    coordinator = Keystore(home).load("fl-coordinator")
    forged.entries[index] = sign_round_record(record, "digits-fl", coordinator).to_json()
    return forged


def test_audit_catches_a_misreported_count(adaptive_session: tuple[Path, ListLog]) -> None:
    home, log = adaptive_session
    first = RoundRecord.from_predicate(_opened(log, ROUND_PREDICATE_TYPE)[0][1])
    assert first.clipped_fraction is not None
    # with the aggregate at hand, the count is read again from it
    forged = _forge(home, log, 0, clipped_fraction=first.clipped_fraction - 0.3)
    with pytest.raises(VerificationError) as info:
        audit_log(forged, home=home, require_artifacts=True)
    assert info.value.step == "7 model"
    # a record that drops the count under an adaptive config
    forged = _forge(home, log, 0, clipped_fraction=None)
    with pytest.raises(VerificationError) as info:
        audit_log(forged, home=home)
    assert info.value.step == "5 privacy"


def test_audit_catches_a_coordinator_that_sets_its_own_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message is genuine, but the coordinator grew the clip against the rule."""
    log = ListLog()
    dp = DPConfig(clip=1.0, noise_multiplier=1.0, adaptive=RULE)
    with monkeypatch.context() as m:
        m.setattr(AdaptiveClip, "next_clip", lambda self, clip, fraction: 2 * clip)
        simulate(
            SessionSpec(rounds=2, local_epochs=1, dp=dp), num_clients=6, home=tmp_path, log=log
        )
    with pytest.raises(VerificationError) as info:
        audit_log(log, home=tmp_path)
    assert info.value.step == "5 privacy" and "does not follow from round 1" in str(info.value)


def test_cli_adaptive_clip(capsys: pytest.CaptureFixture[str], edgetrust_home: Path) -> None:
    base = ["fl", "simulate", "--clients", "6", "--rounds", "2", "--local-epochs", "1"]
    assert run([*base, "--dp-noise", "1", "--adaptive-clip", "0.5", "--json"]) == 0
    capsys.readouterr()
    assert run(["fl", "audit"]) == 0
    capsys.readouterr()
    for args, needle in [
        (["--dp-noise", "1", "--adaptive-clip", "2"], "`target_quantile` must be in (0, 1)"),
        (
            ["--dp-noise", "3", "--adaptive-clip", "0.5", "--count-noise", "1"],
            "`count_noise` 1 is too small",
        ),
        (
            ["--dp-noise", "1", "--dp-level", "sample", "--adaptive-clip", "0.5"],
            "user-level DP-FedAvg only",
        ),
    ]:
        assert run([*base, *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
