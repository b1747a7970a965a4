"""Shared capture fixtures: a small 8-channel device and a finished session."""

from __future__ import annotations

import numpy as np
import pytest

from edgetrust.capture.stream import CaptureDevice, CaptureSession, Channel, SensorInfo
from edgetrust.identity import Identity


def make_sensor(channels: int = 8, rate: int = 250, dtype: str = "int32") -> SensorInfo:
    lo, hi = (-32768, 32767) if dtype == "int16" else (-8388608, 8388607)
    chans = tuple(Channel(f"C{i}", digital_min=lo, digital_max=hi) for i in range(channels))
    return SensorInfo("EEG", chans, rate, "test-fw 1.0", dtype, "test")


@pytest.fixture
def device() -> CaptureDevice:
    return CaptureDevice(Identity.from_seed(b"\x01" * 32, "sensor"), make_sensor())


def record(
    device: CaptureDevice,
    frames: int,
    *,
    seal_every: int = 4,
    seed: int = 0,
    wearer: Identity | None = None,
) -> CaptureSession:
    session = device.start(
        seal_every=seal_every, start_ms=1_700_000_000_000, wearer=wearer.did if wearer else None
    )
    data = np.random.default_rng(seed).integers(-5000, 5000, (frames, 8))
    session.add(data)
    session.finish(*([wearer] if wearer else []))
    return session


@pytest.fixture
def session(device: CaptureDevice) -> CaptureSession:
    return record(device, 250 * 10 + 17)
