"""Bad URLs get a 4xx HTML page with one line saying what is wrong, never a 5xx or traceback:
unknown or malformed indices, malformed or unknown digests, malformed or unknown DIDs."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.web.conftest import log, publisher, site, world

__all__ = ["log", "publisher", "site", "world"]

GOOD_UNKNOWN_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/entries/99999", 404, "entry 99999 is beyond the log's size"),
        ("/entries/abc", 400, "entry index must be a non-negative integer"),
        ("/entries/" + "9" * 30, 400, "entry index must be a non-negative integer"),
        ("/receipt?index=99999", 404, "entry 99999 is beyond the log's size"),
        ("/receipt?index=-3", 400, "must be a non-negative integer"),
        ("/search?q=sha256:zz", 400, "malformed digest: sha256: and 64 hex digits"),
        ("/search?q=sha256:" + "a" * 63, 400, "malformed digest"),
        ("/search?q=sha256:" + "9" * 64, 404, "nothing in this log names the digest"),
        ("/search?q=did:key:zNotAKey", 400, "malformed DID"),
        ("/search?q=did:", 400, "malformed DID"),
        ("/search?q=" + GOOD_UNKNOWN_DID, 404, "nothing in this log names the DID"),
        ("/data?owner=did:key:zbad", 400, "malformed owner DID"),
        ("/data?owner=" + GOOD_UNKNOWN_DID, 404, "no dataset, grant or usage record of"),
        ("/rounds/nosuch", 404, "no federated session nosuch"),
    ],
)
def test_bad_url_gives_a_one_line_4xx_page(
    site: TestClient, url: str, status: int, message: str
) -> None:
    resp = site.get(url)
    assert resp.status_code == status, (url, resp.text[-400:])
    assert resp.headers["content-type"].startswith("text/html")
    alert = re.search(r'<p role="alert">(.*?)</p>', resp.text, re.S)
    assert alert is not None, url
    line = re.sub(r"<[^>]+>", "", alert.group(1)).replace("&#39;", "'")
    assert "\n" not in line.strip() and message in line, (url, line)
    assert "Traceback" not in resp.text
