"""``GET /metrics``: Prometheus text with entries, batches, latency, checkpoint age, refusals."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings

from ..node.conftest import card_envelope


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_follow_submissions_and_refusals(tmp_path: Path) -> None:
    publisher = Identity.from_seed(b"\x07" * 32, "publisher")
    with (
        Log.open(tmp_path / "home", max_delay=0) as log,
        TestClient(create_app(log, settings=NodeSettings(rate=0))) as client,
    ):
        for i in range(3):
            assert (
                client.post("/v1/entries", content=card_envelope(publisher, i)).status_code == 200
            )
        bad = [b"", b"{", b"\xff" * 5000, b'{"payload":"x"}', card_envelope(publisher, 9)[:-5]]
        for body in bad:
            assert 400 <= client.post("/v1/entries", content=body).status_code < 500
        assert client.post("/v1/entries:batch", content=b'{"entries":[{}]}').status_code == 400
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        got = _samples(r.text)
        assert got["edgetrust_log_entries"] == 3
        assert got["edgetrust_log_batch_entries_count"] == 3
        assert got["edgetrust_log_batch_entries_sum"] == 3
        assert 0 < got["edgetrust_log_commit_seconds_sum"] < 30
        assert got["edgetrust_log_rejected_submissions_total"] == len(bad) + 1
        assert 0 <= got["edgetrust_log_checkpoint_age_seconds"] < 60
        assert client.post("/metrics").status_code == 405
