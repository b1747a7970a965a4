"""Server optimizers that act on the round's *summed* update: FedAvg(M), FedAdam, FedYogi.

Secure aggregation shows the coordinator only the sum of the survivors' updates, so a server
optimizer can only treat the mean update Δ of a round as a pseudo-gradient (Reddi et al. 2021,
"Adaptive Federated Optimization", Algorithm 2; server momentum as in Hsu et al. 2019):

- FedAvg with server learning rate η and momentum μ: ``m ← μ·m + Δ``, ``x ← x + η·m``
  (μ = 0 is plain FedAvg, which keeps no state);
- FedAdam: ``m ← β₁·m + (1-β₁)·Δ``, ``v ← β₂·v + (1-β₂)·Δ²``, ``x ← x + η·m / (√v + τ)``;
- FedYogi: as FedAdam but ``v ← v - (1-β₂)·Δ²·sign(v - Δ²)``.

The adaptive optimizers start from ``m = 0``, ``v = τ²`` and apply no bias correction, as in
the paper. Every step is elementwise IEEE float64 arithmetic, so an auditor who replays the
logged aggregates recomputes the state, and therefore the published model, bit for bit; the
state after each round is stored as an artifact and its digest goes in the round record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["OPTIMIZERS", "ServerOptimizer", "default_server_lr"]

F64 = npt.NDArray[np.float64]

OPTIMIZERS = ("fedavg", "fedadam", "fedyogi")


def default_server_lr(name: str) -> float:
    """The server learning rate that works on the digits MLP when none is given.

    FedAvg applies the mean update as it is (η = 1); the adaptive optimizers take steps of
    about η per coordinate (m/√v is near ±1 early on), so they need a much smaller η.
    """
    return 1.0 if name == "fedavg" else 0.1


def _unit(value: float, name: str, *, closed: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"`{name}` must be a finite number")
    if value < 0 or value > 1 or (value == 1 and not closed):
        raise InvalidInputError(f"`{name}` must be in [0, 1{']' if closed else ')'}")


@dataclass(frozen=True, kw_only=True)
class ServerOptimizer:
    """Which server optimizer a session uses, and its hyper-parameters (validated here).

    The learning rate η is the session's `server_lr`, logged beside these in the round config.
    """

    name: str = "fedavg"
    """"fedavg", "fedadam" or "fedyogi"."""
    momentum: float = 0.0
    """μ, server momentum of FedAvg (FedAvgM); 0 for plain FedAvg. FedAdam/FedYogi use β₁."""
    beta1: float = 0.9
    """β₁ of FedAdam/FedYogi: decay of the first moment."""
    beta2: float = 0.99
    """β₂ of FedAdam/FedYogi: decay of the second moment."""
    tau: float = 1e-3
    """τ of FedAdam/FedYogi: adaptivity (larger: closer to momentum SGD)."""

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise InvalidInputError(f"`server_optimizer` must be one of {', '.join(OPTIMIZERS)}")
        _unit(self.momentum, "server_momentum")
        _unit(self.beta1, "beta1")
        _unit(self.beta2, "beta2")
        if isinstance(self.tau, bool) or not isinstance(self.tau, int | float):
            raise InvalidInputError("`tau` must be a finite number")
        if not math.isfinite(self.tau) or not self.tau > 0:
            raise InvalidInputError("`tau` must be a positive finite number")
        if self.name != "fedavg" and self.momentum != 0:
            raise InvalidInputError(
                "`server_momentum` is for fedavg only: FedAdam and FedYogi use `beta1`"
            )

    @property
    def stateful(self) -> bool:
        """Whether the optimizer carries state from round to round (all but plain FedAvg)."""
        return self.name != "fedavg" or self.momentum > 0

    def state_size(self, num_params: int) -> int:
        """Length of the state vector: m for FedAvgM, m then v for the adaptive ones."""
        if not self.stateful:
            return 0
        return num_params if self.name == "fedavg" else 2 * num_params

    def initial_state(self, num_params: int) -> F64:
        """The state before round 1: m = 0 (and v = τ² for FedAdam/FedYogi)."""
        if self.name == "fedavg":
            return np.zeros(self.state_size(num_params))
        return np.concatenate([np.zeros(num_params), np.full(num_params, self.tau**2)])

    def step(self, update: npt.ArrayLike, state: F64 | None) -> tuple[F64, F64 | None]:
        """One server step: the direction d (the model moves by η·d) and the next state.

        `update` is the round's mean update Δ; `state` the previous state (None: the initial
        state). Plain FedAvg returns Δ itself and no state.
        """
        delta = np.asarray(update, dtype=np.float64)
        if not self.stateful:
            return delta, None
        n = delta.size
        prev = self.initial_state(n) if state is None else np.asarray(state, dtype=np.float64)
        if prev.shape != (self.state_size(n),):
            raise InvalidInputError(
                f"optimizer state has {prev.size} values, {self.state_size(n)} expected"
            )
        if self.name == "fedavg":
            m = self.momentum * prev + delta
            return m, m
        m = self.beta1 * prev[:n] + (1.0 - self.beta1) * delta
        sq = delta * delta
        if self.name == "fedadam":
            v = self.beta2 * prev[n:] + (1.0 - self.beta2) * sq
        else:
            v = prev[n:] - (1.0 - self.beta2) * sq * np.sign(prev[n:] - sq)
        return m / (np.sqrt(v) + self.tau), np.concatenate([m, v])

    def to_predicate(self) -> dict[str, Any]:
        """JSON form, as logged in the round config."""
        return {
            "name": self.name,
            "momentum": self.momentum,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "tau": self.tau,
        }

    @classmethod
    def from_predicate(cls, p: object) -> ServerOptimizer:
        """Parse the logged form (absent: plain FedAvg, as configs before optimizers were)."""
        if p is None:
            return cls()
        if not isinstance(p, Mapping) or set(p) != {"name", "momentum", "beta1", "beta2", "tau"}:
            raise InvalidInputError("round config: malformed serverOptimizer")
        name = p["name"]
        if not isinstance(name, str):
            raise InvalidInputError("round config: serverOptimizer name must be a string")
        nums = {}
        for key in ("momentum", "beta1", "beta2", "tau"):
            value = p[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInputError(f"round config: serverOptimizer {key} must be a number")
            nums[key] = float(value)
        return cls(name=name, **nums)
