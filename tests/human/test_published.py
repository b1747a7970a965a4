"""A published aggregate: the node re-runs it before logging; a verifier replays it; tampering fails."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import VerificationError
from edgetrust.human.published import log_prefix, verify_aggregate
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, open_signed_statement

from .test_http import _err, _ok, add_task, env, register, review

__all__ = ["env"]


def _setup(c: TestClient) -> str:
    people = [register(c) for _ in range(3)]
    task = add_task(c)
    for (p, a), answer in zip(people, ["correct", "correct", "wrong"], strict=True):
        _ok(review(c, p, a, task, answer))
    return task


def _publish_payload(c: TestClient, task: str) -> bytes:
    st = _ok(c.post("/v1/human/aggregates/statement", json={"task": task}))
    return base64.b64decode(st["payload"])


def test_publish_and_replay_verify(env: tuple[TestClient, Log]) -> None:
    c, log = env
    task = _setup(c)
    signer = Identity.generate()
    env_ = sign_envelope(_publish_payload(c, task), IN_TOTO_PAYLOAD_TYPE, signer)
    done = _ok(c.post("/v1/human/aggregates", json=env_.to_dict()))
    assert done["answer"] == "correct" and done["signer"] == signer.did
    assert len(done["inputs"]) == 3 and done["logSize"] == done["index"]
    # an independent verifier: the logged entry, the log prefix, nothing else
    signed = open_signed_statement(log.entry(done["index"]))
    claim = verify_aggregate(signed, log_prefix(log, log.size()))
    assert claim.result == "correct" and claim.inputs == tuple(done["inputs"])
    assert (
        abs(claim.confidence - _ok(c.get(f"/v1/human/tasks/{task}/aggregate"))["posterior"]) < 1e-9
    )
    for i in claim.inputs:  # the inputs are the verdict entries
        assert b"human-review" in base64.b64decode(json.loads(log.entry(i))["payload"])


@pytest.mark.parametrize(
    ("field", "value", "step"),
    [
        ("result", "wrong", "result"),
        ("confidence", 0.5, "confidence"),
        ("inputs", [1, 2], "inputs"),
        ("method", "majority", "method"),
    ],
)
def test_tampered_aggregate_is_refused(
    env: tuple[TestClient, Log], field: str, value: object, step: str
) -> None:
    c, log = env
    task = _setup(c)
    statement = json.loads(_publish_payload(c, task))
    statement["predicate"][field] = value
    forged = sign_envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, Identity.generate())
    _err(c.post("/v1/human/aggregates", json=forged.to_dict()), 400, "")
    with pytest.raises(VerificationError) as info:
        verify_aggregate(open_signed_statement(forged.to_json()), log_prefix(log, log.size()))
    assert info.value.step == step


def test_tampered_log_prefix_is_refused(env: tuple[TestClient, Log]) -> None:
    c, log = env
    task = _setup(c)
    signed = open_signed_statement(
        sign_envelope(
            _publish_payload(c, task), IN_TOTO_PAYLOAD_TYPE, Identity.generate()
        ).to_json()
    )
    entries = list(log_prefix(log, log.size()))
    claim = verify_aggregate(signed, entries)
    # drop one counted verdict from the prefix: the replay no longer gives the same inputs
    dropped = [e for i, e in enumerate(entries) if i != claim.inputs[0]] + [b"{}"]
    with pytest.raises(VerificationError):
        verify_aggregate(signed, dropped)
    with pytest.raises(VerificationError, match="fewer than logSize"):
        verify_aggregate(signed, entries[:-1])


def test_publish_bad_input(env: tuple[TestClient, Log]) -> None:
    c, _ = env
    _err(c.post("/v1/human/aggregates/statement", json={"task": "00" * 32}), 404, "no task")
    _err(c.post("/v1/human/aggregates/statement", json={"task": 3}), 400, "task")
    task = add_task(c)
    _err(c.post("/v1/human/aggregates/statement", json={"task": task}), 404, "no verdicts")
