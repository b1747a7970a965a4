"""Aggregation rules that limit what a few malicious clients can do to the model.

The trade-off, stated up front: the Byzantine-robust rules here (coordinate-wise median,
trimmed mean, Krum) must *see each client's update* to compare them, which is exactly what
secure aggregation hides. So edgetrust offers two modes and never mixes them silently:

- **with secure aggregation**: only *norm bounding* applies. Each client scales its update to
  at most `max_norm` before masking (the same clipping DP needs), which bounds any one
  client's pull on the sum to `max_norm`. The server cannot check that a client clipped:
  enforcing it would need a zero-knowledge range proof per input (e.g. RoFL, Lycklama et al.
  2023), which edgetrust does not do. Norm bounding is known to blunt backdoor attacks
  (Sun et al. 2019, "Can You Really Backdoor Federated Learning?").
- **without secure aggregation** (the server is trusted with individual updates): coordinate
  median and trimmed mean (Yin et al. 2018) and Krum / Multi-Krum (Blanchard et al. 2017)
  tolerate up to `f` arbitrary updates, at the price of the privacy secure aggregation gives.

Every function takes a sequence of flat float vectors and returns one flat float64 vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["coordinate_median", "krum", "norm_bound", "trimmed_mean"]

F64 = npt.NDArray[np.float64]


def _stack(updates: Sequence[npt.ArrayLike]) -> F64:
    if len(updates) == 0:
        raise InvalidInputError("robust aggregation needs at least one update")
    arrays = [np.asarray(u, dtype=np.float64) for u in updates]
    if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
        raise InvalidInputError("updates must be flat vectors of one length")
    stacked = np.stack(arrays)
    if not np.all(np.isfinite(stacked)):
        raise InvalidInputError("updates have NaN or infinite values")
    return stacked


def norm_bound(update: npt.ArrayLike, max_norm: float) -> F64:
    """Scale `update` down to L2 norm `max_norm` if it is longer (compatible with SecAgg)."""
    if not max_norm > 0:
        raise InvalidInputError("`max_norm` must be positive")
    u: F64 = _stack([update])[0]
    norm = float(np.linalg.norm(u))
    return u * (max_norm / norm) if norm > max_norm else u


def coordinate_median(updates: Sequence[npt.ArrayLike]) -> F64:
    """The median of each coordinate across clients (robust to < half corrupt updates)."""
    result: F64 = np.median(_stack(updates), axis=0)
    return result


def trimmed_mean(updates: Sequence[npt.ArrayLike], *, trim: int) -> F64:
    """Per coordinate, drop the `trim` largest and `trim` smallest values, average the rest."""
    x = _stack(updates)
    if trim < 0 or 2 * trim >= x.shape[0]:
        raise InvalidInputError(f"`trim` must be in 0..{(x.shape[0] - 1) // 2}")
    s = np.sort(x, axis=0)
    result: F64 = s[trim : x.shape[0] - trim].mean(axis=0)
    return result


def krum(updates: Sequence[npt.ArrayLike], *, byzantine: int, select: int = 1) -> F64:
    """(Multi-)Krum: average the `select` updates closest to their n - f - 2 nearest peers.

    Blanchard et al. 2017 require n > 2f + 2 for the guarantee; refused otherwise.
    """
    x = _stack(updates)
    n = x.shape[0]
    if byzantine < 0 or n <= 2 * byzantine + 2:
        raise InvalidInputError(f"`byzantine` must satisfy n > 2f + 2 (n={n})")
    if not 1 <= select <= n - byzantine:
        raise InvalidInputError(f"`select` must be in 1..{n - byzantine}")
    sq = np.sum(x * x, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    closest = n - byzantine - 2
    scores = np.sort(dist, axis=1)[:, :closest].sum(axis=1)
    chosen = np.argsort(scores, kind="stable")[:select]
    result: F64 = x[chosen].mean(axis=0)
    return result
