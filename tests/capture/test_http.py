"""The node's capture endpoints: submit a root (or a manifest), show it; 4xx for bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgetrust.capture.record import record
from edgetrust.capture.sources import eeg_like, numpy_sensor
from edgetrust.capture.stream import CaptureDevice
from edgetrust.capture.verify import Manifest
from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.statement import COSIGNER_RULE


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        with TestClient(
            create_app(log, settings=NodeSettings(rate=0)), raise_server_exceptions=False
        ) as c:
            yield c
    finally:
        log.close()


def _manifest(wearer: Identity | None = None) -> Manifest:
    dev = CaptureDevice(Identity.generate(), numpy_sensor(4))
    s = record(dev, [eeg_like(3.0, 4)], seal_every=2, wearer=wearer)
    return Manifest.from_session(s)


def test_submit_and_show(client: TestClient) -> None:
    m = _manifest()
    r = client.post("/v1/captures", content=m.to_json())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duplicate"] is False and body["chunks"] == 3
    again = client.post("/v1/captures", content=m.statement.to_json())
    assert again.status_code == 200 and again.json()["index"] == body["index"]
    assert again.json()["duplicate"] is True
    shown = client.get(f"/v1/captures/{body['root']}")
    assert shown.status_code == 200 and shown.json()["index"] == body["index"]
    assert shown.json()["statement"] == m.statement.to_dict()


def test_bad_input_is_4xx(client: TestClient) -> None:
    m = _manifest()
    intruder = Identity.generate()
    forged = sign_envelope(m.statement.payload, m.statement.payload_type, intruder)
    broken = m.to_dict()
    broken["seals"] = broken["seals"][:1]
    wearer = Identity.generate()
    wm = _manifest(wearer=wearer)
    no_consent = sign_envelope(wm.statement.payload, wm.statement.payload_type, Identity.generate())
    cases = [
        b"",
        b"{",
        b"[]",
        b'{"format": "https://edgetrust.dev/capture-manifest/v1"}',
        forged.to_json(),
        json.dumps(broken).encode(),
        no_consent.to_json(),
        b"x" * (16 * 2**20 + 1),
    ]
    for body in cases:
        r = client.post("/v1/captures", content=body)
        assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text)
        assert "error" in r.json()
    assert client.get("/v1/captures/nothex").status_code == 400
    assert client.get("/v1/captures/" + "a" * 64).status_code == 404


def test_an_extra_signer_on_a_root_is_refused_not_a_new_entry(client: TestClient) -> None:
    wm = _manifest(wearer=Identity.generate())
    root = wm.statement
    assert client.post("/v1/captures", content=root.to_json()).status_code == 200
    (intruder,) = sign_envelope(root.payload, root.payload_type, Identity.generate()).signatures
    padded = Envelope(root.payload, root.payload_type, (*root.signatures, intruder))
    r = client.post("/v1/captures", content=padded.to_json())
    assert r.status_code == 400 and COSIGNER_RULE in r.json()["message"]
    # the same root in another JSON form is the entry already logged
    again = client.post("/v1/captures", content=json.dumps(json.loads(root.to_json()), indent=1))
    assert again.status_code == 200 and again.json()["duplicate"] is True
