"""The time and text profiles of signed and logged data (issue 17).

Times are RFC 3339 in UTC with a ``Z`` and at most microseconds, and not further in the future
of the reader's clock than `future_skew` seconds: ``9999-12-31T23:59:59+23:59`` and
nanosecond fractions read differently in different languages, and a far-future time would sort
first forever. Names and labels are NFC text without control, format-override (bidi) or
surrogate characters, so that a page or a terminal shows what was signed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

from edgetrust.errors import ProfileError

__all__ = [
    "TEXT_RULE",
    "TIME_RULE",
    "check_text",
    "check_time",
    "future_skew",
    "set_future_skew",
]

TIME_RULE = "UTC time profile: YYYY-MM-DDTHH:MM:SS[.ffffff]Z, not in the future"
TEXT_RULE = "text profile: NFC, no control or bidi-override characters"

_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

_future_skew = 300.0


def future_skew() -> float:
    """Seconds a time may lie ahead of this process's clock (default 300)."""
    return _future_skew


def set_future_skew(seconds: float) -> None:
    """Set the allowed clock skew into the future (the node sets it from its settings)."""
    global _future_skew
    if not seconds >= 0:
        raise ValueError("the future skew must be >= 0 seconds")
    _future_skew = float(seconds)


def check_time(value: object, what: str, *, now: datetime | None = None) -> datetime:
    """Parse a time in the profile, or raise `ProfileError` naming `TIME_RULE`."""
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise ProfileError(f"{what} {str(value)[:40]!r} is not in the time profile", rule=TIME_RULE)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProfileError(f"{what} {value!r} is not a valid date", rule=TIME_RULE) from exc
    current = now or datetime.now(UTC)
    if (when - current).total_seconds() > _future_skew:
        raise ProfileError(
            f"{what} {value!r} is more than {_future_skew:g} s in the future", rule=TIME_RULE
        )
    return when


def check_text(value: object, what: str, *, multiline: bool = False) -> str:
    """Return `value` if it is text in the profile, or raise `ProfileError` naming `TEXT_RULE`.

    `multiline` admits line feeds (and only them) for free text such as descriptions.
    """
    if not isinstance(value, str):
        raise ProfileError(f"{what} must be a string", rule=TEXT_RULE)
    for ch in value:
        cat = unicodedata.category(ch)
        if (cat in ("Cc", "Cs") and not (multiline and ch == "\n")) or ch in _BIDI:
            raise ProfileError(f"{what} contains the character U+{ord(ch):04X}", rule=TEXT_RULE)
    if not unicodedata.is_normalized("NFC", value):
        raise ProfileError(f"{what} is not in Unicode NFC", rule=TEXT_RULE)
    return value
