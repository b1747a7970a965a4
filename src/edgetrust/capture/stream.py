"""Sensor streams signed at the source: hash-chained chunks, periodic seals, a logged root.

A capture device (its own `did:key`) cuts samples into chunks of `chunk_samples` frames (a
frame = one sample of every channel). Each chunk has a *content digest*; a chain head follows
every chunk (binding its position); every `seal_every` chunks the device signs a **seal**: the
digests of the chunks since the last seal and the head after them. At the end it signs the
**root** (the last head) as an in-toto statement, `https://edgetrust.dev/capture/v1`, which is
logged. The wearer named in the header may co-sign the root (consent to capture).

Encodings (docs/human.md repeats them):

- chunk digest ``d_i = SHA-256(canonical_tensor_bytes(chunk))``: ``b"ETT1" || u32le(len(h)) ||
  h || data`` with ``h`` = RFC 8785 ``{"dtype": D, "shape": [frames, channels]}`` and data the
  samples frame by frame (C order), integers two's complement little-endian, floats IEEE 754
  little-endian (finite only; -0.0 and 0.0 differ because their bits do);
- genesis ``h_-1 = SHA-256(b"ETCG" || header_digest)``, header_digest = SHA-256(JCS(header));
- link ``h_i = SHA-256(b"ETCL" || h_(i-1) || u64le(i) || d_i)``; root = ``h_(n-1)``.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.capture.errors import MalformedChunkError
from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json, update_tensor_hash
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "CAPTURE_PREDICATE_TYPE",
    "DTYPES",
    "SEAL_PAYLOAD_TYPE",
    "CaptureDevice",
    "CaptureSession",
    "Channel",
    "Chunk",
    "Seal",
    "SensorInfo",
    "StreamHeader",
    "chain_head",
    "check_chunk",
    "chunk_digest",
    "genesis_head",
    "parse_seal",
    "root_predicate",
]

CAPTURE_PREDICATE_TYPE = "https://edgetrust.dev/capture/v1"
SEAL_PAYLOAD_TYPE = "application/vnd.edgetrust.capture-seal.v1+json"
DTYPES = ("int16", "int32", "float32", "float64")
"""Sample types a stream may carry (EDF stores int16, BDF 24-bit integers in int32)."""
MAX_CHANNELS = 1024
MAX_CHUNK_SAMPLES = 1 << 20
MAX_SEAL_EVERY = 4096
_TEXT_RE = re.compile(r"^[\x20-\x7e]{0,80}$")  # EDF headers are printable ASCII
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def _text(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or not _TEXT_RE.match(value) or (not empty and not value):
        raise InvalidInputError(f"{what} must be printable ASCII of at most 80 characters")
    return value


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInputError(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def _num(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a finite number")
    try:
        f = float(value)  # an int beyond float range overflows (np.isfinite would TypeError)
    except OverflowError:
        raise InvalidInputError(f"{what} must be a finite number") from None
    if not math.isfinite(f):
        raise InvalidInputError(f"{what} must be a finite number")
    return f


@dataclass(frozen=True)
class Channel:
    """One channel: its label, unit and the linear map from digital to physical values."""

    label: str
    unit: str = "uV"
    physical_min: float = -187500.0
    physical_max: float = 187500.0
    digital_min: int = -8388608
    """Lowest value the ADC emits; integer samples outside [digital_min, digital_max] are
    refused as malformed."""
    digital_max: int = 8388607

    def to_dict(self) -> dict[str, Any]:
        """The JSON form in the stream header."""
        return {
            "label": self.label,
            "unit": self.unit,
            "physical_min": self.physical_min,
            "physical_max": self.physical_max,
            "digital_min": self.digital_min,
            "digital_max": self.digital_max,
        }

    @classmethod
    def from_dict(cls, obj: object) -> Channel:
        """Parse and check the JSON form."""
        keys = {"label", "unit", "physical_min", "physical_max", "digital_min", "digital_max"}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise InvalidInputError(f"a channel needs exactly {sorted(keys)}")
        ch = cls(
            _text(obj["label"], "channel label", empty=False),
            _text(obj["unit"], "channel unit"),
            _num(obj["physical_min"], "physical_min"),
            _num(obj["physical_max"], "physical_max"),
            _int(obj["digital_min"], "digital_min", -(2**31), 2**31 - 1),
            _int(obj["digital_max"], "digital_max", -(2**31), 2**31 - 1),
        )
        if ch.physical_min >= ch.physical_max or ch.digital_min >= ch.digital_max:
            raise InvalidInputError(f"channel {ch.label}: each minimum must be below its maximum")
        return ch


@dataclass(frozen=True)
class SensorInfo:
    """What the sensor is: kind, channels, sampling rate, firmware and sample type."""

    kind: str
    """Signal kind, e.g. ``EEG`` (LSL stream types are used as the vocabulary)."""
    channels: tuple[Channel, ...]
    sampling_rate: int
    """Frames per second (an integer, as EDF data records need whole sample counts)."""
    firmware: str
    dtype: str = "int32"
    """One of `DTYPES`: how each sample is encoded and hashed."""
    model: str = ""
    """Make and model of the sensor (free text)."""

    def __post_init__(self) -> None:
        _text(self.kind, "sensor kind", empty=False)
        _text(self.firmware, "sensor firmware")
        _text(self.model, "sensor model")
        _int(self.sampling_rate, "sampling_rate", 1, 100_000)
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"sensor dtype must be one of {', '.join(DTYPES)}")
        if not 0 < len(self.channels) <= MAX_CHANNELS:
            raise InvalidInputError(f"a sensor has 1-{MAX_CHANNELS} channels")
        if len({c.label for c in self.channels}) != len(self.channels):
            raise InvalidInputError("sensor names a channel label twice")
        if self.dtype in ("int16", "int32"):
            info = np.iinfo(self.dtype)
            for c in self.channels:
                if c.digital_min < info.min or c.digital_max > info.max:
                    raise InvalidInputError(
                        f"channel {c.label}: digital range does not fit {self.dtype}"
                    )

    @property
    def labels(self) -> tuple[str, ...]:
        """The channel labels, in stream order."""
        return tuple(c.label for c in self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form in the stream header."""
        return {
            "kind": self.kind,
            "channels": [c.to_dict() for c in self.channels],
            "sampling_rate": self.sampling_rate,
            "firmware": self.firmware,
            "dtype": self.dtype,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, obj: object) -> SensorInfo:
        """Parse and check the JSON form."""
        keys = {"kind", "channels", "sampling_rate", "firmware", "dtype", "model"}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise InvalidInputError(f"sensor info needs exactly {sorted(keys)}")
        raw = obj["channels"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_CHANNELS:
            raise InvalidInputError(f"a sensor has 1-{MAX_CHANNELS} channels")
        if not isinstance(obj["dtype"], str):
            raise InvalidInputError("sensor dtype must be a string")
        return cls(
            obj["kind"],
            tuple(Channel.from_dict(c) for c in raw),
            obj["sampling_rate"],
            obj["firmware"],
            obj["dtype"],
            obj["model"],
        )


@dataclass(frozen=True)
class StreamHeader:
    """What a stream is, fixed before its first sample: hashed into the chain's genesis."""

    stream_id: str
    """32 hex characters, random per stream."""
    device: str
    """did:key of the capture device, which signs every seal and the root."""
    sensor: SensorInfo
    chunk_samples: int
    """Frames per chunk: chunks are this many frames, the last one may be shorter."""
    seal_every: int
    """Chunks per seal: the head is signed every ``seal_every × chunk_samples`` frames."""
    start_ms: int
    """Capture start, milliseconds since the Unix epoch (as the device's clock says)."""
    wearer: str | None = None
    """did:key of the person wearing the sensor, who co-signs the root (consent), if any."""

    def __post_init__(self) -> None:
        if not isinstance(self.stream_id, str) or not _ID_RE.match(self.stream_id):
            raise InvalidInputError("stream_id must be 32 lower-case hex characters")
        public_bytes_from_did(self.device)
        if self.wearer is not None:
            public_bytes_from_did(self.wearer)
        _int(self.chunk_samples, "chunk_samples", 1, MAX_CHUNK_SAMPLES)
        _int(self.seal_every, "seal_every", 1, MAX_SEAL_EVERY)
        _int(self.start_ms, "start_ms", 0, 2**53 - 1)

    @property
    def chunk_seconds(self) -> float:
        """Duration of a full chunk in seconds."""
        return self.chunk_samples / self.sensor.sampling_rate

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (hashed as RFC 8785 into `digest`)."""
        return {
            "stream_id": self.stream_id,
            "device": self.device,
            "sensor": self.sensor.to_dict(),
            "chunk_samples": self.chunk_samples,
            "seal_every": self.seal_every,
            "start_ms": self.start_ms,
            "wearer": self.wearer,
        }

    @classmethod
    def from_dict(cls, obj: object) -> StreamHeader:
        """Parse and check the JSON form."""
        keys = {"stream_id", "device", "sensor", "chunk_samples", "seal_every", "start_ms"}
        if not isinstance(obj, Mapping) or not keys <= set(obj) <= keys | {"wearer"}:
            raise InvalidInputError(f"a stream header needs exactly {sorted(keys | {'wearer'})}")
        for k in ("stream_id", "device"):
            if not isinstance(obj[k], str):
                raise InvalidInputError(f"stream header {k} must be a string")
        wearer = obj.get("wearer")
        if wearer is not None and not isinstance(wearer, str):
            raise InvalidInputError("stream header wearer must be a did:key or null")
        return cls(
            obj["stream_id"],
            obj["device"],
            SensorInfo.from_dict(obj["sensor"]),
            obj["chunk_samples"],
            obj["seal_every"],
            obj["start_ms"],
            wearer,
        )

    @property
    def digest(self) -> bytes:
        """SHA-256 of the header's RFC 8785 JSON (32 bytes)."""
        return hashlib.sha256(canonical_json(self.to_dict())).digest()


# -- the chain (pure functions) ---------------------------------------------------------------


def check_chunk(
    header: StreamHeader, samples: npt.ArrayLike, index: int | None, *, last: bool = True
) -> npt.NDArray[Any]:
    """`samples` as a checked ``(frames, channels)`` array of the stream's dtype.

    A chunk has 1..chunk_samples frames (exactly chunk_samples unless it may be the last),
    the stream's channel count, integers within each channel's digital range, finite floats.

    Raises:
        MalformedChunkError: any of those fails (naming `index`).
    """
    arr = np.asarray(samples)
    sensor = header.sensor
    if arr.ndim != 2 or arr.shape[1] != len(sensor.channels):
        raise MalformedChunkError(
            f"shape {arr.shape} is not (frames, {len(sensor.channels)})", chunk=index
        )
    frames = arr.shape[0]
    if not 0 < frames <= header.chunk_samples or (not last and frames != header.chunk_samples):
        raise MalformedChunkError(
            f"{frames} frames, expected {header.chunk_samples}"
            + (" (or fewer for the last chunk)" if last else ""),
            chunk=index,
        )
    want = np.dtype(sensor.dtype)
    if want.kind == "i":
        if arr.dtype.kind not in "iu":
            raise MalformedChunkError(f"dtype {arr.dtype} is not an integer type", chunk=index)
        lo = np.array([c.digital_min for c in sensor.channels])
        hi = np.array([c.digital_max for c in sensor.channels])
        if (arr < lo).any() or (arr > hi).any():
            raise MalformedChunkError(
                "a sample is outside its channel's digital range", chunk=index
            )
    else:
        if arr.dtype.kind not in "fiu":
            raise MalformedChunkError(f"dtype {arr.dtype} is not numeric", chunk=index)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise MalformedChunkError("a sample is NaN or infinite", chunk=index)
    out = arr.astype(want, copy=False)
    if want.kind == "f" and arr.dtype != want and not np.array_equal(out, arr):
        raise MalformedChunkError(f"samples do not fit {want} exactly", chunk=index)
    return out


def chunk_digest(samples: npt.NDArray[Any]) -> bytes:
    """SHA-256 of a chunk's canonical tensor bytes (dtype, shape, little-endian data)."""
    h = hashlib.sha256()
    update_tensor_hash(h, samples)
    return h.digest()


def genesis_head(header_digest: bytes) -> bytes:
    """The head before chunk 0: binds the header (device, sensor, wearer, start)."""
    return hashlib.sha256(b"ETCG" + header_digest).digest()


def chain_head(previous: bytes, index: int, digest: bytes) -> bytes:
    """The head after chunk `index`: binds its position and content to all before it."""
    return hashlib.sha256(b"ETCL" + previous + struct.pack("<Q", index) + digest).digest()


@dataclass(frozen=True)
class Chunk:
    """One chunk as the device emitted it."""

    index: int
    samples: npt.NDArray[Any] = field(repr=False)
    digest: bytes
    head: bytes


@dataclass(frozen=True)
class Seal:
    """A signed chain head: the digests of chunks ``first..first+len-1`` and the head after."""

    stream_id: str
    header: bytes
    """The header digest."""
    seq: int
    first: int
    digests: tuple[bytes, ...]
    head: bytes
    envelope: Envelope
    signer: str
    """The DSSE keyid (verified by `verify_seal`, not by parsing)."""

    @property
    def last(self) -> int:
        """Index of the last chunk this seal covers."""
        return self.first + len(self.digests) - 1

    def to_dict(self) -> dict[str, object]:
        """The seal as its DSSE JSON envelope."""
        return self.envelope.to_dict()


def _seal_payload(
    stream_id: str, header: bytes, seq: int, first: int, digests: Sequence[bytes], head: bytes
) -> bytes:
    return canonical_json(
        {
            "stream": stream_id,
            "header": header.hex(),
            "seq": seq,
            "first": first,
            "digests": [d.hex() for d in digests],
            "head": head.hex(),
        }
    )


def parse_seal(envelope: Envelope) -> Seal:
    """Read a seal envelope's payload (structure only; `verify_seal` checks the signature)."""
    from edgetrust.encoding import parse_canonical_json

    if envelope.payload_type != SEAL_PAYLOAD_TYPE:
        raise InvalidInputError(f"not a capture seal: payloadType {envelope.payload_type!r:.60}")
    obj = parse_canonical_json(envelope.payload, what="seal", max_bytes=1 << 20)
    keys = {"stream", "header", "seq", "first", "digests", "head"}
    if not isinstance(obj, dict) or set(obj) != keys:
        raise InvalidInputError(f"a seal needs exactly {sorted(keys)}")
    raw = obj["digests"]
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_SEAL_EVERY:
        raise InvalidInputError(f"a seal lists 1-{MAX_SEAL_EVERY} chunk digests")
    for v in (*raw, obj["header"], obj["head"]):
        if not isinstance(v, str) or not _HEX_RE.match(v):
            raise InvalidInputError("seal digests and heads are 64 lower-case hex characters")
    if not isinstance(obj["stream"], str) or not _ID_RE.match(obj["stream"]):
        raise InvalidInputError("seal stream must be 32 lower-case hex characters")
    return Seal(
        obj["stream"],
        bytes.fromhex(obj["header"]),
        _int(obj["seq"], "seal seq", 0, 2**40),
        _int(obj["first"], "seal first", 0, 2**50),
        tuple(bytes.fromhex(d) for d in raw),
        bytes.fromhex(obj["head"]),
        envelope,
        envelope.signatures[0].keyid,
    )


def root_predicate(
    header: StreamHeader, chunks: int, samples: int, seals: int, root: bytes
) -> dict[str, Any]:
    """The `https://edgetrust.dev/capture/v1` predicate."""
    return {
        "header": header.to_dict(),
        "chunks": chunks,
        "samples": samples,
        "seals": seals,
        "root": root.hex(),
    }


def _validate_capture(statement: Statement, signer: str) -> None:
    p = statement.predicate
    if set(p) != {"header", "chunks", "samples", "seals", "root"}:
        raise InvalidInputError("capture predicate needs header, chunks, samples, seals, root")
    header = StreamHeader.from_dict(p["header"])
    n = _int(p["chunks"], "capture chunks", 1, 2**50)
    total = _int(p["samples"], "capture samples", 1, 2**53 - 1)
    _int(p["seals"], "capture seals", 1, 2**50)
    if not (n - 1) * header.chunk_samples < total <= n * header.chunk_samples:
        raise InvalidInputError("capture sample count does not fit its chunk count")
    if -(-n // header.seal_every) != p["seals"]:
        raise InvalidInputError("capture seal count does not fit its chunk count")
    if not isinstance(p["root"], str) or not _HEX_RE.match(p["root"]):
        raise InvalidInputError("capture root must be 64 lower-case hex characters")
    if statement.subjects[0].sha256 != p["root"]:
        raise InvalidInputError("capture subject digest is not its root")
    if signer != header.device:
        raise InvalidInputError("a capture root is signed first by its capture device")


def _capture_cosigners(statement: Statement) -> frozenset[str]:
    """The wearer the header names (consent to capture), who co-signs the root."""
    header = statement.predicate.get("header")
    wearer = header.get("wearer") if isinstance(header, Mapping) else None
    return frozenset({wearer}) if isinstance(wearer, str) else frozenset()


register_predicate_type(CAPTURE_PREDICATE_TYPE, _validate_capture, cosigners=_capture_cosigners)


# -- the device ----------------------------------------------------------------------------------


class CaptureDevice:
    """A sensor with its own signing key: starts signed capture sessions."""

    def __init__(self, identity: Identity, sensor: SensorInfo) -> None:
        self.identity = identity
        self.sensor = sensor

    @property
    def did(self) -> str:
        """The device's did:key."""
        return self.identity.did

    def start(
        self,
        *,
        chunk_seconds: float = 1.0,
        seal_every: int = 10,
        wearer: str | None = None,
        start_ms: int | None = None,
        keep_samples: bool = True,
    ) -> CaptureSession:
        """Begin a stream: chunks of `chunk_seconds`, a seal every `seal_every` chunks."""
        frames = chunk_seconds * self.sensor.sampling_rate
        if not frames >= 1 or abs(frames - round(frames)) > 1e-9:
            raise InvalidInputError(
                f"`chunk_seconds` × sampling rate must be a whole number of frames, got {frames}"
            )
        header = StreamHeader(
            secrets.token_hex(16),
            self.did,
            self.sensor,
            round(frames),
            seal_every,
            int(time.time() * 1000) if start_ms is None else start_ms,
            wearer,
        )
        return CaptureSession(self.identity, header, keep_samples=keep_samples)


class CaptureSession:
    """One stream being captured: buffers frames, emits chunks and seals as they complete."""

    def __init__(self, identity: Identity, header: StreamHeader, *, keep_samples: bool = True):
        if identity.did != header.device:
            raise InvalidInputError("a stream is signed by the device its header names")
        self.identity = identity
        self.header = header
        self.header_digest = header.digest
        self.head = genesis_head(self.header_digest)
        self.chunks: list[Chunk] = []
        """Every chunk so far (samples dropped unless `keep_samples`)."""
        self.seals: list[Seal] = []
        self.samples = 0
        self._keep = keep_samples
        self._pending: list[npt.NDArray[Any]] = []
        self._pending_frames = 0
        self._unsealed: list[bytes] = []
        self.statement: Envelope | None = None
        """The signed root, once `finish` ran."""

    def add(self, frames: npt.ArrayLike) -> tuple[list[Chunk], list[Seal]]:
        """Append ``(n, channels)`` frames; return the chunks and seals they completed."""
        if self.statement is not None:
            raise InvalidInputError("this capture is finished")
        arr = np.asarray(frames)
        if arr.ndim != 2 or arr.shape[1] != len(self.header.sensor.channels):
            raise MalformedChunkError(
                f"frames of shape {arr.shape} are not (n, {len(self.header.sensor.channels)})",
                chunk=len(self.chunks),
            )
        new_chunks: list[Chunk] = []
        new_seals: list[Seal] = []
        size = self.header.chunk_samples
        self._pending.append(arr)
        self._pending_frames += arr.shape[0]
        if self._pending_frames < size:
            return new_chunks, new_seals
        buf = np.concatenate(self._pending) if len(self._pending) > 1 else arr
        whole = (buf.shape[0] // size) * size
        for start in range(0, whole, size):
            chunk, seal = self._emit(buf[start : start + size], last=False)
            new_chunks.append(chunk)
            if seal is not None:
                new_seals.append(seal)
        rest = buf[whole:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_frames = rest.shape[0]
        return new_chunks, new_seals

    def _emit(self, samples: npt.NDArray[Any], *, last: bool) -> tuple[Chunk, Seal | None]:
        index = len(self.chunks)
        checked = check_chunk(self.header, samples, index, last=last)
        digest = chunk_digest(checked)
        self.head = chain_head(self.head, index, digest)
        kept = checked if self._keep else checked[:0]
        chunk = Chunk(index, np.array(kept, copy=True), digest, self.head)
        self.chunks.append(chunk)
        self.samples += checked.shape[0]
        self._unsealed.append(digest)
        seal = None
        if len(self._unsealed) == self.header.seal_every:
            seal = self._seal()
        return chunk, seal

    def _seal(self) -> Seal:
        first = len(self.chunks) - len(self._unsealed)
        payload = _seal_payload(
            self.header.stream_id,
            self.header_digest,
            len(self.seals),
            first,
            self._unsealed,
            self.head,
        )
        env = sign_envelope(payload, SEAL_PAYLOAD_TYPE, self.identity)
        seal = parse_seal(env)
        self.seals.append(seal)
        self._unsealed = []
        return seal

    def finish(self, *cosigners: Identity) -> Envelope:
        """Emit the last (possibly short) chunk, seal, and sign the root statement.

        `cosigners` are the wearer (when the header names one) co-signing the same bytes.

        Raises:
            InvalidInputError: no chunk was captured, or a co-signer is not the named wearer.
        """
        if self.statement is not None:
            return self.statement
        if self._pending_frames:
            buf = np.concatenate(self._pending)
            self._pending, self._pending_frames = [], 0
            self._emit(buf, last=True)
        if not self.chunks:
            raise InvalidInputError("a capture needs at least one chunk of samples")
        if self._unsealed:
            self._seal()
        for c in cosigners:
            if c.did != self.header.wearer:
                raise InvalidInputError("only the wearer named in the header co-signs a capture")
        payload = encode_statement(
            [Subject(f"capture:{self.header.stream_id}", self.head.hex())],
            CAPTURE_PREDICATE_TYPE,
            root_predicate(self.header, len(self.chunks), self.samples, len(self.seals), self.head),
        )
        self.statement = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, self.identity, *cosigners)
        return self.statement

    @property
    def root(self) -> bytes:
        """The current chain head (the root once finished)."""
        return self.head
