"""The job and usage wire records, and the fast canonical form of results."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from edgetrust.data import jobs, records
from edgetrust.data.records import canonical_result
from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError

EDGE = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    1 / 3,
    2.5,
    1e-7,
    1e-6,
    9.999999e-7,
    1e-5,
    1e-4,
    0.00012,
    1e15,
    1e16,
    123456789012345.0,
    1e20,
    1e21,
    1e22,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    9007199254740992.0,
    -9007199254740993.0,
    4.35,
    0.000001234,
]


def test_the_split_keeps_every_name_importable_from_jobs() -> None:
    for name in records.__all__:
        if name != "canonical_result":
            assert getattr(jobs, name) is getattr(records, name)


def test_canonical_result_is_rfc8785_on_edge_floats() -> None:
    for x in EDGE:
        assert canonical_result(x) == canonical_json(x), x
        assert canonical_result([x, -x]) == canonical_json([x, -x]), x


def test_canonical_result_is_rfc8785_on_random_values() -> None:
    rng = np.random.default_rng(0)
    floats = (rng.normal(size=3000) * 10.0 ** rng.integers(-30, 30, 3000)).tolist()
    bits = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    raw = [struct.unpack("<d", int(b).to_bytes(8, "little"))[0] for b in bits]
    floats += [f for f in raw if math.isfinite(f)]
    floats += np.float32(rng.normal(size=1000)).astype(float).tolist()
    value = {
        "outputs": {"y": {"dtype": "float32", "shape": [len(floats)], "values": floats}},
        "model": "sha256:" + "0" * 64,
        "n": [1, -2, 0, 2**53 - 1, True, False, None],
        "\U0001f600": 1.5,
        "\uffff": 'tab\there "quoted" \x01 é',
        "": [[], {}, [0.5, [1e-9]]],
    }
    assert canonical_result(value) == canonical_json(value)


@pytest.mark.parametrize(
    "bad", [math.nan, [math.inf], {"a": -math.inf}, {1: 2}, 2**60, "\ud800", object()]
)
def test_canonical_result_refuses_what_has_no_canonical_form(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        canonical_result(bad)
