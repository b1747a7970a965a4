"""Issue 17: canonical payloads, one logged form per envelope, replays charged to the replayer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import edgetrust.statement as registry
from edgetrust.capture.record import record
from edgetrust.capture.sources import eeg_like, numpy_sensor
from edgetrust.capture.stream import CaptureDevice
from edgetrust.dsse import sign_envelope
from edgetrust.encoding import JCS_RULE, canonical_json
from edgetrust.errors import ProfileError
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.models import ModelCard
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.profiles import TEXT_RULE, TIME_RULE, check_text, check_time
from edgetrust.statement import (
    COSIGNER_RULE,
    IN_TOTO_PAYLOAD_TYPE,
    MAX_COSIGNERS,
    Statement,
    named_cosigners,
    parse_statement,
    register_predicate_type,
)
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
    # the same envelope in another JSON form is the same entry
    for v in (json.dumps(json.loads(env), indent=2).encode(), _with_signatures(env, [sig]), env):
        resp = node.post("/v1/entries", content=v)
        assert resp.status_code == 200, resp.text
        assert resp.json()["index"] == first.json()["index"]
    assert log.size() == 1
    resp = node.post("/v1/entries", content=_with_signatures(env, [sig, sig]))
    assert resp.status_code == 400
    assert "one signature per key id" in resp.json()["message"]
    assert log.size() == 1


def test_an_attacker_added_co_signer_is_refused(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    """A model card names no co-signer: anyone's extra signature is refused, not a new entry."""
    env = card_envelope(publisher, 1)
    sig = json.loads(env)["signatures"][0]
    assert node.post("/v1/entries", content=env).status_code == 200
    payload = base64.b64decode(json.loads(env)["payload"])
    attackers = [Identity.generate() for _ in range(2)]
    extra = [
        json.loads(sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, a).to_json()) for a in attackers
    ]
    for sigs in ([sig, extra[0]["signatures"][0]], [sig, *(e["signatures"][0] for e in extra)]):
        resp = node.post("/v1/entries", content=_with_signatures(env, sigs))
        assert resp.status_code == 400, resp.text
        assert COSIGNER_RULE in resp.json()["message"]
        assert "\n" not in resp.json()["message"]
    resp = node.post("/v1/entries:batch", content=json.dumps({"entries": [json.loads(
        _with_signatures(env, [sig, extra[1]["signatures"][0]]))]}))  # fmt: skip
    assert resp.status_code == 400
    assert log.size() == 1


def _capture_root(wearer: Identity) -> bytes:
    device = CaptureDevice(Identity.generate(), numpy_sensor(4))
    session = record(device, [eeg_like(1.0, 4)], seal_every=2, wearer=wearer)
    assert session.statement is not None
    return session.statement.to_json()


def test_capture_root_is_logged_with_exactly_its_named_wearer(node: TestClient, log: Log) -> None:
    wearer, intruder = Identity.generate(), Identity.generate()
    env = json.loads(_capture_root(wearer))
    device_sig, wearer_sig = env["signatures"]
    payload = base64.b64decode(env["payload"])
    intruder_sig = json.loads(sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, intruder).to_json())[
        "signatures"
    ][0]
    ok = node.post("/v1/entries", content=json.dumps(env))
    assert ok.status_code == 200, ok.text
    for sigs in ([device_sig], [device_sig, wearer_sig, intruder_sig], [device_sig, intruder_sig]):
        resp = node.post("/v1/entries", content=json.dumps({**env, "signatures": sigs}))
        assert resp.status_code == 400, resp.text
        assert COSIGNER_RULE in resp.json()["message"]
    assert log.size() == 1


def test_variants_map_to_the_logged_entry_after_a_restart(tmp_path: Path) -> None:
    """No node state is needed: a new app over the same store finds every accepted variant."""
    wearer = Identity.generate()
    env = json.loads(_capture_root(wearer))
    device_sig, wearer_sig = env["signatures"]
    home = tmp_path / "log"
    with Log.open(home, max_delay=0.002) as log:
        with TestClient(create_app(log, settings=NodeSettings(rate=0))) as client:
            first = client.post("/v1/entries", content=json.dumps(env)).json()["index"]
    with Log.open(home, max_delay=0.002) as log:
        with TestClient(
            create_app(log, settings=NodeSettings(rate=0)), raise_server_exceptions=False
        ) as client:
            again = client.post("/v1/entries", content=json.dumps(env, indent=1))
            assert again.status_code == 200 and again.json()["index"] == first
            batch = client.post("/v1/entries:batch", content=json.dumps({"entries": [env]}))
            assert batch.status_code == 200 and batch.json()["entries"][0]["index"] == first
            alone = client.post(
                "/v1/entries", content=json.dumps({**env, "signatures": [device_sig]})
            )
            assert alone.status_code == 400 and COSIGNER_RULE in alone.json()["message"]
            swapped = client.post(
                "/v1/entries", content=json.dumps({**env, "signatures": [wearer_sig, device_sig]})
            )
            assert swapped.status_code == 400  # the device signs a capture root first
        assert log.size() == 1


def test_named_cosigners_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # a registry of its own for the test type, so the global one is left as it was
    monkeypatch.setattr(registry, "_VALIDATORS", dict(registry._VALIDATORS))
    monkeypatch.setattr(registry, "_COSIGNERS", dict(registry._COSIGNERS))

    def hook(statement: Statement) -> frozenset[str]:
        return frozenset(Identity.generate().did for _ in range(MAX_COSIGNERS + 1))

    uri = "https://edgetrust.dev/test-many-cosigners/v1"
    register_predicate_type(uri, lambda st, signer: None, cosigners=hook)
    st = Statement((), uri, {})
    with pytest.raises(ProfileError) as err:
        named_cosigners(st, "did:key:issuer")
    assert err.value.rule == COSIGNER_RULE
    register_predicate_type(uri, lambda st, signer: None)
    assert named_cosigners(st, "did:key:issuer") == frozenset()


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


def test_one_batch_with_a_payload_twice_logs_it_once(node: TestClient, log: Log) -> None:
    """Two first submissions of one payload are the same bytes: the store logs them once."""
    env = json.loads(_capture_root(Identity.generate()))
    resp = node.post("/v1/entries:batch", content=json.dumps({"entries": [env, dict(env)]}))
    assert resp.status_code == 200, resp.text
    assert len({e["index"] for e in resp.json()["entries"]}) == 1
    assert log.size() == 1
