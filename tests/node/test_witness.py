"""The witness: C2SP tlog-witness add-checkpoint, state, fork evidence, HTTP statuses."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint, verify_cosignatures
from edgetrust.log.service import Log
from edgetrust.node.witness import (
    BadProofError,
    CheckpointConflictError,
    UnknownLogError,
    UntrustedCheckpointError,
    Witness,
    create_witness_app,
    parse_add_checkpoint,
)
from tests.node.conftest import card_envelope, fork_logs


def body(old: int, proof: list[bytes], note: bytes) -> bytes:
    return (
        f"old {old}\n".encode()
        + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        + b"\n"
        + note
    )


def make_witness(home: Path, log: Log) -> Witness:
    return Witness(
        home,
        identity=Identity.from_seed(b"\x09" * 32),
        name="w.test/1",
        log_keys=[log.verifier_key],
    )


def size_of(log: Log) -> int:
    return verify_checkpoint(log.checkpoint(), log.verifier_key).size


def test_cosigns_and_follows_a_growing_log(tmp_path: Path, log: Log, publisher: Identity) -> None:
    w = make_witness(tmp_path / "w", log)
    log.append_many([card_envelope(publisher, i) for i in range(3)])
    note = log.checkpoint()
    lines = w.add_checkpoint(body(0, [], note))
    assert lines.startswith("— w.test/1 ".encode())
    verify_cosignatures(note + lines, [w.vkey], 1)
    log.append_many([card_envelope(publisher, i) for i in range(3, 8)])
    note2 = log.checkpoint()
    lines2 = w.add_checkpoint(body(3, log.consistency_proof(3, 8), note2))
    verify_cosignatures(note2 + lines2, [w.vkey], 1)
    assert w.latest(verify_checkpoint(note2, log.verifier_key).origin) == (8, note2)
    # Re-submitting the same checkpoint with old == size is fine (same root).
    w.add_checkpoint(body(8, [], note2))
    w.close()
    # State survives a restart.
    again = make_witness(tmp_path / "w", log)
    with pytest.raises(CheckpointConflictError) as info:
        again.add_checkpoint(body(0, [], note))
    assert info.value.latest_size == 8


def test_stale_and_bad_proofs(tmp_path: Path, log: Log, publisher: Identity) -> None:
    w = make_witness(tmp_path / "w", log)
    log.append_many([card_envelope(publisher, i) for i in range(4)])
    w.add_checkpoint(body(0, [], log.checkpoint()))
    log.append_many([card_envelope(publisher, i) for i in range(4, 9)])
    note = log.checkpoint()
    good = log.consistency_proof(4, 9)
    with pytest.raises(CheckpointConflictError) as info:
        w.add_checkpoint(body(2, log.consistency_proof(2, 9), note))
    assert info.value.latest_size == 4
    for proof in (good[:-1], [*good, good[0]], [bytes(32)] * len(good), list(reversed(good))):
        with pytest.raises(BadProofError):
            w.add_checkpoint(body(4, proof, note))
    assert w.latest(w.origins[0])[0] == 4  # type: ignore[index]
    assert [e.reason for e in w.evidence()] == ["inconsistent"] * 4
    w.add_checkpoint(body(4, good, note))


def test_fork_is_refused_with_both_checkpoints_as_evidence(
    tmp_path: Path, publisher: Identity
) -> None:
    log_a, log_b = fork_logs(tmp_path, publisher)
    try:
        assert log_a.verifier_key == log_b.verifier_key
        note_a, note_b = log_a.checkpoint(), log_b.checkpoint()
        assert size_of(log_a) == size_of(log_b) == 4 and note_a != note_b
        w = make_witness(tmp_path / "w", log_a)
        w.add_checkpoint(body(0, [], note_a))
        with pytest.raises(CheckpointConflictError) as info:
            w.add_checkpoint(body(4, [], note_b))
        assert info.value.latest_size == 4
        (evidence,) = w.evidence()
        assert evidence.reason == "fork"
        assert (evidence.cosigned, evidence.presented) == (note_a, note_b)
        # Both notes carry valid signatures by the log: portable proof of equivocation.
        assert verify_checkpoint(evidence.presented, log_a.verifier_key).size == 4
    finally:
        log_a.close()
        log_b.close()


def test_unknown_origin_untrusted_key_and_malformed_note(
    tmp_path: Path, log: Log, publisher: Identity
) -> None:
    log.append(card_envelope(publisher, 0))
    w = make_witness(tmp_path / "w", log)
    other = Log.open(tmp_path / "other", origin="other.example/log", max_delay=0.002)
    impostor = Log.open(tmp_path / "impostor", max_delay=0.002)  # same origin, another key
    try:
        other.append(card_envelope(publisher, 0))
        impostor.append(card_envelope(publisher, 0))
        with pytest.raises(UnknownLogError):
            w.add_checkpoint(body(0, [], other.checkpoint()))
        assert impostor.checkpoint().split(b"\n")[0] == log.checkpoint().split(b"\n")[0]
        with pytest.raises(UntrustedCheckpointError):
            w.add_checkpoint(body(0, [], impostor.checkpoint()))
        good = log.checkpoint()
        head, _, _sig = good.rpartition(b" ")
        forged = head + b" " + base64.b64encode(bytes(4 + 64)) + b"\n"
        with pytest.raises(UntrustedCheckpointError):
            w.add_checkpoint(body(0, [], forged))
        for malformed in (good[:-1], good.replace(b"\n\n", b"\n"), good + b"junk", b"x" + good):
            with pytest.raises((InvalidInputError, UnknownLogError)):
                w.add_checkpoint(body(0, [], malformed))
        assert w.latest(w.origins[0]) is None
    finally:
        other.close()
        impostor.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"old 0\n",
        b"old 0\n\n",
        b"new 0\n\nx\n",
        b"old -1\n\nx\n",
        b"old 01\n\nx\n",
        b"old 1x\n\nx\n",
        b"old 0\n!!notbase64!!\n\nx\n",
        b"old 0\nAAAA\n\nx\n",
        b"old 0\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\nx\n",
        b"old 99999999999999999999999\n\nx\n",
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_add_checkpoint(raw)


def test_http_statuses(tmp_path: Path, log: Log, publisher: Identity) -> None:
    log.append_many([card_envelope(publisher, i) for i in range(3)])
    w = make_witness(tmp_path / "w", log)
    with TestClient(create_witness_app(w)) as client:
        note = log.checkpoint()
        resp = client.post("/add-checkpoint", content=body(0, [], note))
        assert resp.status_code == 200 and resp.text.startswith("— w.test/1 ")
        stale = client.post("/add-checkpoint", content=body(0, [], note))
        assert stale.status_code == 409
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        assert stale.text == "3\n"
        bigger = client.post("/add-checkpoint", content=body(5, [], note))
        assert bigger.status_code == 400 and bigger.json()["error"] == "InvalidInputError"
        assert client.post("/add-checkpoint", content=b"garbage").status_code == 400
        huge = client.post("/add-checkpoint", content=b"x" * 200_000)
        assert huge.status_code == 413
        log.append(card_envelope(publisher, 3))
        bad = client.post("/add-checkpoint", content=body(3, [bytes(32)] * 2, log.checkpoint()))
        assert bad.status_code == 422 and bad.json()["error"] == "BadProofError"
        info = client.get("/v1/witness").json()
        assert info["vkey"] == w.vkey and len(info["logs"]) == 1
        assert client.get("/v1/evidence").json()[0]["reason"] == "inconsistent"
        assert client.get("/nope").status_code == 404
