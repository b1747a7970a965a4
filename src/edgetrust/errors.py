"""The exception hierarchy: one root `Error`, domain subclasses that carry data.

Every error edgetrust raises on purpose derives from `Error`, so the CLI and the node can turn
any of them into one clear line (or a 4xx JSON body) and never show a traceback.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "Error",
    "InvalidInputError",
    "KeystoreError",
    "NotFoundError",
    "ProfileError",
    "ResourceLimitError",
    "UnsupportedError",
    "VerificationError",
]


class Error(Exception):
    """Root of every error edgetrust raises deliberately."""

    def __init__(self, message: str) -> None:
        if not message:
            raise ValueError("an edgetrust error needs a message")
        super().__init__(message)
        self.message = message

    def diagnostics(self) -> str:
        """One line for a person: what is wrong, without a traceback."""
        return self.message


class InvalidInputError(Error):
    """Input that is malformed, of the wrong shape or type, or too large."""


class ProfileError(InvalidInputError):
    """Well-formed input outside the one form edgetrust accepts for signed or logged data.

    The profiles rule out inputs that two honest readers could read differently, or that can
    be varied without a key: JSON that is not its RFC 8785 form (duplicate keys, whitespace),
    a second signature by the same key, a time with an offset or nanoseconds, text with
    control or bidi-override characters. `rule` names the rule that was broken.
    """

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(f"{message} ({rule})")
        self.rule = rule
        """The broken rule, e.g. ``"RFC 8785 canonical JSON"``."""


class NotFoundError(Error):
    """Something named (a model, key, entry, receipt) does not exist."""


class ConflictError(Error):
    """The request contradicts state already recorded (e.g. a stale checkpoint)."""


class KeystoreError(Error):
    """A key cannot be created, loaded or used safely (permissions, passphrase, format)."""


class UnsupportedError(Error):
    """A well-formed request for something this implementation does not do (an op, a version)."""


class ResourceLimitError(Error):
    """The work would exceed a configured limit (memory, size, rate)."""

    def __init__(self, message: str, *, limit: int | float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        """The configured limit that would have been exceeded, when there is one."""


class VerificationError(Error):
    """A check failed: the thing verified is not what it claims to be.

    `step` names the verification step that failed (e.g. ``"1 signature"``) so that a caller
    can tell *which* guarantee is missing, not only that one is.
    """

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        """The verification step that failed, when the check is part of a numbered procedure."""

    def diagnostics(self) -> str:
        """One line: the failing step first, then why."""
        if self.step is None:
            return self.message
        return f"step {self.step}: {self.message}"
