"""A published aggregate: the node re-runs it before logging; a verifier replays it; tampering fails."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgetrust.dsse import sign_envelope
from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.human.policy import HumanRecord
from edgetrust.human.published import (
    StaleAggregateError,
    log_prefix,
    stale_entries,
    verify_aggregate,
)
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


def _published(c: TestClient, task: str) -> dict[str, Any]:
    env_ = sign_envelope(_publish_payload(c, task), IN_TOTO_PAYLOAD_TYPE, Identity.generate())
    return _ok(c.post("/v1/human/aggregates", json=env_.to_dict()))


def test_fresh_aggregate_is_current(env: tuple[TestClient, Log]) -> None:
    c, log = env
    task = _setup(c)
    done = _published(c, task)
    signed = open_signed_statement(log.entry(done["index"]))
    whole = list(log_prefix(log, log.size()))
    claim = verify_aggregate(signed, whole, current=True)
    assert claim.result == "correct"
    rec = HumanRecord.from_entries(whole, rp_id=claim.rp_id, origin=claim.origin)
    assert stale_entries(rec, task, claim.log_size) == ()


def test_aggregate_followed_by_a_verdict_is_stale(env: tuple[TestClient, Log]) -> None:
    c, log = env
    task = _setup(c)
    done = _published(c, task)
    late = [_ok(review(c, *register(c), task, "wrong"))["index"] for _ in range(2)]
    signed = open_signed_statement(log.entry(done["index"]))
    whole = list(log_prefix(log, log.size()))
    verify_aggregate(signed, whole)  # still true at its logSize
    with pytest.raises(StaleAggregateError) as info:
        verify_aggregate(signed, whole, current=True)
    err = info.value
    assert err.step == "stale" and err.index == done["index"] and err.later == tuple(late)
    assert f"at log index {done['index']}" in str(err)
    assert all(str(i) in str(err) for i in late)
    assert isinstance(err, VerificationError)
    # the node refuses to log it again now, and the read path says it is stale
    _err(c.post("/v1/human/aggregates", json=signed.envelope.to_dict()), 400, "stale")
    row = _ok(c.get(f"/v1/human/tasks/{task}/aggregate"))
    assert row["published"] == {
        "index": done["index"],
        "logSize": done["logSize"],
        "stale": True,
        "later": late,
    }


def test_stale_bad_input(env: tuple[TestClient, Log]) -> None:
    c, log = env
    task = _setup(c)
    done = _published(c, task)
    signed = open_signed_statement(log.entry(done["index"]))
    whole = list(log_prefix(log, log.size()))
    with pytest.raises(VerificationError, match="fewer than logSize"):
        verify_aggregate(signed, whole[:2], current=True)
    task_entry = open_signed_statement(whole[_ok(c.get("/v1/human/tasks"))["tasks"][0]["index"]])
    with pytest.raises(InvalidInputError, match="not a human-aggregate"):
        verify_aggregate(task_entry, whole, current=True)
    _ok(review(c, *register(c), task, "wrong"))
    with pytest.raises(StaleAggregateError, match="not in this log"):
        whole = list(log_prefix(log, log.size()))
        verify_aggregate(signed, whole[: done["index"]] + whole[done["index"] + 1 :], current=True)
