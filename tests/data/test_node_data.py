"""`edgetrust node serve --data`: the node serves POST /v1/jobs and the usage records."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.data.grant import issue_grant, revoke
from edgetrust.data.jobs import DataOwner, make_job
from edgetrust.identity import Identity
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings

from .conftest import write_people

MEAN = {"columns": ["age"], "epsilon": 0.5, "bounds": {"age": [0, 100]}}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, Identity, Any, Path]]:
    researcher = Identity.generate("researcher")
    home = tmp_path / "owner"
    with DataOwner(home) as o:
        card, _ = o.add_dataset(write_people(tmp_path / "people.csv"))
        grant = issue_grant(
            o.identity,
            audience=researcher.did,
            dataset=card.digest,
            actions=["stats"],
            expires=int(time.time()) + 3600,
            max_uses=2,
            eps_per_use=1.0,
            min_group=5,
        )
    app = create_app(settings=NodeSettings(home=home, rate=0, data=True))
    with TestClient(app) as client:
        yield client, researcher, grant, home


def _job(researcher: Identity, grant: Any, **kw: Any) -> dict[str, Any]:
    return make_job(researcher, [grant], action="stats", algorithm="mean", params=kw or MEAN)


def test_node_runs_jobs_and_serves_usage(node: Any) -> None:
    client, researcher, grant, _ = node
    r = client.post("/v1/jobs", json=_job(researcher, grant))
    assert r.status_code == 200, r.text
    assert "age" in r.json()["result"]["groups"][0]
    usage = client.get("/v1/usage").json()["records"]
    assert [u["action"] for u in usage] == ["stats"]
    # the usage record is an entry of the node's own log
    entry = client.get(f"/v1/entries/{usage[0]['index']}")
    assert entry.status_code == 200
    assert client.get("/v1/datasets").json()["datasets"][0]["count"] == 60
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/usage", "/v1/datasets"} <= set(paths)
    assert "403" in paths["/v1/jobs"]["post"]["responses"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b"[]", 400),
        (b'{"job": {}, "grants": []}', 400),
        (json.dumps({"job": 1, "grants": [1], "extra": 2}).encode(), 400),
        (b"x" * (17 * 2**20), 413),
    ],
)
def test_node_refuses_malformed_and_oversized_jobs(node: Any, body: bytes, status: int) -> None:
    client, *_ = node
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert set(r.json()) >= {"error", "message"}
    assert client.get("/v1/usage").json()["records"] == []


def test_node_refuses_grants_with_403_and_spends_nothing(node: Any) -> None:
    client, researcher, grant, _ = node
    stranger = Identity.generate("stranger")
    cases = [
        make_job(stranger, [grant], action="stats", algorithm="mean", params=MEAN),  # audience
        _job(researcher, grant, **{**MEAN, "epsilon": 5.0}),  # over the per-use ε cap
    ]
    for body in cases:
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"] in {"GrantError", "BudgetExhaustedError"}
    assert client.post("/v1/jobs", json=_job(researcher, grant)).status_code == 200
    assert client.post("/v1/jobs", json=_job(researcher, grant)).status_code == 200
    r = client.post("/v1/jobs", json=_job(researcher, grant))  # max uses reached
    assert r.status_code == 403 and "no use left" in r.json()["message"]
    assert len(client.get("/v1/usage").json()["records"]) == 2


def test_node_refuses_a_revoked_grant(node: Any, tmp_path: Path) -> None:
    client, researcher, grant, home = node
    from edgetrust.identity import Keystore

    owner = Keystore(home).load("default")
    r = client.post("/v1/entries", content=revoke(grant, owner).to_json())
    assert r.status_code in (200, 201), r.text
    r = client.post("/v1/jobs", json=_job(researcher, grant))
    assert r.status_code == 403 and "revoked" in r.json()["message"]


def test_node_without_data_has_no_job_route(tmp_path: Path) -> None:
    app = create_app(settings=NodeSettings(home=tmp_path, rate=0))
    with TestClient(app) as client:
        assert client.post("/v1/jobs", json={}).status_code in (404, 405)
        assert "/v1/jobs" not in client.get("/openapi.json").json()["paths"]
