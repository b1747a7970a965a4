"""The root Typer app, shared output helpers, and the error-to-exit-code boundary."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from edgetrust.errors import Error, VerificationError

app = typer.Typer(
    name="edgetrust",
    help=(
        "Trust for AI that runs on your own device: signed inference receipts, a public "
        "transparency log, and verification at the level you need.\n\n"
        "Start with 'edgetrust demo' (everything in a temporary home, no network), or "
        "'edgetrust init' to create your device identity."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"edgetrust {version('edgetrust')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Trust for AI that runs on your own device."""


# emoji=False: Rich would otherwise render the ":key:" inside every did:key as an emoji.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
HomeOpt = Annotated[
    str | None,
    typer.Option("--home", envvar="EDGETRUST_HOME", help="State directory (default ~/.edgetrust)."),
]

_json_mode = False

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2


def emit(json_mode: bool, data: Any, human: Callable[[], None]) -> None:
    """Print `data` as JSON in --json mode, otherwise call `human` to render it."""
    global _json_mode
    _json_mode = json_mode
    if json_mode:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        human()


def set_json_mode(json_mode: bool) -> None:
    """Remember --json so that an error raised later is also reported as JSON."""
    global _json_mode
    _json_mode = json_mode


class _ConsoleWarnings(logging.Handler):
    """edgetrust's own warnings (e.g. the UNSAFE SRS path) as one line on stderr.

    An error logged with its exception keeps the exception's last line; the message is
    printed as text, never read as Rich markup.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f": {type(exc).__name__}: {exc}"
            color = "red" if level == "error" else "yellow"
            err.print(f"[{color}]{level}:[/] {escape(text)}", highlight=False)
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


def _show_warnings() -> None:
    # EZKL logs its calibration tables as warnings; the commands show their own summaries.
    for name in ("ezkl", "tract_onnx", "tract_core", "tract_hir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logger = logging.getLogger("edgetrust")
    if not any(isinstance(h, _ConsoleWarnings) for h in logger.handlers):
        logger.addHandler(_ConsoleWarnings(logging.WARNING))


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` and return its exit code instead of exiting."""
    global _json_mode
    _show_warnings()
    _json_mode = False
    code: int
    try:
        app(args=list(argv) if argv is not None else None, prog_name="edgetrust")
        code = EXIT_OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except VerificationError as exc:
        _report("verification failed", exc)
        code = EXIT_VERIFICATION_FAILED
    except Error as exc:
        _report("error", exc)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    except Exception as exc:  # last resort: a defect, still one line and no traceback
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(please report this; EDGETRUST_DEBUG=1 shows the traceback)",
            markup=True,
            highlight=False,
        )
        if os.environ.get("EDGETRUST_DEBUG"):
            raise
        code = EXIT_BAD_INPUT
    return code


def _report(prefix: str, exc: Error) -> None:
    if _json_mode:
        body: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
        if isinstance(exc, VerificationError):
            body["step"] = exc.step
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
    err.print(f"[bold red]{prefix}:[/] {exc.diagnostics()}", markup=True, highlight=False)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
