"""Sample-level DP: DP-SGD on each device, its accountant, its records and its refusals."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from edgetrust.collab.abort import abort_bound, default_threshold, min_neighbours
from edgetrust.collab.audit import audit_log
from edgetrust.collab.dp import (
    DPConfig,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    epsilon_after,
    epsilon_after_rdp,
    noise_for_epsilon,
)
from edgetrust.collab.local import calibrate_noise, check_session, simulate
from edgetrust.collab.optim import ServerOptimizer
from edgetrust.collab.rounds import ROUND_PREDICATE_TYPE, RoundRecord, sign_round_record
from edgetrust.collab.session import SessionSpec
from edgetrust.collab.training import MLP, flatten, train_local, train_local_dp
from edgetrust.dsse import parse_envelope
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Keystore
from edgetrust.statement import parse_statement
from tests.collab.test_session import ListLog


@pytest.mark.parametrize(
    ("z", "q", "steps", "rounds"),
    [(1.0, 0.24, 22, 5), (2.3, 0.1, 50, 10), (6.0, 0.5, 4, 3), (0.8, 0.02, 100, 2)],
)
def test_sample_level_pld_is_within_rdp_bound_and_close(
    z: float, q: float, steps: int, rounds: int
) -> None:
    """PLD ε ≤ dp-accounting's own RDP ε for the same DP-SGD composition, and not far below."""
    pld = epsilon_after(rounds, noise_multiplier=z, sampling_rate=q, steps_per_round=steps)
    rdp_ours = epsilon_after_rdp(rounds, noise_multiplier=z, sampling_rate=q, steps_per_round=steps)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds * steps
    )
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event)
    assert rdp_ours == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-9)
    fine = pld_privacy_accountant.PLDAccountant()  # library default discretization
    fine.compose(event)
    assert pld == pytest.approx(fine.get_epsilon(1e-5), rel=1e-2)
    assert pld <= rdp_ours
    assert pld >= 0.6 * rdp_ours  # RDP's conversion is loose, but not by much here


def test_steps_compose_like_rounds() -> None:
    a = epsilon_after(3, noise_multiplier=1.5, sampling_rate=0.1, steps_per_round=10)
    b = epsilon_after(30, noise_multiplier=1.5, sampling_rate=0.1)
    assert a == pytest.approx(b, rel=1e-9)
    with pytest.raises(InvalidInputError, match="steps_per_round"):
        epsilon_after(1, noise_multiplier=1.0, steps_per_round=0)


def test_noise_for_epsilon_is_the_least_that_fits() -> None:
    z = noise_for_epsilon(2.0, rounds=4, sampling_rate=0.2, steps_per_round=10)
    assert epsilon_after(4, noise_multiplier=z, sampling_rate=0.2, steps_per_round=10) <= 2.0
    below = z * 0.98
    assert epsilon_after(4, noise_multiplier=below, sampling_rate=0.2, steps_per_round=10) > 2.0


def test_dpconfig_levels() -> None:
    cfg = DPConfig(clip=1.0, noise_multiplier=1.0, level="sample", example_rate=0.25)
    assert cfg.guarantee == "sample-level" and cfg.accounting_rate == 0.25
    acc = PrivacyAccountant(cfg, steps_per_round=8)
    assert acc.epsilon(2) == pytest.approx(
        epsilon_after(16, noise_multiplier=1.0, sampling_rate=0.25)
    )
    for bad, needle in [
        ({"level": "both"}, "`level`"),
        ({"example_rate": 0.5}, "sample-level DP only"),
        ({"level": "sample", "example_rate": 1.5}, "`example_rate`"),
    ]:
        with pytest.raises(InvalidInputError, match=needle):
            DPConfig(clip=1.0, noise_multiplier=1.0, **bad)  # type: ignore[arg-type]


def _data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 6)), rng.integers(0, 3, n)


def test_dp_sgd_clips_each_example_then_sums() -> None:
    """q = 1, no noise: one DP-SGD step is -lr/b · Σ clip(∇ℓ_i), checked per example."""
    model = MLP((6, 5, 3))
    params = model.init(1)
    x, y = _data(12)
    clip, lr, b = 0.05, 0.5, 4.0
    want = np.zeros(model.num_params)
    norms = []
    for i in range(len(x)):
        # one SGD step of lr=1 on example i alone gives -∇ℓ_i
        g = flatten(params) - flatten(train_local(model, params, x[i : i + 1], y[i : i + 1]))
        g = g / 0.1  # train_local's default lr
        norms.append(np.linalg.norm(g))
        want -= lr / b * g * min(1.0, clip / np.linalg.norm(g))
    assert max(norms) > clip  # the clip binds for some examples
    got = train_local_dp(
        model,
        params,
        x,
        y,
        steps=1,
        sampling_rate=1.0,
        clip=clip,
        noise_multiplier=0.0,
        expected_batch=b,
        lr=lr,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(flatten(got) - flatten(params), want, rtol=1e-6, atol=1e-12)


def test_dp_sgd_noise_has_the_accounted_scale() -> None:
    """With examples almost never sampled, a step is pure noise of std lr·z·C/b."""
    model = MLP((6, 40, 3))
    params = model.init(2)
    x, y = _data(5)
    z, clip, lr, b = 1.5, 0.8, 0.1, 2.0
    got = train_local_dp(
        model,
        params,
        x,
        y,
        steps=1,
        sampling_rate=1e-9,
        clip=clip,
        noise_multiplier=z,
        expected_batch=b,
        lr=lr,
        rng=np.random.default_rng(3),
    )
    step = flatten(got) - flatten(params)
    assert np.std(step) == pytest.approx(lr * z * clip / b, rel=0.1)
    with pytest.raises(InvalidInputError, match="sampling_rate"):
        train_local_dp(
            model,
            params,
            x,
            y,
            steps=1,
            sampling_rate=0.0,
            clip=1.0,
            noise_multiplier=1.0,
            expected_batch=1.0,
            rng=np.random.default_rng(),
        )


SAMPLE = DPConfig(clip=0.3, noise_multiplier=2.0, level="sample", epsilon_max=30.0)


@pytest.fixture(scope="module")
def sample_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ListLog, object]:
    home = tmp_path_factory.mktemp("flsample")
    log = ListLog()
    spec = SessionSpec(
        rounds=2,
        dp=SAMPLE,
        local_epochs=1,
        lr=1.0,
        batch_size=8,
        server_optimizer=ServerOptimizer(name="fedavg"),
    )
    result = simulate(spec, num_clients=6, dropout=0.34, home=home, log=log)
    return home, log, result


def test_sample_level_session_records_and_audits(
    sample_session: tuple[Path, ListLog, object],
) -> None:
    home, log, _ = sample_session
    report = audit_log(log, home=home, require_artifacts=True)
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.model_recomputed for r in report.rounds)
    records = [
        parse_statement(parse_envelope(e).payload)
        for e in log.entries
        if parse_statement(parse_envelope(e).payload).predicate_type == ROUND_PREDICATE_TYPE
    ]
    assert {r.predicate["privacy"]["guarantee"] for r in records} == {"sample-level"}
    # q = batch / mean client size, T = ⌈epochs / q⌉ steps a round
    sizes = 1347 / 6
    q = 8 / sizes
    steps = int(np.ceil(1 / q))
    assert report.rounds[-1].epsilon == pytest.approx(
        epsilon_after(2, noise_multiplier=2.0, sampling_rate=q, steps_per_round=steps)
    )


def _resign(log: ListLog, home: Path, index: int, change: dict[str, object]) -> ListLog:
    statement = parse_statement(parse_envelope(log.entries[index]).payload)
    rec = dataclasses.replace(RoundRecord.from_predicate(statement.predicate), **change)  # type: ignore[arg-type]
    coordinator = Keystore(home).load("fl-coordinator")
    forged = ListLog()
    forged.entries = list(log.entries)
    forged.entries[index] = sign_round_record(rec, "digits-fl", coordinator).to_json()
    return forged


def test_audit_refuses_a_record_claiming_another_guarantee(
    sample_session: tuple[Path, ListLog, object],
) -> None:
    home, log, _ = sample_session
    idx = next(
        i
        for i, e in enumerate(log.entries)
        if parse_statement(parse_envelope(e).payload).predicate_type == ROUND_PREDICATE_TYPE
    )
    forged = _resign(log, home, idx, {"guarantee": "user-level"})
    with pytest.raises(VerificationError, match="sample-level") as info:
        audit_log(forged, home=home)
    assert info.value.step == "5 privacy"
    statement = parse_statement(parse_envelope(log.entries[idx]).payload)
    bad = RoundRecord.from_predicate(statement.predicate).to_predicate()
    bad["privacy"]["guarantee"] = "group-level"
    with pytest.raises(InvalidInputError, match="guarantee"):
        RoundRecord.from_predicate(bad)


def test_audit_refuses_user_level_epsilon_for_sample_level_round(
    sample_session: tuple[Path, ListLog, object],
) -> None:
    """A coordinator that accounts one step per round (as user-level) understates ε."""
    home, log, _ = sample_session
    idx = next(
        i
        for i, e in enumerate(log.entries)
        if parse_statement(parse_envelope(e).payload).predicate_type == ROUND_PREDICATE_TYPE
    )
    statement = parse_statement(parse_envelope(log.entries[idx]).payload)
    q = statement.predicate["privacy"]
    assert q["guarantee"] == "sample-level"
    under = epsilon_after(1, noise_multiplier=2.0, sampling_rate=8 / (1347 / 6))
    forged = _resign(log, home, idx, {"epsilon": under, "round_epsilon": under})
    with pytest.raises(VerificationError, match="accountant"):
        audit_log(forged, home=home)


def test_refusals_name_the_parameter_and_log_nothing(tmp_path: Path) -> None:
    log = ListLog()
    cases: list[tuple[SessionSpec, dict[str, object], type[Exception], str]] = [
        (
            SessionSpec(rounds=1, batch_size=500, dp=SAMPLE),
            {},
            InvalidInputError,
            "`batch_size` 500 is larger than a client's data",
        ),
        (
            SessionSpec(rounds=1, dp=DPConfig(clip=1.0, noise_multiplier=0.3, epsilon_max=1.0)),
            {"stop_at_budget": True},
            PrivacyBudgetExceededError,
            "`noise_multiplier` 0.3 is too small",
        ),
        (
            SessionSpec(rounds=5, dp=dataclasses.replace(SAMPLE, epsilon_max=1.0)),
            {},
            PrivacyBudgetExceededError,
            "`noise_multiplier` 2.0 is too small",
        ),
        (
            SessionSpec(rounds=1, neighbours=4),
            {"dropout": 0.3},
            InvalidInputError,
            "`neighbours` 4 is too few",
        ),
    ]
    for spec, kwargs, error, needle in cases:
        with pytest.raises(error, match=needle):
            simulate(spec, num_clients=20, home=tmp_path, log=log, **kwargs)  # type: ignore[arg-type]
    assert log.entries == []
    with pytest.raises(PrivacyBudgetExceededError, match="it needs at least") as info:
        check_session(cases[1][0], num_clients=20, stop_at_budget=True)
    found = re.search(r"at least ([0-9.]+)", str(info.value))
    assert found is not None
    z = float(found.group(1).rstrip("."))
    assert epsilon_after(1, noise_multiplier=z) <= 1.0


def test_calibrate_noise_fits_the_budget() -> None:
    spec = SessionSpec(rounds=3, local_epochs=1, batch_size=8, dp=SAMPLE)
    tuned = calibrate_noise(spec, num_clients=6, epsilon=4.0)
    dp = tuned.dp
    assert dp.epsilon_max == 4.0 and dp.example_rate is not None
    acc = PrivacyAccountant(dp, steps_per_round=tuned.dp_steps_per_round)
    assert acc.max_rounds(3) == 3
    # check_session fills in only the dropout the round configs will state
    assert check_session(tuned, num_clients=6) == dataclasses.replace(tuned, expected_dropout=0.0)


def test_abort_bound() -> None:
    assert abort_bound(100, 98, 51, 0.0) == 0.0
    # more neighbours, lower risk; the chosen k meets the bound and k - 2 does not
    risks = [abort_bound(1000, k, default_threshold(k), 0.1) for k in (20, 40, 80)]
    assert risks == sorted(risks, reverse=True)
    k = min_neighbours(1000, 0.1)
    assert k is not None
    assert abort_bound(1000, k, default_threshold(k), 0.1) <= 1e-6
    assert abort_bound(1000, k - 2, default_threshold(k - 2), 0.1) > 1e-6
    assert min_neighbours(20, 0.3) is None


def test_distributed_dp_sgd_session(tmp_path: Path) -> None:
    """Each client adds its share z·C/√min_survivors; one step a round; audited as such."""
    log = ListLog()
    dp = DPConfig(clip=0.3, noise_multiplier=3.0, level="sample", distributed=True)
    spec = SessionSpec(rounds=3, dp=dp, lr=1.0, batch_size=8, server_lr=0.05)
    assert spec.dp_steps_per_round == 1
    result = simulate(spec, num_clients=6, dropout=0.34, home=tmp_path, log=log)
    report = audit_log(log, home=tmp_path, require_artifacts=True)
    assert len(report.rounds) == 3 and all(r.model_recomputed for r in report.rounds)
    from edgetrust.collab.rounds import ROUND_CONFIG_PREDICATE_TYPE

    cfg = next(
        parse_statement(parse_envelope(e).payload).predicate
        for e in log.entries
        if parse_statement(parse_envelope(e).payload).predicate_type == ROUND_CONFIG_PREDICATE_TYPE
    )
    assert cfg["dp"]["distributed"] is True and cfg["dp"]["stepsPerRound"] == 1
    m = cfg["secagg"]["minSurvivors"]
    assert cfg["dp"]["clientNoiseStd"] == pytest.approx(3.0 * 0.3 / np.sqrt(m))
    q = cfg["dp"]["exampleRate"]
    assert result.rounds[-1].epsilon == pytest.approx(
        epsilon_after(3, noise_multiplier=3.0, sampling_rate=q)
    )
    with pytest.raises(InvalidInputError, match="`secagg`"):
        SessionSpec(secagg=False, dp=dp)
    with pytest.raises(InvalidInputError, match="`distributed`"):
        DPConfig(clip=1.0, noise_multiplier=1.0, distributed=True)
