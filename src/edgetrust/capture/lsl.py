"""Live capture over Lab Streaming Layer: samples on one LSL stream, seals and root on another.

The device side (`LslCaptureOutlet`) signs as it pushes: the data stream (the sensor's type,
e.g. ``EEG``, ``source_id`` = the stream id) carries the samples, its description carries the
signed-stream header, and a string stream (``source_id`` = stream id + ``-seals``) carries
each seal and finally the root. The receiving side (`LslCaptureInlet`) checks every chunk and
seal as it arrives with `StreamVerifier`, so a stream altered in transit is refused live.

LSL discovers streams by UDP multicast. `use_local_lsl` writes an LSL configuration that keeps
discovery on this machine (127.0.0.1, IPv6 off): tests and the demo use it; a lab network
uses LSL's own configuration instead. It must run before liblsl reads its configuration (the
first stream created or resolved in the process).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.capture.errors import GapError
from edgetrust.capture.stream import CaptureSession, StreamHeader
from edgetrust.capture.verify import StreamVerifier, VerifiedCapture
from edgetrust.dsse import Envelope, envelope_from_dict
from edgetrust.encoding import parse_json
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.identity import Identity
from edgetrust.statement import parse_statement

__all__ = ["LOCAL_LSL_CONFIG", "LslCaptureInlet", "LslCaptureOutlet", "LslSource", "use_local_lsl"]

LOCAL_LSL_CONFIG = """[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
MachineAddresses = {{127.0.0.1}}
[lab]
KnownPeers = {{127.0.0.1}}
SessionID = {session}
[log]
level = -3
"""
"""liblsl configuration: discovery on 127.0.0.1 only, in its own session."""

_FORMATS = {
    "int16": "cf_int16",
    "int32": "cf_int32",
    "float32": "cf_float32",
    "float64": "cf_double64",
}
_HEADER_KEY = "edgetrust_capture_header"


def use_local_lsl(directory: str | os.PathLike[str], session: str = "edgetrust") -> Path:
    """Write `LOCAL_LSL_CONFIG` under `directory` and point liblsl at it (``LSLAPICFG``)."""
    path = Path(directory) / "lsl_api.cfg"
    path.write_text(LOCAL_LSL_CONFIG.format(session=session))
    os.environ["LSLAPICFG"] = str(path)
    return path


class LslCaptureOutlet:
    """Pushes a capture session's samples, seals and root to two LSL outlets."""

    def __init__(self, session: CaptureSession, name: str = "edgetrust-capture") -> None:
        import pylsl

        h = session.header
        s = h.sensor
        self.session = session
        info = pylsl.StreamInfo(
            name,
            s.kind,
            len(s.channels),
            s.sampling_rate,
            getattr(pylsl, _FORMATS[s.dtype]),
            h.stream_id,
        )
        info.desc().append_child_value(_HEADER_KEY, json.dumps(h.to_dict()))
        chans = info.desc().append_child("channels")
        for c in s.channels:
            chans.append_child("channel").append_child_value("label", c.label)
        self.data = pylsl.StreamOutlet(info)
        seal_info = pylsl.StreamInfo(
            name + "-seals",
            "edgetrust-seal",
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            h.stream_id + "-seals",
        )
        self.seals = pylsl.StreamOutlet(seal_info)
        self._sent = 0

    def wait_for_consumers(self, timeout: float = 5.0) -> bool:
        """Wait until an inlet is connected to both streams (LSL sends no history)."""
        return bool(
            self.data.wait_for_consumers(timeout) and self.seals.wait_for_consumers(timeout)
        )

    def _push_seals(self) -> None:
        for seal in self.session.seals[self._sent :]:
            self.seals.push_sample([json.dumps({"seal": seal.to_dict()})])
        self._sent = len(self.session.seals)

    def push(self, frames: npt.ArrayLike) -> None:
        """Sign `frames` and push them, then any seal they completed."""
        arr = np.asarray(frames)
        self.session.add(arr)
        self.data.push_chunk(arr.tolist())
        self._push_seals()

    def finish(self, *cosigners: Identity) -> Envelope:
        """Finish the session; push the last seal and the signed root."""
        statement = self.session.finish(*cosigners)
        self._push_seals()
        self.seals.push_sample([json.dumps({"root": statement.to_dict()})])
        return statement


class LslCaptureInlet:
    """Receives a capture from LSL and checks it live, chunk by chunk and seal by seal."""

    def __init__(self, stream_id: str, *, timeout: float = 5.0) -> None:
        import pylsl

        found = pylsl.resolve_byprop("source_id", stream_id, 1, timeout)
        seals = pylsl.resolve_byprop("source_id", stream_id + "-seals", 1, timeout)
        if not found or not seals:
            raise NotFoundError(f"no LSL capture stream {stream_id!r:.40} found in {timeout:g} s")
        self.data = pylsl.StreamInlet(found[0], max_buflen=360)
        self.seals = pylsl.StreamInlet(seals[0], max_buflen=360)
        info = self.data.info(timeout)
        raw = info.desc().child_value(_HEADER_KEY)
        self.header = StreamHeader.from_dict(parse_json(raw, what="LSL capture header"))
        if self.header.stream_id != stream_id:
            raise InvalidInputError("the LSL stream's header names another stream id")
        self.data.open_stream(timeout)
        self.seals.open_stream(timeout)
        self.verifier = StreamVerifier(self.header)
        self.chunks: list[npt.NDArray[Any]] = []

    def run(self, *, timeout: float = 30.0) -> VerifiedCapture:
        """Receive until the root arrives and every signed frame is in; verify each on arrival.

        Raises:
            CaptureError (and subclasses): the stream departs from what its device signed.
            GapError: the root arrived but signed frames never did within `timeout`.
        """
        size = self.header.chunk_samples
        dtype = np.dtype(self.header.sensor.dtype)
        buf = np.zeros((0, len(self.header.sensor.channels)), dtype)
        queued: list[Envelope] = []
        root: Envelope | None = None
        total: int | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples, _ = self.data.pull_chunk(timeout=0.05)
            if samples:
                buf = np.concatenate([buf, np.asarray(samples, dtype=dtype)])
            while buf.shape[0] >= size:
                self._chunk(buf[:size])
                buf = buf[size:]
            messages, _ = self.seals.pull_chunk(timeout=0.0)
            for (text,) in messages:
                msg = parse_json(text, what="LSL seal message", max_bytes=1 << 20)
                if isinstance(msg, dict) and set(msg) == {"seal"}:
                    queued.append(envelope_from_dict(msg["seal"]))
                elif isinstance(msg, dict) and set(msg) == {"root"}:
                    root = envelope_from_dict(msg["root"])
                    total = int(parse_statement(root.payload).predicate["samples"])
                else:
                    raise InvalidInputError("LSL seal stream carries an unknown message")
            if total is not None and buf.shape[0] and self._received + buf.shape[0] >= total:
                self._chunk(buf[: total - self._received])
                buf = buf[total - self._received :]
            while queued and self.verifier.received > _last(queued[0]):
                self.verifier.add_seal(queued.pop(0))
            if root is not None and not queued and total == self._received:
                return self.verifier.finish(root)
        missing_from = len(self.verifier.digests)
        raise GapError(tuple(range(missing_from, missing_from + 1)), step="live lsl")

    @property
    def _received(self) -> int:
        return self.verifier.samples

    def _chunk(self, samples: npt.NDArray[Any]) -> None:
        self.verifier.add_chunk(self.verifier.received, samples)
        self.chunks.append(samples.copy())


def _last(envelope: Envelope) -> int:
    from edgetrust.capture.stream import parse_seal

    return parse_seal(envelope).last


def _ascii(text: str, default: str) -> str:
    clean = "".join(ch for ch in text if " " <= ch <= "~")[:80]
    return clean or default


class LslSource:
    """An unsigned LSL stream (e.g. an amplifier's own outlet) as a capture source.

    Here the signer is the recorder that reads the stream, not the sensor: the signature then
    proves the samples passed through *this recorder's* key as they arrived. Samples become
    24-bit digital values: integer streams are taken as ADC counts (and must fit 24 bits),
    float streams are read as µV and quantized like BrainFlow's (`to_digital`).
    """

    def __init__(self, name: str, *, timeout: float = 5.0) -> None:
        import pylsl

        from edgetrust.capture.sources import BDF_CHANNEL
        from edgetrust.capture.stream import Channel, SensorInfo

        found = pylsl.resolve_byprop("name", name, 1, timeout)
        if not found:
            raise NotFoundError(f"no LSL stream named {name!r:.40} found in {timeout:g} s")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=360)
        info = self.inlet.info(timeout)
        rate = info.nominal_srate()
        if rate <= 0 or rate != int(rate):
            raise InvalidInputError(f"LSL stream {name!r:.40} has no integer sampling rate")
        n = info.channel_count()
        labels: list[str] = []
        ch = info.desc().child("channels").child("channel")
        while not ch.empty() and len(labels) < n:
            labels.append(_ascii(ch.child_value("label"), f"ch{len(labels) + 1}")[:16])
            ch = ch.next_sibling()
        if len(labels) != n or len(set(labels)) != n:
            labels = [f"ch{i + 1}" for i in range(n)]
        b = BDF_CHANNEL
        self.float_samples = info.channel_format() in (pylsl.cf_float32, pylsl.cf_double64)
        self.sensor = SensorInfo(
            _ascii(info.type(), "EEG"),
            tuple(
                Channel(lb, b.unit, b.physical_min, b.physical_max, b.digital_min, b.digital_max)
                for lb in labels
            ),
            int(rate),
            f"lsl {pylsl.library_version()}",
            "int32",
            _ascii(f"LSL stream {info.name()} from {info.hostname()}", "LSL stream"),
        )
        self.inlet.open_stream(timeout)

    def frames(self, seconds: float, *, timeout: float = 10.0) -> Iterator[npt.NDArray[Any]]:
        """Frames as they arrive, `seconds` worth of samples (or fewer if the stream stops)."""
        from edgetrust.capture.sources import to_digital

        want = round(seconds * self.sensor.sampling_rate)
        got = 0
        deadline = time.monotonic() + timeout + seconds
        while got < want and time.monotonic() < deadline:
            samples, _ = self.inlet.pull_chunk(timeout=0.1, max_samples=want - got)
            if not samples:
                continue
            arr = np.asarray(samples)
            frames = to_digital(arr, self.sensor.channels) if self.float_samples else arr
            got += len(frames)
            yield frames
