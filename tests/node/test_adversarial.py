"""Issue 17's attacks replayed against a real node on loopback; each is refused or harmless.

Plus a bounded hypothesis fuzz target over the envelope parser: whatever bytes arrive, the
answer is an edgetrust `Error` (a 4xx at the node), never another exception.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetrust.dsse import sign_envelope
from edgetrust.encoding import JCS_RULE, canonical_json
from edgetrust.errors import Error
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.node.entries import prepare_entry
from edgetrust.profiles import TEXT_RULE, TIME_RULE
from edgetrust.statement import COSIGNER_RULE, IN_TOTO_PAYLOAD_TYPE
from tests.node.conftest import Server, card_envelope, start_server
from tests.test_receipts import single

DEVICE = Identity.from_seed(b"\x02" * 32)


@pytest.fixture
def limited_node(tmp_path: Path) -> Iterator[Server]:
    server = start_server(["node", "serve", "--rate", "1", "--burst", "20"], tmp_path / "node-home")
    try:
        yield server
    finally:
        server.stop()


def _post(server: Server, body: bytes) -> httpx.Response:
    return httpx.post(server.url + "/v1/entries", content=body, timeout=10)


def _size(server: Server) -> int:
    return int(httpx.get(server.url + "/healthz", timeout=10).json()["size"])


def _receipt_statement() -> dict[str, Any]:
    env, _ = single()
    obj: dict[str, Any] = json.loads(env.payload)
    return obj


def _signed(statement: dict[str, Any] | bytes) -> bytes:
    payload = statement if isinstance(statement, bytes) else canonical_json(statement)
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, DEVICE).to_json()


def _refused(resp: httpx.Response, rule: str) -> None:
    assert resp.status_code == 400, resp.text
    assert rule in resp.json()["message"]


def test_every_attack_of_issue_17_is_refused_or_harmless(limited_node: Server) -> None:
    node = limited_node
    st_ = _receipt_statement()
    # 1. duplicate "predicate" members, and extra whitespace
    other = canonical_json({**st_["predicate"], "model": {"digest": "sha256:" + "0" * 64}})
    dup = canonical_json(st_).replace(b'"predicate":', b'"predicate":' + other + b',"predicate":')
    _refused(_post(node, _signed(dup)), JCS_RULE)
    _refused(_post(node, _signed(json.dumps(st_, indent=1).encode())), JCS_RULE)
    # 2. malleable envelopes: variants of one signature make one entry; a stranger's
    # co-signature (the statement names none) is refused
    genuine = _signed(st_)
    first = _post(node, genuine)
    assert first.status_code == 200
    env = json.loads(genuine)
    sig = env["signatures"][0]
    strangers = [
        json.loads(
            sign_envelope(base64.b64decode(env["payload"]), IN_TOTO_PAYLOAD_TYPE, i).to_json()
        )
        for i in (Identity.generate() for _ in range(2))
    ]
    extra = [s["signatures"][0] for s in strangers]
    for sigs in ([sig, extra[0]], [sig, extra[1]], [sig, *extra], [sig, *extra[::-1]]):
        _refused(_post(node, json.dumps({**env, "signatures": sigs}).encode()), COSIGNER_RULE)
    for body in (json.dumps({**env, "signatures": [sig]}), json.dumps(env, indent=2)):
        resp = _post(node, body.encode())
        assert resp.status_code == 200 and resp.json()["index"] == first.json()["index"]
    _refused(_post(node, json.dumps({**env, "signatures": [sig, sig]}).encode()), "key id")
    assert _size(node) == 1
    # 3. replay griefing: replays run out the replayer's budget, not the device's
    statuses = {_post(node, genuine).status_code for _ in range(40)}
    assert 429 in statuses
    fresh = _receipt_statement()
    assert _post(node, _signed(fresh)).status_code == 200
    # 4. lenient times and text
    for when in (
        "9999-12-31T23:59:59+23:59",
        "0001-01-01T00:00:00-23:59",
        "2026-01-01T00:00:00.123456789Z",
    ):
        bad = _receipt_statement()
        bad["predicate"]["issuedAt"] = when
        _refused(_post(node, _signed(bad)), TIME_RULE)
    for name in ("m\x00odel", "model\u202egpj"):
        card = ModelCard(
            digest="sha256:" + "cd" * 32, name=name, version="1", size=1, opset=17,
            inputs=(), outputs=(),
        )  # fmt: skip
        _refused(_post(node, card.sign(DEVICE).to_json()), TEXT_RULE)
    assert _size(node) == 2


def test_aborted_uploads_leave_no_traceback(tmp_path: Path) -> None:
    node = start_server(["node", "serve", "--rate", "0"], tmp_path / "node-home")
    host, port = node.url.removeprefix("http://").split(":")
    try:
        body = card_envelope(DEVICE, 1)
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                head = (
                    f"POST /v1/entries HTTP/1.1\r\nhost: {host}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(body) * 10}\r\n\r\n"
                )
                s.sendall(head.encode() + body[: len(body) // 2])
                time.sleep(0.01)
        assert _post(node, body).status_code == 200  # the node still serves
        time.sleep(0.3)
    finally:
        node.stop()
    stderr = node.proc.stderr.read().decode() if node.proc.stderr else ""
    assert "Traceback" not in stderr
    assert "Exception in ASGI application" not in stderr


ENVELOPE = json.loads(card_envelope(DEVICE, 7))


def _mutants() -> st.SearchStrategy[bytes]:
    raw = canonical_json(ENVELOPE)
    flips = st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)).map(
        lambda t: raw[: t[0]] + bytes([raw[t[0]] ^ t[1]]) + raw[t[0] + 1 :]
    )
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    fields = st.fixed_dictionaries(
        {"payload": st.just(ENVELOPE["payload"]), "payloadType": st.text(max_size=30)},
        optional={"signatures": json_values, "extra": json_values},
    ).map(lambda d: json.dumps(d).encode())
    return flips | fields | st.binary(max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutants())
def test_fuzz_envelope_parser_only_raises_edgetrust_errors(data: bytes) -> None:
    try:
        prepare_entry(data, max_entry=16_000)
    except Error:
        pass
