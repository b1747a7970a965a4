"""Shared plumbing for the ZK modules: field elements, progress callbacks, files, locks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError

FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617
"""The order r of BN254's scalar field: the field EZKL's circuits compute in."""

_FELT_RE = re.compile(r"^[0-9a-f]{64}$")

ProgressFn = Callable[[str, int, int], None]
"""Progress callback: ``(stage description, stages done, stages in total)``."""

MAX_SETTINGS_BYTES = 4 * 2**20


def import_ezkl(zk_dir: Path | None = None) -> Any:
    """Import ezkl, pointing its own state directory into the edgetrust home first.

    EZKL caches lookup tables under ``$EZKL_REPO_PATH/cache`` (default ``~/.ezkl``), and those
    tables become fixed columns that the verifying key commits to. Keeping them under
    ``$EDGETRUST_HOME/zk/ezkl`` keeps all of a home's ZK state in one place (and tests out of
    the user's home). EZKL reads the variable once per process, so the first home wins; a
    value the user set is left alone.
    """
    if zk_dir is not None:
        os.environ.setdefault("EZKL_REPO_PATH", str(zk_dir / "ezkl"))
    import ezkl

    return ezkl


def no_progress(stage: str, done: int, total: int) -> None:
    """The default progress callback: does nothing."""


def check_felt(felt: Any, what: str) -> str:
    """Check an EZKL field element: 64 lower-case hex digits, little-endian, below r."""
    if not isinstance(felt, str) or not _FELT_RE.match(felt):
        raise InvalidInputError(f"{what} must be 64 lower-case hex digits (a field element)")
    if int.from_bytes(bytes.fromhex(felt), "little") >= FIELD_MODULUS:
        raise InvalidInputError(f"{what} is not below the BN254 field modulus")
    return felt


def felt_to_int(felt: str) -> int:
    """A field element as a signed integer: values above r/2 stand for negatives.

    EZKL writes field elements as 32 little-endian bytes in hex and encodes a negative
    fixed-point value v as r - |v|; this is the inverse (cross-checked against
    ``ezkl.felt_to_int`` in the tests).
    """
    value = int.from_bytes(bytes.fromhex(felt), "little")
    return value - FIELD_MODULUS if value > FIELD_MODULUS // 2 else value


def int_to_felt(value: int) -> str:
    """A signed integer as an EZKL field element (32 little-endian bytes, hex)."""
    return (value % FIELD_MODULUS).to_bytes(32, "little").hex()


def felt_to_hex_be(felt: str) -> str:
    """A field element in the conventional big-endian ``0x…`` form (as EZKL prints hashes)."""
    return "0x" + bytes.fromhex(felt)[::-1].hex()


def hex_be_to_felt(value: str, what: str) -> str:
    """Inverse of `felt_to_hex_be`, validating the form."""
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-f]{64}", value):
        raise InvalidInputError(f"{what} must be '0x' and 64 lower-case hex digits")
    return check_felt(bytes.fromhex(value[2:])[::-1].hex(), what)


def read_json_file(path: Path, what: str, *, max_bytes: int = MAX_SETTINGS_BYTES) -> Any:
    """Read and parse a JSON file with a size limit."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from exc
    return parse_json(data, what=what, max_bytes=max_bytes)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` via a temporary file and a rename (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def temp_path(directory: Path, suffix: str) -> Iterator[Path]:
    """A fresh path in `directory` that is removed afterwards; the caller renames it to keep it.

    EZKL writes its outputs straight to the path it is given; writing to a temporary name and
    renaming means a crash or an interrupt never leaves a truncated key in the cache.
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    path = Path(tmp)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def private_tmpdir(parent: Path) -> Iterator[Path]:
    """A 0700 scratch directory for files that hold a private input (removed afterwards)."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent, prefix="work-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never set up the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (EZKL's can run to pages)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__
