"""EZKL's verifier on chain: the committed build matches its source, a proof verifies, a tampered
proof is rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetrust.chain import connect
from edgetrust.chain._devchain import ANVIL_DEV_KEYS
from edgetrust.chain.artifacts import BUILD_DIR, load_artifact
from edgetrust.chain.zkverifier import DEMO_VERIFIER, ZkVerifier, compile_solidity, demo_calldata
from edgetrust.cli import run
from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from tests.chain.conftest import funded


@pytest.mark.slow
def test_committed_verifier_matches_its_source() -> None:
    committed = json.loads((BUILD_DIR / f"{DEMO_VERIFIER}.json").read_text())
    fresh = compile_solidity(BUILD_DIR / f"{DEMO_VERIFIER}.sol")
    assert fresh["source_sha256"] == committed["source_sha256"]
    assert fresh["bytecode"] == committed["bytecode"]
    assert fresh["abi"] == committed["abi"]


def test_verifier_fits_the_contract_size_limit() -> None:
    art = load_artifact(DEMO_VERIFIER)
    assert art.compiler.startswith("solcjs 0.8.37")
    assert art.code_size < 24 * 1024 + 8 * 1024


# EZKL's calldata: selector, two offsets, the proof (length + 3072 bytes), the instances
# (length + 10 words), then 32 bytes of trailing padding the verifier never reads.
INSTANCE_5 = 4 + 3168 + 32 + 5 * 32 + 31


@pytest.fixture
def verifier(anvil_url: str) -> tuple[ZkVerifier, object]:
    """On anvil: EVM precompiles (pairings) run natively, in milliseconds."""
    chain = connect(anvil_url)
    acct = funded(chain)
    v, _ = ZkVerifier.deploy(chain, acct)
    return v, acct


def test_demo_proof_verifies_on_chain(verifier: tuple[ZkVerifier, object]) -> None:
    v, acct = verifier
    calldata = demo_calldata()
    v.verify(calldata)
    tx = v.verify_tx(acct, calldata)  # type: ignore[arg-type]
    assert tx.gas_used > 21_000


@pytest.mark.slow
def test_demo_proof_on_the_in_process_chain() -> None:
    """py-evm runs the pairing precompile in Python: one valid and one tampered call."""
    chain = connect(None)
    v, _ = ZkVerifier.deploy(chain, funded(chain))
    calldata = demo_calldata()
    v.verify(calldata)
    bad = bytearray(calldata)
    bad[INSTANCE_5] ^= 1
    with pytest.raises(VerificationError):
        v.verify(bytes(bad))


@pytest.mark.parametrize("where", [0, 4, 100, 1000, 3100, INSTANCE_5, -40])
def test_tampered_proof_is_rejected(verifier: tuple[ZkVerifier, object], where: int) -> None:
    v, acct = verifier
    calldata = bytearray(demo_calldata())
    calldata[where] ^= 0x01
    with pytest.raises(VerificationError, match="rejected"):
        v.verify(bytes(calldata))
    with pytest.raises(VerificationError):
        v.verify_tx(acct, bytes(calldata))  # type: ignore[arg-type]


def test_malformed_calldata(verifier: tuple[ZkVerifier, object]) -> None:
    v, _ = verifier
    for bad in (b"", b"\x00\x01\x02", b"\x00" * (300 * 1024)):
        with pytest.raises(InvalidInputError):
            v.verify(bad)
    with pytest.raises(VerificationError):
        v.verify(demo_calldata()[:-64])


def test_missing_demo_proof(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="make contracts"):
        demo_calldata(build_dir=tmp_path)


def test_cli_verify_zk(capsys: pytest.CaptureFixture[str], tmp_path: Path, anvil_url: str) -> None:
    monkey_key = tmp_path / "key"
    monkey_key.write_text(ANVIL_DEV_KEYS[1])
    assert run(["chain", "account", "import", "--key-file", str(monkey_key)]) == 0
    capsys.readouterr()
    rpc = ["--rpc", anvil_url]
    assert run(["chain", "verify-zk", *rpc, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    bad = bytearray(demo_calldata())
    bad[200] ^= 0xFF
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(bad))
    assert run(["chain", "verify-zk", *rpc, "--calldata", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "verification failed" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert run(["chain", "verify-zk", *rpc, "--calldata", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
