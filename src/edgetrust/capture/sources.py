"""Where samples come from: BrainFlow's synthetic board, or an EEG-like numpy signal.

Both hand out *digital* frames (``(n, channels)`` int32 ADC counts), since the digital values
are what a capture signs and what EDF/BDF store exactly; physical values (µV) are recovered
with each channel's linear map. The BrainFlow board runs offline, in process, in real time
(250 Hz); the numpy signal is instant and deterministic, for tests, benchmarks and 64
channels (the synthetic board has 16 EEG channels).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.capture.stream import Channel, SensorInfo
from edgetrust.errors import InvalidInputError, UnsupportedError

__all__ = [
    "BDF_CHANNEL",
    "SyntheticBoard",
    "eeg_like",
    "numpy_sensor",
    "to_digital",
]

BDF_CHANNEL = Channel("EEG", "uV", -187500.0, 187500.0, -8388608, 8388607)
"""A 24-bit channel at 0.0224 µV per count (an ADS1299 at gain 24: ±4.5 V / 24)."""
_LABELS_10_20 = (
    "Fp1 Fp2 F7 F3 Fz F4 F8 T7 C3 Cz C4 T8 P7 P3 Pz P4 P8 O1 Oz O2 AF3 AF4 FC5 FC1 FC2 FC6 "
    "CP5 CP1 CP2 CP6 PO3 PO4 F5 F1 F2 F6 FT7 FC3 FCz FC4 FT8 C5 C1 C2 C6 TP7 CP3 CPz CP4 TP8 "
    "P5 P1 P2 P6 PO7 POz PO8 AF7 AF8 F9 F10 TP9 TP10 Iz"
).split()


def _channels(labels: list[str] | tuple[str, ...]) -> tuple[Channel, ...]:
    c = BDF_CHANNEL
    return tuple(
        Channel(lb, c.unit, c.physical_min, c.physical_max, c.digital_min, c.digital_max)
        for lb in labels
    )


def to_digital(microvolts: npt.ArrayLike, channels: tuple[Channel, ...]) -> npt.NDArray[np.int32]:
    """Quantize physical values ``(n, channels)`` to each channel's digital counts (clipped)."""
    x = np.asarray(microvolts, dtype=np.float64)
    pmin = np.array([c.physical_min for c in channels])
    pmax = np.array([c.physical_max for c in channels])
    dmin = np.array([c.digital_min for c in channels])
    dmax = np.array([c.digital_max for c in channels])
    scale = (dmax - dmin) / (pmax - pmin)
    d = np.rint((x - pmin) * scale + dmin)
    out: npt.NDArray[np.int32] = np.clip(d, dmin, dmax).astype(np.int32)
    return out


def numpy_sensor(channels: int = 8, rate: int = 250) -> SensorInfo:
    """The sensor description of the numpy EEG-like source."""
    if not 1 <= channels <= len(_LABELS_10_20):
        raise InvalidInputError(f"`channels` must be 1-{len(_LABELS_10_20)}")
    return SensorInfo(
        "EEG",
        _channels(_LABELS_10_20[:channels]),
        rate,
        "numpy-eeg 1",
        "int32",
        "edgetrust EEG-like generator",
    )


def eeg_like(
    seconds: float, channels: int = 8, rate: int = 250, *, seed: int = 0
) -> npt.NDArray[np.int32]:
    """An EEG-like digital signal: 1/f background, a 10 Hz alpha rhythm, line noise, ~±50 µV."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, channels))
    # A one-pole low-pass gives the background its 1/f-like slope without a filter library.
    pink = np.empty_like(white)
    acc = np.zeros(channels)
    for i in range(n):
        acc = 0.97 * acc + white[i]
        pink[i] = acc
    t = np.arange(n)[:, None] / rate
    alpha = 12 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, channels))
    line = 2 * np.sin(2 * np.pi * 50 * t)
    return to_digital(4 * pink + alpha + line, numpy_sensor(channels, rate).channels)


class SyntheticBoard:
    """BrainFlow's synthetic board as a capture source (offline, in process, real time)."""

    def __init__(self, channels: int = 8) -> None:
        from brainflow.board_shim import BoardIds, BoardShim

        self._board_id = BoardIds.SYNTHETIC_BOARD.value
        descr: dict[str, Any] = BoardShim.get_board_descr(self._board_id)
        eeg = list(descr["eeg_channels"])
        if not 1 <= channels <= len(eeg):
            raise UnsupportedError(f"the synthetic board has 1-{len(eeg)} EEG channels")
        self._rows = eeg[:channels]
        labels = str(descr.get("eeg_names", "")).split(",")
        if len(labels) < channels:
            labels = [f"EEG{i + 1}" for i in range(channels)]
        from importlib.metadata import version

        self.sensor = SensorInfo(
            "EEG",
            _channels(labels[:channels]),
            int(BoardShim.get_sampling_rate(self._board_id)),
            f"brainflow {version('brainflow')}",
            "int32",
            "BrainFlow synthetic board",
        )

    def frames(self, seconds: float, *, poll: float = 0.1) -> Iterator[npt.NDArray[np.int32]]:
        """Digital frames as the board produces them, for `seconds` of samples."""
        from brainflow.board_shim import BoardShim, BrainFlowInputParams

        BoardShim.disable_board_logger()
        board = BoardShim(self._board_id, BrainFlowInputParams())
        want = round(seconds * self.sensor.sampling_rate)
        got = 0
        board.prepare_session()
        try:
            board.start_stream()
            while got < want:
                time.sleep(poll)
                data = board.get_board_data()
                if data.shape[1] == 0:
                    continue
                frames = to_digital(data[self._rows].T, self.sensor.channels)[: want - got]
                got += frames.shape[0]
                yield frames
        finally:
            try:
                board.stop_stream()
            finally:
                board.release_session()
