"""Every page over a node holding real entries of every kind: content, search, the receipt
upload (CSRF, limits, bad files), markup in every shown field rendered inert."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from tests.web.world import XSS, World

ESCAPED = "&lt;img src=x onerror=&#34;document.title=1&#34;&gt;"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _token(site: TestClient) -> str:
    site.get("/receipt")
    token = site.cookies.get("et_csrf")
    assert token
    return token


def _pages(world: World) -> list[str]:
    return [
        "/",
        "/entries",
        f"/entries/{world.receipt_index}",
        f"/entries/{world.verdict_index}",
        "/receipt",
        f"/receipt?index={world.receipt_index}",
        "/rounds",
        f"/rounds/{world.session}",
        "/disputes",
        "/data",
        f"/data?owner={world.owner_did}",
        f"/search?q={world.device_did}",
        f"/search?q={world.model_digest}",
    ]


def test_every_page_renders_real_data_and_no_markup(site: TestClient, world: World) -> None:
    shown = 0
    for url in _pages(world):
        resp = site.get(url)
        assert resp.status_code == 200, url
        assert "unsafe-inline" not in resp.headers["content-security-policy"]
        assert XSS not in resp.text, url
        assert "<img" not in resp.text and "style=" not in resp.text, url
        assert (
            re.search(r"<script(?! src=\"/static/receipt\.js\" defer></script>)", resp.text) is None
        )
        shown += ESCAPED in resp.text
    assert shown >= 4  # the model name, dataset name, revocation reason, verdict text


def test_log_page_checkpoint_signature_chart_and_kinds(site: TestClient) -> None:
    html = site.get("/").text
    assert "Latest checkpoint" in html and "<polyline" in html
    assert "✓</span> pass" in html  # the log's own signature line, verified
    assert "Not anchored" in html
    text = _text(site.get("/entries").text)
    for kind in (
        "model card",
        "receipt",
        "dispute verdict",
        "FL round",
        "dataset",
        "usage record",
        "revocation",
    ):
        assert kind in text, kind


def test_search_by_digest_did_and_index(site: TestClient, world: World) -> None:
    by_model = _text(site.get(f"/search?q={world.model_digest}").text)
    assert "model card" in by_model and "receipt" in by_model  # the card, and receipts naming it
    by_hex = site.get(f"/search?q={world.model_digest.removeprefix('sha256:').upper()}").text
    assert "model card" in by_hex
    by_did = site.get(f"/search?q={world.device_did}").text
    assert f'href="/entries/{world.receipt_index}"' in by_did
    owner = _text(site.get(f"/search?q={world.owner_did}").text)
    assert "dataset" in owner and "usage record" in owner
    jump = site.get(f"/search?q={world.receipt_index}", follow_redirects=False)
    assert jump.status_code == 303 and jump.headers["location"] == f"/entries/{world.receipt_index}"
    assert "No entries." in site.get("/search?q=sha256:" + "9" * 64).text
    bad = site.get("/search?q=" + XSS)
    assert bad.status_code == 400 and XSS not in bad.text


def test_receipt_by_index_runs_every_step(site: TestClient, world: World) -> None:
    text = _text(site.get(f"/receipt?index={world.receipt_index}").text)
    for step in (
        "1 signature (pass)",
        "2 statement (pass)",
        "3 model (pass)",
        "4 opening (skip): no input given",
        "6 log (pass)",
        "8 zk (skip)",
    ):
        assert step in text, step
    assert "digits-mlp" in text and "top classes" in text
    assert site.get("/receipt?index=0").status_code == 400  # the model card is no receipt
    assert site.get("/receipt?index=99999").status_code == 404


def test_upload_honest_and_tampered(site: TestClient, world: World) -> None:
    token = _token(site)
    data = world.bundle.read_bytes()
    ok = site.post("/receipt", files={"bundle": ("r.json", data)}, data={"csrf_token": token})
    assert ok.status_code == 200 and "Verified: uploaded file r.json" in ok.text
    obj = json.loads(data)
    sig = obj["envelope"]["signatures"][0]["sig"]
    obj["envelope"]["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    bad = site.post(
        "/receipt", files={"bundle": (XSS, json.dumps(obj).encode())}, data={"csrf_token": token}
    )
    text = _text(bad.text)
    assert bad.status_code == 200 and "Verification failed" in text
    assert "1 signature (fail)" in text and "2 statement (not run)" in text
    assert XSS not in bad.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "is not a receipt bundle"),
        (b'{"mediaType": "x"}', "is not a receipt bundle"),
        (b"\xff\xfe" * 100, "is not a receipt bundle"),
        (b"[]", "is not a receipt bundle"),
    ],
)
def test_non_bundle_is_a_readable_error(site: TestClient, body: bytes, message: str) -> None:
    resp = site.post(
        "/receipt", files={"bundle": ("x.json", body)}, data={"csrf_token": _token(site)}
    )
    assert resp.status_code == 400 and message in resp.text and 'role="alert"' in resp.text
    assert "Traceback" not in resp.text


def test_upload_needs_csrf_and_a_size_limit(site: TestClient, world: World) -> None:
    data = world.bundle.read_bytes()
    _token(site)
    assert site.post("/receipt", files={"bundle": ("r.json", data)}).status_code == 403
    wrong = site.post("/receipt", files={"bundle": ("r.json", data)}, data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    huge = site.post(
        "/receipt",
        files={"bundle": ("r.json", b" " * (3 * 2**20))},
        data={"csrf_token": _token(site)},
    )
    assert huge.status_code == 413 and huge.headers["content-type"].startswith("text/html")
    garbled = site.post(
        "/receipt",
        content=b"--x\r\n garbage",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert garbled.status_code in (400, 403)
    nofile = site.post("/receipt", data={"csrf_token": _token(site)})
    assert nofile.status_code == 400 and "choose a bundle file" in nofile.text


def test_rounds_pages(site: TestClient, world: World) -> None:
    listing = site.get("/rounds").text
    assert f"/rounds/{world.session}" in listing
    text = _text(site.get(f"/rounds/{world.session}").text)
    assert "pass: 2 rounds replayed" in text
    assert "Participants 4" in text and "Grants cited" in text
    page = site.get(f"/rounds/{world.session}").text
    assert page.count("<polyline") == 2  # accuracy and ε
    assert site.get("/rounds/nope").status_code == 404
    assert site.get("/rounds/" + "x" * 300).status_code == 400


def test_disputes_page(site: TestClient, world: World) -> None:
    text = _text(site.get("/disputes").text)
    assert f"entry {world.verdict_index} : the device lost" in text
    assert "Disputed node and element gemm0 [" in text
    assert "multiply-adds" in text and "✓ pass" in text


def test_data_pages(site: TestClient, world: World) -> None:
    assert world.owner_did in site.get("/data").text
    text = _text(site.get(f"/data?owner={world.owner_did}").text)
    assert "CC-BY-4.0" in text and "200" in text  # the dataset card: licence, record count
    assert text.count("stats mean") >= 2  # two usage records
    assert "Revocations" in text and "Uses per requester" in text
    assert site.get("/data?owner=" + XSS).status_code == 400


@pytest.mark.parametrize(
    ("url", "status"),
    [("/entries/123456", 404), ("/receipt?index=abc", 400), ("/data?owner=a&owner=b", 400)],
)
def test_bad_input_pages(site: TestClient, url: str, status: int) -> None:
    resp = site.get(url)
    assert resp.status_code == status and resp.headers["content-type"].startswith("text/html")
