"""Schemathesis against the node's own OpenAPI: no input may cause a 5xx or touch the store.

Driven through schemathesis's Python API (one hypothesis run per operation, positive and
negative data) rather than its pytest plugin, whose fixture loader does not support pytest 9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from tests.node.conftest import card_envelope

pytestmark = pytest.mark.slow


def test_no_input_causes_a_server_error_or_a_change(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        log.append_many([card_envelope(Identity.from_seed(b"\x05" * 32), i) for i in range(5)])
        before = (log.size(), log.checkpoint())
        app = create_app(log, settings=NodeSettings(rate=0, max_body=64 * 1024))
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8
        seen: dict[str, set[int]] = {}
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)

                @given(case=strategy)
                @settings(
                    max_examples=25,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    # A schema-valid envelope (any strings as signatures) must still be refused:
                    # that is the node's job, so "positive data is accepted" does not apply.
                    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                    assert response.status_code < 500, response.text
                    if response.status_code >= 400 and response.status_code != 409:
                        assert set(response.json()) == {"error", "message"}
                    seen.setdefault(case.operation.label, set()).add(response.status_code)

                try:
                    check()
                except Unsatisfiable:
                    # An operation without parameters or body has no negative data.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                assert (log.size(), log.checkpoint()) == before, operation.label
        # The fuzzer reached the refusals, not only the happy paths.
        assert 400 in seen["POST /v1/entries"] and 400 in seen["POST /v1/entries:batch"]
    finally:
        log.close()


def test_fuzzed_envelopes_never_log(tmp_path: Path) -> None:
    """Random bytes and random JSON at both write endpoints: 4xx, nothing logged."""
    from fastapi.testclient import TestClient

    log = Log.open(tmp_path / "log", max_delay=0.002)
    try:
        app = create_app(log, settings=NodeSettings(rate=0))
        with TestClient(app) as client:
            json_values = st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(
                            ["payload", "payloadType", "signatures", "keyid", "sig", "entries"]
                        ),
                        inner,
                        max_size=4,
                    )
                ),
                max_leaves=12,
            )

            @given(
                body=st.binary(max_size=300)
                | json_values.map(lambda v: __import__("json").dumps(v).encode())
            )
            @settings(
                max_examples=150,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(body: bytes) -> None:
                for path in ("/v1/entries", "/v1/entries:batch"):
                    resp = client.post(path, content=body)
                    assert 400 <= resp.status_code < 500, resp.text
                    assert set(resp.json()) == {"error", "message"}

            check()
        assert log.size() == 0
    finally:
        log.close()
