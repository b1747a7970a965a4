"""Shared fixtures: every test gets its own EDGETRUST_HOME, so nothing touches ~/.edgetrust."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(autouse=True)
def edgetrust_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EDGETRUST_HOME", str(home))
    return home
