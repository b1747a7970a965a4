"""``train`` jobs: one local training step under a ``train`` grant, answered as a DP update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.data.grant import GrantError, issue_grant
from edgetrust.data.jobs import DataOwner, make_job
from edgetrust.data.ledger import BudgetExhaustedError
from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, ResourceLimitError
from edgetrust.identity import Identity


def _mlp(n_in: int = 64, hidden: int = 8) -> bytes:
    from edgetrust.collab.training import MLP
    from edgetrust.zoo import mlp_to_onnx

    params = MLP((n_in, hidden, 10)).init(0)
    w = [np.asarray(p, np.float32) for p in params[0::2]]
    b = [np.asarray(p, np.float32) for p in params[1::2]]
    return mlp_to_onnx(w, b, name="t").SerializeToString()


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    from edgetrust.zoo import load_digits_split

    x, _, y, _ = load_digits_split()
    owner = DataOwner(tmp_path / "owner")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x[:200], label=y[:200])
    card, _ = owner.add_dataset(npz)
    researcher = Identity.generate("r")
    model = _mlp()
    grant = issue_grant(
        owner.identity,
        audience=researcher.did,
        dataset=card.digest,
        actions=["train"],
        algorithms=[digest_bytes(model)],
        expires=int(time.time()) + 3600,
        eps_per_use=2.0,
        eps_total=3.0,
    )
    yield owner, researcher, grant, model
    owner.close()


def _job(setup: Any, model: bytes | None = None, **params: Any) -> dict[str, Any]:
    owner, researcher, grant, m = setup
    body = make_job(
        researcher,
        [grant],
        action="train",
        algorithm=digest_bytes(m),
        params={"noiseMultiplier": 3.0, **params},
        model=model,
    )
    return owner.run_job(body)


def test_train_job_answers_a_clipped_noised_update(setup: Any) -> None:
    owner, *_, model = setup
    answer = _job(setup, model)
    result = answer["result"]
    assert result["update"]["length"] == len(result["update"]["values"]) == 64 * 8 + 8 + 8 * 10 + 10
    assert result["bounds"]["clip"] == 1.0 and result["bounds"]["noiseStd"] == 3.0
    assert 0 < result["bounds"]["epsilon"] < 2.0
    ((_, rec, _),) = owner.usage()
    assert rec.action == "train" and rec.epsilon == pytest.approx(result["bounds"]["epsilon"])


def test_train_job_refusals_spend_nothing(setup: Any) -> None:
    owner, researcher, grant, model = setup
    with pytest.raises(BudgetExhaustedError, match="no noise"):
        _job(setup, model, noiseMultiplier=0.0)
    with pytest.raises(BudgetExhaustedError, match="per-use"):
        _job(setup, model, noiseMultiplier=1.0)  # one round at z = 1 is ε > 2
    with pytest.raises(InvalidInputError):
        _job(setup, model, epochs=0)
    with pytest.raises(InvalidInputError):
        _job(setup, model, features="nope")
    with pytest.raises(InvalidInputError):
        _job(setup, model, unknown=1)
    other = _mlp(hidden=4)
    body = make_job(researcher, [grant], action="train", algorithm=digest_bytes(other), model=other)
    with pytest.raises(GrantError, match="algorithm"):
        owner.run_job(body)
    assert owner.usage() == []
    assert owner.ledger.used(digest_bytes(grant.payload)) == (0, 0.0)


def test_train_job_budget_runs_out(setup: Any) -> None:
    _job(setup, _mlp())
    _job(setup)
    with pytest.raises(BudgetExhaustedError, match="exhausted"):
        _job(setup)


def test_train_update_over_the_output_bound_is_refused(tmp_path: Path) -> None:
    owner = DataOwner(tmp_path / "o2")
    npz = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x=rng.normal(size=(20, 64)), label=rng.integers(0, 10, 20))
    card, _ = owner.add_dataset(npz)
    r = Identity.generate("r")
    model = _mlp(hidden=64)  # ~4,800 parameters: an update far larger than 20 records
    g = issue_grant(
        owner.identity,
        audience=r.did,
        dataset=card.digest,
        actions=["train"],
        expires=int(time.time()) + 60,
    )
    body = make_job(r, [g], action="train", algorithm=digest_bytes(model), model=model)
    with pytest.raises(ResourceLimitError):
        owner.run_job(body)
    assert owner.usage() == []
    owner.close()


def test_train_job_over_http(setup: Any) -> None:
    from fastapi.testclient import TestClient

    from edgetrust.data.http import create_data_app

    owner, researcher, grant, model = setup
    with TestClient(create_data_app(owner)) as client:
        body = make_job(
            researcher,
            [grant],
            action="train",
            algorithm=digest_bytes(model),
            params={"noiseMultiplier": 0.0},
            model=model,
        )
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 403 and r.json()["error"] == "BudgetExhaustedError"
        body = make_job(
            researcher,
            [grant],
            action="train",
            algorithm=digest_bytes(model),
            params={"epochs": "x"},
            model=model,
        )
        assert client.post("/v1/jobs", json=body).status_code == 400
        body = make_job(
            researcher,
            [grant],
            action="train",
            algorithm=digest_bytes(model),
            params={"noiseMultiplier": 3.0},
            model=model,
        )
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 200 and r.json()["result"]["updateDigest"].startswith("sha256:")
