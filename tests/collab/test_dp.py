from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from edgetrust.collab.dp import (
    DPConfig,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    add_client_noise,
    client_noise_std,
    clip_update,
    epsilon_after,
    epsilon_after_rdp,
)
from edgetrust.errors import InvalidInputError, ResourceLimitError


def test_known_configuration_z1_q1_5_rounds() -> None:
    assert epsilon_after(5, noise_multiplier=1.0, delta=1e-5) == pytest.approx(11.5, abs=0.05)


@pytest.mark.parametrize(("z", "q", "rounds"), [(1.0, 1.0, 5), (1.3, 1.0, 10), (1.1, 0.1, 50)])
def test_matches_dp_accounting_directly(z: float, q: float, rounds: int) -> None:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    pld = pld_privacy_accountant.PLDAccountant()
    pld.compose(event)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event)
    ours = epsilon_after(rounds, noise_multiplier=z, sampling_rate=q)
    assert ours == pytest.approx(pld.get_epsilon(1e-5), rel=1e-3)
    ours_rdp = epsilon_after_rdp(rounds, noise_multiplier=z, sampling_rate=q)
    assert ours_rdp == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-6)
    assert ours <= ours_rdp  # PLD is the tighter accountant


def test_no_noise_is_infinite_epsilon() -> None:
    assert epsilon_after(1, noise_multiplier=0.0) == math.inf
    assert epsilon_after(0, noise_multiplier=0.0) == 0.0


def test_accountant_refuses_round_over_budget() -> None:
    acc = PrivacyAccountant(DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=8.0))
    fits = acc.max_rounds()
    assert (
        epsilon_after(fits, noise_multiplier=1.0)
        <= 8.0
        < epsilon_after(fits + 1, noise_multiplier=1.0)
    )
    for _ in range(fits):
        acc.check_next_round()
        acc.record_round()
    with pytest.raises(PrivacyBudgetExceededError) as info:
        acc.check_next_round()
    assert isinstance(info.value, ResourceLimitError)
    assert info.value.limit == 8.0 and info.value.epsilon > 8.0
    assert acc.rounds_done == fits  # the refused round was not counted


def test_budget_too_small_for_one_round() -> None:
    acc = PrivacyAccountant(DPConfig(clip=1.0, noise_multiplier=0.5, epsilon_max=1.0))
    assert acc.max_rounds() == 0
    with pytest.raises(PrivacyBudgetExceededError, match="round 1"):
        acc.check_next_round()


def test_split_noise_sums_to_target_std() -> None:
    rng = np.random.default_rng(0)
    t, z, c = 9, 1.2, 0.5
    std = client_noise_std(clip=c, noise_multiplier=z, min_survivors=t)
    total = sum(add_client_noise(np.zeros(50_000), std=std, rng=rng) for _ in range(t))
    assert np.std(total) == pytest.approx(z * c, rel=0.02)


def test_clip_update() -> None:
    u, norm = clip_update(np.array([3.0, 4.0]), 1.0)
    assert norm == 5.0 and np.allclose(u, [0.6, 0.8])
    v, _ = clip_update(np.array([0.3, 0.4]), 1.0)
    assert np.allclose(v, [0.3, 0.4])
    with pytest.raises(InvalidInputError, match="NaN"):
        clip_update(np.array([np.nan]), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"clip": 0.0, "noise_multiplier": 1.0}, "`clip`"),
        ({"clip": 1.0, "noise_multiplier": -1.0}, "`noise_multiplier`"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.5}, "`delta`"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "epsilon_max": 0}, "`epsilon_max`"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "sampling_rate": 2.0}, "`sampling_rate`"),
        ({"clip": float("inf"), "noise_multiplier": 1.0}, "`clip`"),
    ],
)
def test_config_validation(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        DPConfig(**kwargs)  # type: ignore[arg-type]
