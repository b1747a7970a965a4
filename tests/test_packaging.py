"""The package is a regular package tree: a wheel built by setuptools' find_packages holds it."""

from __future__ import annotations

from pathlib import Path

import edgetrust

SRC = Path(__file__).resolve().parent.parent / "src" / "edgetrust"


def test_every_package_directory_has_an_init() -> None:
    missing = [
        str(d.relative_to(SRC.parent))
        for d in [SRC, *(p for p in SRC.rglob("*") if p.is_dir())]
        if any(d.glob("*.py")) and not (d / "__init__.py").is_file()
    ]
    assert missing == []


def test_the_package_is_imported_from_its_init() -> None:
    assert edgetrust.__file__ is not None and edgetrust.__version__ != ""
