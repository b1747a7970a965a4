"""Issue 17: canonical payloads, one logged form per envelope, replays charged to the replayer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.encoding import JCS_RULE, canonical_json
from edgetrust.errors import ProfileError
from edgetrust.identity import Identity
from edgetrust.log.service import Log
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
