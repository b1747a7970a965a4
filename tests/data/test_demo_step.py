"""The demo's data step runs and every check comes out as expected."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgetrust.data.demo import data_step
from edgetrust.demo import DemoResult


def test_data_step(tmp_path: Path) -> None:
    console = Console(file=open(tmp_path / "out.txt", "w"), emoji=False)
    result = DemoResult(console=console)
    data_step(console, result, tmp_path)
    console.file.close()
    assert result.failures == []
    assert [r[2].split(" at ")[0] for r in result.rows] == [
        "rejected",
        "rejected",
        "rejected",
        "verified",
        "verified",
    ]
    assert "FL round 1" in (tmp_path / "out.txt").read_text()
    assert "KNN-Shapley" in (tmp_path / "out.txt").read_text()
