"""Shared fixtures: every test gets its own EDGETRUST_HOME, so nothing touches ~/.edgetrust."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: a timing is never a pass/fail threshold here, and the first example
# of a test may compile (numba) or load a cached kernel, which takes ~0.3 s once per process.
settings.register_profile("edgetrust", deadline=None)
settings.load_profile("edgetrust")

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(autouse=True)
def edgetrust_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EDGETRUST_HOME", str(home))
    return home
