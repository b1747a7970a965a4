"""`edgetrust data serve` over real HTTP (uvicorn in a subprocess), and crashes mid-job."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgetrust.data.grant import issue_grant
from edgetrust.data.jobs import FAULT_ENV, DataOwner, make_job
from edgetrust.identity import Identity
from tests.node.conftest import Server, start_server

from .conftest import write_people

MEAN = {"columns": ["age"], "epsilon": 0.5, "bounds": {"age": [0, 100]}}


def setup_owner(tmp_path: Path, researcher: Identity) -> tuple[Path, Any]:
    home = tmp_path / "owner"
    with DataOwner(home, identity="owner") as o:
        card, _ = o.add_dataset(write_people(tmp_path / "people.csv"))
        g = issue_grant(
            o.identity,
            audience=researcher.did,
            dataset=card.digest,
            actions=["stats"],
            expires=int(time.time()) + 3600,
            max_uses=3,
            min_group=5,
        )
    return home, g


def serve(home: Path) -> Server:
    return start_server(["data", "serve", "--identity", "owner"], home)


def usage(server: Server) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(server.url + "/v1/usage").json()["records"]
    return records


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-run", "after-record"])
def test_sigkill_mid_job_loses_or_doubles_nothing(
    tmp_path: Path, researcher: Identity, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    home, g = setup_owner(tmp_path, researcher)
    body = make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN)
    monkeypatch.setenv(FAULT_ENV, point)
    server = serve(home)
    try:
        with pytest.raises(httpx.HTTPError):  # the server dies before it answers
            httpx.post(server.url + "/v1/jobs", json=body, timeout=30)
        assert server.proc.wait(10) == -signal.SIGKILL
    finally:
        server.stop()
    monkeypatch.delenv(FAULT_ENV)
    server = serve(home)
    try:
        # after-run: no result left, so no record; after-record: the record is logged on restart
        assert len(usage(server)) == (1 if point == "after-record" else 0)
        answer = httpx.post(server.url + "/v1/jobs", json=body, timeout=30)
        assert answer.status_code == 200
        again = httpx.post(server.url + "/v1/jobs", json=body, timeout=30)
        assert again.json() == answer.json()
        records = usage(server)
        assert len(records) == 1
        assert records[0]["job"] == answer.json()["job"]
    finally:
        server.stop()


@pytest.mark.slow
def test_http_refusals_are_4xx_and_write_nothing(tmp_path: Path, researcher: Identity) -> None:
    home, g = setup_owner(tmp_path, researcher)
    server = serve(home)
    url = server.url + "/v1/jobs"
    try:
        spec = httpx.get(server.url + "/openapi.json").json()
        assert {"/v1/jobs", "/v1/usage", "/v1/datasets"} <= set(spec["paths"])
        assert httpx.get(server.url + "/v1/datasets").json()["datasets"][0]["count"] == 60
        bad: list[tuple[bytes, int]] = [
            (b"{", 400),
            (b"[]", 400),
            (b'{"job": {}, "grants": []}', 400),
            (json.dumps({"job": 1, "grants": [1], "x": 2}).encode(), 400),
            (b"x" * (17 * 2**20), 413),
        ]
        for raw, status in bad:
            r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == status, raw[:40]
            assert set(r.json()) == {"error", "message"}
        thief = Identity.generate("thief")
        r = httpx.post(
            url, json=make_job(thief, [g], action="stats", algorithm="mean", params=MEAN)
        )
        assert r.status_code == 403
        small_k = {**MEAN, "groupBy": "age"}  # groups of a few people: under k = 5
        r = httpx.post(
            url, json=make_job(researcher, [g], action="stats", algorithm="mean", params=small_k)
        )
        assert r.status_code == 400
        ok = httpx.post(
            url, json=make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN)
        )
        assert ok.status_code == 200
    finally:
        server.stop()
    with DataOwner(home, identity="owner") as o:
        o.revoke(g)
        assert len(o.usage()) == 1
    server = serve(home)
    try:
        r = httpx.post(
            server.url + "/v1/jobs",
            json=make_job(researcher, [g], action="stats", algorithm="mean", params=MEAN),
        )
        assert r.status_code == 403 and "revoked" in r.json()["message"]
        assert len(usage(server)) == 1
    finally:
        server.stop()
