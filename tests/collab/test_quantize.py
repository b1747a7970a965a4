from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgetrust.collab.quantize import Quantizer, mod_mask
from edgetrust.errors import InvalidInputError


@settings(max_examples=50, deadline=None)
@given(
    bits=st.integers(8, 32),
    n=st.integers(1, 50),
    bound=st.floats(0.01, 100),
    data=st.data(),
)
def test_roundtrip_error_below_one_step(
    bits: int, n: int, bound: float, data: st.DataObject
) -> None:
    try:
        q = Quantizer(bound=bound, modulus_bits=bits, max_summands=n)
    except InvalidInputError:
        assume_levels = ((1 << bits) - 1) // n
        assert assume_levels < 1
        return
    x = data.draw(
        hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-2 * bound, 2 * bound))
    )
    rng = np.random.default_rng(0)
    back = q.dequantize(q.quantize(x, rng))
    assert np.all(np.abs(back - np.clip(x, -bound, bound)) <= q.step * (1 + 1e-9))


def test_sum_of_extremes_never_wraps() -> None:
    q = Quantizer(bound=1.0, modulus_bits=16, max_summands=7)
    rng = np.random.default_rng(1)
    vecs = [q.quantize(np.full(5, 1.0), rng) for _ in range(7)]
    total = np.zeros(5, np.uint32)
    for v in vecs:
        total = (total + v) & mod_mask(16)
    assert np.allclose(q.dequantize_sum(total, 7), 7.0)
    lows = [q.quantize(np.full(5, -3.0), rng) for _ in range(7)]
    assert np.allclose(q.dequantize_sum(sum(lows), 7), -7.0)


def test_stochastic_rounding_is_unbiased() -> None:
    q = Quantizer(bound=1.0, modulus_bits=8, max_summands=1)  # coarse: step ≈ 0.0078
    x = np.full(200_000, 0.123456)
    back = q.dequantize(q.quantize(x, np.random.default_rng(2)))
    # Mean error shrinks as step/sqrt(n); deterministic rounding would be off by a fixed bias.
    assert abs(back.mean() - 0.123456) < 5 * q.step / np.sqrt(x.size)
    assert np.max(np.abs(back - x)) < q.step


def test_sum_error_std_within_documented_bound() -> None:
    m = 50
    q = Quantizer(bound=1.0, modulus_bits=16, max_summands=m)
    rng = np.random.default_rng(3)
    xs = rng.uniform(-1, 1, size=(m, 20_000))
    total = sum(q.quantize(x, rng).astype(np.uint64) for x in xs)
    err = q.dequantize_sum(total.astype(np.uint32), m) - xs.sum(axis=0)
    assert np.max(np.abs(err)) < m * q.step
    assert err.std() <= np.sqrt(m) * q.step / 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bound": 0.0, "modulus_bits": 32, "max_summands": 1}, "`bound`"),
        ({"bound": float("nan"), "modulus_bits": 32, "max_summands": 1}, "`bound`"),
        ({"bound": 1.0, "modulus_bits": 7, "max_summands": 1}, "`modulus_bits`"),
        ({"bound": 1.0, "modulus_bits": 33, "max_summands": 1}, "`modulus_bits`"),
        ({"bound": 1.0, "modulus_bits": 32, "max_summands": 0}, "`max_summands`"),
        ({"bound": 1.0, "modulus_bits": 8, "max_summands": 300}, "`modulus_bits`=8"),
    ],
)
def test_validation_names_parameter(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        Quantizer(**kwargs)  # type: ignore[arg-type]


def test_bad_vectors() -> None:
    q = Quantizer(bound=1.0, modulus_bits=32, max_summands=4)
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="NaN"):
        q.quantize(np.array([np.nan]), rng)
    with pytest.raises(InvalidInputError, match="flat"):
        q.quantize(np.zeros((2, 2)), rng)
    with pytest.raises(InvalidInputError, match="count"):
        q.dequantize_sum(np.zeros(2, np.uint32), 5)
    with pytest.raises(InvalidInputError, match="out of range"):
        q.dequantize_sum(np.full(2, 2**32 - 1, np.uint32), 1)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Quantizer(1.0, 32, 4)  # type: ignore[misc]
