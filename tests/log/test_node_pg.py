"""Two real `node serve --store postgresql://…` processes writing one log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from edgetrust.identity import Identity
from edgetrust.log.client import LogClient
from edgetrust.log.merkle import leaf_hash, root_from_leaves
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
