"""EDF+/BDF+ files of a capture, with the signed manifest beside them.

One EDF data record is one chunk (record duration = chunk duration), and samples are written
and read as *digital* values, so a file holds exactly the integers that were signed. EDF
stores 16 bits per sample (streams of dtype int16), BDF 24 bits (int32 streams whose digital
range fits 24 bits). The last record is zero-padded by the format; its padding is not signed,
and is ignored when it is all zeros.

The manifest (header, seals, signed root) is a sidecar ``<file>.capture.json``, not an EDF+
annotation: it holds one DSSE seal per interval, which EDF+ annotation text (TALs, meant for
events, inside the data records) is not made for, and a sidecar can be checked, published or
logged without parsing the recording. The EDF header's admincode carries the stream id, so a
file names its manifest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.capture.errors import CaptureError
from edgetrust.capture.verify import (
    Manifest,
    ReviewerSet,
    VerifiedCapture,
    parse_manifest,
    verify_manifest,
    verify_samples,
)
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.files import checked_size

__all__ = [
    "MANIFEST_SUFFIX",
    "MAX_RECORDING_BYTES",
    "Recording",
    "file_chunks",
    "manifest_path",
    "read_recording",
    "verify_recording",
    "write_recording",
]

MANIFEST_SUFFIX = ".capture.json"
MAX_RECORDING_BYTES = 2 * 2**30
"""Largest EDF/BDF file read (2 GiB)."""
_BDF_RANGE = (-(2**23), 2**23 - 1)
_EDF_RANGE = (-(2**15), 2**15 - 1)


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """Where a recording's manifest sits: ``<file>.capture.json``."""
    return Path(str(path) + MANIFEST_SUFFIX)


def _file_type(path: Path, manifest: Manifest) -> int:
    import pyedflib

    suffix = path.suffix.lower()
    sensor = manifest.header.sensor
    if suffix not in (".edf", ".bdf"):
        raise InvalidInputError(f"a recording is a .edf or .bdf file, not {path.name!r:.60}")
    lo, hi = _EDF_RANGE if suffix == ".edf" else _BDF_RANGE
    if sensor.dtype not in ("int16", "int32"):
        raise UnsupportedError(f"{suffix} stores integers; this stream is {sensor.dtype}")
    for c in sensor.channels:
        if c.digital_min < lo or c.digital_max > hi:
            raise UnsupportedError(
                f"channel {c.label}: digital range does not fit {suffix} "
                f"({'16' if suffix == '.edf' else '24'}-bit); use "
                f"{'.bdf' if suffix == '.edf' else 'a 24-bit range'}"
            )
        if len(c.label) > 16 or len(c.unit) > 8:
            raise UnsupportedError(f"channel {c.label}: EDF labels ≤ 16, units ≤ 8 characters")
    return int(pyedflib.FILETYPE_EDFPLUS if suffix == ".edf" else pyedflib.FILETYPE_BDFPLUS)


def _edf_number(x: float) -> float | int:
    # EDF header numbers are 8 ASCII characters: an integral value is written without ".0".
    return int(x) if float(x).is_integer() else x


def write_recording(
    path: str | os.PathLike[str], manifest: Manifest, chunks: list[npt.NDArray[Any]]
) -> Path:
    """Write the chunks as an EDF+/BDF+ file (by suffix) and the manifest beside it.

    Returns the manifest's path. The chunks must be the session's, in order (`Chunk.samples`).
    """
    import pyedflib

    p = Path(path)
    ftype = _file_type(p, manifest)
    header = manifest.header
    sensor = header.sensor
    signal_headers: list[dict[str, str | int | float | None]] = [
        {
            "label": c.label,
            "dimension": c.unit,
            "sample_frequency": sensor.sampling_rate,
            "physical_min": _edf_number(c.physical_min),
            "physical_max": _edf_number(c.physical_max),
            "digital_min": c.digital_min,
            "digital_max": c.digital_max,
            "transducer": "",
            "prefilter": "",
        }
        for c in sensor.channels
    ]
    n = len(sensor.channels)
    size = header.chunk_samples
    writer = pyedflib.EdfWriter(str(p), n, file_type=ftype)
    try:
        with warnings.catch_warnings():
            # pyedflib warns that a forced record duration may change rates; it does not here,
            # since chunk_samples frames at an integer rate is exactly the duration set.
            warnings.simplefilter("ignore")
            writer.setSignalHeaders(signal_headers)
            writer.setDatarecordDuration(header.chunk_seconds)
            writer.setAdmincode(header.stream_id)
            # EDF+ recording field: 80 characters, subfields separated by spaces.
            writer.setEquipment("edgetrust")
            start = datetime.fromtimestamp(header.start_ms / 1000, UTC).replace(tzinfo=None)
            writer.setStartdatetime(start.replace(microsecond=0))
            writer.update_header()
        for chunk in chunks:
            record = np.zeros((size, n), dtype=np.int32)
            record[: chunk.shape[0]] = chunk
            # A data record holds channel 0's samples, then channel 1's, ...
            if writer.blockWriteDigitalSamples(np.ascontiguousarray(record.T).reshape(-1)) < 0:
                raise InvalidInputError(f"pyedflib could not write a data record to {p}")
    finally:
        writer.close()
    out = manifest_path(p)
    out.write_bytes(manifest.to_json())
    return out


@dataclass(frozen=True)
class Recording:
    """The digital samples of an EDF/BDF file and what its header says."""

    frames: npt.NDArray[np.int32]
    """``(records × samples per record, channels)`` digital values, padding included."""
    labels: tuple[str, ...]
    sampling_rate: float
    record_samples: int
    """Samples per data record (of every channel)."""
    admincode: str


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read an EDF/BDF file's digital samples (all channels share one rate).

    Raises:
        NotFoundError: no such file. ResourceLimitError: larger than `MAX_RECORDING_BYTES`.
        InvalidInputError: not an EDF/BDF file pyedflib can read, or mixed sampling rates.
    """
    import pyedflib

    p = Path(path)
    checked_size(p, "recording", max_bytes=MAX_RECORDING_BYTES)
    try:
        reader = pyedflib.EdfReader(str(p))
    except OSError as exc:
        raise InvalidInputError(f"{p.name} is not a readable EDF/BDF file: {exc}") from exc
    try:
        n = reader.signals_in_file
        counts = reader.getNSamples()
        rates = reader.getSampleFrequencies()
        if n == 0 or len(set(counts.tolist())) != 1 or len(set(rates.tolist())) != 1:
            raise InvalidInputError(f"{p.name}: channels of different lengths or rates")
        records = int(reader.datarecords_in_file)
        per = int(counts[0]) // max(records, 1)
        frames = np.stack([reader.readSignal(i, digital=True) for i in range(n)], axis=1)
        return Recording(
            frames.astype(np.int32),
            tuple(reader.getSignalLabels()),
            float(rates[0]),
            per,
            str(reader.getAdmincode()),
        )
    finally:
        reader.close()


def file_chunks(rec: Recording, verified: VerifiedCapture) -> Iterator[npt.NDArray[np.int32]]:
    """The file's data records as chunks, the final record's zero padding removed."""
    size = verified.header.chunk_samples
    if rec.record_samples != size:
        raise CaptureError(
            f"the file's data records hold {rec.record_samples} samples, the signed stream's "
            f"chunks {size}",
            chunk=None,
            step="5 samples",
        )
    total = rec.frames.shape[0] // size
    last = verified.last_chunk_samples
    for i in range(total):
        chunk = rec.frames[i * size : (i + 1) * size]
        if i == total - 1 and last < size and not chunk[last:].any():
            chunk = chunk[:last]
        yield chunk


def verify_recording(
    path: str | os.PathLike[str],
    manifest: Manifest | str | os.PathLike[str] | None = None,
    *,
    reviewers: ReviewerSet | None = None,
    require_consent: bool = False,
    on_chunk: Callable[[int, int], object] | None = None,
) -> VerifiedCapture:
    """Prove that an EDF/BDF file's samples are exactly the signed stream.

    Steps 1-4 are `verify_manifest` (root, consent, seals, chain); then (5) the file's channels
    and rate are the signed sensor's, and its data records, chunk by chunk, are the signed
    chunks: a dropped, moved, inserted or altered record is named by its chunk index.
    `on_chunk(done, total)` is called per chunk read (for a progress bar).
    """
    if manifest is None or not isinstance(manifest, Manifest):
        mpath = manifest_path(path) if manifest is None else Path(manifest)
        try:
            data = mpath.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"cannot read capture manifest {mpath}: {exc.strerror}") from exc
        manifest = parse_manifest(data)
    verified = verify_manifest(manifest, reviewers=reviewers, require_consent=require_consent)
    rec = read_recording(path)
    sensor = verified.header.sensor
    if rec.labels != sensor.labels or rec.sampling_rate != sensor.sampling_rate:
        raise CaptureError(
            f"the file's channels/rate {list(rec.labels)[:4]}…@{rec.sampling_rate:g} Hz are not "
            f"the signed sensor's {list(sensor.labels)[:4]}…@{sensor.sampling_rate} Hz",
            chunk=None,
            step="5 samples",
        )
    chunks: Iterable[npt.NDArray[np.int32]] = file_chunks(rec, verified)
    if on_chunk is not None:
        chunks = _counted(chunks, rec.frames.shape[0] // max(rec.record_samples, 1), on_chunk)
    verify_samples(verified, chunks)
    return verified


def _counted(
    items: Iterable[npt.NDArray[np.int32]], total: int, on_chunk: Callable[[int, int], object]
) -> Iterator[npt.NDArray[np.int32]]:
    for i, item in enumerate(items, 1):
        yield item
        on_chunk(i, total)
