"""Read and check a remote transparency log over HTTP (C2SP tlog-tiles), and talk to witnesses.

`LogClient` trusts nothing the server says until it has checked it: every checkpoint's
signature against the log's verifier key, every checkpoint's consistency with the last one it
trusted, and every entry's inclusion in a trusted checkpoint. Proofs are computed from tiles
(C2SP tlog-tiles), so the client works with any tiles log, not only an edgetrust node. The last
trusted checkpoint can be persisted, so a log that forks or rewrites history is caught across
runs; the error it raises (`ForkError`) carries both signed checkpoints as evidence.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgetrust.errors import (
    ConflictError,
    Error,
    InvalidInputError,
    NotFoundError,
    ResourceLimitError,
    VerificationError,
)
from edgetrust.log.checkpoint import Checkpoint, NoteVerifier, verify_checkpoint
from edgetrust.log.merkle import (
    complete_subtrees,
    consistency_proof_ranges,
    fold_subtrees,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "MAX_BUNDLE_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "ForkError",
    "LogClient",
    "LogUnavailableError",
    "Submission",
    "VerifiedEntry",
    "WitnessConflictError",
    "encode_tile_index",
    "monitor",
    "parse_bundle",
    "parse_tile_path",
    "request_cosignature",
    "tile_path",
]

TILE_HEIGHT = 8
"""tlog-tiles §"Merkle Tree": every tile is a subtree of height 8."""
TILE_WIDTH = 1 << TILE_HEIGHT
"""A full tile holds 256 hashes (8,192 bytes); an entry bundle 256 entries."""
MAX_BUNDLE_ENTRY_BYTES = 0xFFFF
"""Entry bundles prefix each entry with a big-endian uint16 length, so no entry can be larger."""

_MAX_CHECKPOINT_BYTES = 64 * 1024
_MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_BUNDLE_ENTRY_BYTES)
_MAX_JSON_BYTES = 64 * 2**20
_GROUP_RE = re.compile(r"[0-9]{3}")


class LogUnavailableError(Error):
    """The log (or witness) could not be reached, or answered with an unexpected status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status received, when there was a response."""


class ForkError(VerificationError):
    """The log presented a checkpoint inconsistent with one it signed before.

    Both signed notes are kept, exactly as received: together they are portable evidence that
    the log's operator signed two incompatible views of its history (RFC 9162 §8.2, split view).
    """

    def __init__(
        self, message: str, *, trusted: bytes, presented: bytes, step: str = "consistency"
    ) -> None:
        super().__init__(message, step=step)
        self.trusted = trusted
        """The signed checkpoint note the client trusted before."""
        self.presented = presented
        """The signed checkpoint note the log presented that contradicts it."""

    def evidence(self) -> dict[str, str]:
        """Both notes as text, ready to publish or hand to a witness or an arbiter."""
        return {
            "trusted": self.trusted.decode("utf-8", "replace"),
            "presented": self.presented.decode("utf-8", "replace"),
        }


class WitnessConflictError(ConflictError):
    """A witness refused a checkpoint (tlog-witness 409): its view of the log is different."""

    def __init__(self, message: str, *, latest_size: int | None) -> None:
        super().__init__(message)
        self.latest_size = latest_size
        """The size of the latest checkpoint the witness cosigned, as it reported it."""


# --- tlog-tiles paths --------------------------------------------------------------------------


def encode_tile_index(n: int) -> str:
    """Encode a tile index as tlog-tiles path elements: 1234067 -> ``x001/x234/067``.

    tlog-tiles §"Merkle Tree": zero-padded 3-digit elements, all but the last prefixed ``x``.
    """
    if n < 0:
        raise InvalidInputError(f"tile index must be non-negative, got {n}")
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """The path of a tile below the log prefix: ``tile/<L>/<N>[.p/<W>]``.

    `level` is an int for hash tiles or ``"entries"`` for an entry bundle; a `width` below 256
    names a partial tile.
    """
    if not 1 <= width <= TILE_WIDTH:
        raise InvalidInputError(f"tile width must be 1..256, got {width}")
    if isinstance(level, int) and not 0 <= level <= 63:
        raise InvalidInputError(f"tile level must be 0..63, got {level}")
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_tile_index(index)}{suffix}"


def parse_tile_path(path: str) -> tuple[int | None, int, int]:
    """Parse ``<L>/<N>[.p/<W>]`` or ``entries/<N>[.p/<W>]`` (the part after ``tile/``).

    Returns ``(level, index, width)`` with level None for an entry bundle and width 256 for a
    full tile. Only the canonical encoding is accepted (no leading zeros in L or W, no empty
    leading ``x000`` groups), so that each tile has exactly one name.

    Raises:
        InvalidInputError: the path is not a tlog-tiles tile path.
    """
    parts = path.split("/")
    width = TILE_WIDTH
    if len(parts) >= 3 and parts[-2].endswith(".p"):
        w = parts[-1]
        if not w.isdigit() or not w.isascii() or str(int(w)) != w or not 1 <= int(w) <= 255:
            raise InvalidInputError(f"partial tile width must be 1..255, got {w!r:.20}")
        width = int(w)
        parts = [*parts[:-2], parts[-2][:-2]]
    if len(parts) < 2:
        raise InvalidInputError("tile path must be <L>/<N>[.p/<W>] or entries/<N>[.p/<W>]")
    head, groups = parts[0], parts[1:]
    level: int | None
    if head == "entries":
        level = None
    elif head.isascii() and head.isdigit() and str(int(head)) == head and int(head) <= 63:
        level = int(head)
    else:
        raise InvalidInputError(f"tile level must be 0..63 or 'entries', got {head!r:.20}")
    if len(groups) > 7:
        raise InvalidInputError("tile index has too many path elements")
    digits = []
    for i, g in enumerate(groups):
        last = i == len(groups) - 1
        body = g if last else (g[1:] if g.startswith("x") else "")
        if not _GROUP_RE.fullmatch(body):
            raise InvalidInputError(f"bad tile index element {g!r:.20}")
        digits.append(body)
    index = int("".join(digits))
    if encode_tile_index(index) != "/".join(groups):
        raise InvalidInputError("tile index is not canonically encoded")
    return level, index, width


def parse_bundle(data: bytes, count: int) -> list[bytes]:
    """Split an entry bundle (big-endian uint16 length-prefixed entries) into `count` entries.

    Raises:
        InvalidInputError: truncated, trailing bytes, or a different number of entries.
    """
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise InvalidInputError("entry bundle is truncated in a length prefix")
        (length,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if pos + length > len(data):
            raise InvalidInputError("entry bundle is truncated in an entry")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != count:
        raise InvalidInputError(f"entry bundle has {len(entries)} entries, expected {count}")
    return entries


RangeHash = Callable[[int, int], bytes]
"""``mth(lo, hi)`` returns MTH(D[lo:hi]) for a node range of an RFC 9162 tree."""


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedEntry:
    """A log entry whose inclusion in a trusted checkpoint has been verified."""

    index: int
    """Position of the entry in the log."""
    data: bytes
    """The entry bytes exactly as logged (a canonical JSON DSSE envelope for edgetrust)."""
    proof: tuple[bytes, ...]
    """RFC 9162 inclusion proof of `data` at `index` in `checkpoint`."""
    checkpoint: Checkpoint
    """The checkpoint the proof verifies against."""
    note: bytes
    """That checkpoint's signed note, exactly as received."""


@dataclass(frozen=True)
class Submission:
    """A node's answer to a submission, verified: the entry is in the signed checkpoint."""

    index: int
    """Where the log put the entry."""
    proof: tuple[bytes, ...]
    """Inclusion proof against `checkpoint`."""
    checkpoint: Checkpoint
    """The checkpoint the node returned (verified, and consistent with what we trusted)."""
    note: bytes
    """Its signed note."""


class LogClient:
    """A verifying reader of a remote tlog-tiles log (and writer, for an edgetrust node).

    Security parameters: `vkey` (the log's note verifier key) is required, and nothing the log
    says is accepted without it. With `state_path`, the last trusted checkpoint is stored there
    and re-verified on the next start, so consistency is checked across runs too.
    """

    def __init__(
        self,
        url: str,
        vkey: str,
        *,
        state_path: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"`url` must be an http(s) URL, got {url!r:.80}")
        if timeout <= 0:
            raise InvalidInputError("`timeout` must be positive")
        self.url = url.rstrip("/")
        self.vkey = vkey
        self.verifier = NoteVerifier.from_vkey(vkey)
        # `http` lets a caller bring its own client (a proxy, or an in-process ASGI transport);
        # relative paths are resolved against its base URL.
        self._own_http = http is None
        self._http = http or httpx.Client(
            base_url=self.url + "/", timeout=timeout, follow_redirects=False
        )
        self._state_path = Path(state_path) if state_path is not None else None
        self._tiles: OrderedDict[tuple[int | None, int, int], bytes] = OrderedDict()
        self._trusted: Checkpoint | None = None
        self._trusted_note: bytes | None = None
        if self._state_path is not None and self._state_path.exists():
            self._load_state(self._state_path)

    # context manager -------------------------------------------------------------------------

    def __enter__(self) -> LogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool (unless the caller brought its own)."""
        if self._own_http:
            self._http.close()

    # state -----------------------------------------------------------------------------------

    @property
    def trusted(self) -> Checkpoint | None:
        """The last checkpoint this client verified and trusts, if any."""
        return self._trusted

    @property
    def trusted_note(self) -> bytes | None:
        """The signed note of `trusted`, exactly as received."""
        return self._trusted_note

    def _load_state(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read log client state {path}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("checkpoint"), str):
            raise InvalidInputError(f"log client state {path} has no checkpoint")
        if state.get("vkey") != self.vkey:
            raise InvalidInputError(
                f"log client state {path} belongs to another log key ({state.get('vkey')!r:.80})"
            )
        note = state["checkpoint"].encode("utf-8")
        self._trusted = verify_checkpoint(note, self.vkey)
        self._trusted_note = note

    def _save_state(self) -> None:
        if self._state_path is None or self._trusted_note is None:
            return
        data = json.dumps(
            {"url": self.url, "vkey": self.vkey, "checkpoint": self._trusted_note.decode()},
            indent=2,
        )
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a crash never leaves a half-written state that would make the
        # next run forget the checkpoint it trusted.
        fd, tmp = tempfile.mkstemp(dir=self._state_path.parent, prefix=".logstate-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # HTTP ------------------------------------------------------------------------------------

    def _get(self, path: str, limit: int) -> bytes:
        try:
            with self._http.stream("GET", path) as resp:
                if resp.status_code == 404:
                    raise NotFoundError(f"log has no {path}")
                if resp.status_code != 200:
                    raise LogUnavailableError(
                        f"GET {path}: HTTP {resp.status_code}", status=resp.status_code
                    )
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ResourceLimitError(f"GET {path}: over {limit} bytes", limit=limit)
                return bytes(body)
        except httpx.HTTPError as exc:
            raise LogUnavailableError(f"GET {self.url}/{path}: {exc}") from exc

    def _post_json(self, path: str, body: bytes) -> Any:
        try:
            resp = self._http.post(path, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise LogUnavailableError(f"POST {self.url}/{path}: {exc}") from exc
        if len(resp.content) > _MAX_JSON_BYTES:
            raise ResourceLimitError(f"POST {path}: response too large", limit=_MAX_JSON_BYTES)
        try:
            obj = resp.json()
        except ValueError as exc:
            raise LogUnavailableError(
                f"POST {path}: HTTP {resp.status_code}, not JSON", status=resp.status_code
            ) from exc
        if resp.status_code != 200:
            message = obj.get("message") if isinstance(obj, dict) else None
            text = f"log refused the submission (HTTP {resp.status_code}): {message or obj}"
            if 400 <= resp.status_code < 500:
                raise InvalidInputError(text)
            raise LogUnavailableError(text, status=resp.status_code)
        return obj

    # checkpoints -----------------------------------------------------------------------------

    def fetch_checkpoint(self) -> tuple[Checkpoint, bytes]:
        """Fetch ``/checkpoint`` and verify its signature (step 1), without trusting it yet."""
        note = self._get("checkpoint", _MAX_CHECKPOINT_BYTES)
        return verify_checkpoint(note, self.vkey), note

    def update(self) -> Checkpoint:
        """Fetch the latest checkpoint, check it against the trusted one, and trust it.

        Steps: (1) the checkpoint is signed by the log's key; (2) it is consistent with the
        last trusted checkpoint (same root at the same size, or a valid consistency proof
        from tiles); (3) it becomes the trusted checkpoint, persisted when `state_path` is set.

        Raises:
            VerificationError: bad signature (step 1).
            ForkError: inconsistent with the trusted checkpoint (step 2), with both notes.
        """
        checkpoint, note = self.fetch_checkpoint()
        self.accept(checkpoint, note)
        return checkpoint

    def accept(self, checkpoint: Checkpoint, note: bytes) -> None:
        """Trust `checkpoint` (signature already verified) if consistent with the trusted one."""
        old, old_note = self._trusted, self._trusted_note
        if old is not None and old_note is not None:
            self._check_consistent(old, old_note, checkpoint, note)
            if checkpoint.size == old.size:
                return
        self._trusted, self._trusted_note = checkpoint, note
        self._save_state()

    def _check_consistent(
        self, old: Checkpoint, old_note: bytes, new: Checkpoint, new_note: bytes
    ) -> None:
        if new.origin != old.origin:
            raise ForkError(
                f"checkpoint origin {new.origin!r} differs from trusted {old.origin!r}",
                trusted=old_note,
                presented=new_note,
            )
        if new.size < old.size:
            raise ForkError(
                f"log presented size {new.size}, smaller than trusted size {old.size} (rollback)",
                trusted=old_note,
                presented=new_note,
            )
        if new.size == old.size:
            if new.root != old.root:
                raise ForkError(
                    f"log signed two different roots for size {new.size}",
                    trusted=old_note,
                    presented=new_note,
                )
            return
        try:
            proof = self.consistency_proof(old.size, new.size)
            verify_consistency(old.size, new.size, proof, old.root, new.root)
        except (VerificationError, InvalidInputError) as exc:
            raise ForkError(
                f"checkpoint of size {new.size} is not consistent with trusted size "
                f"{old.size}: {exc.message}",
                trusted=old_note,
                presented=new_note,
            ) from exc

    # tiles and proofs ------------------------------------------------------------------------

    def tile(self, level: int, index: int, width: int) -> bytes:
        """Fetch one hash tile (cached); checks only its length, proofs check its content."""
        key = (level, index, width)
        data = self._tiles.get(key)
        if data is None:
            data = self._get(tile_path(level, index, width), 32 * TILE_WIDTH)
            if len(data) != 32 * width:
                raise VerificationError(
                    f"tile {tile_path(level, index, width)} is {len(data)} bytes, "
                    f"expected {32 * width}",
                    step="tiles",
                )
            self._tiles[key] = data
            if len(self._tiles) > 512:
                self._tiles.popitem(last=False)
        else:
            self._tiles.move_to_end(key)
        return data

    def _subtree_hash(self, height: int, index: int, size: int) -> bytes:
        """MTH of the complete subtree of 2**height leaves at position `index`, from tiles."""
        level, r = divmod(height, TILE_HEIGHT)
        first = index << r
        tile_index, offset = divmod(first, TILE_WIDTH)
        width = min(TILE_WIDTH, (size >> (TILE_HEIGHT * level)) - tile_index * TILE_WIDTH)
        data = self.tile(level, tile_index, width)
        hashes = [data[32 * i : 32 * i + 32] for i in range(offset, offset + (1 << r))]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def _range_hasher(self, size: int) -> RangeHash:
        def mth(lo: int, hi: int) -> bytes:
            parts = complete_subtrees(lo, hi)
            return fold_subtrees([self._subtree_hash(h, i, size) for h, i in parts])

        return mth

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof for `index` in the tree of `size`, computed from tiles."""
        mth = self._range_hasher(size)
        return [mth(lo, hi) for lo, hi in inclusion_proof_ranges(index, size)]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 9162 consistency proof from `size1` to `size2`, computed from tiles."""
        mth = self._range_hasher(size2)
        return [mth(lo, hi) for lo, hi in consistency_proof_ranges(size1, size2)]

    def _need_checkpoint(self, index: int) -> tuple[Checkpoint, bytes]:
        if index < 0:
            raise InvalidInputError(f"entry index must be non-negative, got {index}")
        if self._trusted is None or index >= self._trusted.size:
            self.update()
        assert self._trusted is not None and self._trusted_note is not None
        if index >= self._trusted.size:
            raise NotFoundError(f"entry {index} is beyond the log's size {self._trusted.size}")
        return self._trusted, self._trusted_note

    def get_entry(self, index: int) -> VerifiedEntry:
        """Fetch entry `index` from its bundle and verify its inclusion in a trusted checkpoint.

        Raises:
            NotFoundError: the index is beyond the latest checkpoint.
            VerificationError: the bundle or tiles do not match the signed root.
        """
        checkpoint, note = self._need_checkpoint(index)
        bundle_index, offset = divmod(index, TILE_WIDTH)
        width = min(TILE_WIDTH, checkpoint.size - bundle_index * TILE_WIDTH)
        raw = self._get(tile_path("entries", bundle_index, width), _MAX_BUNDLE_BYTES)
        try:
            data = parse_bundle(raw, width)[offset]
        except InvalidInputError as exc:
            raise VerificationError(exc.message, step="entry bundle") from exc
        proof = self.inclusion_proof(index, checkpoint.size)
        verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)
        return VerifiedEntry(index, data, tuple(proof), checkpoint, note)

    def entries(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(index, entry)`` for ``start <= index < stop``, verified bundle by bundle.

        Each entry bundle is hashed whole and proven into the trusted root: with 256-entry
        bundles, RFC 9162's split points fall on bundle boundaries, so the bundles are the
        leaves of a smaller tree of the same shape, and one inclusion proof per bundle binds
        every entry in it.
        """
        if start < 0 or stop < start:
            raise InvalidInputError(f"bad entry range {start}..{stop}")
        if stop == start:
            return
        checkpoint, _ = self._need_checkpoint(stop - 1)
        size = checkpoint.size
        chunks = -(-size // TILE_WIDTH)
        mth = self._range_hasher(size)

        for bundle_index in range(start // TILE_WIDTH, (stop - 1) // TILE_WIDTH + 1):
            first = bundle_index * TILE_WIDTH
            width = min(TILE_WIDTH, size - first)
            raw = self._get(tile_path("entries", bundle_index, width), _MAX_BUNDLE_BYTES)
            try:
                items = parse_bundle(raw, width)
            except InvalidInputError as exc:
                raise VerificationError(exc.message, step="entry bundle") from exc
            proof = [
                mth(lo * TILE_WIDTH, min(hi * TILE_WIDTH, size))
                for lo, hi in inclusion_proof_ranges(bundle_index, chunks)
            ]
            bundle_hash = root_from_leaves([leaf_hash(e) for e in items])
            verify_inclusion(bundle_hash, bundle_index, chunks, proof, checkpoint.root)
            for i in range(max(start, first), min(stop, first + width)):
                yield i, items[i - first]

    # writing (edgetrust node API) ------------------------------------------------------------

    def submit(self, envelope: bytes) -> Submission:
        """POST one signed envelope to ``/v1/entries`` and verify the node's answer.

        Steps: (1) the returned checkpoint is signed by the log; (2) it is consistent with the
        trusted checkpoint, and becomes trusted; (3) the entry's inclusion proof verifies.
        """
        obj = self._post_json("v1/entries", envelope)
        return self._check_submission(obj, envelope)

    def submit_many(self, envelopes: Sequence[bytes]) -> list[Submission]:
        """POST envelopes to ``/v1/entries:batch``; verify every index's inclusion proof."""
        items = [json.loads(e) for e in envelopes]
        obj = self._post_json("v1/entries:batch", json.dumps({"entries": items}).encode())
        if not isinstance(obj, dict) or not isinstance(obj.get("entries"), list):
            raise VerificationError("node's batch answer has no entries list", step="answer")
        answers = obj["entries"]
        if len(answers) != len(envelopes):
            raise VerificationError("node answered for a different number of entries")
        note = _str_field(obj, "checkpoint").encode()
        return [
            self._check_submission({**a, "checkpoint": note.decode()}, e, leaf=None)
            for a, e in zip(answers, envelopes, strict=True)
        ]

    def _check_submission(self, obj: Any, envelope: bytes, leaf: bytes | None = None) -> Submission:
        if not isinstance(obj, dict):
            raise VerificationError("node's answer is not a JSON object", step="answer")
        index = obj.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise VerificationError("node's answer has no valid index", step="answer")
        note = _str_field(obj, "checkpoint").encode("utf-8")
        proof = _b64_list(obj.get("inclusion_proof"))
        checkpoint = verify_checkpoint(note, self.vkey)
        self.accept(checkpoint, note)
        entry = _canonical_entry(envelope)
        verify_inclusion(leaf_hash(entry), index, checkpoint.size, proof, checkpoint.root)
        return Submission(index, tuple(proof), checkpoint, note)

    # witnessing ------------------------------------------------------------------------------

    def witness(self, witness_url: str, *, http: httpx.Client | None = None) -> bytes:
        """Have a tlog-witness cosign the latest checkpoint; return the note with cosignatures.

        The witness's last size is learned the protocol's way: submit with ``old 0``, and on
        409 retry from the size it reports, with a consistency proof computed from tiles.
        """
        checkpoint = self.update()
        assert self._trusted_note is not None
        note = self._trusted_note
        old = 0
        for _ in range(3):
            proof = (
                [] if old in (0, checkpoint.size) else self.consistency_proof(old, checkpoint.size)
            )
            if old > checkpoint.size:
                raise WitnessConflictError(
                    f"witness has seen size {old}, beyond the log's {checkpoint.size}",
                    latest_size=old,
                )
            try:
                sigs = request_cosignature(witness_url, note, old, proof, http=http)
            except WitnessConflictError as exc:
                if exc.latest_size is None or exc.latest_size == old:
                    raise
                old = exc.latest_size
                continue
            return note + sigs
        raise WitnessConflictError("witness kept changing its size", latest_size=old)


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise VerificationError(f"node's answer has no {name}", step="answer")
    return value


def _b64_list(value: object) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise VerificationError("node's answer has no valid inclusion_proof", step="answer")
    out = []
    for item in value:
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, TypeError, ValueError) as exc:
            raise VerificationError("inclusion proof hash is not base64", step="answer") from exc
    return out


def _canonical_entry(envelope: bytes) -> bytes:
    # The node logs the canonical JSON of the envelope; compute the same bytes locally so the
    # leaf hash we check is of what we sent, not of what the node says it logged.
    from edgetrust.dsse import parse_envelope

    return parse_envelope(envelope).to_json()


def request_cosignature(
    witness_url: str,
    note: bytes,
    old_size: int,
    proof: Sequence[bytes],
    *,
    timeout: float = 10.0,
    http: httpx.Client | None = None,
) -> bytes:
    """POST a checkpoint to a witness's ``/add-checkpoint`` (C2SP tlog-witness); return its lines.

    Raises:
        WitnessConflictError: 409, with the witness's latest size.
        VerificationError: 422 (the witness rejected the consistency proof) or 403.
        NotFoundError: 404 (the witness does not know this log).
        LogUnavailableError: unreachable or another status.
    """
    body = f"old {old_size}\n".encode()
    body += b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + note
    url = witness_url.rstrip("/") + "/add-checkpoint"
    try:
        if http is None:
            with httpx.Client(timeout=timeout) as own:
                resp = own.post(url, content=body, headers={"content-type": "text/plain"})
        else:
            resp = http.post(url, content=body, headers={"content-type": "text/plain"})
    except httpx.HTTPError as exc:
        raise LogUnavailableError(f"POST {url}: {exc}") from exc
    text = resp.content[:4096].decode("utf-8", "replace")
    if resp.status_code == 200:
        if not all(line.startswith("— ") for line in text.splitlines()) or not text:
            raise VerificationError("witness answer is not note signature lines", step="witness")
        return resp.content
    if resp.status_code == 409:
        size = text.strip()
        raise WitnessConflictError(
            f"witness refused the checkpoint (409); its latest size is {size:.30}",
            latest_size=int(size) if size.isdigit() else None,
        )
    if resp.status_code in (403, 422):
        raise VerificationError(
            f"witness rejected the checkpoint (HTTP {resp.status_code}): {text.strip():.200}",
            step="witness",
        )
    if resp.status_code == 404:
        raise NotFoundError(f"witness does not know this log: {text.strip():.200}")
    raise LogUnavailableError(
        f"witness answered HTTP {resp.status_code}: {text.strip():.200}", status=resp.status_code
    )


def monitor(
    client: LogClient,
    *,
    interval: float = 10.0,
    rounds: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Checkpoint]:
    """Follow a log: yield each new checkpoint after verifying it is consistent with the last.

    Runs `rounds` polls (forever when None), `interval` seconds apart. A fork raises
    `ForkError` (with both checkpoints) out of the iterator: a monitor must not go on quietly.
    """
    if interval < 0:
        raise InvalidInputError("`interval` must be non-negative")
    last_size = client.trusted.size if client.trusted is not None else -1
    done = 0
    while rounds is None or done < rounds:
        if done:
            sleep(interval)
        checkpoint = client.update()
        done += 1
        if checkpoint.size != last_size:
            last_size = checkpoint.size
            yield checkpoint
