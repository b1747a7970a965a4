"""Where edgetrust keeps its state: `$EDGETRUST_HOME`, default `~/.edgetrust`."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_HOME", "resolve_home"]

ENV_HOME = "EDGETRUST_HOME"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the edgetrust home directory: `home`, else `$EDGETRUST_HOME`, else ~/.edgetrust.

    The directory is created (mode 0700) when missing, since it holds private keys.
    """
    if home is None:
        home = os.environ.get(ENV_HOME) or Path.home() / ".edgetrust"
    path = Path(home).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
