"""EDF+/BDF+ files of a capture: exact round trip, and tampered files named by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.capture.edf import (
    manifest_path,
    read_recording,
    verify_recording,
    write_recording,
)
from edgetrust.capture.errors import (
    AlteredChunkError,
    CaptureError,
    GapError,
    InsertedChunkError,
    ReorderedChunkError,
)
from edgetrust.capture.record import log_capture, record, save_recording
from edgetrust.capture.sources import eeg_like, numpy_sensor
from edgetrust.capture.stream import CaptureDevice, CaptureSession
from edgetrust.capture.verify import Manifest
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.identity import Identity
from edgetrust.log.service import Log

from .conftest import make_sensor


def _session(seconds: float = 6.3, channels: int = 8) -> CaptureSession:
    device = CaptureDevice(Identity.from_seed(b"\x03" * 32), numpy_sensor(channels))
    return record(device, [eeg_like(seconds, channels)], seal_every=4, start_ms=1_700_000_000_000)


def test_bdf_round_trip_is_exact(tmp_path: Path) -> None:
    s = _session()
    mpath = save_recording(s, tmp_path / "rec.bdf")
    assert mpath == manifest_path(tmp_path / "rec.bdf")
    rec = read_recording(tmp_path / "rec.bdf")
    signed = np.concatenate([c.samples for c in s.chunks])
    assert np.array_equal(rec.frames[: len(signed)], signed)
    assert rec.admincode == s.header.stream_id
    v = verify_recording(tmp_path / "rec.bdf")
    assert v.root == s.root and v.samples == len(signed)


def test_edf_needs_16_bit_streams(tmp_path: Path) -> None:
    s = _session()
    with pytest.raises(UnsupportedError, match="16-bit"):
        save_recording(s, tmp_path / "rec.edf")
    device = CaptureDevice(Identity.generate(), make_sensor(8, 250, "int16"))
    x = np.random.default_rng(0).integers(-32768, 32768, (1000, 8))
    s16 = record(device, [x], seal_every=2)
    save_recording(s16, tmp_path / "rec.edf")
    verify_recording(tmp_path / "rec.edf")
    with pytest.raises(InvalidInputError):
        save_recording(s16, tmp_path / "rec.txt")


@pytest.mark.parametrize(
    ("how", "error", "chunk"),
    [
        ("drop", GapError, 2),
        ("swap", ReorderedChunkError, 3),
        ("insert", InsertedChunkError, 2),
        ("alter", AlteredChunkError, 2),
        ("truncate", GapError, 5),
    ],
)
def test_tampered_file_is_named(
    tmp_path: Path, how: str, error: type[CaptureError], chunk: int
) -> None:
    s = _session()
    chunks = [c.samples for c in s.chunks]
    if how == "drop":
        del chunks[2]
    elif how == "swap":
        chunks[2], chunks[3] = chunks[3], chunks[2]
    elif how == "insert":
        chunks.insert(2, chunks[0] // 2)
    elif how == "alter":
        chunks[2] = chunks[2].copy()
        chunks[2][10, 1] += 1
    else:
        chunks = chunks[:5]
    write_recording(tmp_path / "t.bdf", Manifest.from_session(s), chunks)
    with pytest.raises(error) as exc:
        verify_recording(tmp_path / "t.bdf")
    assert exc.value.chunk == chunk


def test_flipped_byte_in_file_is_named(tmp_path: Path) -> None:
    s = _session()
    save_recording(s, tmp_path / "r.bdf")
    raw = bytearray((tmp_path / "r.bdf").read_bytes())
    header_bytes = int(raw[184:192])  # EDF header: its own length, then the record count
    record_bytes = (len(raw) - header_bytes) // int(raw[236:244])
    raw[header_bytes + 3 * record_bytes + 100] ^= 0x01  # inside chunk 3
    (tmp_path / "r.bdf").write_bytes(bytes(raw))
    with pytest.raises(AlteredChunkError) as exc:
        verify_recording(tmp_path / "r.bdf")
    assert exc.value.chunk == 3


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_recording(tmp_path / "none.bdf")
    (tmp_path / "junk.bdf").write_bytes(b"\x00" * 300)
    with pytest.raises(InvalidInputError):
        read_recording(tmp_path / "junk.bdf")
    s = _session(2.0)
    save_recording(s, tmp_path / "ok.bdf")
    full = (tmp_path / "ok.bdf").read_bytes()
    (tmp_path / "cut.bdf").write_bytes(full[: len(full) // 2])
    (tmp_path / "cut.bdf.capture.json").write_bytes(manifest_path(tmp_path / "ok.bdf").read_bytes())
    with pytest.raises((InvalidInputError, CaptureError)):
        verify_recording(tmp_path / "cut.bdf")
    with pytest.raises(NotFoundError):
        verify_recording(tmp_path / "junk.bdf")  # no manifest beside it
    manifest_path(tmp_path / "ok.bdf").write_text("{")
    with pytest.raises(InvalidInputError):
        verify_recording(tmp_path / "ok.bdf")


def test_another_files_manifest_is_refused(tmp_path: Path) -> None:
    a, b = _session(3.0), _session(3.0, channels=4)
    save_recording(a, tmp_path / "a.bdf")
    save_recording(b, tmp_path / "b.bdf")
    with pytest.raises(CaptureError):
        verify_recording(tmp_path / "a.bdf", manifest_path(tmp_path / "b.bdf"))


def test_root_is_logged(tmp_path: Path) -> None:
    s = _session(2.0)
    log = Log.open(tmp_path / "home")
    try:
        index = log_capture(log, s.statement)  # type: ignore[arg-type]
        assert log.entry(index) == s.statement.to_json()  # type: ignore[union-attr]
    finally:
        log.close()


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 1200), st.integers(1, 4), st.integers(0, 2**16))
def test_file_round_trip_property(frames: int, seal_every: int, seed: int) -> None:
    import tempfile

    device = CaptureDevice(Identity.from_seed(b"\x04" * 32), numpy_sensor(3))
    x = np.random.default_rng(seed).integers(-(2**23), 2**23, (frames, 3))
    s = record(device, [x], seal_every=seal_every, start_ms=0)
    with tempfile.TemporaryDirectory() as d:
        save_recording(s, Path(d) / "p.bdf")
        assert verify_recording(Path(d) / "p.bdf").samples == frames
