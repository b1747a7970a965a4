from __future__ import annotations

import subprocess
import sys

import pytest

from edgetrust.cli import run


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    assert "init" in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 2


def test_init_creates_identity_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["init", "--json"]) == 0
    first = capsys.readouterr().out
    assert '"created": true' in first
    assert run(["init", "--json"]) == 0
    assert '"created": false' in capsys.readouterr().out


def test_bad_key_name_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["init", "--name", "../x"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_real_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgetrust", "init", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "did:key:z6Mk" in proc.stdout


def test_library_warnings_print_as_one_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from edgetrust.cli._app import _show_warnings

    _show_warnings()
    logger = logging.getLogger("edgetrust.test")
    logger.warning("model %s", "[/]not markup[bold]")  # must not raise MarkupError
    try:
        raise OSError("disk full")
    except OSError:
        logger.exception("hook failed")
    err = capsys.readouterr().err
    assert "warning: model [/]not markup[bold]" in err
    assert "error: hook failed: OSError: disk full" in err
    assert "Traceback" not in err
