"""`edgetrust verify --human K,P[,V]`: evidence read from the local log; bad K,P is exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.human.reviewers import ReviewerRegistry, sign_reviewer_statement
from edgetrust.human.tasks import Verdict, make_task, review_digest, sign_review, sign_task
from edgetrust.human.vouch import sign_vouch, vouch_digest
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.receipts import parse_bundle, read_receipt
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

from .authenticator import SoftAuthenticator


def _code(capsys: pytest.CaptureFixture[str], *args: str) -> int:
    code = run([*args, "--json"])
    capsys.readouterr()
    return code


def test_verify_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.onnx").write_bytes(digits_mlp_onnx()[0])
    np.save(tmp_path / "x.npy", load_digits_split()[1][:1])
    assert _code(capsys, "model", "add", str(tmp_path / "d.onnx")) == 0
    bundle = tmp_path / "r.json"
    args = ("infer", "d", "--input", str(tmp_path / "x.npy"), "--out", str(bundle))
    assert _code(capsys, *args) == 0
    receipt = read_receipt(parse_bundle(bundle.read_bytes()))
    assert _code(capsys, "verify", str(bundle), "--human", "1,0.5") == 1  # no review yet
    reg = ReviewerRegistry(rp_id="edgetrust.local", origin="https://edgetrust.local")
    task = make_task(receipt.output_digest.removeprefix("sha256:"), "ok?", ["correct", "wrong"])
    entries = [sign_task(Identity.generate(), task).to_json()]
    people = []
    for _ in range(3):
        me, auth = Identity.generate(), SoftAuthenticator()
        pk = reg.finish_registration(me.did, auth.create(reg.start_registration(me.did)))
        assertion = auth.get(review_digest(task.digest, "correct", 1.0, me.did))
        verdict = Verdict(task.digest, "correct", 1.0, me.did, assertion)
        entries[:0] = [sign_reviewer_statement(me, pk).to_json()]
        entries.append(sign_review(me, verdict).to_json())
        people.append((me, auth))
    with Log.open() as log:
        log.append_many(entries)
    assert _code(capsys, "verify", str(bundle), "--human", "3,0.9") == 0
    assert _code(capsys, "verify", str(bundle), "--human", "4,0.9") == 1
    assert _code(capsys, "verify", str(bundle), "--human", "3,0.9,1") == 1  # nobody vouched
    vouches = []
    for me, auth in people:  # each vouches for the two others
        for other, _ in people:
            if other.did != me.did:
                assertion = auth.get(vouch_digest(me.did, other.did))
                vouches.append(sign_vouch(me, other.did, assertion).to_json())
    with Log.open() as log:
        log.append_many(vouches)
    assert _code(capsys, "verify", str(bundle), "--human", "3,0.9,2") == 0
    assert _code(capsys, "verify", str(bundle), "--human", "3,0.9,3") == 1
    assert _code(capsys, "verify", str(bundle), "--human", "2,0.9,0") == 0
    bad_inputs = ("x", "3", "3,", "0,0.5", "3,2", "3,0.5,-1", "3,0.5,x", "3,0.5,1,2", ",")
    for bad in (*bad_inputs, "9" * 400 + ",0.5"):
        code = run(["verify", str(bundle), "--human", bad, "--json"])
        out = capsys.readouterr().out
        assert code == 2, bad
        assert "error" in json.loads(out) or out
