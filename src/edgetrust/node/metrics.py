"""``GET /metrics``: the node's log in Prometheus text format (prometheus-client).

Each app has its own registry (tests and embedders run several apps in one process). What is
exported: the log's size (read from the store, so entries other nodes appended count), entries
per committed group or batch, commit latency (the store append, acknowledgement included),
the age of the latest checkpoint this node handed out, and submissions refused because their
envelope failed verification or validation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edgetrust.log.service import Log

__all__ = ["NodeMetrics", "metrics_router"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class NodeMetrics:
    """The counters a node updates, in a registry of their own."""

    def __init__(self, log: Log) -> None:
        self.registry = CollectorRegistry()
        """Where the metrics below live; `metrics_router` serves it."""
        self._checkpoint_seen = time.monotonic()
        entries = Gauge(
            "edgetrust_log_entries", "Entries in the log (committed).", registry=self.registry
        )
        entries.set_function(lambda: float(log.size()))
        self.batch_entries = Histogram(
            "edgetrust_log_batch_entries",
            "Entries per committed group or batch.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "edgetrust_log_commit_seconds",
            "Seconds from a group's append to its commit being acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        age = Gauge(
            "edgetrust_log_checkpoint_age_seconds",
            "Seconds since this node first handed out its latest checkpoint.",
            registry=self.registry,
        )
        age.set_function(lambda: time.monotonic() - self._checkpoint_seen)
        self.rejected = Counter(
            "edgetrust_log_rejected_submissions",
            "Submissions refused: the envelope failed verification or validation.",
            registry=self.registry,
        )

    def observe_commit(self, entries: int, seconds: float) -> None:
        """Record one committed group or batch."""
        self.batch_entries.observe(entries)
        self.commit_seconds.observe(seconds)

    def checkpoint_moved(self) -> None:
        """The node's latest checkpoint grew: its age starts again."""
        self._checkpoint_seen = time.monotonic()


def metrics_router(metrics: Callable[[], NodeMetrics]) -> APIRouter:
    """``GET /metrics`` for the node whose metrics `metrics()` returns (set at startup)."""
    router = APIRouter()

    @router.get("/metrics", tags=["meta"], response_class=Response)
    def get_metrics() -> Response:
        """Prometheus text exposition format (version 0.0.4)."""
        return Response(generate_latest(metrics().registry), media_type=CONTENT_TYPE_LATEST)

    return router
