"""Capture: signing throughput at the source and `capture verify` throughput, 8 and 64 channels.

Streams at 250 Hz, int32 samples (BDF's 24-bit range), 1 s chunks, a seal every 10 chunks,
frames pushed in 100 ms blocks as a device would. Throughput is frames (one sample of every
channel) per second on one core, and as a multiple of real time (250 frames/s). Target from
the issue: signing ≥ 100× real time. `verify` reads the BDF file with pyedflib and checks the
manifest and every chunk (what `edgetrust capture verify` runs).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench._util import table
from edgetrust.capture.edf import read_recording, verify_recording
from edgetrust.capture.record import record, save_recording
from edgetrust.capture.sources import numpy_sensor
from edgetrust.capture.stream import CaptureDevice
from edgetrust.capture.verify import Manifest, verify_manifest
from edgetrust.identity import Identity

RATE = 250
SECONDS = 600
BLOCK = 25


def _one(channels: int, tmp: Path) -> list[str]:
    rng = np.random.default_rng(channels)
    data = rng.integers(-(2**23), 2**23, (SECONDS * RATE, channels), dtype=np.int32)
    blocks = [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]
    device = CaptureDevice(Identity.from_seed(bytes([channels]) * 32), numpy_sensor(channels))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        session = record(device, blocks, seal_every=10)
        best = min(best, time.perf_counter() - t0)
    sign_fps = len(data) / best
    path = tmp / f"b{channels}.bdf"
    save_recording(session, path)
    manifest = Manifest.from_session(session)
    t0 = time.perf_counter()
    verify_manifest(manifest)
    t_manifest = time.perf_counter() - t0
    t0 = time.perf_counter()
    read_recording(path)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    verify_recording(path)
    t_verify = time.perf_counter() - t0
    verify_fps = len(data) / t_verify
    return [
        str(channels),
        f"{sign_fps:,.0f} ({sign_fps * channels / 1e6:.1f} M values/s)",
        f"**{sign_fps / RATE:,.0f}×**",
        f"{verify_fps:,.0f}",
        f"{verify_fps / RATE:,.0f}×",
        f"{t_manifest * 1000:.0f} ms / {t_read * 1000:.0f} ms",
    ]


def run() -> str:
    """The markdown section."""
    with tempfile.TemporaryDirectory() as d:
        rows = [_one(ch, Path(d)) for ch in (8, 64)]
    return "\n".join(
        [
            "## Capture: signing at the source, and `capture verify`",
            "",
            f"{SECONDS} s of {RATE} Hz int32 EEG (1 s chunks, a seal every 10 s, 100 ms blocks), "
            "one core. Frames/s = samples of every channel per second; real time is 250 "
            "frames/s. Target: signing ≥ 100× real time.",
            "",
            table(
                [
                    "channels",
                    "signing frames/s",
                    "× real time",
                    "verify frames/s (BDF read + check)",
                    "× real time",
                    "manifest only / pyedflib read",
                ],
                rows,
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
