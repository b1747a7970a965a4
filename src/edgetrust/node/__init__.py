"""The edgetrust node: HTTP services over the log (FastAPI + uvicorn).

`create_app` serves the embedded transparency log (C2SP tlog-tiles reads, signed-envelope
writes); `create_witness_app` serves a C2SP tlog-witness. Both are thin: the logic they call
(`prepare_entry`, `Witness`, `edgetrust.log`) is a Python API of its own.
"""

from __future__ import annotations

from edgetrust.node.app import create_app
from edgetrust.node.entries import PreparedEntry, prepare_entries, prepare_entry
from edgetrust.node.ratelimit import RateLimiter
from edgetrust.node.settings import NodeSettings, WitnessSettings
from edgetrust.node.witness import Evidence, Witness, create_witness_app

__all__ = [
    "Evidence",
    "NodeSettings",
    "PreparedEntry",
    "RateLimiter",
    "Witness",
    "WitnessSettings",
    "create_app",
    "create_witness_app",
    "prepare_entries",
    "prepare_entry",
]
