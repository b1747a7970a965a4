"""The edgetrust log node: an HTTP face on the embedded transparency log (FastAPI).

Read API: C2SP tlog-tiles (``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]``,
``/tile/entries/<N>[.p/<W>]``), so standard tiles clients and witnesses can follow the log,
plus JSON conveniences (``/v1/entries/{index}`` with an inclusion proof,
``/v1/proofs/consistency``). Write API: ``POST /v1/entries`` and ``POST /v1/entries:batch``,
which accept only DSSE envelopes of registered in-toto predicate types whose every signature
verifies. The node is thin: validation is `open_signed_statement`, sequencing and proofs are
`edgetrust.log.service.Log`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

# The entry types a node accepts are those registered with the statement registry: importing
# these modules registers receipts, batch receipts and model cards.
import edgetrust.models
import edgetrust.receipts  # noqa: F401
from edgetrust.capture.http import capture_router
from edgetrust.dsse import Envelope, envelope_from_dict
from edgetrust.encoding import parse_json
from edgetrust.errors import Error, InvalidInputError, NotFoundError
from edgetrust.human.http import human_router
from edgetrust.log.client import TILE_HEIGHT, TILE_WIDTH, parse_tile_path
from edgetrust.log.merkle import complete_subtrees, fold_subtrees, inclusion_proof_ranges
from edgetrust.log.publish import TilePublisher
from edgetrust.log.service import Log
from edgetrust.node._http import (
    ERROR_RESPONSES,
    ErrorBody,
    RateLimitedError,
    install_error_handlers,
    read_body,
)
from edgetrust.node.metrics import NodeMetrics, metrics_router
from edgetrust.node.settings import NodeSettings
from edgetrust.node.web import add_web
from edgetrust.statement import open_signed_statement

__all__ = [
    "BatchEntryError",
    "PreparedEntry",
    "RateLimiter",
    "batch_inclusion_proofs",
    "canonical_envelope_bytes",
    "create_app",
    "prepare_entries",
    "prepare_entry",
]

_IMMUTABLE = "public, max-age=31536000, immutable"
_logger = logging.getLogger("edgetrust.node")


# --- entry validation (a library function; the node only calls it) ----------------------------


@dataclass(frozen=True)
class PreparedEntry:
    """A submission that passed every check, ready to append."""

    data: bytes
    """The entry as it will be logged: the canonical (RFC 8785) JSON of the envelope."""
    signer: str
    """The verified DID of the envelope's first signer (rate limits are charged to it)."""


def canonical_envelope_bytes(envelope: Envelope) -> bytes:
    r"""The bytes of ``envelope.to_json()`` (RFC 8785), computed about ten times faster.

    Written here because the `rfc8785` package is pure Python and costs ~100 µs per envelope,
    close to an Ed25519 verification, on the node's hot path. An envelope holds only strings
    under fixed ASCII keys, and for strings RFC 8785 §3.2.2.2 escaping is exactly what
    ``json.dumps(ensure_ascii=False)`` does (short escapes, lower-case ``\u00xx`` for other
    controls, everything else verbatim), and its key order is plain sorting. A property test
    checks the equality against `Envelope.to_json`.
    """
    try:
        return json.dumps(
            envelope.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError("envelope has no canonical JSON form (lone surrogate)") from exc


def prepare_entry(envelope: Envelope | bytes, *, max_entry: int) -> PreparedEntry:
    """Check that `envelope` may be logged and return its canonical bytes and signer.

    Steps: (1) it parses as a DSSE envelope, every signature verifies, its statement is of a
    registered predicate type and passes that type's validator (`open_signed_statement`);
    (2) its canonical form fits in a tlog-tiles entry (`max_entry` bytes).

    Raises:
        InvalidInputError, VerificationError, UnsupportedError: the envelope is refused.
    """
    signed = open_signed_statement(envelope, max_bytes=max(max_entry * 2, 1024))
    data = canonical_envelope_bytes(signed.envelope)
    if len(data) > max_entry:
        raise InvalidInputError(
            f"entry is {len(data)} bytes canonically, over the {max_entry}-byte entry limit"
        )
    return PreparedEntry(data, signed.signer)


def _prepare_dict(obj: object, max_entry: int) -> PreparedEntry:
    return prepare_entry(envelope_from_dict(obj), max_entry=max_entry)


def _prepare_chunk(
    items: Sequence[object], offset: int, max_entry: int
) -> list[tuple[bytes, str]] | tuple[int, str, str]:
    """Prepare a chunk of a batch, in a worker process or not.

    Returns plain tuples, which pickle cheaply, or the first refused entry by its position in
    the whole batch.
    """
    out = []
    for i, obj in enumerate(items):
        try:
            p = _prepare_dict(obj, max_entry)
        except Error as exc:
            return offset + i, type(exc).__name__, exc.diagnostics()
        out.append((p.data, p.signer))
    return out


class BatchEntryError(InvalidInputError):
    """One entry of a batch was refused; nothing of the batch was logged."""

    def __init__(self, position: int, error: str, message: str) -> None:
        super().__init__(f"entry {position}: {message}")
        self.position = position
        """Index of the refused entry within the submitted batch."""
        self.error = error
        """The error type that refused it."""


def prepare_entries(
    items: Sequence[object],
    *,
    max_entry: int,
    pool: ProcessPoolExecutor | None = None,
    workers: int = 1,
) -> list[PreparedEntry]:
    """Prepare every envelope (as parsed JSON) of a batch; all must pass, or none is logged.

    With `pool` (of `workers` processes), signatures are verified in worker processes:
    cryptography's Ed25519 verify holds the GIL (measured: two threads verify barely faster
    than one), so processes are the only way to use a second core for it.

    Raises:
        BatchEntryError: the first refused entry, by position.
    """
    if pool is None or len(items) < 64:
        result = _prepare_chunk(items, 0, max_entry)
        if isinstance(result, tuple):
            raise BatchEntryError(*result)
        return [PreparedEntry(d, s) for d, s in result]
    step = -(-len(items) // max(workers, 1))
    futures = [
        pool.submit(_prepare_chunk, items[i : i + step], i, max_entry)
        for i in range(0, len(items), step)
    ]
    prepared: list[PreparedEntry] = []
    for fut in futures:
        result = fut.result()
        if isinstance(result, tuple):
            raise BatchEntryError(*result)
        prepared.extend(PreparedEntry(d, s) for d, s in result)
    return prepared


# --- per-identity rate limit -----------------------------------------------------------------


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


# --- response models (documentation; handlers build JSON directly, for speed) -----------------


class Submitted(BaseModel):
    """Where one entry was logged, with a proof against a signed checkpoint."""

    index: int
    size: int
    inclusion_proof: list[str]
    checkpoint: str


class BatchItem(BaseModel):
    """One entry of a batch answer."""

    index: int
    inclusion_proof: list[str] | None = None


class BatchSubmitted(BaseModel):
    """Where each entry of a batch was logged, in submission order."""

    size: int
    checkpoint: str
    entries: list[BatchItem]


class EntryWithProof(BaseModel):
    """A logged entry (base64 of its exact bytes) with its inclusion proof."""

    index: int
    size: int
    entry: str
    inclusion_proof: list[str]
    checkpoint: str


class Consistency(BaseModel):
    """An RFC 9162 consistency proof between two tree sizes."""

    size1: int
    size2: int
    proof: list[str]
    checkpoint: str


class LogInfo(BaseModel):
    """What a client needs to follow this log."""

    origin: str
    vkey: str
    size: int


class Health(BaseModel):
    """Liveness."""

    status: str
    size: int


_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["payload", "payloadType", "signatures"],
    "properties": {
        "payload": {"type": "string", "description": "base64 of the statement bytes"},
        "payloadType": {"type": "string", "example": "application/vnd.in-toto+json"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["keyid", "sig"],
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}
_WRITE_ERRORS = {
    **ERROR_RESPONSES,
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    429: {"model": ErrorBody, "description": "Per-identity rate limit exceeded."},
}


def batch_inclusion_proofs(
    hashes: Callable[[int, int, int], list[bytes]], indices: Sequence[int], size: int
) -> list[list[bytes]]:
    """RFC 9162 inclusion proofs of many `indices` in the tree of `size`, sharing reads.

    Proofs of neighbouring entries share most of their nodes; asking the store once per proof
    costs a query per entry (measured ~300 µs each in a batch of 500), so this collects the
    distinct complete subtrees all proofs need and reads each contiguous run of them with one
    ``hashes(level, start, count)`` call, then folds the ranges as `LogStore` would.
    """
    ranges = [inclusion_proof_ranges(i, size) for i in indices]
    needed: dict[int, set[int]] = {}
    parts: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for proof in ranges:
        for rng in proof:
            if rng not in parts:
                parts[rng] = complete_subtrees(*rng)
                for level, index in parts[rng]:
                    needed.setdefault(level, set()).add(index)
    known: dict[tuple[int, int], bytes] = {}
    for level, wanted in needed.items():
        runs: list[list[int]] = []
        for index in sorted(wanted):
            if runs and index == runs[-1][1] + 1:
                runs[-1][1] = index
            else:
                runs.append([index, index])
        for first, last in runs:
            for offset, h in enumerate(hashes(level, first, last - first + 1)):
                known[(level, first + offset)] = h
    folded = {rng: fold_subtrees([known[c] for c in coords]) for rng, coords in parts.items()}
    return [[folded[rng] for rng in proof] for proof in ranges]


def _b64(hashes: Iterable[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


# --- the app -----------------------------------------------------------------------------------


class _Node:
    """Request-independent state: the log, the rate limiter, the verify pool."""

    def __init__(
        self,
        log: Log,
        settings: NodeSettings,
        pool: ProcessPoolExecutor | None,
        on_append: Callable[[], object] | None = None,
    ):
        self.log = log
        self.settings = settings
        self.pool = pool
        self.on_append = on_append
        self.limiter = RateLimiter(rate=settings.rate, capacity=settings.bucket)
        self._latest: tuple[bytes, int] = (b"", -1)
        self._queue: list[tuple[bytes, asyncio.Future[dict[str, Any]]]] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._latest_lock = threading.Lock()
        self.metrics = NodeMetrics(log)
        self.publisher: TilePublisher | None = None

    def latest(self) -> tuple[bytes, int]:
        """The latest signed checkpoint note and its size (the log signs one if it grew)."""
        note = self.log.checkpoint()
        current = self._latest
        if note == current[0]:
            return current
        # Checkpoint body: origin line, size line, root line (C2SP tlog-checkpoint).
        size = int(note.split(b"\n", 2)[1])
        with self._latest_lock:
            # Only ever move forward, so no answer carries an older checkpoint than one this
            # process already handed out (a client would rightly call that a rollback).
            if size > self._latest[1]:
                self._latest = (note, size)
                self.metrics.checkpoint_moved()
            return self._latest if self._latest[1] > size else (note, size)

    def covering(self, index: int) -> tuple[bytes, int]:
        """A signed checkpoint whose tree contains `index`.

        The cached latest one when it covers the entry (most entries of a commit batch), so a
        burst of submissions costs one checkpoint signature per batch, not a query each.
        """
        current = self._latest
        if current[1] > index:
            return current
        note, size = self.latest()
        if size <= index:
            raise NotFoundError(f"entry {index} is not yet in a signed checkpoint")
        return note, size

    def append_one(self, data: bytes) -> dict[str, Any]:
        return self.append_group([data])[0]

    def _appended(self) -> None:
        if self.publisher is not None:
            self.publisher.notify()
        if self.on_append is None:
            return
        try:
            self.on_append()
        except Exception:
            # The entries are logged and answered whatever the hook does (e.g. an anchoring
            # chain being down); the failure is reported, not turned into a refusal.
            _logger.exception("on_append hook failed")

    def append_group(self, entries: list[bytes]) -> list[dict[str, Any]]:
        """Append single submissions gathered together; one answer per entry, in order."""
        started = time.perf_counter()
        indices = self.log.append_many(entries)
        self.metrics.observe_commit(len(entries), time.perf_counter() - started)
        self._appended()
        note, size = self.covering(max(indices))
        text = note.decode()
        paths = self.log.inclusion_proofs(indices, size)
        return [
            {"index": i, "size": size, "inclusion_proof": _b64(p), "checkpoint": text}
            for i, p in zip(indices, paths, strict=True)
        ]

    async def submit(self, data: bytes) -> dict[str, Any]:
        """Queue one entry for the next group commit and wait for its answer.

        Concurrent submissions are appended together: while one group is being committed in
        a worker thread, the next accumulates here. One thread hop, one transaction, one
        checkpoint and shared proof reads per group instead of per request (measured: the
        per-request path cost ~3x the node CPU per entry under 32 concurrent clients).
        """
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((data, future))
        if not self._draining:
            self._draining = True
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                group = self._queue[: self.settings.batch_size]
                del self._queue[: len(group)]
                try:
                    answers = await anyio.to_thread.run_sync(
                        self.append_group, [d for d, _ in group]
                    )
                except Exception as exc:  # every waiter must hear about a failed group
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(group, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._draining = False

    def append_batch(self, entries: list[bytes], proofs: bool) -> dict[str, Any]:
        started = time.perf_counter()
        indices = self.log.append_many(entries)
        self.metrics.observe_commit(len(entries), time.perf_counter() - started)
        self._appended()
        note, size = self.covering(max(indices)) if indices else self.latest()
        if proofs:
            paths = self.log.inclusion_proofs(indices, size)
            items = [
                {"index": i, "inclusion_proof": _b64(p)}
                for i, p in zip(indices, paths, strict=True)
            ]
        else:
            items = [{"index": i} for i in indices]
        return {"size": size, "checkpoint": note.decode(), "entries": items}

    def tile(self, level: int | None, index: int, width: int) -> bytes:
        _, size = self.latest()
        if level is None:
            first = index * TILE_WIDTH
            if first + width > size:
                raise NotFoundError(f"entry bundle {index} of width {width} is beyond the tree")
            chunks = []
            for data in self.log.entries(first, width):
                chunks.append(len(data).to_bytes(2, "big") + data)
            return b"".join(chunks)
        if (
            level * TILE_HEIGHT >= 64
            or (index * TILE_WIDTH + width) << (level * TILE_HEIGHT) > size
        ):
            raise NotFoundError(f"tile {level}/{index} of width {width} is beyond the tree")
        return b"".join(self.log.hashes(level * TILE_HEIGHT, index * TILE_WIDTH, width))


def create_app(
    log: Log | None = None,
    *,
    settings: NodeSettings | None = None,
    on_append: Callable[[], object] | None = None,
) -> FastAPI:
    """Build the node's ASGI app around `log` (or the embedded log at ``settings.home``).

    `on_append` is called (in a worker thread) after each committed group or batch, e.g.
    ``AutoAnchor(...).maybe_anchor`` to anchor checkpoints on a chain every N entries; its
    failures are logged and never refuse an entry that is already logged.

    When `log` is given, the caller owns it (and closes it); otherwise the app opens the log
    at startup and closes it at shutdown.
    """
    cfg = settings or NodeSettings()
    holder: dict[str, _Node] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = None
        if cfg.verify_workers:
            # Fork the workers before the log starts its threads, and warm them up, so the
            # children inherit the registered predicate types and no lock held by a thread.
            pool = ProcessPoolExecutor(cfg.verify_workers)
            list(pool.map(abs, range(cfg.verify_workers)))
        own = log is None
        the_log = log or Log.open(
            cfg.home,
            origin=cfg.origin,
            batch_size=cfg.batch_size,
            max_delay=cfg.max_delay,
            store=cfg.store,
        )
        holder["node"] = _Node(the_log, cfg, pool, on_append)
        try:
            if cfg.publish is not None:
                holder["node"].publisher = TilePublisher(
                    the_log, cfg.publish, interval=cfg.publish_interval
                )
            yield
        finally:
            if holder["node"].publisher is not None:
                holder["node"].publisher.close()
            if own:
                the_log.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    app = FastAPI(
        title="edgetrust log node",
        version="1",
        summary="A transparency log of signed AI receipts and model cards (C2SP tlog-tiles).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(metrics_router(lambda: node().metrics))
    if cfg.data:  # data depends on node._http, so imported here (no import loop)
        from edgetrust.data.http import node_data_router

        app.include_router(node_data_router(lambda: node().log, cfg.home))

    def node() -> _Node:
        return holder["node"]

    @app.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz() -> JSONResponse:
        """Liveness: the log answers."""
        _, size = node().latest()
        return JSONResponse({"status": "ok", "size": size})

    @app.get("/v1/log", response_model=LogInfo, tags=["meta"])
    async def log_info() -> JSONResponse:
        """The log's origin, verifier key (note vkey format) and latest size."""
        n = node()
        _, size = n.latest()
        vkey = n.log.verifier_key
        return JSONResponse({"origin": vkey.split("+", 1)[0], "vkey": vkey, "size": size})

    @app.get(
        "/checkpoint",
        response_class=PlainTextResponse,
        tags=["tlog-tiles"],
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def checkpoint() -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint as a signed note)."""
        note, _ = node().latest()
        return Response(
            note,
            media_type="text/plain; charset=utf-8",
            headers={"cache-control": "no-cache, max-age=1"},
        )

    @app.get(
        "/tile/{path:path}",
        tags=["tlog-tiles"],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, **ERROR_RESPONSES},
    )
    def tile(request: Request, path: str = Path(max_length=200)) -> Response:
        """A hash tile ``<L>/<N>[.p/<W>]`` or an entry bundle ``entries/<N>[.p/<W>]``."""
        level, index, width = parse_tile_path(path)
        data = node().tile(level, index, width)
        headers = {"cache-control": _IMMUTABLE}
        # tlog-tiles: entry bundles SHOULD be compressed at the HTTP layer (hash tiles are
        # random bytes and would not shrink).
        if level is None and "gzip" in request.headers.get("accept-encoding", ""):
            data = gzip.compress(data, compresslevel=6)
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.post(
        "/v1/entries",
        response_model=Submitted,
        responses=_WRITE_ERRORS,
        tags=["entries"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ENVELOPE_SCHEMA}},
            }
        },
    )
    async def submit(request: Request) -> JSONResponse:
        """Log one DSSE envelope; answer its index, inclusion proof and a signed checkpoint."""
        n = node()
        body = await read_body(request, cfg.max_body)
        # Verified here even with verify workers: measured, a process hop per request doubles
        # the CPU an entry costs (IPC), where a batch spreads it over hundreds of entries.
        try:
            prepared = prepare_entry(body, max_entry=cfg.max_entry)
        except Error:
            n.metrics.rejected.inc()
            raise
        n.limiter.take({prepared.signer: 1})
        answer = await n.submit(prepared.data)
        return JSONResponse(answer)

    @app.post(
        "/v1/entries:batch",
        response_model=BatchSubmitted,
        responses=_WRITE_ERRORS,
        tags=["entries"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {"entries": {"type": "array", "items": _ENVELOPE_SCHEMA}},
                        }
                    }
                },
            }
        },
    )
    async def submit_batch(request: Request, proofs: bool = Query(True)) -> JSONResponse:
        """Log many envelopes at once: all are checked first, and all or none are logged."""
        n = node()
        body = await read_body(request, cfg.max_body)
        obj = parse_json(body, what="batch")
        if not isinstance(obj, dict) or set(obj) != {"entries"}:
            raise InvalidInputError('batch must be a JSON object {"entries": [...]}')
        items = obj["entries"]
        if not isinstance(items, list) or not items:
            raise InvalidInputError("batch entries must be a non-empty list")
        if len(items) > cfg.max_batch:
            raise InvalidInputError(f"batch has {len(items)} entries, over {cfg.max_batch}")
        try:
            if n.pool is None:
                prepared = prepare_entries(items, max_entry=cfg.max_entry)
            else:
                pool = n.pool
                prepared = await anyio.to_thread.run_sync(
                    lambda: prepare_entries(
                        items, max_entry=cfg.max_entry, pool=pool, workers=cfg.verify_workers
                    )
                )
        except Error:
            n.metrics.rejected.inc()
            raise
        counts: dict[str, int] = {}
        for p in prepared:
            counts[p.signer] = counts.get(p.signer, 0) + 1
        n.limiter.take(counts)
        datas = [p.data for p in prepared]
        answer = await anyio.to_thread.run_sync(n.append_batch, datas, proofs)
        return JSONResponse(answer)

    @app.get(
        "/v1/entries/{index}",
        response_model=EntryWithProof,
        responses=ERROR_RESPONSES,
        tags=["entries"],
    )
    def get_entry(index: int = Path(ge=0, le=2**63 - 1)) -> JSONResponse:
        """One logged entry with its inclusion proof against the latest checkpoint."""
        n = node()
        note, size = n.latest()
        if index >= size:
            raise NotFoundError(f"entry {index} is beyond the log's size {size}")
        data = n.log.entry(index)
        proof = n.log.inclusion_proof(index, size)
        return JSONResponse(
            {
                "index": index,
                "size": size,
                "entry": base64.b64encode(data).decode("ascii"),
                "inclusion_proof": _b64(proof),
                "checkpoint": note.decode(),
            }
        )

    @app.get(
        "/v1/proofs/consistency",
        response_model=Consistency,
        responses=ERROR_RESPONSES,
        tags=["proofs"],
    )
    def consistency(
        size1: int = Query(alias="from", ge=0, le=2**63 - 1),
        size2: int = Query(alias="to", ge=0, le=2**63 - 1),
    ) -> JSONResponse:
        """RFC 9162 consistency proof between tree sizes `from` and `to` (≤ latest size)."""
        n = node()
        note, size = n.latest()
        if size1 > size2:
            raise InvalidInputError(f"from={size1} is larger than to={size2}")
        if size2 > size:
            raise NotFoundError(f"to={size2} is beyond the log's size {size}")
        proof = n.log.consistency_proof(size1, size2) if 0 < size1 < size2 else []
        return JSONResponse(
            {"size1": size1, "size2": size2, "proof": _b64(proof), "checkpoint": note.decode()}
        )

    add_web(app, lambda: node().log, anchor=getattr(on_append, "__self__", None))
    app.include_router(capture_router(lambda: node().log))
    app.include_router(human_router(lambda: node().log))
    if cfg.traces:
        _add_trace_routes(app, cfg)
    return app


# --- dispute queries (opt-in: `NodeSettings.traces`) --------------------------------------------

_MAX_QUERY_BYTES = 4096
"""A query is five small fields; anything longer is refused (413) before it is parsed."""
_REBUILD_COST = 10.0
"""Rate-limit tokens a query costs when it has to rebuild a trace (a full model run)."""
_TRACE_ERRORS = {
    **ERROR_RESPONSES,
    409: {"model": ErrorBody, "description": "The trace is kept but cannot be rebuilt."},
    413: {"model": ErrorBody, "description": "Query body over 4 KiB."},
    429: {"model": ErrorBody, "description": "Per-client rate limit exceeded."},
}
_RootParam = Annotated[
    str,
    Path(
        min_length=64,
        max_length=64,
        pattern="^[0-9a-f]{64}$",
        description="The receipt's trace root (`traceRoot`) as 64 lower-case hex digits.",
    ),
]


class TraceHeld(BaseModel):
    """A trace this device keeps and answers queries about."""

    trace_root: str
    model: str
    plan: str
    kept_until: float
    """Unix time after which the trace is no longer answered for."""


def _add_trace_routes(app: FastAPI, cfg: NodeSettings) -> None:
    """Add the device's side of the dispute game (`verify.remote.TraceResponders`).

    ``GET /v1/traces/{root}`` and ``POST /v1/traces/{root}/query``.
    """
    from edgetrust.verify.dispute import parse_query
    from edgetrust.verify.remote import TraceResponders, parse_trace_root

    traces = TraceResponders(cfg.home, window=cfg.trace_window, cache=cfg.trace_cache)
    limiter = RateLimiter(
        rate=cfg.trace_rate, capacity=max(10 * cfg.trace_rate, 1.0), unit="trace queries"
    )

    @app.get(
        "/v1/traces/{root}", response_model=TraceHeld, responses=_TRACE_ERRORS, tags=["disputes"]
    )
    def trace_held(root: _RootParam) -> JSONResponse:
        """Whether this device still keeps the trace (404 if not), without rebuilding it."""
        return JSONResponse(traces.describe(parse_trace_root(root)))

    @app.post(
        "/v1/traces/{root}/query",
        responses=_TRACE_ERRORS,
        tags=["disputes"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "kind": {"enum": ["split", "chunk", "open", "header"]},
                                "entry": {"type": ["integer", "null"]},
                                "lo": {"type": "integer"},
                                "hi": {"type": "integer"},
                                "element": {"type": ["integer", "null"]},
                            },
                        }
                    }
                },
            }
        },
    )
    async def trace_query(request: Request, root: _RootParam) -> JSONResponse:
        """Answer one dispute query (`edgetrust.verify.dispute.Query`) about a kept trace.

        The answer is a `SplitAnswer`, `ChunkAnswer` or `OpenAnswer` in its JSON form. The
        first query about a trace rebuilds it from the stored inputs (one model run).
        """
        trace_root = parse_trace_root(root)
        body = await read_body(request, _MAX_QUERY_BYTES)
        query = parse_query(body)
        client = request.client.host if request.client else "unknown"
        cost = 1.0 if traces.is_cached(trace_root) else _REBUILD_COST
        limiter.take({client: int(min(cost, limiter.capacity))})
        answer = await anyio.to_thread.run_sync(traces.answer, trace_root, query)
        return JSONResponse(answer.to_dict())
