"""A transparency-log witness (C2SP tlog-witness) and its HTTP app.

A witness follows logs it is configured for and cosigns (C2SP tlog-cosignature, Ed25519)
each checkpoint it has verified to be consistent with the last one it cosigned for the same
origin. Its state, one latest checkpoint per origin, lives in SQLite under its home; checking
the old size and recording the new checkpoint happen in one transaction (tlog-witness
§add-checkpoint, the rollback race). Refused checkpoints that are validly signed are kept as
evidence of log misbehaviour.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from edgetrust.errors import (
    ConflictError,
    Error,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from edgetrust.home import resolve_home
from edgetrust.identity import Identity, Keystore
from edgetrust.log.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    cosignature_line,
    verify_checkpoint,
)
from edgetrust.log.merkle import verify_consistency
from edgetrust.node._http import ErrorBody, error_response, install_error_handlers, read_body
from edgetrust.node.settings import WitnessSettings

__all__ = [
    "CheckpointConflictError",
    "Evidence",
    "UnknownLogError",
    "UntrustedCheckpointError",
    "Witness",
    "create_witness_app",
    "parse_add_checkpoint",
]

MAX_PROOF_LINES = 63
"""tlog-witness: a client MUST NOT send more than 63 consistency proof lines."""


class UnknownLogError(NotFoundError):
    """The checkpoint's origin is not a log this witness follows (HTTP 404)."""


class UntrustedCheckpointError(VerificationError):
    """No signature on the checkpoint verifies with a key trusted for its origin (HTTP 403)."""


class BadProofError(VerificationError):
    """The consistency proof from the old size does not verify (HTTP 422)."""


class CheckpointConflictError(ConflictError):
    """The checkpoint contradicts what the witness recorded (HTTP 409, with the latest size)."""

    def __init__(self, message: str, *, latest_size: int) -> None:
        super().__init__(message)
        self.latest_size = latest_size
        """The size of the latest checkpoint the witness cosigned for this origin."""


@dataclass(frozen=True)
class Evidence:
    """A validly signed checkpoint the witness refused, beside the one it had cosigned."""

    origin: str
    """The log's origin."""
    reason: str
    """Why it was refused (``fork``: same size, different root; ``inconsistent``: bad proof)."""
    cosigned: bytes
    """The checkpoint note the witness had cosigned."""
    presented: bytes
    """The contradicting checkpoint note, exactly as presented."""
    at: float
    """When, as a POSIX timestamp."""


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Parse a tlog-witness add-checkpoint body into ``(old_size, proof, checkpoint_note)``.

    Raises:
        InvalidInputError: not ``old N`` + up to 63 base64 hash lines + an empty line + a note.
    """
    head, sep, note = body.partition(b"\n\n")
    if not sep or not note:
        raise InvalidInputError("add-checkpoint body needs an empty line before the checkpoint")
    lines = head.split(b"\n")
    old_line = lines[0]
    digits = old_line[4:]
    if (
        not old_line.startswith(b"old ")
        or not digits.isdigit()
        or (digits.startswith(b"0") and digits != b"0")
        or len(digits) > 20
    ):
        raise InvalidInputError("add-checkpoint body must start with 'old <size>'")
    old = int(digits)
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise InvalidInputError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError("a consistency proof line is not base64") from exc
        if len(h) != 32:
            raise InvalidInputError("a consistency proof line is not a 32-byte hash")
        proof.append(h)
    if old >= 2**63:
        raise InvalidInputError("old size is out of range")
    return old, proof, note


class Witness:
    """A witness: verifies and cosigns checkpoints of the logs it follows.

    Security parameters are keyword-only: `log_keys` (note vkeys of the followed logs, whose
    key names are their origins) and the witness `identity` that cosigns.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        identity: Identity,
        name: str,
        log_keys: Sequence[str],
    ) -> None:
        if not log_keys:
            raise InvalidInputError("`log_keys` must name at least one log to witness")
        self.name = name
        self.identity = identity
        self.signer = NoteSigner(name, identity)
        self._logs: dict[str, list[str]] = {}
        for vkey in log_keys:
            verifier = NoteVerifier.from_vkey(vkey)
            self._logs.setdefault(verifier.name, []).append(vkey)
        path = resolve_home(home) / "witness.sqlite"
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS latest (
                origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                note BLOB NOT NULL, at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS evidence (
                id INTEGER PRIMARY KEY, origin TEXT NOT NULL, reason TEXT NOT NULL,
                cosigned BLOB NOT NULL, presented BLOB NOT NULL, at REAL NOT NULL);
            """
        )
        self._lock = threading.Lock()

    @property
    def vkey(self) -> str:
        """The witness's cosigner verifier key (tlog-cosignature, type 0x04)."""
        return self.signer.cosignature_vkey

    @property
    def origins(self) -> tuple[str, ...]:
        """The origins of the logs this witness follows."""
        return tuple(sorted(self._logs))

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """The size and note of the latest checkpoint cosigned for `origin`, if any."""
        row = self._db.execute(
            "SELECT size, note FROM latest WHERE origin = ?", (origin,)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def evidence(self, origin: str | None = None) -> list[Evidence]:
        """Refused, validly signed checkpoints, oldest first."""
        rows = self._db.execute(
            "SELECT origin, reason, cosigned, presented, at FROM evidence "
            "WHERE ? IS NULL OR origin = ? ORDER BY id",
            (origin, origin),
        ).fetchall()
        return [Evidence(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4]) for r in rows]

    def _verify_signed(self, note: bytes) -> Checkpoint:
        origin = note.split(b"\n", 1)[0].decode("utf-8", "replace")
        keys = self._logs.get(origin)
        if keys is None:
            raise UnknownLogError(f"this witness does not follow a log with origin {origin!r:.100}")
        for vkey in keys:
            try:
                return verify_checkpoint(note, vkey)
            except VerificationError:
                continue
            except InvalidInputError as exc:
                raise InvalidInputError(f"checkpoint is malformed: {exc.message}") from exc
        raise UntrustedCheckpointError(
            f"no signature on the checkpoint verifies with a key trusted for {origin!r:.100}",
            step="signature",
        )

    def add_checkpoint(self, body: bytes, *, now: float | None = None) -> bytes:
        """Handle an add-checkpoint request body; return the cosignature line(s).

        Steps (C2SP tlog-witness §add-checkpoint): (1) parse; (2) the origin is known (else
        404) and a trusted key signed the checkpoint (else 403); (3) old size <= size (else
        400); (4) atomically: old size equals the size last cosigned (else 409), the proof is
        empty for old size 0, equal sizes have equal roots (else 409, recorded as a fork),
        the consistency proof verifies (else 422, recorded); (5) record and cosign.
        """
        old, proof, note = parse_add_checkpoint(body)  # 1
        checkpoint = self._verify_signed(note)  # 2
        if old > checkpoint.size:  # 3
            raise InvalidInputError(
                f"old size {old} is larger than checkpoint size {checkpoint.size}"
            )
        t = time.time() if now is None else now
        evidence: list[tuple[str, str, bytes, bytes, float]] = []
        with self._lock:  # 4
            self._db.execute("BEGIN IMMEDIATE")
            try:
                line = self._check_and_record(checkpoint, note, old, proof, t, evidence)
            except BaseException:
                self._db.execute("ROLLBACK")
                # Evidence of misbehaviour is kept although the checkpoint is refused.
                for row in evidence:
                    self._db.execute(
                        "INSERT INTO evidence(origin, reason, cosigned, presented, at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                raise
            self._db.execute("COMMIT")
        return line

    def _check_and_record(
        self,
        checkpoint: Checkpoint,
        note: bytes,
        old: int,
        proof: list[bytes],
        t: float,
        evidence: list[tuple[str, str, bytes, bytes, float]],
    ) -> bytes:
        origin = checkpoint.origin
        row = self._db.execute(
            "SELECT size, root, note FROM latest WHERE origin = ?", (origin,)
        ).fetchone()
        latest_size = int(row[0]) if row else 0
        if old != latest_size:
            raise CheckpointConflictError(
                f"old size {old} is not the latest cosigned size {latest_size}",
                latest_size=latest_size,
            )
        if old == 0 and proof:
            raise BadProofError("the consistency proof must be empty from size 0")
        if row is not None:
            root, cosigned = bytes(row[1]), bytes(row[2])
            if old == checkpoint.size and checkpoint.root != root:
                evidence.append((origin, "fork", cosigned, note, t))
                raise CheckpointConflictError(
                    f"the log signed two different roots for size {old}: evidence recorded",
                    latest_size=latest_size,
                )
            if 0 < old < checkpoint.size:
                try:
                    verify_consistency(old, checkpoint.size, proof, root, checkpoint.root)
                except VerificationError as exc:
                    evidence.append((origin, "inconsistent", cosigned, note, t))
                    raise BadProofError(
                        f"consistency proof from {old} to {checkpoint.size} does not verify: "
                        f"{exc.message}",
                        step="consistency",
                    ) from exc
            elif old == checkpoint.size and proof:
                raise BadProofError("the consistency proof must be empty for equal sizes")
        line = cosignature_line(note, self.signer, int(t))  # 5
        self._db.execute(
            "INSERT INTO latest(origin, size, root, note, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(origin) DO UPDATE SET size=excluded.size, root=excluded.root, "
            "note=excluded.note, at=excluded.at",
            (origin, checkpoint.size, checkpoint.root, note, t),
        )
        return line


class WitnessInfo(BaseModel):
    """Who this witness is and what it follows."""

    name: str
    vkey: str
    logs: list[str]


def create_witness_app(
    witness: Witness | None = None, *, settings: WitnessSettings | None = None
) -> FastAPI:
    """Build the witness's ASGI app (``POST /add-checkpoint``), around `witness` or a new one.

    Without `witness`, one is built from `settings`: its key is ``settings.key_name`` in the
    keystore under ``settings.home`` (created on first start).
    """
    cfg = settings or WitnessSettings()
    holder: dict[str, Witness] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = witness is None
        w = witness or Witness(
            cfg.home,
            identity=Keystore(cfg.home).load_or_create(cfg.key_name),
            name=cfg.name,
            log_keys=cfg.log_keys,
        )
        holder["w"] = w
        try:
            yield
        finally:
            if own:
                w.close()

    app = FastAPI(
        title="edgetrust witness",
        version="1",
        summary="Cosigns consistent checkpoints of the logs it follows (C2SP tlog-witness).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)

    async def on_conflict(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CheckpointConflictError)
        return Response(f"{exc.latest_size}\n", status_code=409, media_type="text/x.tlog.size")

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Error)
        status = 403 if isinstance(exc, UntrustedCheckpointError) else 422
        return error_response(status, type(exc).__name__, exc.diagnostics())

    app.add_exception_handler(CheckpointConflictError, on_conflict)
    app.add_exception_handler(UntrustedCheckpointError, on_forbidden)
    app.add_exception_handler(BadProofError, on_forbidden)

    @app.post(
        "/add-checkpoint",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Cosignature line(s)."},
            400: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"content": {"text/x.tlog.size": {}}, "description": "Latest cosigned size."},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def add_checkpoint(request: Request) -> Response:
        """Verify a checkpoint's consistency with the last one cosigned, and cosign it."""
        body = await read_body(request, cfg.max_body)
        line = holder["w"].add_checkpoint(body)
        return Response(line, media_type="text/plain; charset=utf-8")

    @app.get("/v1/witness", response_model=WitnessInfo)
    async def info() -> JSONResponse:
        """The witness's name, cosigner vkey and the origins it follows."""
        w = holder["w"]
        return JSONResponse({"name": w.name, "vkey": w.vkey, "logs": list(w.origins)})

    @app.get("/v1/evidence")
    async def evidence() -> JSONResponse:
        """Checkpoints this witness refused although validly signed: evidence of misbehaviour."""
        return JSONResponse(
            [
                {
                    "origin": e.origin,
                    "reason": e.reason,
                    "cosigned": e.cosigned.decode("utf-8", "replace"),
                    "presented": e.presented.decode("utf-8", "replace"),
                    "at": e.at,
                }
                for e in holder["w"].evidence()
            ]
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness."""
        return JSONResponse({"status": "ok"})

    return app
