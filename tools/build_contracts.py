"""Compile edgetrust's contracts into src/edgetrust/chain/build (run by `make contracts`).

Vyper sources are compiled with the installed vyper 0.4.3; the EZKL verifier for the demo model
(Solidity that EZKL generates) with solcjs from tools/npm, offline.
"""

from __future__ import annotations

import sys

from edgetrust.chain.artifacts import VYPER_CONTRACTS, write_vyper_build


def main() -> int:
    """Compile every contract and write its build record."""
    for name in VYPER_CONTRACTS:
        path = write_vyper_build(name)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
