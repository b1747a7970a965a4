"""The demo's capture step: an EEG stream signed at the sensor, its root logged, then checked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["capture_step"]


def capture_step(console: Console, result: Any, root: Path, log: Any) -> None:
    """Record 1 s of EEG (BrainFlow's synthetic board), sign, log, write BDF, verify, tamper.

    `result` is the demo's `DemoResult` (its `expect` records each check); `log` the demo's
    transparency log, which receives the stream's root.
    """
    from edgetrust.capture.edf import read_recording, verify_recording, write_recording
    from edgetrust.capture.record import log_capture, record, save_recording
    from edgetrust.capture.sources import SyntheticBoard, eeg_like, numpy_sensor
    from edgetrust.capture.stream import CaptureDevice
    from edgetrust.capture.verify import Manifest
    from edgetrust.identity import Identity

    started = time.perf_counter()
    try:
        board = SyntheticBoard(8)
        sensor, frames, source = board.sensor, board.frames(1.0), "BrainFlow synthetic board"
    except Exception:  # BrainFlow missing or its native library refused to load
        sensor, source = numpy_sensor(8), "numpy EEG-like signal (BrainFlow unavailable)"
        frames = iter([eeg_like(1.0, 8)])
    device = CaptureDevice(Identity.generate("eeg-headset"), sensor)
    wearer = Identity.generate("wearer")
    session = record(device, frames, chunk_seconds=0.2, seal_every=2, wearer=wearer)
    assert session.statement is not None
    index = log_capture(log, session.statement)
    path = root / "capture" / "eeg.bdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_recording(session, path)
    console.print(
        f"{source}: {session.samples} frames × {len(sensor.channels)} channels, "
        f"{len(session.chunks)} chunks hashed and chained, {len(session.seals)} seals signed by "
        f"the headset's key, root logged at index {index}, co-signed by the wearer (consent)"
    )
    result.expect(
        "capture: the BDF file is exactly the signed stream",
        True,
        lambda: verify_recording(path, require_consent=True),
    )

    frames_in_file = read_recording(path).frames
    manifest = Manifest.from_session(session)
    size = session.header.chunk_samples
    chunks = [frames_in_file[i : i + size] for i in range(0, len(frames_in_file), size)]
    altered = [c.copy() for c in chunks]
    altered[3][10, 0] += 1
    bad = root / "capture" / "altered.bdf"
    write_recording(bad, manifest, altered)
    result.expect("capture: one sample changed in chunk 3", False, lambda: verify_recording(bad))
    dropped = root / "capture" / "dropped.bdf"
    write_recording(dropped, manifest, [c for i, c in enumerate(chunks) if i != 1])
    result.expect("capture: chunk 1 dropped", False, lambda: verify_recording(dropped))
    for p, what in ((bad, "altered"), (dropped, "dropped")):
        try:
            verify_recording(p)
        except Exception as exc:  # the named error, shown to the reader
            console.print(f"  {what}: {getattr(exc, 'message', exc)}")
    console.print(f"  ({time.perf_counter() - started:.1f} s)")
