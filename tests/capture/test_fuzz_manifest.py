"""Adversarial manifests: any mutation is refused with an edgetrust error, never a crash."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetrust.capture.stream import CaptureDevice
from edgetrust.capture.verify import Manifest, parse_manifest, verify_manifest, verify_samples
from edgetrust.errors import Error
from edgetrust.identity import Identity

from .conftest import make_sensor

_dev = CaptureDevice(Identity.from_seed(b"\x06" * 32), make_sensor(2, 10))
_s = _dev.start(seal_every=2, start_ms=0)
_s.add(np.arange(100).reshape(50, 2))
_s.finish()
GOOD = Manifest.from_session(_s).to_dict()
CHUNKS = [c.samples for c in _s.chunks]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = [p for p in _paths(GOOD) if p]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values)
def test_mutated_manifest_never_crashes(path: tuple[Any, ...], value: Any) -> None:
    m = copy.deepcopy(GOOD)
    target = m
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        text = json.dumps(m)
    except ValueError:
        return
    try:
        v = verify_manifest(parse_manifest(text))
        verify_samples(v, CHUNKS)
    except Error:
        return


def _mutate(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


_SEAL = json.loads(_s.seals[0].envelope.payload)
_STMT = json.loads(_s.statement.payload)  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.data(), json_values)
def test_signed_but_mutated_payloads_never_crash(
    seal: bool, data: st.DataObject, value: Any
) -> None:
    """The device itself signs a malformed seal or root: still refused, never a crash."""
    from edgetrust.capture.stream import SEAL_PAYLOAD_TYPE, parse_seal
    from edgetrust.dsse import sign_envelope
    from edgetrust.encoding import canonical_json
    from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE

    base = _SEAL if seal else _STMT
    path = data.draw(st.sampled_from([p for p in _paths(base) if p]))
    try:
        payload = canonical_json(_mutate(base, path, value))
    except Error:
        return
    m = Manifest.from_session(_s)
    try:
        if seal:
            env = sign_envelope(payload, SEAL_PAYLOAD_TYPE, _dev.identity)
            m = Manifest(m.header, (parse_seal(env), *m.seals[1:]), m.statement)
        else:
            env = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, _dev.identity)
            m = Manifest(m.header, m.seals, env)
        verify_samples(verify_manifest(m), CHUNKS)
    except Error:
        return


def test_huge_integer_physical_range_is_refused_not_a_crash() -> None:
    """2**64 (beyond int64: a TypeError in numpy before) and 10**400 (beyond float) as a
    channel's physical minimum: each a one-line edgetrust error."""
    for value, says in ((2**64, "minimum must be below"), (10**400, "finite number")):
        m = _mutate(GOOD, ("header", "sensor", "channels", 0, "physical_min"), value)
        try:
            verify_samples(verify_manifest(parse_manifest(json.dumps(m))), CHUNKS)
        except Error as exc:
            assert says in str(exc)
        else:
            raise AssertionError(f"physical_min={value} was accepted")
