"""The pages in Debian's Chromium (Playwright) against a real node: no CSP or console errors,
keyboard navigation, injected markup inert."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from edgetrust.identity import Identity
from tests.node.conftest import card_envelope, start_server

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"


def test_pages_in_chromium(tmp_path: Path, publisher: Identity) -> None:
    server = start_server(["node", "serve", "--rate", "0"], tmp_path / "home")
    try:
        for i in range(3):
            httpx.post(server.url + "/v1/entries", content=card_envelope(publisher, i))
        xss = card_envelope(publisher, 9, name="<img src=x onerror=alert(1)>")
        assert httpx.post(server.url + "/v1/entries", content=xss).status_code == 200
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("dialog", lambda d: problems.append("dialog " + d.message))
            for url in ("/", "/entries", "/entries/3"):
                assert page.goto(server.url + url).status == 200
            assert page.locator("img").count() == 0
            page.goto(server.url + "/")
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            assert page.url.endswith("/#main")
            assert page.goto(server.url + "/entries/abc").status == 400
            browser.close()
        assert all("status of 400" in m for m in problems), problems
    finally:
        server.stop()
