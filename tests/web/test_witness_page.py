"""Witness cosignatures on the log page: a cosigned checkpoint brought to ``/witnesses`` is
checked (this log's signature, each witness's cosignature by the keys given) and then listed
on the log page with its key; forged, foreign or key-less notes and CSRF-less posts refused."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgetrust.identity import Identity
from edgetrust.log import checkpoint as cp
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from tests.node.conftest import card_envelope, log, publisher
from tests.web.world import XSS

__all__ = ["log", "publisher"]


@pytest.fixture
def client(log: Log, publisher: Identity) -> Iterator[TestClient]:
    for i in range(3):
        log.append(card_envelope(publisher, i))
    app = create_app(log, settings=NodeSettings(rate=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _post(client: TestClient, note: str, vkeys: str, *, token: bool = True) -> object:
    html = client.get("/witnesses").text
    fields = {"note": note, "vkeys": vkeys}
    if token:
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found
        fields["csrf_token"] = found.group(1)
    return client.post("/witnesses", data=fields, follow_redirects=False)


def test_cosignature_listed_with_its_key(client: TestClient, log: Log, tmp_path: Path) -> None:
    witness = cp.NoteSigner("witness.example", Identity.generate("w"))
    cosigned = cp.cosign_checkpoint(log.checkpoint(), witness, int(time.time())).decode()
    resp = _post(client, cosigned, witness.cosignature_vkey)
    assert resp.status_code == 303 and resp.headers["location"] == "/#witnesses"  # type: ignore[attr-defined]
    page = client.get("/").text
    section = page[page.index('id="witnesses"') :]
    assert witness.cosignature_vkey in section and "witness.example" in section
    assert "(the latest)" in section and "pass" in section
    # Kept across restarts (the node's home), re-verified on every view.
    assert (tmp_path / "log" / "web" / "cosignatures.json").exists()
    # The log's own line lists its key too.
    assert log.verifier_key in page[: page.index('id="witnesses"')]


def test_bad_cosigned_notes_are_refused(client: TestClient, log: Log, tmp_path: Path) -> None:
    witness = cp.NoteSigner("witness.example", Identity.generate("w"))
    other = cp.NoteSigner("other.example", Identity.generate("o"))
    note = log.checkpoint().decode()
    cosigned = cp.cosign_checkpoint(note, witness, int(time.time())).decode()
    cases = {
        "no cosignature line": (note, witness.cosignature_vkey),
        "no cosignature line of witness": (cosigned, other.cosignature_vkey),
        "verifier key": (cosigned, "not-a-key"),
        "at least one witness": (cosigned, ""),
        "paste a cosigned": ("", witness.cosignature_vkey),
    }
    for want, (text, vkeys) in cases.items():
        resp = _post(client, text, vkeys)
        assert resp.status_code == 400, want  # type: ignore[attr-defined]
        assert want in resp.text, (want, resp.text[-800:])  # type: ignore[attr-defined]
    # A checkpoint of another log (its own key) is not this log's.
    foreign = Log.open(tmp_path / "other")
    try:
        foreign.append(b"x")
        alien = cp.cosign_checkpoint(foreign.checkpoint(), witness, int(time.time())).decode()
    finally:
        foreign.close()
    resp = _post(client, alien, witness.cosignature_vkey)
    assert resp.status_code == 400  # type: ignore[attr-defined]
    # A line whose signature bytes were changed.
    lines = cosigned.rstrip("\n").split("\n")
    head, sig = lines[-1].rsplit(" ", 1)
    lines[-1] = head + " " + ("A" if sig[0] != "A" else "B") + sig[1:]
    resp = _post(client, "\n".join(lines) + "\n", witness.cosignature_vkey)
    assert resp.status_code == 400  # type: ignore[attr-defined]
    resp = _post(client, XSS, witness.cosignature_vkey)
    assert resp.status_code == 400 and "<img" not in resp.text  # type: ignore[attr-defined]
    assert "None yet" in client.get("/").text


def test_witness_post_without_csrf_is_403(client: TestClient, log: Log) -> None:
    witness = cp.NoteSigner("witness.example", Identity.generate("w"))
    cosigned = cp.cosign_checkpoint(log.checkpoint(), witness, int(time.time())).decode()
    assert _post(client, cosigned, witness.cosignature_vkey, token=False).status_code == 403  # type: ignore[attr-defined]
