"""The committed contract build matches the sources, so users can trust it without a compiler."""

from __future__ import annotations

import json

import pytest

from edgetrust.chain.artifacts import BUILD_DIR, VYPER_CONTRACTS, compile_vyper, load_artifact
from edgetrust.errors import InvalidInputError, NotFoundError


@pytest.mark.slow
@pytest.mark.parametrize("name", VYPER_CONTRACTS)
def test_committed_build_matches_sources(name: str) -> None:
    committed = json.loads((BUILD_DIR / f"{name}.json").read_text())
    fresh = compile_vyper(name)
    assert fresh["source_sha256"] == committed["source_sha256"], "run 'make contracts'"
    assert fresh["abi"] == committed["abi"]
    assert fresh["bytecode"] == committed["bytecode"]


def test_artifacts_load_and_fit_the_size_limit() -> None:
    for name in VYPER_CONTRACTS:
        art = load_artifact(name)
        assert art.compiler == "vyper 0.4.3"
        assert 0 < art.code_size < 24 * 1024 + 8 * 1024  # EIP-170 limits runtime code to 24 KiB


def test_missing_or_bad_artifact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError, match="make contracts"):
        load_artifact("Nope", build_dir=tmp_path)
    (tmp_path / "Bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError):
        load_artifact("Bad", build_dir=tmp_path)
    (tmp_path / "Partial.json").write_text('{"abi": []}')
    with pytest.raises(InvalidInputError, match="lacks field"):
        load_artifact("Partial", build_dir=tmp_path)
