"""What every page shares: the Jinja2 environment, security headers, CSRF, error pages.

Security rules, enforced here once so a page module cannot forget them:

- autoescaping is on for every template (log entries are attacker-chosen text);
- every HTML answer carries a Content-Security-Policy without ``unsafe-inline``: scripts,
  styles and images only from this origin's ``/static/``, no frames, no plugins;
- state-changing forms carry a CSRF token (double submit: an ``HttpOnly; SameSite=Strict``
  cookie and a hidden field that must match, compared in constant time);
- query parameters are parsed by `int_param` / `str_param`, which raise `InvalidInputError`
  (a 400 page), never a 5xx.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from edgetrust.errors import Error, InvalidInputError
from edgetrust.log.service import Log
from edgetrust.node._http import status_for
from edgetrust.node.web.index import ExplorerIndex

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "CsrfError",
    "WebContext",
    "check_csrf",
    "check_did",
    "error_page",
    "int_param",
    "render",
    "str_param",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The Content-Security-Policy of every page (no inline script or style anywhere)."""
CSRF_COOKIE = "et_csrf"
_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _utc(value: object) -> str:
    """Unix seconds as an ISO 8601 UTC time (the value itself when it is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**37:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


_ENV.filters["utc"] = _utc
MAX_PARAM = 200
"""No query parameter a page reads is longer than this."""

NAV: list[tuple[str, str]] = [
    ("/", "Log"),
    ("/entries", "Entries"),
    ("/receipt", "Verify a receipt"),
    ("/rounds", "Federated rounds"),
    ("/disputes", "Disputes"),
    ("/data", "Data"),
]
"""The navigation bar; a page module appends its own (path, label) when it is added."""


INLINE_CATCH_UP = 20_000
"""A page indexes up to this many missing entries itself before answering (else it says how
far the index reaches and leaves the rest to the background thread)."""


@dataclass
class WebContext:
    """What page modules are given: the log, the explorer index, settings."""

    get_log: Callable[[], Log]
    """The node's log (only available once the app has started)."""
    index_path: Callable[[Log], str]
    """Where the explorer index lives for a log."""
    max_upload: int = 2 * 2**20
    """Largest bundle file the receipt page accepts (bytes)."""
    home: Path | None = None
    """The node's home (model registry, FL artifacts), when it has one on disk."""
    anchor: Any = None
    """The node's `AutoAnchor` (``node serve --anchor-every``), if it anchors on a chain."""
    witnesses: Any = field(default=None, repr=False)
    """The witness cosignatures shown on the log page (`witnesses.WitnessBook`, made lazily)."""
    _index: ExplorerIndex | None = field(default=None, repr=False)

    def log(self) -> Log:
        """The log."""
        return self.get_log()

    def index(self) -> ExplorerIndex:
        """The explorer index, created and set following the log on first use."""
        if self._index is None:
            log = self.get_log()
            self._index = ExplorerIndex(self.index_path(log))
            self._index.follow(log.entries, log.size)
        return self._index

    def node_home(self) -> Path | None:
        """The node's home: `home`, else the directory holding an embedded ``log/log.db``."""
        if self.home is not None:
            return self.home
        path = getattr(self.get_log().store, "path", None)
        if isinstance(path, Path) and path.parent.name == "log":
            return path.parent.parent
        return None

    def entries_of(self, kind: str, limit: int = 1000) -> list[tuple[int, bytes]]:
        """The newest `limit` entries of a display kind, newest first, read from the log."""
        index, indexed, _ = self.synced_index()
        log = self.get_log()
        return [
            (row.index, log.entry(row.index))
            for row in index.by_kind(kind, before=indexed, limit=limit)
        ]

    def synced_index(self) -> tuple[ExplorerIndex, int, int]:
        """The index, caught up inline when it lags by at most `INLINE_CATCH_UP` entries.

        Returns (index, entries indexed, log size) so a page can say how far it searched.
        """
        log = self.get_log()
        index = self.index()
        size = log.size()
        indexed = index.indexed()
        if 0 < size - indexed <= INLINE_CATCH_UP:
            indexed = index.catch_up(log.entries, size)
        return index, indexed, size


def _csrf_token(request: Request) -> tuple[str, bool]:
    token = request.cookies.get(CSRF_COOKIE, "")
    if re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
        return token, False
    return secrets.token_urlsafe(32), True


def render(
    request: Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Render `template` with the shared layout variables and security headers."""
    token, fresh = _csrf_token(request)
    html = _ENV.get_template(template).render(
        nav=NAV, path=request.url.path, csrf_token=token, **context
    )
    response = HTMLResponse(html, status_code=status, headers=_HEADERS)
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", path="/", max_age=86400
        )
    return response


def check_csrf(request: Request, submitted: object) -> None:
    """Refuse (403) a form whose CSRF field does not match the cookie.

    Raises:
        CsrfError: missing or different token.
    """
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not isinstance(submitted, str) or not submitted:
        raise CsrfError("missing CSRF token; reload the page and submit again")
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfError("CSRF token does not match; reload the page and submit again")


class CsrfError(InvalidInputError):
    """A state-changing form came without this site's CSRF token (HTTP 403)."""


def error_page(request: Request, exc: Error) -> HTMLResponse:
    """The HTML answer for an error: its status, its type and its one-line message."""
    status = 403 if isinstance(exc, CsrfError) else status_for(exc)
    return render(
        request,
        "error.html",
        {
            "title": f"Error {status}",
            "status": status,
            "error": type(exc).__name__,
            "message": exc.diagnostics(),
        },
        status=status,
    )


def str_param(request: Request, name: str, default: str = "") -> str:
    """A query parameter as text, at most `MAX_PARAM` characters, without control characters."""
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise InvalidInputError(f"query parameter {name!r} given {len(values)} times")
    value = values[0]
    if len(value) > MAX_PARAM:
        raise InvalidInputError(f"query parameter {name!r} is over {MAX_PARAM} characters")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise InvalidInputError(f"query parameter {name!r} has control characters")
    return value.strip()


_DID = re.compile(r"did:[a-z0-9]{1,20}:[A-Za-z0-9._:%-]{1,180}")


def check_did(value: str, what: str = "DID") -> str:
    """`value` when it is a well-formed DID (a ``did:key`` must name an Ed25519 key).

    Raises:
        InvalidInputError: malformed.
    """
    if not _DID.fullmatch(value):
        raise InvalidInputError(
            f"malformed {what}: a DID is did:<method>:<id> (e.g. did:key:z6Mk…)"
        )
    if value.startswith("did:key:"):
        from edgetrust.identity import public_bytes_from_did

        try:
            public_bytes_from_did(value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"malformed {what}: {exc.message}") from exc
    return value


def int_param(
    request: Request, name: str, default: int | None, *, lo: int = 0, hi: int = 2**62
) -> int | None:
    """A query parameter as a decimal integer in [`lo`, `hi`], or `default` when absent."""
    raw = str_param(request, name)
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw):
        raise InvalidInputError(f"query parameter {name!r} must be a non-negative integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInputError(f"query parameter {name!r} must be in [{lo}, {hi}]")
    return value
