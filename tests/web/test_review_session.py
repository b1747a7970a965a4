"""The review page's passkey session: only a cookie this process MACed, unexpired, for a
registered reviewer opens it; forged, altered or expired cookies and CSRF-less posts do not."""

from __future__ import annotations

from fastapi.testclient import TestClient

from edgetrust.node.web.review import SESSION_COOKIE, SESSION_SECONDS, Sessions, published_text
from tests.web.conftest import log, publisher, site, world

__all__ = ["log", "publisher", "site", "world"]

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def test_session_cookie_mac_and_expiry() -> None:
    s = Sessions(b"k" * 32)
    cookie = s.issue(DID, now=1000)
    assert s.did(cookie, now=1001) == DID
    assert s.did(cookie, now=1000 + SESSION_SECONDS + 1) is None  # expired
    assert Sessions(b"j" * 32).did(cookie, now=1001) is None  # another process's key
    head, mac = cookie.rsplit(".", 1)
    assert s.did(head + "." + ("A" if mac[0] != "A" else "B") + mac[1:], now=1001) is None
    raw, exp, mac = cookie.split(".")
    assert s.did(f"{raw}.{int(exp) + 9999}.{mac}", now=1001) is None  # expiry altered
    for junk in ("", "x", "a.b", "a.b.c.d", "." * 2, "z" * 700):
        assert s.did(junk) is None


def test_forged_cookie_is_no_session(site: TestClient) -> None:
    site.cookies.set(SESSION_COOKIE, Sessions().issue(DID))  # MACed by another key
    html = site.get("/review").text
    assert "Not signed in." in html and 'data-session=""' in html
    assert 'id="logout"' not in html


def test_session_and_logout_posts_need_csrf(site: TestClient) -> None:
    resp = site.post("/review/session", json={"did": DID, "credential": {}})
    assert resp.status_code == 403 and "CSRF" in resp.json()["message"]
    assert site.post("/review/logout", json={}).status_code == 403
    site.get("/review")  # the CSRF cookie
    token = site.cookies.get("et_csrf")
    resp = site.post(
        "/review/session", json={"did": "did:key:zbad", "credential": {}, "csrf": token}
    )
    assert resp.status_code == 400 and "malformed DID" in resp.json()["message"]
    resp = site.post(
        "/review/session", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code in (400, 403)
    resp = site.post("/review/session", json={"did": DID, "credential": {}, "csrf": token})
    assert 400 <= resp.status_code < 500  # no passkey ceremony: refused, one line
    assert site.post("/review/logout", json={"csrf": token}).status_code == 200


def test_published_text_words_every_case() -> None:
    # the same words as publishedText() in static/review.js (checked in Chromium by
    # test_review.py::test_published_status_and_gold_reveal)
    assert published_text(None) == "not published"
    row = {"index": 7, "logSize": 7, "stale": False, "later": []}
    assert published_text(row) == "published at entry 7: current"
    row = {**row, "stale": True, "later": [9, 12]}
    assert published_text(row) == "published at entry 7: stale (later: 9, 12)"
    row = {**row, "later": list(range(10, 23))}
    assert published_text(row).endswith(
        "(later: 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 and 3 more)"
    )
