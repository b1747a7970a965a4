from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np
import pytest

from edgetrust.collab.secagg import SecAggClient, SecAggConfig, SecAggServer
from edgetrust.identity import Identity


def make_identities(n: int, tag: str = "c") -> list[Identity]:
    return [Identity.from_seed(hashlib.sha256(f"{tag}{i}".encode()).digest()) for i in range(n)]


IDS = make_identities(12)


class Round:
    def __init__(self, n: int, threshold: int, length: int = 64, **kw: object) -> None:
        self.ids = IDS[:n] if n <= len(IDS) else make_identities(n)
        self.config = SecAggConfig(
            round_id=os.urandom(32),
            participants=tuple(i.did for i in self.ids),
            threshold=threshold,
            vector_length=length,
            **kw,  # type: ignore[arg-type]
        )
        self.server = SecAggServer(config=self.config)
        self.clients = {i.did: SecAggClient(config=self.config, identity=i) for i in self.ids}
        rng = np.random.default_rng(7)
        hi = 1 << self.config.modulus_bits
        self.inputs = {
            d: rng.integers(0, hi, length, dtype=np.uint64).astype(np.uint32) for d in self.clients
        }
        self.dids = sorted(self.clients)

    def expected(self, survivors: tuple[str, ...]) -> np.ndarray:
        total = np.zeros(self.config.vector_length, np.uint64)
        for d in survivors:
            total += self.inputs[d]
        return (total % (1 << self.config.modulus_bits)).astype(np.uint32)


@pytest.fixture
def make_round() -> Callable[..., Round]:
    return Round
