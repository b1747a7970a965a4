"""The `edgetrust` command line: a thin Typer layer over the library.

Each command group lives in its own private module and registers here. Errors derived from
`edgetrust.errors.Error` become one line on stderr and an exit code: 1 for a failed
verification, 2 for bad usage or input. Never a traceback.
"""

from __future__ import annotations

from edgetrust.cli._app import app, main

__all__ = ["app", "main"]
