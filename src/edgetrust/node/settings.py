"""Settings of the log node and the witness: limits, rates, where state lives.

Every limit is validated at construction, with a message that names the parameter, so that a
misconfigured node refuses to start instead of misbehaving under load.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgetrust.errors import InvalidInputError
from edgetrust.log.client import MAX_BUNDLE_ENTRY_BYTES

__all__ = ["NodeSettings", "WitnessSettings"]


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """How a log node behaves. All fields are keyword-only."""

    home: Path | None = None
    """State directory for the embedded log (default `$EDGETRUST_HOME`)."""
    origin: str | None = None
    """The log's checkpoint origin line (default: the log's own default)."""
    store: str | None = None
    """The log store: a ``postgresql://`` URL or a SQLite path (default: the home's log.db)."""
    max_body: int = 8 * 2**20
    """Largest request body accepted, in bytes; larger bodies get 413."""
    max_entry: int = MAX_BUNDLE_ENTRY_BYTES
    """Largest single entry (canonical envelope bytes). tlog-tiles entry bundles prefix each
    entry with a uint16 length, so it cannot exceed 65,535."""
    max_batch: int = 4096
    """Most entries in one ``POST /v1/entries:batch``."""
    rate: float = 100.0
    """Entries per second each signing identity may submit (token bucket); 0 disables."""
    burst: int | None = None
    """Bucket size: how many entries an identity may submit at once (default: ten seconds'
    worth, at least 1). A batch is charged whole, so it must fit in the bucket."""
    batch_size: int = 256
    """Entries per store transaction (sequencing batch)."""
    future_skew: float = 300.0
    """Seconds an entry's time (a receipt's issuedAt) may lie ahead of the node's clock."""
    max_delay: float = 0.0
    """Longest an entry waits for its batch to fill before it is committed anyway, seconds.
    0 (the node's default, unlike Tessera's 250 ms) is group commit: whatever queued while the
    previous batch was committing is committed next, at once. A submitter waits for its
    commit, so a delay adds to every request's latency; measured: a lone submitter waits
    ~0.1 ms per entry at 0, 1.3 ms at 1 ms, 6 ms at 5 ms."""
    publish: Path | None = None
    """Also keep this directory a static copy of the log's tiles (C2SP tlog-tiles files that
    any web server or CDN can serve), updated as the log grows (`TilePublisher`)."""
    publish_interval: float = 1.0
    """With `publish`: the most often, in seconds, the directory is updated."""
    verify_workers: int = 0
    """Processes that verify the envelopes of a batch in parallel (0: in the server process).
    Single submissions are always verified in the server: a process hop per request costs
    more than the verification (measured: twice the CPU per entry)."""
    data: bool = False
    """Serve the home's compute-to-data routes (``POST /v1/jobs``, ``GET /v1/usage``,
    ``GET /v1/datasets``): jobs run on the datasets of `home` under their grants."""
    traces: bool = False
    """Serve ``/v1/traces/{root}``: answer dispute queries from the traces kept in `home`.
    Off by default: anyone who knows a trace root (it is in the receipt, so in the log) can
    read the whole trace through it - every intermediate value and the quantized inputs."""
    trace_window: float = 7 * 24 * 3600.0
    """Seconds after its run that a trace is answered for (the device's default window)."""
    trace_cache: int = 4
    """Traces kept rebuilt in memory (each is a full run to rebuild; MiniLM's is ~35 MB)."""
    trace_rate: float = 20.0
    """Trace queries per second from each client address (token bucket, burst ten seconds'
    worth); a query that has to rebuild a trace (a full run) costs ten. 0 disables."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form labels reported by ``/healthz``."""

    def __post_init__(self) -> None:
        if not 1024 <= self.max_body <= 2**31:
            raise InvalidInputError("`max_body` must be between 1 KiB and 2 GiB")
        if not 1 <= self.max_entry <= MAX_BUNDLE_ENTRY_BYTES:
            raise InvalidInputError(f"`max_entry` must be 1..{MAX_BUNDLE_ENTRY_BYTES} bytes")
        if not 1 <= self.max_batch <= 100_000:
            raise InvalidInputError("`max_batch` must be 1..100000")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise InvalidInputError("`rate` must be a finite number >= 0 (0 disables)")
        if self.burst is not None and self.burst < 1:
            raise InvalidInputError("`burst` must be at least 1")
        if not (math.isfinite(self.future_skew) and self.future_skew >= 0):
            raise InvalidInputError("`future_skew` must be a finite number of seconds >= 0")
        if not 1 <= self.batch_size <= 65536:
            raise InvalidInputError("`batch_size` must be 1..65536")
        if not (math.isfinite(self.max_delay) and 0 <= self.max_delay <= 60):
            raise InvalidInputError("`max_delay` must be 0..60 seconds")
        if not (math.isfinite(self.publish_interval) and 0 < self.publish_interval <= 3600):
            raise InvalidInputError("`publish_interval` must be 0..3600 seconds (not 0)")
        if not 0 <= self.verify_workers <= (os.cpu_count() or 1) * 4:
            raise InvalidInputError("`verify_workers` must be 0..4x the number of CPUs")
        if not (math.isfinite(self.trace_window) and self.trace_window > 0):
            raise InvalidInputError("`trace_window` must be a positive number of seconds")
        if not 1 <= self.trace_cache <= 1024:
            raise InvalidInputError("`trace_cache` must be 1..1024")
        if not (math.isfinite(self.trace_rate) and self.trace_rate >= 0):
            raise InvalidInputError("`trace_rate` must be a finite number >= 0 (0 disables)")

    @property
    def bucket(self) -> float:
        """The token bucket's capacity."""
        return float(self.burst) if self.burst is not None else max(10 * self.rate, 1.0)


@dataclass(frozen=True, kw_only=True)
class WitnessSettings:
    """How a witness behaves. All fields are keyword-only."""

    home: Path | None = None
    """State directory: the witness key and its SQLite database (default `$EDGETRUST_HOME`)."""
    name: str = "witness.edgetrust.local"
    """The witness's name in cosignature lines (a schema-less URL, C2SP tlog-cosignature)."""
    key_name: str = "witness"
    """Name of the witness's signing key in the keystore."""
    log_keys: tuple[str, ...] = ()
    """Verifier keys (note vkey format) of the logs this witness follows; the key name is the
    log's origin."""
    max_body: int = 64 * 1024
    """Largest add-checkpoint body accepted, in bytes."""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in " +\n\t") or len(self.name) > 256:
            raise InvalidInputError(
                "`name` must be non-empty, at most 256 characters, without spaces or '+'"
            )
        if not 1024 <= self.max_body <= 2**24:
            raise InvalidInputError("`max_body` must be between 1 KiB and 16 MiB")
