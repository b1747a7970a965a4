"""How likely a SecAgg+ round is to abort under random dropout, and the k that bounds it.

In SecAgg+ (Bell et al. 2020) each client shares its secrets with only its k ring neighbours,
and the server can unmask a client (remove a dropout's pairwise masks, or a survivor's self
mask) only if at least `threshold` of those k neighbours answer the unmask request. If each
client drops independently with probability d, the neighbours of a client that answer are
Binomial(k, 1 - d), so a round aborts with probability at most

    n · P[Binomial(k, 1 - d) < threshold]

(a union bound over the n secrets to reconstruct; a dropped client's own share is lost, so
only its k neighbours count, the worse case). The complete graph (k = n - 1) is the same
bound; the simulator's fixed count of ⌊d·n⌋ dropouts is a hypergeometric draw, whose tails
are no heavier than the binomial's.
"""

from __future__ import annotations

import math

from edgetrust.errors import InvalidInputError

__all__ = [
    "ABORT_BOUND",
    "abort_bound",
    "check_neighbours",
    "default_threshold",
    "min_neighbours",
]

ABORT_BOUND = 1e-6
"""The abort probability a session may risk per round before it is refused."""


def default_threshold(neighbours: int) -> int:
    """The Shamir threshold of a k-neighbourhood: just over half of the group of k + 1."""
    return (neighbours + 1) // 2 + 1


def abort_bound(n: int, neighbours: int, threshold: int, dropout: float) -> float:
    """The union bound on a round's abort probability (see the module docstring)."""
    if not 0 <= dropout < 1:
        raise InvalidInputError("`dropout` must be in [0, 1)")
    k = min(neighbours, n - 1)
    if dropout == 0:
        return 0.0 if k >= threshold else 1.0
    p = 1.0 - dropout
    per_secret = math.fsum(
        math.comb(k, j) * p**j * dropout ** (k - j) for j in range(min(threshold, k + 1))
    )
    return min(1.0, n * per_secret)


def min_neighbours(n: int, dropout: float, bound: float = ABORT_BOUND) -> int | None:
    """The smallest even k whose abort bound, at the default threshold, is within `bound`.

    None if even the complete graph does not reach it (too much dropout for the cohort).
    """
    for k in range(2, n, 2):
        if abort_bound(n, k, default_threshold(k), dropout) <= bound:
            return k
    return None


def check_neighbours(n: int, neighbours: int | None, threshold: int, dropout: float) -> float:
    """The abort bound of a round's graph; raises if a SecAgg+ degree cannot keep it ≤ 1e-6.

    The complete graph (`neighbours` None or ≥ n - 1) is never refused here: its rounds abort
    only if fewer than `threshold` clients survive, which the drivers check on their own.

    Raises:
        InvalidInputError: `neighbours` too few for `dropout` (the message names the least
            degree that is enough, or says to use the complete graph).
    """
    k = n - 1 if neighbours is None else min(neighbours, n - 1)
    bound = abort_bound(n, k, threshold, dropout)
    if k < n - 1 and bound > ABORT_BOUND:
        best = min_neighbours(n, dropout)
        fix = "use the complete graph" if best is None else f"use at least {best}"
        raise InvalidInputError(
            f"`neighbours` {k} is too few for {dropout:.0%} dropout among {n} clients: a round "
            f"aborts with probability up to {bound:.2g} (bound {ABORT_BOUND:g}); {fix}"
        )
    return bound
