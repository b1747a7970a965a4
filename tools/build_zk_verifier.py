"""Build EZKL's on-chain verifier for the demo digits MLP, with one demo proof.

Runs EZKL end to end (settings, circuit, a locally generated SRS, setup, a proof of one test
digit), renders the Solidity verifier, compiles it offline with solcjs, and writes into
src/edgetrust/chain/build: EzklDigitsVerifier.sol (the generated source), .json (ABI, bytecode)
and .calldata.hex (the proof's EVM calldata). Takes a few minutes (setup and proving); run
by `tools/build_contracts.py --zk-setup`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from edgetrust.chain.artifacts import BUILD_DIR
from edgetrust.chain.zkverifier import (
    DEMO_VERIFIER,
    compile_solidity,
    generate_solidity_verifier,
    proof_calldata,
)
from edgetrust.zoo import load_digits_split, mlp_to_onnx, train_digits_mlp


def main() -> int:
    """Run the EZKL pipeline and write the verifier build and demo proof."""
    import ezkl

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("EZKL_REPO_PATH", str(tmp / "ezkl"))
        model = tmp / "model.onnx"
        # The circuit proves the MLP up to its logits: Softmax is monotonic (same top-1), and
        # without its exp/division lookups the verifier is 13 KB and ~540k gas instead of
        # 19.7 KB and ~780k gas.
        weights, biases, _ = train_digits_mlp(seed=0, hidden=(32,))
        model.write_bytes(mlp_to_onnx(weights, biases, softmax=False).SerializeToString())
        _, x_test, _, _ = load_digits_split()
        data = tmp / "input.json"
        data.write_text(json.dumps({"input_data": [x_test[0].tolist()]}))
        args = ezkl.PyRunArgs()
        args.input_visibility = "private"
        args.output_visibility = "public"
        args.param_visibility = "private"
        args.variables = [("batch", 1)]
        settings = tmp / "settings.json"
        compiled = tmp / "model.compiled"
        srs, vk, pk = tmp / "kzg.srs", tmp / "vk.key", tmp / "pk.key"
        witness, proof = tmp / "witness.json", tmp / "proof.json"
        ezkl.gen_settings(str(model), str(settings), py_run_args=args)
        ezkl.compile_circuit(str(model), str(compiled), str(settings))
        logrows = json.loads(settings.read_text())["run_args"]["logrows"]
        print(f"EZKL circuit: 2^{logrows} rows", flush=True)
        ezkl.gen_srs(str(srs), logrows)
        result = ezkl.gen_witness(str(data), str(compiled), str(witness))
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        ezkl.setup(str(compiled), str(vk), str(pk), srs_path=str(srs))
        ezkl.prove(str(witness), str(compiled), str(pk), str(proof), srs_path=str(srs))
        if not ezkl.verify(str(proof), str(settings), str(vk), srs_path=str(srs)):
            raise SystemExit("EZKL rejected its own proof")
        sol = BUILD_DIR / f"{DEMO_VERIFIER}.sol"
        generate_solidity_verifier(vk_path=vk, settings_path=settings, srs_path=srs, sol_path=sol)
        record = compile_solidity(sol)
        (BUILD_DIR / f"{DEMO_VERIFIER}.json").write_text(
            json.dumps(record, indent=1, sort_keys=True) + "\n"
        )
        (BUILD_DIR / f"{DEMO_VERIFIER}.calldata.hex").write_text(proof_calldata(proof).hex() + "\n")
    print(f"wrote {DEMO_VERIFIER} (.sol, .json, .calldata.hex) in {BUILD_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
