"""edgetrust: trust for AI that runs on people's own devices.

Signed receipts for every inference (`edgetrust.device`, `edgetrust.receipts`), a public
append-only transparency log (`edgetrust.log`, `edgetrust.node`), exact re-execution and
fraud proofs (`edgetrust.runtime.fixed`, `edgetrust.verify.dispute`), zero-knowledge receipts
(`edgetrust.verify.zk`), federated learning with secure aggregation (`edgetrust.collab`) and
settlement on an EVM chain (`edgetrust.chain`). Importing this package imports none of them:
each is loaded when used, so the CLI starts fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgetrust")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
