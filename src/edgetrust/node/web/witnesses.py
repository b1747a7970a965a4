"""Witness cosignatures for the log page: cosigned checkpoints brought to the node, checked.

A witness cosigns the checkpoints *clients* bring it (`LogClient.witness`), so the node never
sees those cosignatures by itself. ``/witnesses`` takes such a note (pasted, with the witness
verifier keys to check it by, CSRF-protected): it must carry this log's valid signature, and
every cosignature line is checked against the keys given. The newest verified cosignature of
each witness key is kept (``<home>/web/cosignatures.json``, or in memory without a home) and
listed with its key on the log page, re-verified each time it is shown.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edgetrust.errors import Error, InvalidInputError
from edgetrust.log.checkpoint import (
    NoteVerifier,
    cosignature_timestamp,
    parse_checkpoint_body,
    parse_note,
    verify_checkpoint,
)
from edgetrust.node._http import read_body
from edgetrust.node.web._page import CsrfError, WebContext, check_csrf, error_page, render

__all__ = ["Cosignature", "WitnessBook", "router"]

MAX_NOTE = 16 * 1024
MAX_WITNESSES = 64


@dataclass(frozen=True)
class Cosignature:
    """One witness's newest cosignature the node was shown, as the log page lists it."""

    name: str
    vkey: str
    key_id: str
    size: int
    root: str
    timestamp: int
    status: str
    """``"pass"`` or ``"fail"``: re-verified against `vkey` when listed."""
    detail: str


class WitnessBook:
    """The newest verified cosigned note per witness key (a JSON file, or memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text())
                self._notes = {str(k): str(v) for k, v in dict(loaded).items()}
            except (OSError, ValueError, TypeError):
                self._notes = {}  # a damaged file: start again (each note is re-verified)

    def vkeys(self) -> tuple[str, ...]:
        """Witness keys with a kept cosignature."""
        with self._lock:
            return tuple(self._notes)

    def add(self, vkey: str, note: str) -> None:
        """Keep `note` for `vkey` (already verified), replacing an older one."""
        with self._lock:
            old = self._notes.get(vkey)
            if old is not None and _timestamp(old, vkey) >= _timestamp(note, vkey):
                return
            self._notes[vkey] = note
            if len(self._notes) > MAX_WITNESSES:
                self._notes.pop(next(iter(self._notes)))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._notes, indent=1))
                tmp.replace(self.path)

    def listing(self) -> list[Cosignature]:
        """Every kept cosignature, re-verified, newest first."""
        with self._lock:
            items = list(self._notes.items())
        out = [_check(vkey, note) for vkey, note in items]
        return sorted(out, key=lambda c: -c.timestamp)


def _timestamp(note: str, vkey: str) -> int:
    verifier = NoteVerifier.from_vkey(vkey)
    for sig in parse_note(note).signatures:
        if verifier.matches(sig):
            return cosignature_timestamp(sig)
    return -1


def _check(vkey: str, note: str) -> Cosignature:
    verifier = NoteVerifier.from_vkey(vkey)
    parsed = parse_note(note)
    cp = parse_checkpoint_body(parsed.text)
    for sig in parsed.signatures:
        if verifier.matches(sig):
            try:
                verifier.verify(parsed.text, sig)
                status, detail = "pass", ""
            except Error as exc:
                status, detail = "fail", exc.message
            return Cosignature(
                verifier.name,
                vkey,
                sig.key_id.hex(),
                cp.size,
                cp.root.hex(),
                cosignature_timestamp(sig),
                status,
                detail,
            )
    return Cosignature(verifier.name, vkey, "", cp.size, cp.root.hex(), -1, "fail", "no line")


def check_cosigned(note: str, log_vkey: str, vkeys: list[str]) -> list[str]:
    """The witness keys in `vkeys` that validly cosigned `note`, a checkpoint of this log.

    Raises:
        InvalidInputError / VerificationError: not this log's signed checkpoint, a malformed
            key, or no line of a given key verifies.
    """
    verify_checkpoint(note, log_vkey)
    parsed = parse_note(note)
    good = []
    for vkey in vkeys:
        verifier = NoteVerifier.from_vkey(vkey)
        lines = [s for s in parsed.signatures if verifier.matches(s) and len(s.signature) == 72]
        if not lines:
            raise InvalidInputError(f"no cosignature line of witness {verifier.name!r} in the note")
        verifier.verify(parsed.text, lines[0])
        cosignature_timestamp(lines[0])
        good.append(vkey)
    if not good:
        raise InvalidInputError("give the verifier key of at least one witness (one a line)")
    return good


def book(ctx: WebContext) -> WitnessBook:
    """The node's witness book (created on first use, beside the node's home when it has one)."""
    if ctx.witnesses is None:
        home = ctx.node_home()
        ctx.witnesses = WitnessBook(home / "web" / "cosignatures.json" if home else None)
    found: WitnessBook = ctx.witnesses
    return found


def router(ctx: WebContext) -> APIRouter:
    """``GET /witnesses`` (the form and the kept cosignatures), ``POST /witnesses``."""
    r = APIRouter(include_in_schema=False)

    def page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        return render(
            request,
            "witnesses.html",
            {
                "title": "Witness cosignatures",
                "cosignatures": book(ctx).listing(),
                "vkey": ctx.log().verifier_key,
                "error": error,
            },
            status=status,
        )

    @r.get("/witnesses", response_class=HTMLResponse)
    def form(request: Request) -> HTMLResponse:
        return page(request)

    @r.post("/witnesses", response_class=HTMLResponse)
    async def submit(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_NOTE * 2)
            fields = _form(body)
            check_csrf(request, fields.get("csrf_token"))
        except CsrfError as exc:
            return error_page(request, exc)
        except Error as exc:
            return page(request, exc.diagnostics(), 400)
        try:
            note = fields.get("note", "").replace("\r\n", "\n")
            if not note.strip():
                raise InvalidInputError("paste a cosigned checkpoint note")
            vkeys = [v.strip() for v in fields.get("vkeys", "").splitlines() if v.strip()]
            for vkey in check_cosigned(note, ctx.log().verifier_key, vkeys[:MAX_WITNESSES]):
                book(ctx).add(vkey, note)
        except Error as exc:
            return page(request, exc.diagnostics(), 400)
        return RedirectResponse("/#witnesses", status_code=303)

    return r


def _form(body: bytes) -> dict[str, Any]:
    from urllib.parse import parse_qs

    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError("the form is not URL-encoded UTF-8 text") from exc
    return {k: v[0] for k, v in parsed.items() if len(v) == 1}
