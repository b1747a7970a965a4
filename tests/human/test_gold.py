"""Gold tasks: a salted commitment logged with the task, a reveal later, only then the anchor."""

from __future__ import annotations

import base64
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.dsse import sign_envelope
from edgetrust.errors import InvalidInputError
from edgetrust.human.gold import decoy_commitment, gold_commitment, new_salt, sign_reveal
from edgetrust.human.policy import HumanRecord
from edgetrust.human.reviewers import ReviewerRegistry, sign_reviewer_statement
from edgetrust.human.tasks import (
    TASK_PREDICATE_TYPE,
    Verdict,
    make_task,
    review_digest,
    sign_review,
    sign_task,
    task_from_statement,
)
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Subject,
    encode_statement,
    open_signed_statement,
)

from .authenticator import SoftAuthenticator
from .test_http import ORIGIN, RP, _err, _ok, env, register, review

__all__ = ["env"]

ANSWERS = ["correct", "wrong"]


def _crowd(n_tasks: int, gold_rows: list[int]) -> dict[str, Any]:
    """3 reviewers: two always answer the opposite of the truth, one always right.

    Without gold, the wrong pair is the majority and Dawid–Skene follows them; the truth is
    "correct" on even tasks and "wrong" on odd ones.
    """
    reg = ReviewerRegistry(rp_id=RP, origin=ORIGIN)
    author = Identity.generate()
    entries: list[bytes] = []
    people = []
    for _ in range(3):
        me, auth = Identity.generate(), SoftAuthenticator()
        pk = reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))
        entries.append(sign_reviewer_statement(me, pk).to_json())
        people.append((me, auth))
    tasks, reveals = [], []
    for t in range(n_tasks):
        truth = ANSWERS[t % 2]
        gold = None
        if t in gold_rows:
            salt = new_salt()
            gold = gold_commitment(truth, salt)
        task = make_task(f"{t:064x}", "Right digit?", ANSWERS, gold=gold)
        entries.append(sign_task(author, task).to_json())
        tasks.append(task)
        if gold is not None:
            reveals.append(sign_reveal(author, task.digest, truth, salt).to_json())
        for j, (me, auth) in enumerate(people):
            answer = truth if j == 0 else ANSWERS[1 - t % 2]
            assertion = auth.get(review_digest(task.digest, answer, 1.0, me.did))
            verdict = Verdict(task.digest, answer, 1.0, me.did, assertion)
            entries.append(sign_review(me, verdict).to_json())
    return {"entries": entries, "reveals": reveals, "tasks": tasks, "people": people, "a": author}


def _replay(entries: list[bytes]) -> HumanRecord:
    return HumanRecord.from_entries(entries, rp_id=RP, origin=ORIGIN)


def test_committed_answer_is_not_in_the_log_before_the_reveal() -> None:
    scene = _crowd(4, [0])
    task = scene["tasks"][0]
    payload = json.loads(task.payload())
    assert set(payload["predicate"]) == {"question", "answers", "gold"}
    assert payload["predicate"]["gold"] not in {gold_commitment(a, "00" * 32) for a in ANSWERS}
    rec = _replay(scene["entries"])
    assert rec.refused == [] and rec.gold == {}


def _shape(value: Any) -> Any:
    """The JSON structure with every string replaced by its length."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return len(value) if isinstance(value, str) else type(value).__name__


def test_gold_and_ordinary_tasks_look_alike_in_the_log() -> None:
    scene = _crowd(2, [0])
    gold, ordinary = scene["tasks"]
    logged = [e for e in scene["entries"] if open_signed_statement(e).statement.predicate_type
              == TASK_PREDICATE_TYPE]  # fmt: skip
    assert len(logged) == 2
    envelopes = [json.loads(e) for e in logged]
    statements = [json.loads(base64.b64decode(e["payload"])) for e in envelopes]
    # same field set, nesting and string lengths, in the statement and in the envelope
    assert _shape(statements[0]) == _shape(statements[1])
    assert _shape(envelopes[0]) == _shape(envelopes[1])
    assert len(logged[0]) == len(logged[1])
    keys = [set(s["predicate"]) for s in statements]
    assert keys[0] == keys[1] == {"question", "answers", "gold"}
    assert len(statements[0]["predicate"]["gold"]) == len(statements[1]["predicate"]["gold"]) == 64
    assert gold.commitment is not None and ordinary.commitment is not None
    # every ordinary task gets its own decoy: no shared value marks the non-gold ones
    assert len({make_task("ab" * 32, "q?", ANSWERS).commitment for _ in range(8)}) == 8
    assert len(decoy_commitment()) == 64


# Task text is in the text profile: NFC, no control, surrogate or bidi-override characters.
_TEXT = st.text(
    st.characters(
        exclude_categories=("Cc", "Cs"),
        exclude_characters="\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=40,
).map(lambda t: unicodedata.normalize("NFC", t))


@settings(max_examples=60, deadline=None)
@given(
    question=_TEXT,
    answers=st.lists(_TEXT, min_size=2, max_size=5, unique=True),
    pick=st.integers(min_value=0, max_value=4),
)
def test_any_gold_task_has_the_bytes_shape_of_an_ordinary_one(
    question: str, answers: list[str], pick: int
) -> None:
    subject = "5a" * 32
    gold = make_task(
        subject, question, answers, gold=gold_commitment(answers[pick % len(answers)], new_salt())
    )
    ordinary = make_task(subject, question, answers)
    a, b = json.loads(gold.payload()), json.loads(ordinary.payload())
    assert len(gold.payload()) == len(ordinary.payload()) and _shape(a) == _shape(b)
    for task in (gold, ordinary):  # read back from the log form: the same task, same digest
        entry = sign_task(Identity.generate(), task).to_json()
        assert task_from_statement(open_signed_statement(entry).statement) == task


def test_old_form_task_without_a_commitment_is_still_read() -> None:
    author = Identity.generate()
    predicate = {"question": "Right digit?", "answers": ANSWERS}
    payload = encode_statement([Subject("subject", "12" * 32)], TASK_PREDICATE_TYPE, predicate)
    entry = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, author).to_json()
    task = task_from_statement(open_signed_statement(entry).statement)
    assert task.commitment is None and task.payload() == payload  # digest unchanged
    reveal = sign_reveal(author, task.digest, "correct", new_salt()).to_json()
    rec = _replay([entry, reveal])
    assert task.digest in rec.tasks and rec.gold == {}
    assert "not a gold task" in rec.refused[0]


def test_node_refuses_a_new_task_without_a_commitment(env: tuple[TestClient, Log]) -> None:
    c, log = env
    predicate = {"question": "Right digit?", "answers": ANSWERS}
    payload = encode_statement([Subject("subject", "12" * 32)], TASK_PREDICATE_TYPE, predicate)
    old_form = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, Identity.generate()).to_dict()
    size = log.size()
    _err(c.post("/v1/human/tasks", json=old_form), 400, "needs gold (64 hex)")
    assert log.size() == size


def test_reveal_anchors_ds_and_scores_reviewers() -> None:
    scene = _crowd(12, [0, 1, 2, 3])
    tasks, (good, _) = scene["tasks"], scene["people"][0]
    before = _replay(scene["entries"])
    # the wrong pair is the majority: without the anchor DS agrees with them
    assert all(before.results()[t.digest].answer != ANSWERS[i % 2] for i, t in enumerate(tasks))
    after = _replay(scene["entries"] + scene["reveals"])
    assert after.refused == [] and len(after.gold) == 4
    results = after.results()
    assert all(results[t.digest].answer == ANSWERS[i % 2] for i, t in enumerate(tasks))
    assert results[tasks[0].digest].posterior == pytest.approx(1.0)
    rep = after.reputation()
    assert rep[good.did].gold_reviews == 4 and rep[good.did].gold_accuracy == 1.0
    assert rep[good.did].reliability > 0.9
    bad = [s for d, s in rep.items() if d != good.did]
    assert all(s.gold_accuracy == 0.0 and s.reliability < 0.1 for s in bad)


def test_bad_reveals_are_refused_on_replay() -> None:
    scene = _crowd(2, [0])
    author, task = scene["a"], scene["tasks"][0]
    wrong_salt = sign_reveal(author, task.digest, "correct", new_salt()).to_json()
    wrong_answer = sign_reveal(author, task.digest, "wrong", "00" * 32).to_json()
    not_author = sign_reveal(Identity.generate(), task.digest, "correct", "00" * 32).to_json()
    not_gold = sign_reveal(author, scene["tasks"][1].digest, "wrong", "00" * 32).to_json()
    unknown = sign_reveal(author, "ef" * 32, "wrong", "00" * 32).to_json()
    rec = _replay(scene["entries"] + [wrong_salt, wrong_answer, not_author, not_gold, unknown])
    assert rec.gold == {} and len(rec.refused) == 5
    text = " | ".join(rec.refused)
    for word in ("does not match", "author", "not in the log"):
        assert word in text
    # a task that is not gold carries a decoy: refused like a wrong salt, never "not gold"
    assert rec.refused[3] == rec.refused[0].replace(task.digest[:12], scene["tasks"][1].digest[:12])


def test_verdict_after_the_reveal_does_not_count() -> None:
    scene = _crowd(2, [0])
    task = scene["tasks"][0]
    late, auth = Identity.generate(), SoftAuthenticator()
    reg = ReviewerRegistry(rp_id=RP, origin=ORIGIN)
    pk = reg.finish_registration(late.did, auth.create(reg.start_registration(late.did)))
    assertion = auth.get(review_digest(task.digest, "correct", 1.0, late.did))
    vote = sign_review(late, Verdict(task.digest, "correct", 1.0, late.did, assertion)).to_json()
    entries = [sign_reviewer_statement(late, pk).to_json(), *scene["entries"]]
    rec = _replay([*entries, *scene["reveals"], vote])
    assert late.did not in rec.verdicts[task.digest]
    assert "after its answer was revealed" in rec.refused[0]


def test_bad_commitments_and_reveals_are_typed() -> None:
    with pytest.raises(InvalidInputError, match="gold commitment"):
        make_task("ab" * 32, "q?", ANSWERS, gold="not hex")
    with pytest.raises(InvalidInputError, match="salt"):
        gold_commitment("correct", "short")
    with pytest.raises(InvalidInputError, match="salt"):
        sign_reveal(Identity.generate(), "ab" * 32, "correct", "zz")


def test_http_reveal_and_refusals(env: tuple[TestClient, Log]) -> None:
    c, log = env
    people = [register(c) for _ in range(3)]
    author = Identity.generate()
    salt = new_salt()
    task = make_task("cd" * 32, "Right?", ANSWERS, gold=gold_commitment("wrong", salt))
    listed = _ok(c.post("/v1/human/tasks", json=sign_task(author, task).to_dict()))
    assert listed["digest"] == task.digest
    row = _ok(c.get("/v1/human/tasks"))["tasks"][0]
    assert row["gold"] is False and row["revealed"] is None  # not known before the reveal
    for me, auth in people:
        _ok(review(c, me, auth, task.digest, "wrong"))
    forged = sign_reveal(author, task.digest, "correct", salt).to_dict()
    _err(c.post("/v1/human/gold", json=forged), 400, "does not match")
    other = sign_reveal(Identity.generate(), task.digest, "wrong", salt).to_dict()
    _err(c.post("/v1/human/gold", json=other), 400, "author")
    _err(c.post("/v1/human/gold", json=sign_reveal(author, "ee" * 32, "wrong", salt).to_dict()),
         404, "no task")  # fmt: skip
    _err(c.post("/v1/human/gold", content=b"{nope"), 400, "json")
    not_reveal = sign_envelope(task.payload(), IN_TOTO_PAYLOAD_TYPE, author).to_dict()
    _err(c.post("/v1/human/gold", json=not_reveal), 400, "not a human-gold")
    body = _ok(
        c.post("/v1/human/gold", json=sign_reveal(author, task.digest, "wrong", salt).to_dict())
    )
    assert body["answer"] == "wrong" and body["verdicts"] == 3 and body["duplicate"] is False
    row = _ok(c.get("/v1/human/tasks"))["tasks"][0]
    assert row["gold"] is True and row["revealed"] == "wrong"
    late, auth = register(c)
    _err(review(c, late, auth, task.digest, "wrong"), 400, "already revealed")
    rep = _ok(c.get(f"/v1/human/reviewers/{people[0][0].did}"))
    assert rep["goldReviews"] == 1 and rep["goldAccuracy"] == 1.0
    rec = HumanRecord.from_entries(log.entries(0, log.size()), rp_id=RP, origin=ORIGIN)
    assert rec.refused == [] and rec.gold == {task.digest: "wrong"}


def test_cli_gold_add_and_reveal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.node.conftest import start_server

    from .test_cli import _people, cli

    server = start_server(["node", "serve", "--rate", "0"], tmp_path / "node")
    try:
        url = ("--node", server.url)
        homes = _people(tmp_path, server, capsys, 2)
        args = ("human", "task", "add", "34" * 32, "-q", "Right?", "-a", "yes", "-a", "no")
        code, _, err = cli(capsys, homes[0], *args, "--gold", "maybe", *url)
        assert code == 2 and "not one of" in err and "\n" not in err.strip()
        code, body, err = cli(capsys, homes[0], *args, "--gold", "no", *url)
        assert code == 0, err
        task = body["digest"]
        assert "goldSecret" not in body
        secret = homes[0] / "human" / "gold" / f"{task}.json"
        assert secret.stat().st_mode & 0o777 == 0o600
        for h in homes:
            assert cli(capsys, h, "human", "review", task, "no", *url)[0] == 0
        code, _, err = cli(capsys, homes[1], "human", "task", "reveal", task, *url)
        assert code == 2 and "no gold answer kept" in err
        code, _, err = cli(capsys, homes[0], "human", "task", "reveal", "xyz", *url)
        assert code == 2 and "64 lower-case hex" in err
        code, body, err = cli(capsys, homes[0], "human", "task", "reveal", task, *url)
        assert code == 0, err
        assert body["answer"] == "no" and body["verdicts"] == 2
        code, rows, _ = cli(capsys, homes[1], "human", "reputation", *url)
        assert {r["goldReviews"] for r in rows} == {1}
    finally:
        server.stop()


def test_gold_reveal_after_a_published_aggregate_makes_it_stale() -> None:
    from edgetrust.human.published import StaleAggregateError, compute_aggregate, verify_aggregate
    from edgetrust.statement import open_signed_statement

    scene = _crowd(2, [0])
    entries, task = list(scene["entries"]), scene["tasks"][0]
    claim = compute_aggregate(iter(entries), len(entries), task.digest, rp_id=RP, origin=ORIGIN)
    published = sign_envelope(claim.payload(), IN_TOTO_PAYLOAD_TYPE, Identity.generate())
    entries.append(published.to_json())
    signed = open_signed_statement(published.to_json())
    assert verify_aggregate(signed, entries, current=True) == claim
    entries.append(scene["reveals"][0])
    with pytest.raises(StaleAggregateError) as info:
        verify_aggregate(signed, entries, current=True)
    assert info.value.index == len(entries) - 2 and info.value.later == (len(entries) - 1,)
