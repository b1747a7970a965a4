"""`edgetrust node serve --anchor-every N`: the node anchors its checkpoints on a chain."""

from __future__ import annotations

import httpx
import pytest

from edgetrust.identity import Identity

from .conftest import Server, card_envelope, start_server


@pytest.mark.slow
def test_node_anchors_every_n_entries_on_the_in_process_chain(tmp_path: object) -> None:
    from pathlib import Path

    home = Path(str(tmp_path)) / "node"
    server: Server = start_server(["node", "serve", "--rate", "0", "--anchor-every", "2"], home)
    try:
        publisher = Identity.generate()
        for i in range(5):
            r = httpx.post(
                server.url + "/v1/entries", content=card_envelope(publisher, i), timeout=30
            )
            assert r.status_code == 200, r.text
    finally:
        server.stop()
        _, stderr = server.proc.communicate(timeout=30)
    text = stderr.decode()
    assert "anchoring every 2 entries on chain" in text
    assert "on_append hook failed" not in text
    assert "anchored size 2 " in text or "anchored size 3 " in text  # grouped commits may skip
    assert "anchored size 4 " in text or "anchored size 5 " in text


def test_rpc_without_anchor_every_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from edgetrust.cli import run

    assert run(["node", "serve", "--rpc", "http://127.0.0.1:1"]) == 2
    assert "--anchor-every" in capsys.readouterr().err
