"""Settlement on an EVM chain: anchor log checkpoints, punish misbehaving operators and devices.

Contracts are written in Vyper (`contracts/`) and their compiled ABI and bytecode are committed
(`build/`), so using them needs no compiler. `connect()` reaches any Ethereum JSON-RPC endpoint,
or, without a URL, an in-process eth-tester chain (the embedded default).
"""

from __future__ import annotations

from edgetrust.chain.accounts import EvmKeystore, binding_message
from edgetrust.chain.anchor import (
    Anchored,
    AnchorParams,
    ChallengeState,
    LogAnchor,
    LogRegistration,
    TxResult,
)
from edgetrust.chain.artifacts import Artifact, load_artifact
from edgetrust.chain.autoanchor import AutoAnchor
from edgetrust.chain.rpc import Chain, ChainUnavailableError, RevertError, connect

__all__ = [
    "AnchorParams",
    "Anchored",
    "Artifact",
    "AutoAnchor",
    "Chain",
    "ChainUnavailableError",
    "ChallengeState",
    "EvmKeystore",
    "LogAnchor",
    "LogRegistration",
    "RevertError",
    "TxResult",
    "binding_message",
    "connect",
    "load_artifact",
]
