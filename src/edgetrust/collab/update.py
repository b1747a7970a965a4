"""From a round's logged aggregate to the next model: the artifact store and the update rule.

The coordinator and the auditor both run these, so an auditor holding the artifacts
recomputes the published model bit for bit (see `collab.audit`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgetrust.collab.adaptive import split_count
from edgetrust.encoding import (
    canonical_tensor_bytes,
    digest_bytes,
    digest_hex,
    tensor_from_canonical_bytes,
)
from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from edgetrust.home import resolve_home

if TYPE_CHECKING:
    from edgetrust.collab.rounds import RoundConfig

__all__ = ["ArtifactStore", "apply_update", "mean_update", "round_update"]


class ArtifactStore:
    """Aggregates by digest under ``<home>/fl/aggregates/``, so auditors can recompute models."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(home) / "fl" / "aggregates"

    def put(self, array: npt.ArrayLike) -> str:
        """Store a tensor; return the digest of its canonical bytes."""
        data = canonical_tensor_bytes(array)
        digest = digest_bytes(data)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{digest_hex(digest)}.ett"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def get(self, digest: str) -> npt.NDArray[Any]:
        """Load a tensor by digest, re-checking the digest."""
        path = self.root / f"{digest_hex(digest)}.ett"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no aggregate {digest} in {self.root}") from exc
        if digest_bytes(data) != digest:
            raise VerificationError(f"stored aggregate {path.name} does not match its digest")
        return tensor_from_canonical_bytes(data)


def apply_update(
    weights: Sequence[npt.NDArray[np.float32]],
    biases: Sequence[npt.NDArray[np.float32]],
    update: npt.NDArray[np.float64],
    server_lr: float,
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """New float32 parameters = old + server_lr · update, layer by layer (W0, b0, W1, b1, …).

    Deterministic (IEEE float64 arithmetic, then one rounding to float32), so an auditor
    recomputes the published model bit for bit.
    """
    out_w: list[npt.NDArray[np.float32]] = []
    out_b: list[npt.NDArray[np.float32]] = []
    pos = 0
    for w, b in zip(weights, biases, strict=True):
        for arr, out in ((w, out_w), (b, out_b)):
            n = arr.size
            if pos + n > update.size:
                raise InvalidInputError("aggregate is shorter than the model")
            step = update[pos : pos + n].reshape(arr.shape)
            out.append((arr.astype(np.float64) + server_lr * step).astype(np.float32))
            pos += n
    if pos != update.size:
        raise InvalidInputError("aggregate is longer than the model")
    return out_w, out_b


def mean_update(
    config: RoundConfig, aggregate: npt.NDArray[Any], encoding: str, count: int
) -> npt.NDArray[np.float64]:
    """The average update a round applies, from its logged aggregate."""
    if encoding == "uint32-sum":
        if aggregate.dtype != np.uint32:
            raise VerificationError("secure aggregate is not a uint32 vector", step="aggregate")
        total = config.quantizer.dequantize_sum(aggregate, count)
        return total / count
    if aggregate.dtype != np.float64:
        raise VerificationError("plain aggregate is not a float64 vector", step="aggregate")
    return np.asarray(aggregate, dtype=np.float64)


def round_update(
    config: RoundConfig, aggregate: npt.NDArray[Any], encoding: str, count: int
) -> tuple[npt.NDArray[np.float64], float | None]:
    """The update a round applies, and its noisy unclipped fraction (adaptive clipping).

    The fraction is None for a round with a fixed clip.
    """
    mean = mean_update(config, aggregate, encoding, count)
    if config.adaptive is None:
        return mean, None
    return split_count(mean)
