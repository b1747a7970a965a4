"""The `edgetrust` command line: a thin Typer layer over the library.

Each command group lives in its own private module, which registers its commands on the root
`app` when imported. Errors derived from `edgetrust.errors.Error` become one line on stderr and
an exit code: 1 for a failed verification, 2 for bad usage or input. Never a traceback.
"""

from __future__ import annotations

# Command groups: importing a module registers its commands on `app`. One line per group.
import edgetrust.cli._chain  # noqa: F401  (chain account, deploy, anchor, watch, …, demo)
from edgetrust.cli import (
    _capture,  # noqa: F401  (capture record, verify, show)
    _core,  # noqa: F401  (init, model, infer, reveal, verify, demo)
    _data,  # noqa: F401  (data add, grant, serve, request, usage, …)
    _data_value,  # noqa: F401  (data value, simulate)
    _dispute,  # noqa: F401  (model import, challenge)
    _fl,  # noqa: F401  (fl simulate, audit)
    _flower,  # noqa: F401  (fl serve, join)
    _human,  # noqa: F401  (human register, login, task add, tasks, review, aggregate, …)
    _log,  # noqa: F401  (log, node, witness)
    _publish,  # noqa: F401  (log publish)
    _referee,  # noqa: F401  (chain dispute, deploy-referee, register-device, cosign)
    _zk,  # noqa: F401  (zk setup, prove, verify, show, export)
)
from edgetrust.cli._app import app, main, run

__all__ = ["app", "main", "run"]
