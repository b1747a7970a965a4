"""Compile edgetrust's contracts into src/edgetrust/chain/build (run by `make contracts`).

Vyper sources are compiled with the installed vyper 0.4.3. EZKL's verifier for the demo model
(chain/build/EzklDigitsVerifier.sol, Solidity that EZKL generated) is compiled with solcjs from
tools/npm, offline. `--zk-setup` first regenerates that Solidity and the demo proof with EZKL
(tools/build_zk_verifier.py: a few minutes).
"""

from __future__ import annotations

import json
import sys

from edgetrust.chain.artifacts import BUILD_DIR, VYPER_CONTRACTS, write_vyper_build
from edgetrust.chain.zkverifier import DEMO_VERIFIER, compile_solidity


def main(argv: list[str]) -> int:
    """Compile every contract and write its build record."""
    if "--zk-setup" in argv:
        from build_zk_verifier import main as build_zk  # beside this script

        build_zk()
    for name in VYPER_CONTRACTS:
        print(f"wrote {write_vyper_build(name)}")
    sol = BUILD_DIR / f"{DEMO_VERIFIER}.sol"
    if sol.exists():
        record = compile_solidity(sol)
        out = BUILD_DIR / f"{DEMO_VERIFIER}.json"
        out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
