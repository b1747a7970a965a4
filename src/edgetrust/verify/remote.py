"""The dispute game across a network: a device answering from its home, a challenger asking.

`TraceResponders` is the device's side: it answers queries about the traces its home keeps
(`TraceStore`), rebuilding each trace from the stored model, plan and inputs - which costs a
run, so a few are kept in memory. The node serves it as ``POST /v1/traces/{root}/query``.
`RemoteDevice` is the challenger's side: a `DeviceResponder`-shaped callable that asks a node
over HTTP, and answers None - a refusal, which the game counts against the device - whenever
the device does not give a well-formed answer in time.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

import httpx

from edgetrust.encoding import parse_digest
from edgetrust.errors import ConflictError, Error, InvalidInputError
from edgetrust.models import ModelRegistry
from edgetrust.runtime.fixed import FixedExecutor, PlanStore, TraceStore
from edgetrust.runtime.fixed._runtime import DEFAULT_TRACE_WINDOW
from edgetrust.verify.dispute import (
    MAX_MESSAGE_BYTES,
    Answer,
    DeviceResponder,
    Query,
    parse_answer,
)

__all__ = ["RemoteDevice", "TraceResponders", "TraceUnavailableError", "parse_trace_root"]


class TraceUnavailableError(ConflictError):
    """A trace is kept but cannot be rebuilt (damaged file, model or plan gone): HTTP 409."""

    def __init__(self, root: bytes, reason: str) -> None:
        super().__init__(f"stored trace {root.hex()[:16]}… cannot be rebuilt: {reason}")
        self.root = root
        """The trace root that was asked for."""


def parse_trace_root(value: bytes | str) -> bytes:
    """A trace root from its 32 bytes, ``sha256:<hex>`` (receipts) or 64 hex digits (URLs)."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise InvalidInputError("a trace root is 32 bytes")
        return value
    if value.startswith("sha256:"):
        return parse_digest(value)
    if len(value) != 64 or value.strip("0123456789abcdef"):
        raise InvalidInputError("a trace root is 64 lower-case hex digits")
    return bytes.fromhex(value)


class TraceResponders:
    """Answers dispute queries about the traces a home keeps; the device side of the game.

    Args:
        home: the device's edgetrust home (traces, models, plans).
        window: seconds a trace is answered for after its run (older ones are not found).
        cache: responders kept in memory; each holds a whole trace (MiniLM: ~35 MB).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        window: float = DEFAULT_TRACE_WINDOW,
        cache: int = 4,
    ) -> None:
        if cache < 1:
            raise InvalidInputError("`cache` must be at least 1")
        self.store = TraceStore(home, window=window)
        self.models = ModelRegistry(home)
        self.plans = PlanStore(home)
        self.cache = cache
        self._responders: OrderedDict[bytes, DeviceResponder] = OrderedDict()
        # The cache lock is held only to look up or insert, so answers from cached traces
        # never wait behind a rebuild; rebuilds run one at a time (each is a full run, and
        # two requests for the same trace share one).
        self._lock = threading.Lock()
        self._rebuild = threading.Lock()

    def describe(self, root: bytes) -> dict[str, Any]:
        """What the device holds about a trace (without rebuilding it).

        Raises:
            NotFoundError: no such trace, or its window has passed.
            TraceUnavailableError: the trace file is damaged.
        """
        try:
            model, plan, until = self.store.describe(root)
        except InvalidInputError as exc:
            raise TraceUnavailableError(root, exc.message) from exc
        return {"trace_root": root.hex(), "model": model, "plan": plan, "kept_until": until}

    def is_cached(self, root: bytes) -> bool:
        """Whether answering about `root` needs no rebuild."""
        return root in self._responders

    def responder(self, root: bytes) -> DeviceResponder:
        """The responder over the trace with this root (rebuilt and checked, then cached).

        Raises:
            NotFoundError: no such trace, or its window has passed.
            TraceUnavailableError: it is kept but cannot be rebuilt.
        """
        found = self._cached(root)
        if found is not None:
            return found
        with self._rebuild:
            found = self._cached(root)  # rebuilt by another request while this one waited
            if found is not None:
                return found
            # Expiry is checked on every rebuild; a cached trace is at most one cache
            # lifetime past its window.
            try:
                model_digest, plan_digest, _ = self.store.describe(root)
            except InvalidInputError as exc:
                raise TraceUnavailableError(root, exc.message) from exc
            try:
                plan = self.plans.find(model_digest, plan_digest)
                if plan is None:
                    raise InvalidInputError("its plan is no longer stored (re-planned since?)")
                executor = FixedExecutor(
                    self.models.model_bytes(model_digest), precision=plan.precision, plan=plan
                )
                trace = self.store.get(root, executor)
            except Error as exc:
                raise TraceUnavailableError(root, exc.message) from exc
            made = DeviceResponder(executor, trace)
            with self._lock:
                self._responders[root] = made
                while len(self._responders) > self.cache:
                    self._responders.popitem(last=False)
            return made

    def _cached(self, root: bytes) -> DeviceResponder | None:
        with self._lock:
            found = self._responders.get(root)
            if found is not None:
                self._responders.move_to_end(root)
            return found

    def answer(self, root: bytes, query: Query) -> Answer:
        """The device's answer to `query` about the trace `root`.

        Raises:
            NotFoundError, TraceUnavailableError: as `responder`.
            InvalidInputError: a query outside the trace.
        """
        ans = self.responder(root)(query)
        if ans is None:  # pragma: no cover - an honest responder always answers
            raise InvalidInputError("the device has no answer to this query")
        return ans


class RemoteDevice:
    """Asks a device's node (``/v1/traces/{root}/query``) instead of a local responder.

    Whatever is not a well-formed answer within `timeout` - connection refused, a timeout,
    an error status, a body over `max_bytes` or one `parse_answer` refuses - is returned as
    None: the device refused, and the game decides against it. `failure` says why.

    Args:
        url: the device node's base URL (http or https).
        trace_root: the root in the receipt (``sha256:<hex>``, 64 hex digits or 32 bytes).
        timeout: seconds for one query, from connecting to the last byte of the answer;
            keep it within the game's per-step timeout.
        client: an httpx client to use (default: one owned and closed by this object).
    """

    def __init__(
        self,
        url: str,
        trace_root: bytes | str,
        *,
        timeout: float = 30.0,
        max_bytes: int = MAX_MESSAGE_BYTES,
        client: httpx.Client | None = None,
    ) -> None:
        try:  # a URL that cannot be parsed is the challenger's mistake, never the device's
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise InvalidInputError(f"`url` is not a valid URL: {url!r:.80}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInputError(f"`url` must be an http(s) URL with a host, not {url!r:.80}")
        if not timeout > 0:
            raise InvalidInputError("`timeout` must be positive")
        self.root = parse_trace_root(trace_root)
        self.url = f"{url.rstrip('/')}/v1/traces/{self.root.hex()}"
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._client = client or httpx.Client(timeout=timeout)
        self._own = client is None
        self.failure: str | None = None
        """Why the last query got no answer (None after an answer)."""

    def __call__(self, query: Query) -> Answer | None:
        """The device's answer to `query`, or None if it gave none."""
        try:
            body = self._post(query)
            ans = parse_answer(body)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, Error) as exc:
            message = exc.message if isinstance(exc, Error) else str(exc) or type(exc).__name__
            self.failure = f"{self.url}: {message}"
            return None
        self.failure = None
        return ans

    def _post(self, query: Query) -> bytes:
        deadline = time.monotonic() + self.timeout
        with self._client.stream("POST", self.url + "/query", json=query.to_dict()) as resp:
            if resp.status_code != 200:
                resp.read()
                raise InvalidInputError(f"HTTP {resp.status_code}: {_error_text(resp)}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise InvalidInputError(f"answer over {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise InvalidInputError(f"answer took over {self.timeout:g} s")
        return bytes(body)

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._own:
            self._client.close()

    def __enter__(self) -> RemoteDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_text(resp: httpx.Response) -> str:
    """The node's one-line error message, or the start of whatever it sent."""
    try:
        obj = resp.json()
    except ValueError:
        return resp.text[:200] or "no body"
    if isinstance(obj, dict) and isinstance(obj.get("message"), str):
        return str(obj["message"])[:300]
    return resp.text[:200]
