"""EZKL's Solidity verifier on chain: generate, compile offline with solcjs, deploy, verify.

`create_evm_verifier` (EZKL, async) renders the Halo2 verifier as Solidity and then tries to
download a Solidity compiler, which cannot work offline; the `.sol` file is written before that
step, so we keep it and compile it with solcjs from npm (`tools/npm`). The result for the demo
model (the digits MLP) is committed under `chain/build/` (source, ABI, bytecode, and the
calldata of one demo proof), so deploying and verifying needs neither EZKL nor a compiler.

A proof is verified by sending EZKL's own calldata (`encode_evm_calldata`: the selector of
`verifyProof(bytes,uint256[])`, the proof and its public instances) to the verifier: no wrapper
contract, so the gas is EZKL's verifier's alone. The verifier reverts on an invalid proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount

from edgetrust.chain.anchor import TxResult
from edgetrust.chain.artifacts import BUILD_DIR, load_artifact
from edgetrust.chain.rpc import Chain, RevertError, checksum_address
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError, VerificationError

if TYPE_CHECKING:
    from edgetrust.verify.zk import ZkProof, ZkVerifierKey

__all__ = [
    "DEMO_VERIFIER",
    "ZkVerifier",
    "build_verifier",
    "compile_solidity",
    "demo_calldata",
    "find_solcjs",
    "generate_solidity_verifier",
    "proof_calldata",
    "verifier_for_key",
    "zk_proof_calldata",
]

DEMO_VERIFIER = "EzklDigitsVerifier"
"""Name of the committed build of EZKL's verifier for the demo digits MLP."""
MAX_CALLDATA = 256 * 1024
_SOLC_CONTRACT = "Halo2Verifier"


def demo_calldata(*, build_dir: Path | None = None) -> bytes:
    """The calldata of the committed demo proof (a valid proof for the demo verifier)."""
    path = (build_dir or BUILD_DIR) / f"{DEMO_VERIFIER}.calldata.hex"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError as exc:
        raise NotFoundError(f"no demo proof at {path} (run 'make contracts')") from exc
    except ValueError as exc:
        raise InvalidInputError(f"demo proof {path} is not hex") from exc


def find_solcjs() -> Path:
    """Locate solcjs: tools/npm/node_modules/.bin, then PATH."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "tools" / "npm" / "node_modules" / ".bin" / "solcjs"
        if candidate.exists():
            return candidate
    found = shutil.which("solcjs")
    if found:
        return Path(found)
    raise NotFoundError("solcjs not found: run 'npm ci --prefix tools/npm' (or make test)")


def generate_solidity_verifier(
    *, vk_path: Path, settings_path: Path, srs_path: Path, sol_path: Path
) -> Path:
    """Render EZKL's Solidity verifier for a verification key into `sol_path`.

    EZKL's `create_evm_verifier` writes the `.sol` and then fails fetching a compiler when
    offline; that failure is expected and ignored once the file exists.

    Raises:
        UnsupportedError: EZKL is missing or did not write the verifier.
    """
    try:
        import ezkl
    except ImportError as exc:  # pragma: no cover - ezkl is in the `zk` extra
        raise UnsupportedError("generating a verifier needs ezkl (pip install ezkl)") from exc
    abi_path = sol_path.with_suffix(".abi")
    if sol_path.exists():
        sol_path.unlink()

    async def render() -> Any:
        return await ezkl.create_evm_verifier(
            str(vk_path), str(settings_path), str(sol_path), str(abi_path), str(srs_path), False
        )

    error: Exception | None = None
    try:
        asyncio.run(render())
    except Exception as exc:  # EZKL raises a bare RuntimeError on the compiler download
        error = exc
    if not sol_path.exists() or sol_path.stat().st_size == 0:
        raise UnsupportedError(f"EZKL wrote no Solidity verifier: {error}")
    abi_path.unlink(missing_ok=True)
    return sol_path


def compile_solidity(sol_path: Path, *, solcjs: Path | None = None) -> dict[str, Any]:
    """Compile EZKL's verifier with solcjs (offline, optimizer on) into a build record."""
    binary = solcjs or find_solcjs()
    source = sol_path.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "Verifier.sol"
        src.write_text(source)
        try:
            version = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=60
            ).stdout.strip()
            subprocess.run(
                [
                    str(binary),
                    "--bin",
                    "--abi",
                    "--optimize",
                    "--optimize-runs",
                    "1",
                    "--base-path",
                    tmp,
                    "-o",
                    tmp,
                    str(src),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
                cwd=tmp,
            )
        except subprocess.CalledProcessError as exc:
            raise UnsupportedError(f"solcjs failed: {exc.stderr.strip()[:300]}") from exc
        outs = {p.name: p for p in Path(tmp).iterdir()}
        stem = f"Verifier_sol_{_SOLC_CONTRACT}"
        if f"{stem}.bin" not in outs:
            raise UnsupportedError(f"solcjs produced no {_SOLC_CONTRACT} ({sorted(outs)})")
        bytecode = outs[f"{stem}.bin"].read_text().strip()
        abi = json.loads(outs[f"{stem}.abi"].read_text())
    return {
        "contract_name": DEMO_VERIFIER,
        "compiler": f"solcjs {version}",
        "optimizer_runs": 1,
        "source": f"src/edgetrust/chain/build/{DEMO_VERIFIER}.sol",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "abi": abi,
        "bytecode": "0x" + bytecode,
    }


def build_verifier(
    *, vk_path: Path, settings_path: Path, srs_path: Path, name: str = "EzklVerifier"
) -> dict[str, Any]:
    """Generate EZKL's verifier for a setup and compile it offline: a deployable build record.

    About a second of solcjs after EZKL renders the Solidity; needs ezkl and tools/npm.
    """
    with tempfile.TemporaryDirectory() as tmp:
        sol = generate_solidity_verifier(
            vk_path=vk_path,
            settings_path=settings_path,
            srs_path=srs_path,
            sol_path=Path(tmp) / "Verifier.sol",
        )
        record = compile_solidity(sol)
    record["contract_name"] = name
    return record


def proof_calldata(proof_path: Path) -> bytes:
    """EZKL's EVM calldata for a proof file (`encode_evm_calldata`).

    Raises:
        InvalidInputError: EZKL cannot read the proof.
    """
    try:
        import ezkl
    except ImportError as exc:  # pragma: no cover - ezkl is in the `zk` extra
        raise UnsupportedError("encoding a proof needs ezkl (pip install ezkl)") from exc
    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = ezkl.encode_evm_calldata(str(proof_path), str(Path(tmp) / "calldata"), None)
        except Exception as exc:  # EZKL raises bare RuntimeError/ValueError on bad proofs
            raise InvalidInputError(f"cannot encode proof {proof_path}: {exc}") from exc
    return bytes(data)


def zk_proof_calldata(proof: ZkProof) -> bytes:
    """EVM calldata for an `edgetrust.verify.zk` proof (as in a ZK receipt's bundle)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "proof.json"
        path.write_text(json.dumps(proof.ezkl_json()))
        return proof_calldata(path)


def verifier_for_key(key: ZkVerifierKey) -> dict[str, Any]:
    """A deployable verifier for an `edgetrust.verify.zk` setup (its vk, settings and SRS).

    A ZK receipt's proof verifies on chain under the verifier built from its own key.
    """
    inputs = key.evm_verifier_inputs()
    return build_verifier(
        vk_path=inputs["vk_path"],
        settings_path=inputs["settings_path"],
        srs_path=inputs["srs_path"],
        name="EzklVerifier",
    )


class ZkVerifier:
    """A deployed EZKL Halo2 verifier."""

    def __init__(self, chain: Chain, address: str, *, name: str = DEMO_VERIFIER) -> None:
        self.chain = chain
        self.address = checksum_address(address)
        self.name = name

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        account: LocalAccount,
        *,
        name: str = DEMO_VERIFIER,
        record: dict[str, Any] | None = None,
    ) -> tuple[ZkVerifier, TxResult]:
        """Deploy a verifier: a build `record` from `build_verifier`, else the committed `name`.

        A proof verifies only under the verifier made from its own verification key, so a ZK
        receipt from another setup needs `build_verifier` on that setup's vk, settings and SRS.
        """
        if record is not None:
            abi, bytecode = record["abi"], record["bytecode"]
            name = str(record.get("contract_name", name))
        else:
            art = load_artifact(name)
            abi, bytecode = art.abi, art.bytecode
        address, receipt = chain.deploy(account, abi, bytecode, name=name)
        return cls(chain, address, name=name), TxResult.of(receipt)

    @staticmethod
    def _check(calldata: bytes) -> bytes:
        if not isinstance(calldata, bytes | bytearray) or len(calldata) < 4:
            raise InvalidInputError("calldata must be at least a 4-byte selector")
        if len(calldata) > MAX_CALLDATA:
            raise InvalidInputError(f"calldata is larger than {MAX_CALLDATA} bytes")
        return bytes(calldata)

    def verify(self, calldata: bytes) -> None:
        """Verify a proof with a free `eth_call`.

        Raises:
            VerificationError: the verifier rejected the proof (reverted or returned false).
        """
        try:
            out = self.chain.call_data(self.address, self._check(calldata), action="verifyProof")
        except RevertError as exc:
            raise VerificationError(
                "the on-chain verifier rejected the proof (reverted)", step="zk proof"
            ) from exc
        if len(out) != 32 or int.from_bytes(out, "big") != 1:
            raise VerificationError("the on-chain verifier rejected the proof", step="zk proof")

    def verify_tx(self, account: LocalAccount, calldata: bytes) -> TxResult:
        """Verify a proof in a transaction (a verdict on the record; its gas is what it costs).

        Raises:
            VerificationError: the verifier rejected the proof.
        """
        self.verify(calldata)
        receipt = self.chain.transact_data(
            account, self.address, self._check(calldata), action="verifyProof"
        )
        return TxResult.of(receipt)
