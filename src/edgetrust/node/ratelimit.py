"""Token-bucket rate limits, one bucket per identity (a signing DID, or a client address)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from edgetrust.errors import InvalidInputError
from edgetrust.node._http import RateLimitedError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets, one per signing identity; a batch is charged all at once or not at all.

    Identities are charged after their signatures verify, so nobody can spend someone else's
    budget by naming their key in an unsigned request.
    """

    def __init__(
        self,
        *,
        rate: float,
        capacity: float,
        max_identities: int = 100_000,
        unit: str = "entries",
    ) -> None:
        if rate < 0 or capacity < 1:
            raise InvalidInputError("`rate` must be >= 0 and `capacity` >= 1")
        self.unit = unit
        """What a token pays for, in messages ("entries", "trace queries")."""
        self.rate = rate
        self.capacity = capacity
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, counts: dict[str, int], *, now: float | None = None) -> None:
        """Charge `counts[identity]` tokens to each identity, or raise and charge nothing.

        Raises:
            RateLimitedError: an identity has too few tokens left.
        """
        if self.rate == 0:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            levels = {}
            for identity, n in counts.items():
                tokens, last = self._buckets.get(identity, (self.capacity, t))
                tokens = min(self.capacity, tokens + (t - last) * self.rate)
                if n > self.capacity:
                    raise RateLimitedError(
                        f"{n} {self.unit} from {identity:.80} at once exceed the burst of "
                        f"{self.capacity:g}; split the batch",
                        limit=self.capacity,
                    )
                if tokens < n:
                    raise RateLimitedError(
                        f"{identity:.80} is over the rate limit of {self.rate:g} {self.unit}/s "
                        f"(burst {self.capacity:g}); retry later",
                        limit=self.rate,
                    )
                levels[identity] = tokens - n
            for identity, tokens in levels.items():
                self._buckets[identity] = (tokens, t)
                self._buckets.move_to_end(identity)
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
