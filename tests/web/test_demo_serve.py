"""`edgetrust demo` prints how to see its log; `edgetrust demo --serve` serves that log's pages.

The demo itself is replaced by a small one (the real demo takes a minute and has its own
tests); `uvicorn.run` is replaced by a client that opens the pages of the app it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from edgetrust.cli import run
from edgetrust.demo import DemoResult
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from tests.node.conftest import card_envelope


def _small_demo(console: Any = None, *, home: Path | None = None) -> DemoResult:
    result = DemoResult()
    if home is not None:  # the real demo's main log lives at <home>/log
        with Log.open(home / "log", origin="demo.edgetrust.local/log") as log:
            log.append(card_envelope(Identity.generate("p"), 1, name="demo-model"))
            result.log_size = log.size()
    return result


def test_demo_serve_serves_its_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kw: Any) -> None:
        seen.update(kw)
        with TestClient(app) as client:
            seen["log"] = client.get("/").text
            seen["entry"] = client.get("/entries/0").status_code

    monkeypatch.setattr("edgetrust.demo.run_demo", _small_demo)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert run(["demo", "--serve", "--port", "18999"]) == 0
    assert "http://127.0.0.1:18999/" in capsys.readouterr().err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 18999
    assert "demo.edgetrust.local/log" in seen["log"] and "demo-model1" in seen["log"]
    assert seen["entry"] == 200


def test_demo_without_serve_prints_the_way_to_its_pages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("edgetrust.demo.run_demo", _small_demo)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    assert run(["demo"]) == 0
    assert "edgetrust demo --serve" in capsys.readouterr().out
