"""The contract's RFC 9162 proof checks against transparency-dev/merkle's published vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from edgetrust.chain import Chain, LogAnchor, connect
from edgetrust.errors import InvalidInputError, VerificationError
from tests.chain.conftest import funded
from tests.conftest import ASSETS

TESTDATA = ASSETS / "transparency-dev-merkle" / "testdata"


def _vectors(kind: str) -> list[Path]:
    return sorted((TESTDATA / kind).rglob("*.json"))


@pytest.fixture(scope="module")
def contract() -> LogAnchor:
    chain: Chain = connect(None)
    anchor, _ = LogAnchor.deploy(chain, funded(chain))
    return anchor


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _check(fn: object, want_err: bool, hashes: list[bytes]) -> None:
    if any(len(h) != 32 for h in hashes):
        # The ABI carries every hash as bytes32, so a hash of another length never reaches the
        # chain: the Python layer refuses it, even in the one vector where transparency-dev
        # accepts it (equal sizes, equal 12-byte "roots", empty proof).
        with pytest.raises(InvalidInputError):
            fn()  # type: ignore[operator]
        return
    if want_err:
        with pytest.raises((VerificationError, InvalidInputError)):
            fn()  # type: ignore[operator]
    else:
        fn()  # type: ignore[operator]


@pytest.mark.parametrize("path", _vectors("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(contract: LogAnchor, path: Path) -> None:
    v = json.loads(path.read_text())
    _check(
        lambda: contract.verify_consistency(
            size1=v["size1"],
            size2=v["size2"],
            root1=_b64(v["root1"]),
            root2=_b64(v["root2"]),
            proof=[_b64(h) for h in v["proof"] or []],
        ),
        v["wantErr"],
        [_b64(v["root1"]), _b64(v["root2"]), *(_b64(h) for h in v["proof"] or [])],
    )


@pytest.mark.parametrize("path", _vectors("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(contract: LogAnchor, path: Path) -> None:
    v = json.loads(path.read_text())
    _check(
        lambda: contract.verify_inclusion(
            index=v["leafIdx"],
            size=v["treeSize"],
            leaf_hash=_b64(v["leafHash"]),
            root=_b64(v["root"]),
            proof=[_b64(h) for h in v["proof"] or []],
        ),
        v["wantErr"],
        [_b64(v["leafHash"]), _b64(v["root"]), *(_b64(h) for h in v["proof"] or [])],
    )
