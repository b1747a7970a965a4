"""One log holding all the demo wrote, so ``edgetrust demo --serve`` shows every page filled.

The demo writes three logs under one temporary root: ``log`` (models, receipts, disputes,
anchoring, capture), ``federation`` (its federated session) and ``data-log`` (the data owners'
datasets, grants, jobs, usage). The pages read one log, so `fold_demo_logs` writes a fourth,
``served`` (origin ``demo.edgetrust.local/log``), holding the federation log's entries first
(federated round records cite their config by log index, so those indices must not move),
then the main log's, then the data log's except its own federated rounds (which would move);
and copies the FL artifacts and models beside it, so the round audit recomputes the models.
No entry of the main or data log cites a log index, so moving them changes nothing they say.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from edgetrust.log.service import Log
from edgetrust.node.web.describe import describe_entry

__all__ = ["DEMO_ORIGIN", "fold_demo_logs"]

DEMO_ORIGIN = "demo.edgetrust.local/log"
_CHUNK = 512
_FL_KINDS = ("FL round config", "FL round")


def _entries(home: Path) -> Iterator[bytes]:
    if not (home / "log" / "log.db").exists():
        return
    with Log.open(home) as src:
        size = src.size()
        for start in range(0, size, _CHUNK):
            yield from src.entries(start, min(_CHUNK, size - start))


def fold_demo_logs(home: Path) -> Path:
    """Write ``<root>/served`` from the demo logs beside `home` (the main log's home).

    Returns the new home to serve. Missing logs are skipped; entries are logged once.
    """
    root = home.parent
    served = root / "served"
    with Log.open(served, origin=DEMO_ORIGIN) as out:
        if out.size() == 0:
            sources = [(root / "federation", False), (home, False), (root / "data-log", True)]
            for src, skip_fl in sources:
                for data in _entries(src):
                    if skip_fl and describe_entry(0, data).kind in _FL_KINDS:
                        continue
                    if out.index_of(data) is None:
                        out.append(data)
    for artifacts in (root / "federation", home):
        for part in ("fl", "models"):
            if (artifacts / part).is_dir():
                shutil.copytree(artifacts / part, served / part, dirs_exist_ok=True)
    return served
