"""The demo's human-review step on its own (the full demo is too slow for a targeted test)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgetrust.demo import DemoResult
from edgetrust.human.demo import human_step
from edgetrust.human.policy import HumanRecord
from edgetrust.log.service import Log


def test_human_step(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        console = Console(record=True, width=200)
        result = DemoResult(console=console)
        human_step(console, result, log, "sha256:" + "ab" * 32)
        assert result.failures == [] and len(result.rows) == 2
        assert [r[2].startswith("rejected") for r in result.rows] == [False, True]
        text = console.export_text()
        assert "'correct'" in text and "vouched for by 2" in text
        rec = HumanRecord.from_entries(
            log.entries(0, log.size()), rp_id="edgetrust.local", origin="https://edgetrust.local"
        )
        assert rec.refused == [] and len(rec.tasks) == 1
    finally:
        log.close()


def test_human_step_with_a_disputed_receipt(tmp_path: Path) -> None:
    """The policy passes the confirmed receipt and refuses the disputed one; DS beats MV."""
    import re

    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        console = Console(record=True, width=200)
        result = DemoResult(console=console)
        human_step(console, result, log, "sha256:" + "ab" * 32, disputed="sha256:" + "cd" * 32)
        assert result.failures == []
        outcomes = {r[0]: r[2] for r in result.rows}
        confirmed = outcomes["human: HumanAttested(2, 0.5) on the receipt the reviewers confirmed"]
        disputed = outcomes["human: HumanAttested(2, 0.5) on a receipt the reviewers disputed"]
        assert confirmed == "verified" and disputed.startswith("rejected")
        found = re.search(
            r"majority vote ([\d.]+)% correct, Dawid–Skene ([\d.]+)%", console.export_text()
        )
        assert found is not None and float(found[2]) > float(found[1])
    finally:
        log.close()
