"""Live capture over Lab Streaming Layer, on 127.0.0.1 only (no network beyond localhost)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetrust.capture.errors import AlteredChunkError
from edgetrust.capture.sources import eeg_like, numpy_sensor
from edgetrust.capture.stream import CaptureDevice
from edgetrust.identity import Identity


@pytest.fixture(scope="module")
def lsl(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from edgetrust.capture.lsl import use_local_lsl

    use_local_lsl(tmp_path_factory.mktemp("lsl"), session="edgetrust-tests")
    import edgetrust.capture.lsl as mod

    return mod


def _pair(lsl, seal_every: int = 3):  # type: ignore[no-untyped-def]
    device = CaptureDevice(Identity.generate(), numpy_sensor(4, 100))
    session = device.start(chunk_seconds=0.5, seal_every=seal_every)
    outlet = lsl.LslCaptureOutlet(session, name=f"t-{session.header.stream_id[:8]}")
    inlet = lsl.LslCaptureInlet(session.header.stream_id, timeout=5)
    assert outlet.wait_for_consumers(5)
    return session, outlet, inlet


def test_live_stream_verifies(lsl) -> None:  # type: ignore[no-untyped-def]
    session, outlet, inlet = _pair(lsl)
    data = eeg_like(4.13, 4, 100, seed=1)
    for start in range(0, len(data), 37):
        outlet.push(data[start : start + 37])
    outlet.finish()
    verified = inlet.run(timeout=20)
    assert verified.root == session.root and verified.samples == len(data)
    assert np.array_equal(np.concatenate(inlet.chunks), data)


def test_samples_injected_in_transit_are_named(lsl) -> None:  # type: ignore[no-untyped-def]
    session, outlet, inlet = _pair(lsl)
    data = eeg_like(3.0, 4, 100, seed=2)
    outlet.push(data[:100])
    forged = data[100:150].copy()
    forged[7] += 1000
    session.add(data[100:150])  # the device signs the true samples...
    outlet.data.push_chunk(forged.tolist())  # ...a relay alters them on the wire
    outlet.push(data[150:])
    outlet.finish()
    with pytest.raises(AlteredChunkError) as exc:
        inlet.run(timeout=20)
    assert exc.value.chunk == 2


def test_record_an_unsigned_lsl_stream(lsl, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import threading
    import time

    import pylsl

    from edgetrust.cli import run

    info = pylsl.StreamInfo("amp-under-test", "EEG", 4, 100, pylsl.cf_float32, "amp-1")
    chans = info.desc().append_child("channels")
    for label in ("Fz", "Cz", "Pz", "Oz"):
        chans.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)
    stop = threading.Event()
    data = eeg_like(10.0, 4, 100).astype(np.float32) / 50

    def push() -> None:
        i = 0
        while not stop.is_set() and i < len(data):
            outlet.push_chunk(data[i : i + 5].tolist())
            i += 5
            time.sleep(0.02)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        rec = str(tmp_path / "amp.bdf")
        code = run(
            [
                "capture",
                "record",
                "--source",
                "lsl:amp-under-test",
                "--seconds",
                "1",
                "--chunk-seconds",
                "0.5",
                "--out",
                rec,
                "--json",
                "--no-log",
            ]
        )
        body = json.loads(capsys.readouterr().out)
        assert code == 0 and body["samples"] == 100 and body["chunks"] == 2
        assert run(["capture", "verify", rec]) == 0
    finally:
        stop.set()
        pusher.join(5)
    from edgetrust.capture.edf import read_recording

    assert read_recording(rec).labels == ("Fz", "Cz", "Pz", "Oz")
