"""Entry preparation: the fast canonical form equals RFC 8785, the rate limiter's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgetrust.dsse import Envelope, Signature, parse_envelope
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.node._http import RateLimitedError
from edgetrust.node.entries import (
    BatchEntryError,
    canonical_envelope_bytes,
    prepare_entries,
    prepare_entry,
)
from edgetrust.node.ratelimit import RateLimiter
from edgetrust.node.settings import NodeSettings, WitnessSettings
from tests.node.conftest import card_envelope

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(
    payload=st.binary(max_size=200),
    payload_type=texts,
    sigs=st.lists(st.tuples(texts, st.binary(max_size=80)), min_size=1, max_size=4),
)
def test_fast_canonical_form_is_rfc8785(
    payload: bytes, payload_type: str, sigs: list[tuple[str, bytes]]
) -> None:
    env = Envelope(payload, payload_type, tuple(Signature(k, s) for k, s in sigs))
    assert canonical_envelope_bytes(env) == env.to_json()


def test_control_characters_and_lone_surrogates() -> None:
    env = Envelope(b"x", '\x00\x1f\x7f\u2028"\\/é😀', (Signature("k\n\t", b"s"),))
    assert canonical_envelope_bytes(env) == env.to_json()
    with pytest.raises(InvalidInputError):
        canonical_envelope_bytes(Envelope(b"x", "\ud800", (Signature("k", b"s"),)))


def test_prepare_entry_and_batches() -> None:
    ident = Identity.from_seed(b"\x01" * 32)
    raw = card_envelope(ident, 0)
    p = prepare_entry(raw, max_entry=65535)
    assert p.signer == ident.did and p.data == parse_envelope(raw).to_json()
    import json

    items = [json.loads(card_envelope(ident, i)) for i in range(3)]
    assert len(prepare_entries(items, max_entry=65535)) == 3
    items[1]["signatures"][0]["sig"] = items[0]["signatures"][0]["sig"]
    with pytest.raises(BatchEntryError) as info:
        prepare_entries(items, max_entry=65535)
    assert info.value.position == 1 and info.value.error == "VerificationError"


def test_rate_limiter_refills_and_charges_all_or_nothing() -> None:
    limiter = RateLimiter(rate=10, capacity=5)
    limiter.take({"a": 5}, now=0.0)
    with pytest.raises(RateLimitedError):
        limiter.take({"a": 1}, now=0.0)
    limiter.take({"a": 1}, now=0.1)  # one token back after 100 ms
    with pytest.raises(RateLimitedError):
        limiter.take({"b": 2, "a": 1}, now=0.1)
    limiter.take({"b": 5}, now=0.1)  # b was not charged by the refused batch
    RateLimiter(rate=0, capacity=1).take({"x": 10**6})  # disabled


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_body": 10},
        {"max_entry": 70_000},
        {"max_batch": 0},
        {"rate": -1},
        {"rate": float("nan")},
        {"burst": 0},
        {"batch_size": 0},
        {"max_delay": -1},
        {"verify_workers": -1},
    ],
)
def test_settings_validate_and_name_the_parameter(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError, match=f"`{next(iter(kwargs))}`"):
        NodeSettings(**kwargs)  # type: ignore[arg-type]


def test_witness_settings_validate_the_name() -> None:
    for bad in ("", "has space", "a+b"):
        with pytest.raises(InvalidInputError, match="`name`"):
            WitnessSettings(name=bad)


def test_batch_inclusion_proofs_equal_the_stores(tmp_path: Path) -> None:
    from edgetrust.log.service import Log
    from edgetrust.node.core import batch_inclusion_proofs

    log = Log.open(tmp_path / "log", max_delay=0.0)
    try:
        log.append_many([b"entry %d" % i for i in range(300)])
        for size in (1, 2, 3, 17, 255, 256, 257, 300):
            for indices in (list(range(size)), [0, size - 1], list(range(size // 2, size, 7))):
                got = batch_inclusion_proofs(log.hashes, indices, size)
                assert got == [log.inclusion_proof(i, size) for i in indices], (size, indices)
    finally:
        log.close()


def test_a_batch_larger_than_the_burst_is_told_to_split() -> None:
    limiter = RateLimiter(rate=1, capacity=10)
    with pytest.raises(RateLimitedError, match="split the batch"):
        limiter.take({"a": 11}, now=0.0)
    limiter.take({"a": 10}, now=0.0)
    assert NodeSettings(rate=5).bucket == 50 and NodeSettings(rate=0).bucket == 1
