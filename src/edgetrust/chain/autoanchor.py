"""Anchor a log's checkpoints automatically, every N new entries (for `node serve --anchor-every`).

`AutoAnchor.maybe_anchor()` is cheap to call after every append: it does nothing until the log
has grown by `every` entries since the last anchor, then anchors the log's latest signed
checkpoint (registering the log on first use, with the log's own key binding it to the EVM
account).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from edgetrust.chain.anchor import LogAnchor, TxResult, note_verifier_key
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint

__all__ = ["AutoAnchor"]


@dataclass
class AutoAnchor:
    """Anchors `log` on `anchor` with `account` whenever it has grown by `every` entries.

    `log` is an `edgetrust.log.service.Log` (anything with `checkpoint()`, `verifier_key`,
    `origin` and `size()`); `log_identity` is its Ed25519 key, needed once to register.
    """

    anchor: LogAnchor
    account: LocalAccount
    log: Any
    log_identity: Identity
    every: int
    """Anchor after this many new entries (≥ 1)."""
    bond: int = 10**18
    """Bond posted when the log is registered."""
    last_size: int | None = field(default=None, init=False)
    """Size of the last checkpoint anchored by this object or found on chain."""

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise InvalidInputError("`every` must be a positive number of entries")

    def _anchored_size(self) -> int:
        if self.last_size is None:
            self.last_size = self.anchor.latest(self.log.origin)[0]
        return self.last_size

    def maybe_anchor(self) -> TxResult | None:
        """Anchor the latest checkpoint if the log grew by `every` since the last anchor."""
        if self.log.size() - self._anchored_size() < self.every:
            return None
        return self.anchor_now()

    def anchor_now(self) -> TxResult:
        """Anchor the log's latest signed checkpoint now (registering the log if needed)."""
        checkpoint = verify_checkpoint(self.log.checkpoint(), self.log.verifier_key)
        origin = checkpoint.origin
        if self.anchor.operator(origin) is None and not self.anchor.is_slashed(origin):
            self.anchor.register_log(
                self.account,
                origin=origin,
                note_key=note_verifier_key(origin, self.log_identity),
                log_identity=self.log_identity,
                bond=self.bond,
            )
        tx = self.anchor.anchor(
            self.account, origin=origin, size=checkpoint.size, root=checkpoint.root
        )
        self.last_size = checkpoint.size
        return tx
