"""Composable verification policies: what a verifier requires of a receipt beyond validity.

A policy checks a `Receipt` that has already passed the cryptographic steps and raises
`VerificationError` when the receipt is not acceptable to *this* verifier (wrong issuer,
unexpected model, executor, age). `AllOf` and `AnyOf` combine them and refuse an empty list,
because an empty conjunction would silently accept everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from edgetrust.errors import VerificationError
from edgetrust.receipts import Receipt

__all__ = [
    "AllOf",
    "AnyOf",
    "ExecutorIs",
    "IssuedWithin",
    "IssuerIn",
    "ModelIn",
    "Policy",
]

_STEP = "7 policy"


class Policy(Protocol):
    """Anything that can accept or reject a verified receipt."""

    def verify(self, receipt: Receipt) -> None:
        """Return None to accept; raise `VerificationError` to reject."""
        ...


class AllOf:
    """Every child policy must accept."""

    def __init__(self, children: Iterable[Policy]) -> None:
        self.children = tuple(children)
        if not self.children:
            raise ValueError("`children` must name at least one policy")

    def verify(self, receipt: Receipt) -> None:
        """Accept when all children accept."""
        for child in self.children:
            child.verify(receipt)


class AnyOf:
    """At least one child policy must accept."""

    def __init__(self, children: Iterable[Policy]) -> None:
        self.children = tuple(children)
        if not self.children:
            raise ValueError("`children` must name at least one policy")

    def verify(self, receipt: Receipt) -> None:
        """Accept when any child accepts."""
        reasons = []
        for child in self.children:
            try:
                child.verify(receipt)
                return
            except VerificationError as exc:
                reasons.append(exc.message)
        raise VerificationError("no policy accepted: " + "; ".join(reasons), step=_STEP)


class IssuerIn:
    """The receipt was issued by one of these DIDs."""

    def __init__(self, dids: Iterable[str]) -> None:
        self.dids = frozenset(dids)
        if not self.dids:
            raise ValueError("`dids` must name at least one issuer")

    def verify(self, receipt: Receipt) -> None:
        """Accept a known issuer."""
        if receipt.issuer not in self.dids:
            raise VerificationError(f"issuer {receipt.issuer} is not trusted", step=_STEP)


class ModelIn:
    """The receipt is for one of these model digests."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests = frozenset(digests)
        if not self.digests:
            raise ValueError("`digests` must name at least one model")

    def verify(self, receipt: Receipt) -> None:
        """Accept a known model."""
        if receipt.model_digest not in self.digests:
            raise VerificationError(f"model {receipt.model_digest} is not allowed", step=_STEP)


class ExecutorIs:
    """The receipt names this executor (e.g. the deterministic one)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def verify(self, receipt: Receipt) -> None:
        """Accept the named executor."""
        if receipt.executor.get("name") != self.name:
            raise VerificationError(
                f"executor {receipt.executor.get('name')!r} is not {self.name!r}", step=_STEP
            )


class IssuedWithin:
    """The receipt was issued no longer ago than `max_age` (and not in the future)."""

    def __init__(self, max_age: timedelta, *, skew: timedelta = timedelta(minutes=5)) -> None:
        if max_age <= timedelta(0):
            raise ValueError("`max_age` must be positive")
        self.max_age, self.skew = max_age, skew

    def verify(self, receipt: Receipt) -> None:
        """Accept a fresh receipt."""
        issued = datetime.fromisoformat(receipt.issued_at)
        if issued.tzinfo is None:
            issued = issued.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if issued > now + self.skew:
            raise VerificationError("receipt is issued in the future", step=_STEP)
        if now - issued > self.max_age:
            raise VerificationError(f"receipt is older than {self.max_age}", step=_STEP)
