"""Real uvicorn servers over loopback: node + witness + monitor together, crash safety, forks."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from edgetrust.cli import run
from edgetrust.dsse import parse_envelope
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint, verify_cosignatures
from edgetrust.log.client import LogClient
from edgetrust.log.merkle import leaf_hash, verify_consistency, verify_inclusion
from tests.node.conftest import Server, card_envelope, fork_logs, start_server

pytestmark = pytest.mark.slow


def test_node_witness_and_monitor_over_loopback(
    live_node: Server, tmp_path: Path, publisher: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    key = httpx.get(live_node.url + "/v1/log").json()["vkey"]
    witness = start_server(
        ["witness", "serve", "--log-key", key, "--name", "w.example/1"], tmp_path / "w-home"
    )
    try:
        with LogClient(live_node.url, key) as client:
            for i in range(5):
                client.submit(card_envelope(publisher, i))
            first = client.witness(witness.url)
            client.submit_many([card_envelope(publisher, i) for i in range(5, 300)])
            second = client.witness(witness.url)
        wkey = httpx.get(witness.url + "/v1/witness").json()["vkey"]
        verify_cosignatures(first, [wkey], 1)
        verify_cosignatures(second, [wkey], 1)
        assert verify_checkpoint(second, key).size == 300
        assert run(["log", "monitor", live_node.url, "--key", key, "--once", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["size"] == 300
        args = ["log", "monitor", live_node.url, "--key", key, "--once", "--entries", "--json"]
        assert run(args) == 0
        assert json.loads(capsys.readouterr().out)["entries_verified"] == 300
    finally:
        witness.stop()


def test_sigkill_mid_stream_loses_no_acknowledged_entry(
    tmp_path: Path, publisher: Identity
) -> None:
    home = tmp_path / "crash-home"
    node = start_server(["node", "serve", "--rate", "0"], home)
    key = httpx.get(node.url + "/v1/log").json()["vkey"]
    acks: list[tuple[int, bytes]] = []
    notes: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(worker: int) -> None:
        with httpx.Client(base_url=node.url, timeout=5) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                env = card_envelope(publisher, worker * 100_000 + i)
                try:
                    resp = http.post("/v1/entries", content=env)
                except httpx.HTTPError:
                    return  # the server died under us: this one was not acknowledged
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                with lock:
                    acks.append((answer["index"], parse_envelope(env).to_json()))
                    notes.append(answer["checkpoint"].encode())

    threads = [threading.Thread(target=submitter, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90  # generous: the machine may be busy with other work
    while len(acks) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acks) >= 200

    restarted = start_server(["node", "serve", "--rate", "0"], home)
    try:
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            latest = verify_checkpoint(http.get("/checkpoint").content, key)
            assert latest.size >= max(i for i, _ in acks) + 1
            for index, entry in acks:
                got = http.get(f"/v1/entries/{index}").json()
                assert base64.b64decode(got["entry"]) == entry
                cp = verify_checkpoint(got["checkpoint"].encode(), key)
                proof = [base64.b64decode(h) for h in got["inclusion_proof"]]
                verify_inclusion(leaf_hash(entry), index, cp.size, proof, cp.root)
            for note in set(notes):
                old = verify_checkpoint(note, key)
                resp = http.get(f"/v1/proofs/consistency?from={old.size}&to={latest.size}")
                proof = [base64.b64decode(h) for h in resp.json()["proof"]]
                if old.size == latest.size:
                    assert old.root == latest.root
                else:
                    verify_consistency(old.size, latest.size, proof, old.root, latest.root)
            # The restarted node keeps appending on top of the recovered tree.
            resp = http.post("/v1/entries", content=card_envelope(publisher, 999_999))
            assert resp.json()["index"] == latest.size
    finally:
        restarted.stop()


def test_monitor_exits_loudly_on_a_fork(
    tmp_path: Path, publisher: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    log_a, log_b = fork_logs(tmp_path, publisher)
    key = log_a.verifier_key
    log_a.close()
    log_b.close()
    home_a, home_b = tmp_path / "fork-a", tmp_path / "fork-b"
    node_a = start_server(["node", "serve"], home_a)
    node_b = start_server(["node", "serve"], home_b)
    state = tmp_path / "monitor.json"
    try:
        assert (
            run(["log", "monitor", node_a.url, "--key", key, "--state", str(state), "--once"]) == 0
        )
        capsys.readouterr()
        assert (
            run(["log", "monitor", node_b.url, "--key", key, "--state", str(state), "--once"]) == 1
        )
        err = capsys.readouterr().err
        assert "FORK DETECTED" in err
        # Both checkpoints are printed as evidence.
        assert err.count("— ") >= 2
    finally:
        node_a.stop()
        node_b.stop()
    shutil.rmtree(home_b)
