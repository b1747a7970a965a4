"""Adaptive clipping (Andrew et al. 2021): the clip follows a quantile of the update norms.

With a fixed clip C, user-level DP-FedAvg either clips most updates hard (C too small, the
model learns slowly) or pays noise z·C for norms nobody reaches (C too large). Adaptive
clipping moves C each round towards the γ-quantile of the clients' update norms, and pays for
what it learns about the norms in privacy:

* each client also sends the bit bᵢ = [‖Δᵢ‖ ≤ C] as bᵢ − ½ (sensitivity ½) plus its share of
  Gaussian noise σ_b, appended to its update, so secure aggregation sums it with the rest;
* the server reads the noisy fraction b̄ from the sum and sets C ← C·exp(−η·(b̄ − γ));
* the update and the count together are one Gaussian mechanism: with update noise z_Δ·C and
  count noise σ_b its noise multiplier z satisfies z⁻² = z_Δ⁻² + (2σ_b)⁻², so clients add
  z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) (a little more than z) and the accountant composes z as before.

The paper suggests σ_b = m/20 for m clients a round. The audit recomputes every round's clip
from the previous one and the logged fraction, and the fraction from the aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["AdaptiveClip", "split_count"]


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"`{name}` must be a finite number")
    return float(value)


@dataclass(frozen=True)
class AdaptiveClip:
    """The adaptive clipping rule of a session, validated at construction."""

    count_noise: float
    """σ_b: the noise on the sum of the clients' clipped bits (paper: clients per round / 20)."""
    target_quantile: float = 0.5
    """γ: the fraction of updates the clip should leave unclipped."""
    learning_rate: float = 0.2
    """η of the geometric update C ← C·exp(−η·(b̄ − γ))."""

    def __post_init__(self) -> None:
        if not 0 < _finite(self.target_quantile, "target_quantile") < 1:
            raise InvalidInputError("`target_quantile` must be in (0, 1)")
        if not _finite(self.learning_rate, "learning_rate") > 0:
            raise InvalidInputError("`learning_rate` must be positive")
        if not _finite(self.count_noise, "count_noise") > 0:
            raise InvalidInputError("`count_noise` must be positive")

    def update_noise_multiplier(self, noise_multiplier: float) -> float:
        """z_Δ, the update's noise multiplier that keeps the whole round at `noise_multiplier`.

        Raises:
            InvalidInputError: 2σ_b ≤ z: the count alone would cost more than the budget.
        """
        z = noise_multiplier
        if not z > 0:
            raise InvalidInputError("adaptive clipping needs DP noise (`noise_multiplier` > 0)")
        if 2 * self.count_noise <= z:
            raise InvalidInputError(
                f"`count_noise` {self.count_noise:g} is too small for noise multiplier {z:g}: "
                f"it must exceed z/2 = {z / 2:g} (the paper's choice is clients per round / 20)"
            )
        return float((z**-2 - (2 * self.count_noise) ** -2) ** -0.5)

    def next_clip(self, clip: float, fraction: float) -> float:
        """The next round's clip after a round whose noisy unclipped fraction was `fraction`."""
        return clip * math.exp(-self.learning_rate * (fraction - self.target_quantile))

    def to_predicate(self) -> dict[str, Any]:
        """JSON form, under the round config's ``dp.adaptiveClip``."""
        return {
            "countNoise": self.count_noise,
            "targetQuantile": self.target_quantile,
            "learningRate": self.learning_rate,
        }

    @classmethod
    def from_predicate(cls, value: object) -> AdaptiveClip:
        """Parse ``dp.adaptiveClip``."""
        keys = {"countNoise", "targetQuantile", "learningRate"}
        if not isinstance(value, Mapping) or set(value) != keys:
            raise InvalidInputError(
                "round config: adaptiveClip must have exactly countNoise, targetQuantile and "
                "learningRate"
            )
        return cls(
            count_noise=_finite(value["countNoise"], "countNoise"),
            target_quantile=_finite(value["targetQuantile"], "targetQuantile"),
            learning_rate=_finite(value["learningRate"], "learningRate"),
        )


def split_count(mean: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    """The model update and the noisy unclipped fraction b̄ of an adaptive round's mean vector.

    The last coordinate is the mean of bᵢ − ½ plus noise, so b̄ is it plus ½.
    """
    if mean.size < 2:
        raise InvalidInputError("an adaptive round's aggregate has no clipped-count coordinate")
    return mean[:-1], float(mean[-1]) + 0.5
