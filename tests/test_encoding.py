from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgetrust.encoding import (
    canonical_json,
    canonical_tensor_bytes,
    digest_bytes,
    digest_tensor,
    parse_digest,
    parse_json,
    tensor_from_canonical_bytes,
)
from edgetrust.errors import InvalidInputError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2, {"d": None, "c": "x"}]}) == (
        b'{"a":[1,2,{"c":"x","d":null}],"b":1}'
    )


def test_canonical_json_rfc8785_number_forms() -> None:
    # RFC 8785 §3.2.2.3 examples: ECMAScript number serialization.
    assert canonical_json([1e21, 1e-7, 0.0, -0.0, 333333333.33333329]) == (
        b"[1e+21,1e-7,0,0,333333333.3333333]"
    )


@given(json_values)
def test_canonical_json_round_trips_and_is_idempotent(value: object) -> None:
    encoded = canonical_json(value)
    decoded = json.loads(encoded)
    assert canonical_json(decoded) == encoded


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: "x"}, object(), 2**64])
def test_canonical_json_rejects_values_without_canonical_form(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        canonical_json(bad)


@pytest.mark.parametrize("text", ["{", "NaN", "[Infinity]", '{"a": -Infinity}', "\xff"])
def test_parse_json_rejects_malformed_and_nonfinite(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_json(text)


def test_parse_json_size_limit() -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        parse_json(b"[" + b"1," * 100 + b"1]", max_bytes=50)


def test_digests() -> None:
    d = digest_bytes(b"abc")
    assert d == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert parse_digest(d) == bytes.fromhex(d[7:])
    for bad in ["", "sha256:", "sha256:" + "A" * 64, "md5:" + "0" * 64, "sha256:" + "0" * 63]:
        with pytest.raises(InvalidInputError):
            parse_digest(bad)


dtypes = st.sampled_from(["int8", "uint8", "int16", "int32", "int64", "float32", "float64", "bool"])


@given(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_tensor_bytes_round_trip(arr: np.ndarray) -> None:  # type: ignore[type-arg]
    data = canonical_tensor_bytes(arr)
    back = tensor_from_canonical_bytes(data)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert canonical_tensor_bytes(back) == data


def test_tensor_bytes_ignore_layout_and_byte_order() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert digest_tensor(a) == digest_tensor(np.asfortranarray(a))
    assert digest_tensor(a) == digest_tensor(a.astype(">f4"))
    assert digest_tensor(a) != digest_tensor(a.reshape(4, 3))
    assert digest_tensor(a) != digest_tensor(a.astype(np.float64))


def test_tensor_bytes_known_answer() -> None:
    data = canonical_tensor_bytes(np.array([1, -2], dtype=np.int16))
    assert data == b'ETT1\x1d\x00\x00\x00{"dtype":"int16","shape":[2]}\x01\x00\xfe\xff'


@given(st.binary(max_size=64))
def test_tensor_decoder_never_crashes_on_garbage(data: bytes) -> None:
    try:
        tensor_from_canonical_bytes(data)
    except InvalidInputError:
        pass


def test_tensor_decoder_rejects_truncation() -> None:
    data = canonical_tensor_bytes(np.zeros((2, 2), dtype=np.float32))
    for cut in range(len(data)):
        with pytest.raises(InvalidInputError):
            tensor_from_canonical_bytes(data[:cut])


@given(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
def test_streamed_digest_equals_digest_of_canonical_bytes(arr: np.ndarray) -> None:  # type: ignore[type-arg]
    assert digest_tensor(arr) == digest_bytes(canonical_tensor_bytes(arr))
    if arr.ndim:
        view = arr[::-1]  # a strided view hashes like its contiguous copy
        assert digest_tensor(view) == digest_bytes(canonical_tensor_bytes(view.copy()))


@pytest.mark.parametrize(
    "bad",
    [b'{"a":1,"a":2}', b'{"a": 1}', b'{"b":1,"a":2}', b'{"a":1.50}', b'{"a":"\\u00e9"}', b"-0"],
)
def test_parse_canonical_json_refuses_variants(bad: bytes) -> None:
    from edgetrust.encoding import JCS_RULE, parse_canonical_json
    from edgetrust.errors import ProfileError

    with pytest.raises(ProfileError) as info:
        parse_canonical_json(bad)
    assert info.value.rule == JCS_RULE


def test_parse_canonical_json_names_duplicate_key() -> None:
    from edgetrust.encoding import parse_canonical_json
    from edgetrust.errors import ProfileError

    with pytest.raises(ProfileError, match="duplicate key 'predicate'"):
        parse_canonical_json(b'{"predicate":1,"predicate":2}')


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
        max_leaves=12,
    )
)
def test_parse_canonical_json_accepts_rfc8785_output(value: object) -> None:
    from edgetrust.encoding import canonical_json, parse_canonical_json

    try:
        data = canonical_json(value)
    except InvalidInputError:
        return
    assert parse_canonical_json(data) == value
