"""Two real `node serve --store postgresql://…` processes writing one log."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.client import LogClient
from edgetrust.log.merkle import leaf_hash, root_from_leaves, verify_consistency
from edgetrust.log.service import Log

from ..node.conftest import card_envelope, start_server


def test_two_nodes_on_one_postgres_share_one_tree(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"  # the nodes share the log key (and the checkpoint state)
    with Log.open(home, store=pg_url) as log:
        vkey = log.verifier_key
    publisher = Identity.from_seed(b"\x07" * 32, "publisher")
    args = ["node", "serve", "--rate", "0", "--store", pg_url]
    a, b = start_server(args, home), start_server(args, home)
    try:
        envelopes = [card_envelope(publisher, i) for i in range(60)]

        def submit(i: int) -> int:
            url = (a if i % 2 else b).url
            r = httpx.post(url + "/v1/entries", content=envelopes[i], timeout=30)
            assert r.status_code == 200, r.text
            return int(r.json()["index"])

        with ThreadPoolExecutor(8) as pool:
            indices = list(pool.map(submit, range(60)))
        assert sorted(indices) == list(range(60))
        # A duplicate sent to the other node gets the same index.
        assert (
            httpx.post(a.url + "/v1/entries", content=envelopes[0]).json()["index"] == (indices[0])
        )
        # Both nodes serve the same verified tree; a client follows them interchangeably.
        client = LogClient(a.url, vkey)
        got_a = dict(client.entries(0, 60))
        other = LogClient(b.url, vkey)
        assert dict(other.entries(0, 60)) == got_a
        client.accept(*other.fetch_checkpoint())
        assert other.update().root == root_from_leaves([leaf_hash(got_a[i]) for i in range(60)])
        metrics = httpx.get(a.url + "/metrics").text
        assert "edgetrust_log_entries" in metrics
    finally:
        a.stop()
        b.stop()


def _submitter(
    urls: list[str], envelopes: list[bytes], acked: list[tuple[bytes, int, bytes]]
) -> None:
    """Send `envelopes` one by one, round robin over `urls`; record what was acknowledged."""
    with httpx.Client(timeout=10) as http:
        for i, env in enumerate(envelopes):
            url = urls[i % len(urls)]
            try:
                r = http.post(url + "/v1/entries", content=env)
            except httpx.HTTPError:
                continue  # that node is down: not acknowledged, nothing to hold it to
            if r.status_code == 200:
                body = r.json()
                acked.append((env, int(body["index"]), body["checkpoint"].encode()))


@pytest.mark.slow
def test_sigkill_of_one_node_mid_stream_loses_no_acknowledged_entry(
    tmp_path: Path, pg_url: str
) -> None:
    # Two machines: separate homes holding the same log key, one database.
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    with Log.open(home_a, store=pg_url) as log:
        vkey = log.verifier_key
    home_b.mkdir()
    shutil.copytree(home_a / "keys", home_b / "keys")
    args = ["node", "serve", "--rate", "0", "--store", pg_url]
    a, b = start_server(args, home_a), start_server(args, home_b)
    publisher = Identity.from_seed(b"\x09" * 32, "publisher")
    envelopes = [card_envelope(publisher, i) for i in range(1200)]
    acked: list[tuple[bytes, int, bytes]] = []
    try:
        # Four clients, each alternating between the nodes, so both sequence batches.
        threads = [
            threading.Thread(target=_submitter, args=([a.url, b.url], envelopes[k::4], acked))
            for k in range(4)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        a.stop(signal.SIGKILL)  # mid-stream: a's batches are being committed or queued
        killed_at = len(acked)
        for t in threads:
            t.join(120)
        assert len(acked) > killed_at  # b kept accepting writes meanwhile
        a = start_server(args, home_a)  # restart
        with httpx.Client(timeout=30) as http:
            final_note = http.get(a.url + "/checkpoint").content
            assert http.get(b.url + "/checkpoint").content == final_note  # shared state
        final = verify_checkpoint(final_note, vkey)
        # Every acknowledged entry is at its index; the nodes serve the same entries.
        client = LogClient(a.url, vkey)
        client.accept(final, final_note)
        logged = dict(client.entries(0, final.size))
        assert dict(LogClient(b.url, vkey).entries(0, final.size)) == logged
        for env, index, _ in acked:
            assert logged[index] == env
        assert len(set(logged.values())) == final.size  # no entry twice
        # Every checkpoint either node handed out is consistent with the final one.
        with Log.open(home_b, store=pg_url) as log:
            for note in {n for _, _, n in acked}:
                cp = verify_checkpoint(note, vkey)
                proof = log.consistency_proof(cp.size, final.size)
                verify_consistency(cp.size, final.size, proof, cp.root, final.root)
        # And the restarted node takes writes again, at the end of the tree.
        r = httpx.post(a.url + "/v1/entries", content=card_envelope(publisher, 99_999))
        assert r.status_code == 200 and r.json()["index"] == final.size
    finally:
        a.stop()
        b.stop()
