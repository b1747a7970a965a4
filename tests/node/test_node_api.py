"""The node's HTTP API in-process: writes, reads, tiles, and every kind of bad request."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import parse_envelope, sign_envelope
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.client import parse_bundle
from edgetrust.log.merkle import leaf_hash, verify_consistency, verify_inclusion
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement
from tests.node.conftest import card_envelope


def _b64s(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def _check_submitted(log: Log, answer: dict[str, Any], envelope: bytes) -> None:
    cp = verify_checkpoint(answer["checkpoint"].encode(), log.verifier_key)
    entry = parse_envelope(envelope).to_json()
    verify_inclusion(
        leaf_hash(entry), answer["index"], cp.size, _b64s(answer["inclusion_proof"]), cp.root
    )


def _state(log: Log) -> tuple[int, bytes]:
    return log.size(), log.checkpoint()


def _assert_error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "message"} and body["message"]
    return dict(body)


def test_submit_one_returns_verifiable_proof(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    env = card_envelope(publisher, 0)
    resp = node.post("/v1/entries", content=env)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["index"] == 0
    _check_submitted(log, answer, env)


def test_submission_is_canonicalised_and_deduplicated(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    env = card_envelope(publisher, 1)
    first = node.post("/v1/entries", content=env).json()
    # The same envelope with different whitespace and key order is the same entry.
    pretty = json.dumps(json.loads(env), indent=3).encode()
    second = node.post("/v1/entries", content=pretty).json()
    assert first["index"] == second["index"] == 0
    assert log.size() == 1
    assert log.entry(0) == parse_envelope(env).to_json()


def test_batch_appends_all_in_order(node: TestClient, log: Log, publisher: Identity) -> None:
    envs = [card_envelope(publisher, i) for i in range(10)]
    body = json.dumps({"entries": [json.loads(e) for e in envs]})
    resp = node.post("/v1/entries:batch", content=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert [e["index"] for e in answer["entries"]] == list(range(10))
    for item, env in zip(answer["entries"], envs, strict=True):
        _check_submitted(log, {**item, "checkpoint": answer["checkpoint"]}, env)
    without = node.post("/v1/entries:batch?proofs=false", content=body).json()
    assert [e["index"] for e in without["entries"]] == list(range(10))
    assert "inclusion_proof" not in without["entries"][0]


def _tampered(env: bytes) -> bytes:
    obj = json.loads(env)
    payload = bytearray(base64.b64decode(obj["payload"]))
    payload[-3] ^= 1
    obj["payload"] = base64.b64encode(bytes(payload)).decode()
    return json.dumps(obj).encode()


def _unknown_type(identity: Identity) -> bytes:
    payload = encode_statement(
        [Subject("x", "ab" * 32)], "https://edgetrust.dev/no-such-type/v1", {"a": 1}
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, identity).to_json()


BAD_BODIES: dict[str, Any] = {
    "empty": b"",
    "not json": b"{not json",
    "json array": b"[]",
    "nan": b'{"payload": NaN}',
    "missing fields": b'{"payload": "AA=="}',
    "unsigned": b'{"payload": "e30=", "payloadType": "application/vnd.in-toto+json", '
    b'"signatures": []}',
    "bad base64": b'{"payload": "%%%", "payloadType": "x", "signatures": [{"keyid": "k", '
    b'"sig": "AA=="}]}',
    "bad keyid": b'{"payload": "e30=", "payloadType": "application/vnd.in-toto+json", '
    b'"signatures": [{"keyid": "did:key:zzz", "sig": "AA=="}]}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "invalid utf-8": b'{"payload": "\xff\xfe"}',
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_submissions_are_400_and_change_nothing(
    node: TestClient, log: Log, publisher: Identity, name: str
) -> None:
    node.post("/v1/entries", content=card_envelope(publisher, 0))
    before = _state(log)
    _assert_error(node.post("/v1/entries", content=BAD_BODIES[name]), 400)
    assert _state(log) == before


def test_tampered_unknown_and_wrong_signer_are_refused(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    before = _state(log)
    body = _assert_error(
        node.post("/v1/entries", content=_tampered(card_envelope(publisher, 3))), 400
    )
    assert body["error"] == "VerificationError"
    body = _assert_error(node.post("/v1/entries", content=_unknown_type(publisher)), 400)
    assert body["error"] == "UnsupportedError"
    assert _state(log) == before


def test_batch_with_one_bad_entry_logs_nothing(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    envs = [json.loads(card_envelope(publisher, i)) for i in range(5)]
    envs[3] = json.loads(_tampered(card_envelope(publisher, 3)))
    before = _state(log)
    body = _assert_error(node.post("/v1/entries:batch", content=json.dumps({"entries": envs})), 400)
    assert "entry 3" in body["message"]
    assert _state(log) == before
    for bad in (b"{}", b'{"entries": []}', b'{"entries": {}}', b'{"entries": [1]}', b"[]"):
        _assert_error(node.post("/v1/entries:batch", content=bad), 400)
    assert _state(log) == before


def test_body_over_limit_is_413(log: Log, publisher: Identity) -> None:
    app = create_app(log, settings=NodeSettings(rate=0, max_body=2048))
    with TestClient(app) as client:
        big = b" " * 4096 + card_envelope(publisher, 0)
        _assert_error(client.post("/v1/entries", content=big), 413)

        def chunks() -> Any:
            yield big[:1000]
            yield big[1000:]

        # Without a content-length header (chunked), the stream is counted.
        _assert_error(client.post("/v1/entries", content=chunks()), 413)
        _assert_error(client.post("/v1/entries:batch", content=b"[" + big), 413)
    assert log.size() == 0


def test_entry_over_tile_limit_is_refused(log: Log, publisher: Identity) -> None:
    app = create_app(log, settings=NodeSettings(rate=0, max_entry=500))
    with TestClient(app) as client:
        body = _assert_error(client.post("/v1/entries", content=card_envelope(publisher, 0)), 400)
        assert "entry limit" in body["message"]
    assert log.size() == 0


def test_rate_limit_is_per_identity_429(log: Log, publisher: Identity) -> None:
    other = Identity.from_seed(b"\x08" * 32)
    app = create_app(log, settings=NodeSettings(rate=0.001, burst=2))
    with TestClient(app) as client:
        assert client.post("/v1/entries", content=card_envelope(publisher, 0)).status_code == 200
        assert client.post("/v1/entries", content=card_envelope(publisher, 1)).status_code == 200
        resp = client.post("/v1/entries", content=card_envelope(publisher, 2))
        _assert_error(resp, 429)
        assert resp.headers["retry-after"] == "1"
        # Another identity has its own bucket; a batch over the bucket is refused whole.
        assert client.post("/v1/entries", content=card_envelope(other, 0)).status_code == 200
        batch = {"entries": [json.loads(card_envelope(other, i)) for i in range(1, 4)]}
        _assert_error(client.post("/v1/entries:batch", content=json.dumps(batch)), 429)
        # Someone else's key in an unsigned request costs them nothing.
        _assert_error(client.post("/v1/entries", content=_tampered(card_envelope(other, 9))), 400)
        assert client.post("/v1/entries", content=card_envelope(other, 1)).status_code == 200
    assert log.size() == 4


def test_get_entry_and_consistency(node: TestClient, log: Log, publisher: Identity) -> None:
    envs = [card_envelope(publisher, i) for i in range(7)]
    old_note = None
    for i, env in enumerate(envs):
        node.post("/v1/entries", content=env)
        if i == 2:
            old_note = node.get("/checkpoint").content
    assert old_note is not None
    got = node.get("/v1/entries/4").json()
    cp = verify_checkpoint(got["checkpoint"].encode(), log.verifier_key)
    data = base64.b64decode(got["entry"])
    assert data == parse_envelope(envs[4]).to_json()
    verify_inclusion(leaf_hash(data), 4, cp.size, _b64s(got["inclusion_proof"]), cp.root)

    old = verify_checkpoint(old_note, log.verifier_key)
    proof = node.get(f"/v1/proofs/consistency?from={old.size}&to={cp.size}").json()
    verify_consistency(old.size, cp.size, _b64s(proof["proof"]), old.root, cp.root)
    assert node.get("/v1/proofs/consistency?from=0&to=7").json()["proof"] == []
    assert node.get("/v1/proofs/consistency?from=7&to=7").json()["proof"] == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/entries/-1", 400),
        ("/v1/entries/abc", 400),
        ("/v1/entries/99", 404),
        ("/v1/entries/99999999999999999999999", 400),
        ("/v1/proofs/consistency?from=3&to=2", 400),
        ("/v1/proofs/consistency?from=1&to=99", 404),
        ("/v1/proofs/consistency?from=-1&to=2", 400),
        ("/v1/proofs/consistency?to=2", 400),
        ("/v1/proofs/consistency?from=x&to=2", 400),
        ("/tile/0/001", 404),
        ("/tile/0/000", 404),
        ("/tile/0/000.p/4", 404),
        ("/tile/1/000.p/1", 404),
        ("/tile/entries/000.p/4", 404),
        ("/tile/0/1", 400),
        ("/tile/00/000.p/1", 400),
        ("/tile/0/x000/000.p/1", 400),
        ("/tile/0/000.p/0", 400),
        ("/tile/0/000.p/256", 400),
        ("/tile/0/000.p/01", 400),
        ("/tile/64/000", 400),
        ("/tile/-1/000", 400),
        ("/tile/entries", 400),
        ("/tile/", 400),
        ("/tile/0/x1000/000", 400),
        ("/nope", 404),
    ],
)
def test_bad_reads_are_4xx_json(
    node: TestClient, log: Log, publisher: Identity, path: str, status: int
) -> None:
    for i in range(3):
        node.post("/v1/entries", content=card_envelope(publisher, i))
    before = _state(log)
    _assert_error(node.get(path), status)
    assert _state(log) == before


def test_wrong_method_is_json_405(node: TestClient) -> None:
    _assert_error(node.delete("/checkpoint"), 405)
    _assert_error(node.get("/v1/entries:batch"), 405)


def test_tiles_and_bundles_match_the_tree(node: TestClient, log: Log, publisher: Identity) -> None:
    envs = [json.loads(card_envelope(publisher, i)) for i in range(300)]
    node.post("/v1/entries:batch?proofs=false", content=json.dumps({"entries": envs}))
    resp = node.get("/checkpoint")
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert verify_checkpoint(resp.content, log.verifier_key).size == 300
    full = node.get("/tile/0/000")
    assert full.headers["content-type"] == "application/octet-stream"
    assert "immutable" in full.headers["cache-control"]
    assert full.content == b"".join(log.store.leaf_hash(i) for i in range(256))
    partial = node.get("/tile/0/001.p/44").content
    assert partial == b"".join(log.store.leaf_hash(i) for i in range(256, 300))
    assert node.get("/tile/0/001.p/10").content == partial[: 32 * 10]
    level1 = node.get("/tile/1/000.p/1").content
    assert level1 == log.root(256)
    bundle = parse_bundle(node.get("/tile/entries/001.p/44").content, 44)
    assert bundle == [log.entry(i) for i in range(256, 300)]
    assert len(parse_bundle(node.get("/tile/entries/000").content, 256)) == 256
    gz = node.get("/tile/entries/000", headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert int(gz.headers["content-length"]) < len(gz.content) / 2  # decoded by httpx
    plain = node.get("/tile/entries/000", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == gz.content


def test_meta_endpoints(node: TestClient, log: Log) -> None:
    assert node.get("/healthz").json() == {"status": "ok", "size": 0}
    info = node.get("/v1/log").json()
    assert info["vkey"] == log.verifier_key and info["size"] == 0
    spec = node.get("/openapi.json").json()
    for path in ("/checkpoint", "/v1/entries", "/v1/entries:batch", "/v1/entries/{index}"):
        assert path in spec["paths"]


def test_verify_workers_give_the_same_answers(log: Log, publisher: Identity) -> None:
    app = create_app(log, settings=NodeSettings(rate=0, verify_workers=2))
    with TestClient(app) as client:
        env = card_envelope(publisher, 0)
        answer = client.post("/v1/entries", content=env).json()
        _check_submitted(log, answer, env)
        body = _assert_error(client.post("/v1/entries", content=_tampered(env)), 400)
        assert body["error"] == "VerificationError"
        body = _assert_error(client.post("/v1/entries", content=_unknown_type(publisher)), 400)
        assert body["error"] == "UnsupportedError"
        items = [json.loads(card_envelope(publisher, i)) for i in range(1, 71)]
        answer = client.post("/v1/entries:batch", content=json.dumps({"entries": items})).json()
        assert [e["index"] for e in answer["entries"]] == list(range(1, 71))
        before = _state(log)
        items = [json.loads(card_envelope(publisher, i)) for i in range(100, 170)]
        items[65] = json.loads(_tampered(card_envelope(publisher, 165)))
        body = _assert_error(
            client.post("/v1/entries:batch", content=json.dumps({"entries": items})), 400
        )
        assert body["message"].startswith("entry 65:")
        assert _state(log) == before


def test_concurrent_submissions_are_grouped_and_each_proven(
    node: TestClient, log: Log, publisher: Identity
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    envs = [card_envelope(publisher, i) for i in range(60)]
    envs += envs[:5]  # duplicates inside the same burst get the first copy's index
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda e: node.post("/v1/entries", content=e).json(), envs))
    for answer, env in zip(answers, envs, strict=True):
        _check_submitted(log, answer, env)
    assert sorted({a["index"] for a in answers}) == list(range(60))
    assert [a["index"] for a in answers[60:]] == [a["index"] for a in answers[:5]]


def test_an_internal_failure_is_a_json_500_not_a_traceback(
    node: TestClient, log: Log, publisher: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.post("/v1/entries", content=card_envelope(publisher, 0))

    def broken(index: int) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(log, "entry", broken)
    resp = node.get("/v1/entries/0")
    assert resp.status_code == 500
    assert resp.json() == {
        "error": "InternalError",
        "message": "the node failed to handle this request",
    }


def test_on_append_hook_runs_after_commits_and_cannot_refuse(log: Log, publisher: Identity) -> None:
    seen: list[int] = []

    def hook() -> None:
        seen.append(log.size())
        if len(seen) == 2:
            raise RuntimeError("chain is down")

    app = create_app(log, settings=NodeSettings(rate=0), on_append=hook)
    with TestClient(app) as client:
        assert client.post("/v1/entries", content=card_envelope(publisher, 0)).status_code == 200
        batch = {"entries": [json.loads(card_envelope(publisher, i)) for i in range(1, 4)]}
        assert client.post("/v1/entries:batch", content=json.dumps(batch)).status_code == 200
        assert client.post("/v1/entries", content=card_envelope(publisher, 9)).status_code == 200
    assert seen == [1, 4, 5]
