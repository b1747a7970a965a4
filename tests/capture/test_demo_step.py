"""The demo's capture step runs and every check comes out as expected."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgetrust.capture.demo import capture_step
from edgetrust.demo import DemoResult
from edgetrust.log.service import Log


def test_capture_step(tmp_path: Path) -> None:
    console = Console(file=open(tmp_path / "out.txt", "w"), emoji=False)
    result = DemoResult(console=console)
    log = Log.open(tmp_path / "home")
    try:
        capture_step(console, result, tmp_path, log)
        assert log.size() == 1
    finally:
        log.close()
    console.file.close()
    assert result.failures == []
    assert [r[2].split(" at ")[0] for r in result.rows] == ["verified", "rejected", "rejected"]
    text = (tmp_path / "out.txt").read_text()
    assert "chunk 3 was altered" in text and "missing: 1" in text
