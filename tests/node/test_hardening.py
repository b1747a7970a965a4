"""Issue 17: canonical payloads, one logged form per envelope, replays charged to the replayer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.encoding import JCS_RULE, canonical_json
from edgetrust.errors import ProfileError
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.models import ModelCard
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.profiles import TEXT_RULE, TIME_RULE, check_text, check_time
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, parse_statement
from tests.node.conftest import card_envelope


def _card_statement(publisher: Identity) -> dict[str, Any]:
    env = json.loads(card_envelope(publisher, 1))
    obj: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return obj


def _duplicate_predicate(statement: dict[str, Any]) -> bytes:
    """The statement with a first, different ``predicate`` member before the real one."""
    real = canonical_json(statement)
    other = canonical_json({**statement["predicate"], "name": "other"})
    return real.replace(b'"predicate":', b'"predicate":' + other + b',"predicate":', 1)


def test_parse_statement_refuses_duplicate_keys_and_whitespace(publisher: Identity) -> None:
    st = _card_statement(publisher)
    assert parse_statement(canonical_json(st)).predicate_type == st["predicateType"]
    with pytest.raises(ProfileError, match="duplicate key 'predicate'") as err:
        parse_statement(_duplicate_predicate(st))
    assert err.value.rule == JCS_RULE
    with pytest.raises(ProfileError):
        parse_statement(json.dumps(st).encode())


@pytest.mark.parametrize("kind", ["duplicate", "whitespace"])
def test_node_refuses_non_canonical_payload_with_400(
    node: TestClient, log: Log, publisher: Identity, kind: str
) -> None:
    st = _card_statement(publisher)
    payload = _duplicate_predicate(st) if kind == "duplicate" else json.dumps(st).encode()
    env = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, publisher).to_json()
    resp = node.post("/v1/entries", content=env)
    assert resp.status_code == 400
    assert JCS_RULE in resp.json()["message"]
    assert "\n" not in resp.json()["message"]
    assert log.size() == 0


def _with_signatures(env: bytes, sigs: list[dict[str, str]]) -> bytes:
    obj = json.loads(env)
    return json.dumps({**obj, "signatures": sigs}).encode()


def test_signature_list_variants_map_to_one_entry(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    env = card_envelope(publisher, 1)
    sig = json.loads(env)["signatures"][0]
    first = node.post("/v1/entries", content=env)
    assert first.status_code == 200
    others = [Identity.generate() for _ in range(3)]
    payload = base64.b64decode(json.loads(env)["payload"])
    cosigs = [json.loads(sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, o).to_json()) for o in others]
    extra = [c["signatures"][0] for c in cosigs]
    variants = [
        _with_signatures(env, [sig, extra[0]]),
        _with_signatures(env, [sig, extra[1], extra[0]]),
        _with_signatures(env, [sig, extra[0], extra[1]]),
        _with_signatures(env, [sig, extra[2]]),
        env,
    ]
    for v in variants:
        resp = node.post("/v1/entries", content=v)
        assert resp.status_code == 200, resp.text
        assert resp.json()["index"] == first.json()["index"]
    assert log.size() == 1
    resp = node.post("/v1/entries", content=_with_signatures(env, [sig, sig]))
    assert resp.status_code == 400
    assert "one signature per key id" in resp.json()["message"]
    assert log.size() == 1


def test_replays_are_charged_to_the_replayer_not_the_issuer(log: Log, publisher: Identity) -> None:
    app = create_app(log, settings=NodeSettings(rate=0.001, burst=3))
    with TestClient(app, raise_server_exceptions=False) as client:
        env = card_envelope(publisher, 0)
        assert client.post("/v1/entries", content=env).status_code == 200
        statuses = [client.post("/v1/entries", content=env).status_code for _ in range(10)]
        assert statuses[:3] == [200, 200, 200]
        assert set(statuses[3:]) == {429}
        # the issuer's own budget is untouched by the replays: two more new entries pass
        for i in (1, 2):
            assert (
                client.post("/v1/entries", content=card_envelope(publisher, i)).status_code == 200
            )
    assert log.size() == 3


@pytest.mark.parametrize(
    "issued_at",
    [
        "9999-12-31T23:59:59+23:59",
        "0001-01-01T00:00:00-23:59",
        "2026-01-01T00:00:00.123456789Z",
        "2026-01-01T00:00:00+00:00",
        "2999-01-01T00:00:00Z",
    ],
)
def test_time_profile_refuses_the_issue_times(issued_at: str) -> None:
    with pytest.raises(ProfileError) as err:
        check_time(issued_at, "issuedAt")
    assert err.value.rule == TIME_RULE


def test_time_profile_accepts_utc_microseconds_and_the_skew() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_time("2026-01-01T00:04:59.999999Z", "t", now=now).microsecond == 999999
    with pytest.raises(ProfileError):
        check_time("2026-01-01T00:05:01Z", "t", now=now)


@pytest.mark.parametrize("name", ["m\x00", "safe\u202egpj.exe", "cafe\u0301", "a\u2066b"])
def test_node_refuses_names_outside_the_text_profile(
    node: TestClient, log: Log, publisher: Identity, name: str
) -> None:
    card = ModelCard(
        digest="sha256:" + "ab" * 32,
        name=name,
        version="1",
        size=1,
        opset=17,
        inputs=(),
        outputs=(),
    )
    resp = node.post("/v1/entries", content=card.sign(publisher).to_json())
    assert resp.status_code == 400
    assert TEXT_RULE in resp.json()["message"]
    assert log.size() == 0
    assert check_text("café", "name") == "café"
