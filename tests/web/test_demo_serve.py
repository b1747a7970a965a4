"""`edgetrust demo` prints how to see its log; `edgetrust demo --serve` serves that log's pages.

The demo itself is replaced by a small one (the real demo takes a minute and has its own
tests); `uvicorn.run` is replaced by a client that opens the pages of the app it is given.
"""

from __future__ import annotations

import re
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


def _demo_with_companions(console: Any = None, *, home: Path | None = None) -> DemoResult:
    """The demo's three logs, small: main (a card), federation (one FL round), data-log."""
    import numpy as np

    from edgetrust.collab import SessionSpec, simulate
    from edgetrust.data.jobs import DataOwner

    result = _small_demo(console, home=home)
    assert home is not None
    simulate(SessionSpec(rounds=1, local_epochs=1), num_clients=3, home=home / "federation")
    with Log.open(home / "data-log") as data_log:
        owner = DataOwner(home / "data-ana", identity="ana", log=data_log)
        src = home / "ana.npz"
        np.savez(src, x=np.zeros((30, 4)), label=np.arange(30) % 3)
        owner.add_dataset(src, licence="CC-BY-4.0", name="ana-digits")
        result.failures = []
        seen_owner.append(owner.identity.did)
        owner.close()
    return result


seen_owner: list[str] = []


def test_demo_serve_shows_fl_and_data(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kw: Any) -> None:
        with TestClient(app) as client:
            rounds = client.get("/rounds").text
            found = re.search(r'href="/rounds/([^"]+)"', rounds)
            assert found, rounds[-1500:]
            seen["session"] = client.get(f"/rounds/{found.group(1)}").text
            seen["data"] = client.get("/data").text
            seen["log"] = client.get("/").text

    monkeypatch.setattr("edgetrust.demo.run_demo", _demo_with_companions)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert run(["demo", "--serve", "--port", "18998"]) == 0
    audit = seen["session"][seen["session"].index('id="audit"') :][:1500]
    assert "pass:" in audit and "round 1 yes" in audit, audit
    assert seen_owner[-1] in seen["data"]
    assert "demo-model1" in seen["log"]
