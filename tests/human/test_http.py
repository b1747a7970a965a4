"""The node's /v1/human endpoints: ceremonies, tasks, verdicts, aggregates; 4xx for bad input."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.human.authenticator import SoftAuthenticator
from edgetrust.human.http import MAX_HUMAN_BODY
from edgetrust.human.policy import HumanRecord
from edgetrust.human.reviewers import b64url_decode, sign_reviewer_statement
from edgetrust.human.tasks import make_task, sign_task
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings

RP, ORIGIN = "edgetrust.local", "https://edgetrust.local"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, Log]]:
    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        with TestClient(
            create_app(log, settings=NodeSettings(rate=0)), raise_server_exceptions=False
        ) as c:
            yield c, log
    finally:
        log.close()


def _ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _err(r: Any, status: int, word: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and "\n" not in body["message"]
    assert word.lower() in body["message"].lower(), body


def _signed(payload_b64: str, me: Identity) -> dict[str, Any]:
    payload = base64.b64decode(payload_b64)
    return sign_envelope(payload, "application/vnd.in-toto+json", me).to_dict()


def register(c: TestClient) -> tuple[Identity, SoftAuthenticator]:
    me, auth = Identity.generate(), SoftAuthenticator()
    opts = _ok(c.post("/v1/human/register/options", json={"did": me.did}))["publicKey"]
    assert opts["rp"]["id"] == RP and opts["authenticatorSelection"]["userVerification"]
    challenge = b64url_decode(opts["challenge"], "challenge")
    got = _ok(
        c.post(
            "/v1/human/register/verify", json={"did": me.did, "credential": auth.create(challenge)}
        )
    )
    done = _ok(c.post("/v1/human/reviewers", json=_signed(got["payload"], me)))
    assert done["did"] == me.did and done["duplicate"] is False
    return me, auth


def add_task(c: TestClient, subject: str = "ab" * 32) -> str:
    task = make_task(subject, "Is the digit right?", ["correct", "wrong"])
    body = _ok(c.post("/v1/human/tasks", json=sign_task(Identity.generate(), task).to_dict()))
    assert body["digest"] == task.digest
    return task.digest


def review(
    c: TestClient, me: Identity, auth: SoftAuthenticator, task: str, answer: str, **kw: Any
) -> Any:
    req = {"task": task, "answer": answer, "confidence": 0.9, "reviewer": me.did}
    opts = _ok(c.post("/v1/human/review/options", json=req))["publicKey"]
    assertion = auth.get(b64url_decode(opts["challenge"], "challenge"), **kw)
    st = _ok(c.post("/v1/human/review/statement", json={**req, "assertion": assertion}))
    return c.post("/v1/human/verdicts", json=_signed(st["payload"], me))


def test_full_flow_and_log_replay(env: tuple[TestClient, Log]) -> None:
    c, log = env
    people = [register(c) for _ in range(4)]
    me, auth = people[0]
    # login: options then verify
    opts = _ok(c.post("/v1/human/login/options", json={"did": me.did}))["publicKey"]
    assert opts["userVerification"] == "required" and len(opts["allowCredentials"]) == 1
    cred = auth.get(b64url_decode(opts["challenge"], "challenge"))
    assert _ok(c.post("/v1/human/login/verify", json={"did": me.did, "credential": cred}))[
        "verified"
    ]
    task = add_task(c)
    for (p, a), answer in zip(people, ["correct", "correct", "correct", "wrong"], strict=True):
        _ok(review(c, p, a, task, answer))
    listed = _ok(c.get("/v1/human/tasks", params={"reviewer": me.did}))["tasks"]
    assert listed[0]["digest"] == task and listed[0]["verdicts"] == 4
    assert listed[0]["mine"] == "correct"
    res = _ok(c.get(f"/v1/human/tasks/{task}/aggregate"))
    assert res["answer"] == "correct" and len(res["reviewers"]) == 4 and res["posterior"] > 0.5
    assert _ok(c.get("/v1/human/aggregate"))["results"][0]["task"] == task
    rep = _ok(c.get(f"/v1/human/reviewers/{me.did}"))
    assert rep["reviews"] == 1 and rep["agreement"] == 1.0
    assert len(_ok(c.get("/v1/human/reviewers"))["reviewers"]) == 4
    # everything is in the log: a replay gives the same answer and refuses nothing
    rec = HumanRecord.from_entries(log.entries(0, log.size()), rp_id=RP, origin=ORIGIN)
    assert rec.refused == [] and rec.results()[task].answer == "correct"


def test_reviewer_payload_is_what_the_library_signs(env: tuple[TestClient, Log]) -> None:
    c, log = env
    me, _ = register(c)
    rec = HumanRecord.from_entries(log.entries(0, log.size()), rp_id=RP, origin=ORIGIN)
    (pk,) = rec.registry.passkeys(me.did)
    assert sign_reviewer_statement(me, pk).to_json() == log.entry(0)


def test_replayed_challenge_is_refused(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    me, auth = register(c)
    opts = _ok(c.post("/v1/human/login/options", json={"did": me.did}))["publicKey"]
    cred = auth.get(b64url_decode(opts["challenge"], "challenge"))
    _ok(c.post("/v1/human/login/verify", json={"did": me.did, "credential": cred}))
    _err(c.post("/v1/human/login/verify", json={"did": me.did, "credential": cred}), 400, "replay")
    # a registration challenge is single use too
    other, auth2 = Identity.generate(), SoftAuthenticator()
    ch = _ok(c.post("/v1/human/register/options", json={"did": other.did}))["publicKey"]
    made = auth2.create(b64url_decode(ch["challenge"], "challenge"))
    _ok(c.post("/v1/human/register/verify", json={"did": other.did, "credential": made}))
    _err(
        c.post("/v1/human/register/verify", json={"did": other.did, "credential": made}),
        400,
        "replay",
    )


def test_wrong_origin_and_rp_id(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    me, auth = Identity.generate(), SoftAuthenticator()
    for kw, word in (({"origin": "https://evil.example"}, "origin"), ({"rp_id": "evil"}, "rp id")):
        ch = _ok(c.post("/v1/human/register/options", json={"did": me.did}))["publicKey"]
        made = auth.create(b64url_decode(ch["challenge"], "challenge"), **kw)  # type: ignore[arg-type]
        _err(
            c.post("/v1/human/register/verify", json={"did": me.did, "credential": made}), 400, word
        )


def test_counter_regression_is_refused(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    me, auth = register(c)
    t1, t2 = add_task(c, "01" * 32), add_task(c, "02" * 32)
    _ok(review(c, me, auth, t1, "correct"))
    _err(review(c, me, auth, t2, "correct", count=1), 400, "counter")


def test_unregistered_did_and_unknown_task(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    task = add_task(c)
    stranger, auth = Identity.generate(), SoftAuthenticator()
    _err(c.post("/v1/human/login/options", json={"did": stranger.did}), 404, "not a registered")
    req = {"task": task, "answer": "correct", "reviewer": stranger.did}
    _err(c.post("/v1/human/review/options", json=req), 404, "not a registered")
    # a fully signed verdict by an unregistered DID is refused at submission too
    me, _a = register(c)
    st = _ok(
        c.post(
            "/v1/human/review/statement",
            json={**req, "confidence": 1.0, "assertion": auth.get(b"\x00" * 32)},
        )
    )
    _err(c.post("/v1/human/verdicts", json=_signed(st["payload"], stranger)), 400, "registered")
    _err(c.get(f"/v1/human/tasks/{'cd' * 32}/aggregate"), 404, "no task")
    req2 = {"task": "ef" * 32, "answer": "correct", "reviewer": me.did}
    _err(c.post("/v1/human/review/options", json=req2), 404, "no task")


def test_duplicate_verdict_first_counts(env: tuple[TestClient, Log]) -> None:
    c, log = env
    me, auth = register(c)
    task = add_task(c)
    first = review(c, me, auth, task, "correct")
    _ok(first)
    _err(review(c, me, auth, task, "wrong"), 409, "first verdict counts")
    size = log.size()
    # the same bytes again: a replay, not logged twice
    entry = log.entry(first.json()["index"])
    _err(c.post("/v1/human/verdicts", content=entry), 409, "replay")
    assert log.size() == size
    assert _ok(c.get(f"/v1/human/tasks/{task}/aggregate"))["answer"] == "correct"


def test_unceremonied_passkey_is_not_logged(env: tuple[TestClient, Log]) -> None:
    c, log = env
    me, auth = Identity.generate(), SoftAuthenticator()
    from edgetrust.human.reviewers import Passkey

    pk = Passkey(me.did, auth.credential_id, auth.cose_key(), RP)
    body = sign_reviewer_statement(me, pk).to_dict()
    _err(c.post("/v1/human/reviewers", json=body), 400, "registration ceremony")
    assert log.size() == 0
    # a ceremony passed but the statement unsigned: not a reviewer yet
    ch = _ok(c.post("/v1/human/register/options", json={"did": me.did}))["publicKey"]
    made = auth.create(b64url_decode(ch["challenge"], "challenge"))
    _ok(c.post("/v1/human/register/verify", json={"did": me.did, "credential": made}))
    _err(c.post("/v1/human/login/options", json={"did": me.did}), 404, "not a registered")


@pytest.mark.parametrize(
    ("path", "body", "status", "word"),
    [
        ("/v1/human/register/options", b"{not json", 400, "not valid json"),
        ("/v1/human/register/options", b"[1]", 400, "json object"),
        ("/v1/human/register/options", b'{"did": "did:web:x"}', 400, "did"),
        ("/v1/human/register/verify", b'{"did": 5}', 400, "did"),
        ("/v1/human/login/verify", b"null", 400, "json object"),
        ("/v1/human/tasks", b'{"payload": 1}', 400, "payload"),
        ("/v1/human/verdicts", b"{}", 400, ""),
        ("/v1/human/review/options", b'{"task": 1, "answer": "x", "reviewer": "x"}', 400, ""),
        ("/v1/human/verdicts", b" " * (MAX_HUMAN_BODY + 1), 413, ""),
        ("/v1/human/register/verify", b"x" * (MAX_HUMAN_BODY + 10), 413, ""),
    ],
)
def test_malformed_and_oversize(
    env: tuple[TestClient, Log], path: str, body: bytes, status: int, word: str
) -> None:
    c, _ = env
    _err(c.post(path, content=body), status, word)


def test_bad_register_credential_shapes(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    me = Identity.generate()
    _err(c.post("/v1/human/register/verify", json={"did": me.did}), 400, "credential")
    junk = {"did": me.did, "credential": {"response": {"clientDataJSON": "!!"}}}
    _err(c.post("/v1/human/register/verify", json=junk), 400, "clientDataJSON")
    _err(c.get("/v1/human/reviewers/did:key:zzz"), 400, "")
    _err(c.get("/v1/human/tasks", params={"reviewer": "nope"}), 400, "")
