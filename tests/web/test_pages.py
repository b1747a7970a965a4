"""The web pages over a real log: rendering, escaping, headers, bad input as 4xx pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from tests.node.conftest import card_envelope

XSS = "<script>alert(1)</script>"


@pytest.fixture
def web(log: Log, publisher: Identity) -> Iterator[TestClient]:
    log.append_many([card_envelope(publisher, i) for i in range(120)])
    log.append(card_envelope(publisher, 999, name=XSS))
    app = create_app(log, settings=NodeSettings(rate=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_overview_shows_checkpoint_and_escapes_entries(web: TestClient) -> None:
    resp = web.get("/")
    assert resp.status_code == 200
    assert "121 entries" in resp.text
    assert XSS not in resp.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in resp.text
    csp = resp.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert "<script" not in resp.text and "style=" not in resp.text


def test_entries_keyset_pages(web: TestClient) -> None:
    first = web.get("/entries")
    assert first.status_code == 200
    assert 'href="/entries/120"' in first.text and 'href="/entries/70"' not in first.text
    assert "before=71" in first.text
    older = web.get("/entries?before=71")
    assert 'href="/entries/70"' in older.text and 'href="/entries/71"' not in older.text


def test_entry_page_runs_checks(web: TestClient) -> None:
    resp = web.get("/entries/5")
    assert resp.status_code == 200
    assert resp.text.count("(pass)") == 3
    assert "model card" in resp.text


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/entries/99999", 404),
        ("/entries/-1", 400),
        ("/entries/abc", 400),
        ("/entries/" + "9" * 40, 400),
        ("/entries?before=x", 400),
        ("/entries?before=1&before=2", 400),
        ("/entries?before=" + "1" * 300, 400),
        ("/entries?before=%00", 400),
    ],
)
def test_bad_input_is_a_4xx_page(web: TestClient, url: str, status: int) -> None:
    resp = web.get(url)
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("text/html")
    assert "Traceback" not in resp.text


def test_static_css_served(web: TestClient) -> None:
    assert web.get("/static/style.css").status_code == 200


def test_overview_shows_the_anchor_of_an_anchoring_node(log: Log, publisher: Identity) -> None:
    from types import SimpleNamespace

    class FakeAuto:  # what the page reads of `chain.autoanchor.AutoAnchor`
        every = 5
        last_size = 3
        anchor = SimpleNamespace(address="0x" + "ab" * 20, chain=SimpleNamespace(chain_id=31337))

        def maybe_anchor(self) -> None:
            return None

    log.append(card_envelope(publisher, 1))
    app = create_app(log, settings=NodeSettings(rate=0), on_append=FakeAuto().maybe_anchor)
    with TestClient(app) as client:
        html = client.get("/").text
    assert "every 5 entries on chain 31337" in html and "last anchored size: 3" in html
    assert "0x" + "ab" * 20 in html
