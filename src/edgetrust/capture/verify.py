"""Checking a capture: its manifest (seals and root), and samples against what was signed.

Two ways in. After the fact: `verify_manifest` checks the signed manifest (header, seals, root)
and `verify_samples` checks a file's chunks against the signed digests, naming the first
dropped, moved, inserted or altered chunk. Live: `StreamVerifier` takes chunks and seals as
they arrive (e.g. over Lab Streaming Layer) and refuses the first one that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy.typing as npt

from edgetrust.capture.errors import (
    AlteredChunkError,
    BrokenChainError,
    CaptureError,
    ConsentError,
    ForeignSignatureError,
    GapError,
    InsertedChunkError,
    MalformedChunkError,
    ReorderedChunkError,
)
from edgetrust.capture.stream import (
    CAPTURE_PREDICATE_TYPE,
    CaptureSession,
    Seal,
    StreamHeader,
    chain_head,
    check_chunk,
    chunk_digest,
    genesis_head,
    parse_seal,
)
from edgetrust.dsse import Envelope, envelope_from_dict, sign_envelope, verify_envelope
from edgetrust.encoding import canonical_json, parse_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.statement import open_signed_statement

__all__ = [
    "MANIFEST_FORMAT",
    "Manifest",
    "ReviewerSet",
    "StreamVerifier",
    "VerifiedCapture",
    "cosign_root",
    "find_chunk_fault",
    "parse_manifest",
    "verify_manifest",
    "verify_samples",
]

MANIFEST_FORMAT = "https://edgetrust.dev/capture-manifest/v1"
MAX_MANIFEST_BYTES = 64 * 2**20


class ReviewerSet(Protocol):
    """Anything that knows registered reviewers (e.g. `human.reviewers.ReviewerRegistry`)."""

    def is_reviewer(self, did: str) -> bool:
        """Whether `did` is a registered reviewer."""
        ...


@dataclass(frozen=True)
class Manifest:
    """Everything needed to check a recording: header, every seal, the signed root."""

    header: StreamHeader
    seals: tuple[Seal, ...]
    statement: Envelope

    @classmethod
    def from_session(cls, session: CaptureSession) -> Manifest:
        """The manifest of a finished session."""
        if session.statement is None:
            raise InvalidInputError("finish the capture before writing its manifest")
        return cls(session.header, tuple(session.seals), session.statement)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the sidecar file ``<recording>.capture.json``)."""
        return {
            "format": MANIFEST_FORMAT,
            "header": self.header.to_dict(),
            "seals": [s.to_dict() for s in self.seals],
            "statement": self.statement.to_dict(),
        }

    def to_json(self) -> bytes:
        """RFC 8785 JSON bytes."""
        return canonical_json(self.to_dict())


def parse_manifest(data: bytes | str) -> Manifest:
    """Parse an untrusted manifest (structure only: `verify_manifest` checks signatures)."""
    obj = parse_json(data, what="capture manifest", max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(obj, dict) or set(obj) != {"format", "header", "seals", "statement"}:
        raise InvalidInputError("a capture manifest needs exactly format, header, seals, statement")
    if obj["format"] != MANIFEST_FORMAT:
        raise InvalidInputError(f"capture manifest format must be {MANIFEST_FORMAT}")
    if not isinstance(obj["seals"], list) or not obj["seals"]:
        raise InvalidInputError("a capture manifest needs a non-empty seals list")
    header = StreamHeader.from_dict(obj["header"])
    seals = tuple(parse_seal(envelope_from_dict(s)) for s in obj["seals"])
    return Manifest(header, seals, envelope_from_dict(obj["statement"]))


def cosign_root(statement: Envelope, wearer: Identity) -> Envelope:
    """Add the wearer's signature (consent to capture) to a signed root."""
    (signed,) = sign_envelope(statement.payload, statement.payload_type, wearer).signatures
    if signed.keyid in statement.signers:
        return statement
    return Envelope(statement.payload, statement.payload_type, (*statement.signatures, signed))


@dataclass(frozen=True)
class VerifiedCapture:
    """A capture whose seals and root verified: the signed chunk digests, in order."""

    header: StreamHeader
    digests: tuple[bytes, ...]
    root: bytes
    samples: int
    """Total frames signed."""
    statement: Envelope
    consented: bool
    """Whether the wearer named in the header co-signed the root."""

    @property
    def chunks(self) -> int:
        """Number of signed chunks."""
        return len(self.digests)

    @property
    def last_chunk_samples(self) -> int:
        """Frames in the last chunk (the only one that may be short)."""
        return self.samples - (self.chunks - 1) * self.header.chunk_samples

    @property
    def root_digest(self) -> str:
        """``sha256:<root hex>``: how datasets cite this capture as provenance."""
        return "sha256:" + self.root.hex()

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (for the CLI and HTTP)."""
        s = self.header.sensor
        return {
            "stream_id": self.header.stream_id,
            "root": self.root_digest,
            "device": self.header.device,
            "wearer": self.header.wearer,
            "consented": self.consented,
            "kind": s.kind,
            "channels": list(s.labels),
            "sampling_rate": s.sampling_rate,
            "firmware": s.firmware,
            "dtype": s.dtype,
            "chunks": self.chunks,
            "samples": self.samples,
            "seconds": self.samples / s.sampling_rate,
            "seals": -(-self.chunks // self.header.seal_every),
            "start_ms": self.header.start_ms,
        }


def _check_seal(header: StreamHeader, seal: Seal, seq: int, first: int, step: str) -> None:
    try:
        signer = verify_envelope(seal.envelope)
    except VerificationError as exc:
        raise CaptureError(f"seal {seq}: {exc.message}", chunk=seal.last, step=step) from exc
    for other in seal.envelope.signers:
        if other != header.device:  # a seal is the device's alone: any other key is foreign
            raise ForeignSignatureError(seal.last, other, header.device, step=step)
    del signer
    if seal.stream_id != header.stream_id or seal.header != header.digest:
        raise BrokenChainError(f"seal {seq} is of another stream", chunk=seal.first, step=step)
    if seal.seq != seq:
        raise BrokenChainError(
            f"seal {seal.seq} found where seal {seq} belongs", chunk=first, step=step
        )
    if seal.first > first:
        raise GapError(tuple(range(first, seal.first)), step=step)
    if seal.first < first:
        raise ReorderedChunkError(seal.first, first, step=step)


def verify_manifest(
    manifest: Manifest, *, reviewers: ReviewerSet | None = None, require_consent: bool = False
) -> VerifiedCapture:
    """Check that a manifest is a stream signed by its capture device, seal by seal.

    Steps: (1) the root statement's signatures verify, its first signer is the header's
    device, it is a valid capture statement about this header; (2) consent: a wearer named in
    the header co-signed the root (and is a registered reviewer, when `reviewers` is given;
    with `require_consent`, a stream without a wearer is refused); (3) every seal is signed by
    the device alone, in sequence, each covering the chunks right after the previous one, all
    full but the last; (4) the heads recomputed from the digests match every seal, and the
    last one is the root.

    Raises:
        ForeignSignatureError: a seal or the root is signed by another key.
        ConsentError, GapError, ReorderedChunkError, BrokenChainError, CaptureError: as named.
    """
    header = manifest.header
    # 1. root statement
    try:
        signer = verify_envelope(manifest.statement)
    except VerificationError as exc:
        raise CaptureError(f"root: {exc.message}", chunk=None, step="1 root") from exc
    if signer != header.device:
        raise ForeignSignatureError(None, signer, header.device, step="1 root")
    opened = open_signed_statement(manifest.statement)
    if opened.statement.predicate_type != CAPTURE_PREDICATE_TYPE:
        raise CaptureError("root is not a capture statement", chunk=None, step="1 root")
    pred = opened.statement.predicate
    if canonical_json(pred["header"]) != canonical_json(header.to_dict()):
        raise BrokenChainError("root is about another stream header", chunk=None, step="1 root")
    # 2. consent
    consented = header.wearer is not None and header.wearer in manifest.statement.signers
    if header.wearer is not None and not consented:
        raise ConsentError(
            f"wearer {header.wearer:.60} did not co-sign", chunk=None, step="2 consent"
        )
    if require_consent and header.wearer is None:
        raise ConsentError("the stream names no wearer", chunk=None, step="2 consent")
    if consented and reviewers is not None and not reviewers.is_reviewer(str(header.wearer)):
        raise ConsentError(
            f"wearer {header.wearer:.60} is not a registered reviewer", chunk=None, step="2 consent"
        )
    # 3-4. seals and chain
    digests: list[bytes] = []
    head = genesis_head(header.digest)
    for seq, seal in enumerate(manifest.seals):
        _check_seal(header, seal, seq, len(digests), "3 seals")
        if len(seal.digests) != header.seal_every and seq != len(manifest.seals) - 1:
            raise BrokenChainError(
                f"seal {seq} covers {len(seal.digests)} chunks, not {header.seal_every}",
                chunk=seal.first,
                step="3 seals",
            )
        for d in seal.digests:
            head = chain_head(head, len(digests), d)
            digests.append(d)
        if head != seal.head:
            raise BrokenChainError(
                f"seal {seq}: its head does not follow from its digests",
                chunk=seal.last,
                step="4 chain",
            )
    if pred["chunks"] != len(digests):
        missing = tuple(range(len(digests), pred["chunks"]))
        if missing:
            raise GapError(missing, step="4 chain")
        raise InsertedChunkError(pred["chunks"], step="4 chain")
    if head.hex() != pred["root"]:
        raise BrokenChainError(
            "the last seal's head is not the signed root", chunk=None, step="4 chain"
        )
    return VerifiedCapture(
        header, tuple(digests), head, pred["samples"], manifest.statement, consented
    )


def find_chunk_fault(
    signed: Sequence[bytes], found: Sequence[bytes], *, offset: int = 0, step: str = "5 samples"
) -> CaptureError | None:
    """The first way `found` (digests of chunks as they are) departs from `signed`, or None.

    Classification at the first position ``i`` where they differ, by what is there:
    found shorter and equal so far → the rest is missing (`GapError`); found longer → an
    extra chunk (`InsertedChunkError`); a digest signed for a later position ``j`` → chunks
    ``i..j-1`` missing (`GapError`) if none of them appears elsewhere, else chunk ``j`` moved
    (`ReorderedChunkError`); a digest signed for an earlier position → moved or duplicated;
    an unsigned digest followed by the digest signed for ``i`` → inserted; otherwise chunk
    ``i`` was altered (`AlteredChunkError`). Indices are offset by `offset`.
    """
    n = min(len(signed), len(found))
    i = next((k for k in range(n) if signed[k] != found[k]), n)
    if i == n:
        if len(found) < len(signed):
            return GapError(tuple(range(offset + i, offset + len(signed))), step=step)
        if len(found) > len(signed):
            return InsertedChunkError(offset + i, step=step)
        return None
    f = found[i]
    later = [j for j in range(i + 1, len(signed)) if signed[j] == f]
    if later:
        j = later[0]
        rest = set(found[i:])
        if not any(signed[k] in rest for k in range(i, j)):
            return GapError(tuple(range(offset + i, offset + j)), step=step)
        return ReorderedChunkError(offset + j, offset + i, step=step)
    earlier = [j for j in range(i) if signed[j] == f]
    if earlier:
        return ReorderedChunkError(offset + earlier[0], offset + i, step=step)
    if i + 1 < len(found) and found[i + 1] == signed[i]:
        return InsertedChunkError(offset + i, step=step)
    return AlteredChunkError(offset + i, expected=signed[i].hex(), actual=f.hex(), step=step)


def verify_samples(
    verified: VerifiedCapture, chunks: Iterable[npt.ArrayLike], *, step: str = "5 samples"
) -> None:
    """Check that `chunks` (in order) are exactly the signed stream's chunks.

    Each chunk must be well formed (only the last signed position may be short); then the
    digests are compared with the signed ones and the first difference is named
    (`find_chunk_fault`).

    Raises:
        MalformedChunkError: a chunk of the wrong shape, type or range.
        GapError, ReorderedChunkError, InsertedChunkError, AlteredChunkError: as named.
    """
    found = []
    frames = 0
    for i, c in enumerate(chunks):
        arr = check_chunk(verified.header, c, i, last=True)
        frames += arr.shape[0]
        found.append(chunk_digest(arr))
    fault = find_chunk_fault(verified.digests, found, step=step)
    if fault is not None:
        raise fault
    if frames != verified.samples:  # the digests bind each chunk's length; so must the root
        raise BrokenChainError(
            f"the chunks hold {frames} frames, the root says {verified.samples}",
            chunk=None,
            step=step,
        )


class StreamVerifier:
    """Checks a live stream chunk by chunk and seal by seal, as they arrive.

    Chunks carry their index (a gap or a step back is refused at once); a seal is checked
    against the chunks received since the previous one, so an altered chunk is named when its
    seal arrives (within ``seal_every`` chunks).
    """

    def __init__(self, header: StreamHeader) -> None:
        self.header = header
        self.head = genesis_head(header.digest)
        self.digests: list[bytes] = []
        """Digests of every sealed chunk so far."""
        self.samples = 0
        self._pending: list[bytes] = []
        self._short_at: int | None = None
        self._seals = 0

    @property
    def received(self) -> int:
        """Chunks received so far (sealed or not)."""
        return len(self.digests) + len(self._pending)

    def add_chunk(self, index: int, samples: npt.ArrayLike) -> None:
        """Take chunk `index`.

        Raises:
            MalformedChunkError, GapError, ReorderedChunkError: the chunk is refused.
        """
        expected = self.received
        if index > expected:
            raise GapError(tuple(range(expected, index)), step="live chunks")
        if index < expected:
            raise ReorderedChunkError(index, expected, step="live chunks")
        if self._short_at is not None:
            raise MalformedChunkError("a short chunk came before this one", chunk=self._short_at)
        arr = check_chunk(self.header, samples, index, last=True)
        if arr.shape[0] < self.header.chunk_samples:
            self._short_at = index
        self._pending.append(chunk_digest(arr))
        self.samples += arr.shape[0]

    def add_seal(self, envelope: Envelope) -> Seal:
        """Check a seal against the chunks received since the previous one.

        Raises:
            ForeignSignatureError: the seal is signed by another key.
            GapError: the seal covers chunks not received yet.
            AlteredChunkError, InsertedChunkError, ...: a received chunk is not the signed one.
        """
        seal = parse_seal(envelope)
        _check_seal(self.header, seal, self._seals, len(self.digests), "live seal")
        fault = find_chunk_fault(
            seal.digests, self._pending[: len(seal.digests)], offset=seal.first, step="live seal"
        )
        if fault is not None:
            raise fault
        head = self.head
        for k, d in enumerate(seal.digests):
            head = chain_head(head, seal.first + k, d)
        if head != seal.head:
            raise BrokenChainError(
                f"seal {seal.seq}: its head does not follow from its digests",
                chunk=seal.last,
                step="live seal",
            )
        self.head = head
        self.digests.extend(seal.digests)
        del self._pending[: len(seal.digests)]
        self._seals += 1
        return seal

    def finish(
        self, statement: Envelope, *, reviewers: ReviewerSet | None = None
    ) -> VerifiedCapture:
        """Check the root: every received chunk sealed, the root is the last head."""
        if self._pending:
            raise InsertedChunkError(len(self.digests), step="live root")
        try:
            signer = verify_envelope(statement)
        except VerificationError as exc:
            raise CaptureError(f"root: {exc.message}", chunk=None, step="live root") from exc
        if signer != self.header.device:
            raise ForeignSignatureError(None, signer, self.header.device, step="live root")
        pred = open_signed_statement(statement).statement.predicate
        if canonical_json(pred.get("header")) != canonical_json(self.header.to_dict()):
            raise BrokenChainError("root is about another stream", chunk=None, step="live root")
        if pred["chunks"] > len(self.digests):
            raise GapError(tuple(range(len(self.digests), pred["chunks"])), step="live root")
        if pred["root"] != self.head.hex() or pred["samples"] != self.samples:
            raise BrokenChainError(
                "the root is not the last sealed head", chunk=None, step="live root"
            )
        wearer = self.header.wearer
        consented = wearer is not None and wearer in statement.signers
        if wearer is not None and not consented:
            raise ConsentError(f"wearer {wearer:.60} did not co-sign", chunk=None, step="live root")
        if consented and reviewers is not None and not reviewers.is_reviewer(str(wearer)):
            raise ConsentError(
                f"wearer {wearer:.60} is not a registered reviewer", chunk=None, step="live root"
            )
        return VerifiedCapture(
            self.header, tuple(self.digests), self.head, self.samples, statement, consented
        )
