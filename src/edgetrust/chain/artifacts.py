"""Compiled contracts: the committed build (ABI + bytecode) and the compiler that makes it.

Users need no compiler: `load_artifact()` reads `chain/build/<Name>.json`, which `make
contracts` writes from the Vyper sources in `chain/contracts/` with vyper 0.4.3 (and, for the
EZKL verifier, from the generated Solidity with solcjs). A test recompiles the sources and
checks that the committed build matches them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError

__all__ = [
    "BUILD_DIR",
    "CONTRACTS_DIR",
    "EVM_VERSION",
    "VYPER_CONTRACTS",
    "VYPER_VERSION",
    "Artifact",
    "compile_vyper",
    "load_artifact",
    "write_vyper_build",
]

CONTRACTS_DIR = Path(__file__).parent / "contracts"
BUILD_DIR = Path(__file__).parent / "build"
VYPER_VERSION = "0.4.3"
# Cancun is supported by every mainstream EVM chain and client in 2025; Prague is not yet.
EVM_VERSION = "cancun"
VYPER_CONTRACTS = ("ConvReferee", "DisputeGame", "LogAnchor", "Referee")


@dataclass(frozen=True)
class Artifact:
    """A compiled contract, as committed under `chain/build/`."""

    name: str
    """Contract name (file stem)."""
    abi: list[dict[str, Any]]
    """The JSON ABI."""
    bytecode: str
    """Deployment bytecode, 0x-prefixed hex."""
    compiler: str
    """Compiler and version that produced it, e.g. ``"vyper 0.4.3"``."""
    source_sha256: str
    """SHA-256 of the source the build was compiled from (hex)."""

    @property
    def code_size(self) -> int:
        """Size of the deployment bytecode in bytes."""
        return (len(self.bytecode) - 2) // 2


def load_artifact(name: str, *, build_dir: Path | None = None) -> Artifact:
    """Load the committed build of contract `name` (e.g. ``"LogAnchor"``).

    Raises:
        NotFoundError: no build for `name` (run `make contracts`).
        InvalidInputError: the build file is not a valid artifact.
    """
    path = (build_dir or BUILD_DIR) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"no compiled contract {name!r} at {path} (run 'make contracts')"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read contract build {path}: {exc}") from exc
    try:
        art = Artifact(
            name=str(data["contract_name"]),
            abi=list(data["abi"]),
            bytecode=str(data["bytecode"]),
            compiler=str(data["compiler"]),
            source_sha256=str(data["source_sha256"]),
        )
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"contract build {path} lacks field {exc}") from exc
    if not art.bytecode.startswith("0x"):
        raise InvalidInputError(f"contract build {path}: bytecode is not 0x-prefixed hex")
    return art


def compile_vyper(name: str, *, contracts_dir: Path | None = None) -> dict[str, Any]:
    """Compile `contracts/<name>.vy` with the installed vyper and return the build record.

    Raises:
        UnsupportedError: vyper is missing or is not version 0.4.3.
    """
    try:
        import vyper
        from vyper.compiler.settings import Settings
    except ImportError as exc:  # pragma: no cover - vyper is in the `chain` extra
        raise UnsupportedError("compiling contracts needs vyper 0.4.3 (pip install vyper)") from exc
    if vyper.__version__ != VYPER_VERSION:
        raise UnsupportedError(
            f"contracts are built with vyper {VYPER_VERSION}, not {vyper.__version__}"
        )
    path = (contracts_dir or CONTRACTS_DIR) / f"{name}.vy"
    source = path.read_text()
    out = vyper.compile_code(
        source,
        contract_path=path.name,
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return {
        "contract_name": name,
        "compiler": f"vyper {VYPER_VERSION}",
        "evm_version": EVM_VERSION,
        "source": f"src/edgetrust/chain/contracts/{path.name}",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


def write_vyper_build(name: str, *, build_dir: Path | None = None) -> Path:
    """Compile contract `name` and write `build/<name>.json` (what `make contracts` runs)."""
    record = compile_vyper(name)
    path = (build_dir or BUILD_DIR) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path
