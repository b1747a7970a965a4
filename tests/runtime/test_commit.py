"""Tensor commitments: the fast hashing path equals a plain hashlib reference, bit for bit."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.log.merkle import EMPTY_ROOT
from edgetrust.runtime._commit import LAYOUT_V1, LAYOUT_V2, MerkleLevels, TensorCommitment
from edgetrust.runtime.trace import TraceLayout

DTYPES = ("int8", "int16", "int32", "int64")


def _ref_bytes(values: np.ndarray, layout: TraceLayout) -> bytes:
    """Canonical bytes spelled out: C order, the layout's byte order, v2 zero-padded."""
    order = "little" if layout.byteorder == "<" else "big"
    size = values.dtype.itemsize
    data = b"".join(int(v).to_bytes(size, order, signed=True) for v in values.reshape(-1))
    if layout.padded:
        data += bytes(-len(data) % layout.chunk_bytes)
    return data


def _ref_leaf_hashes(values: np.ndarray, layout: TraceLayout) -> list[bytes]:
    data, step = _ref_bytes(values, layout), layout.chunk_bytes
    return [
        hashlib.sha256(b"\x00" + data[i : i + step]).digest() for i in range(0, len(data), step)
    ]


def _ref_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Pairwise interior levels, an unpaired last node promoted (RFC 9162 §2.1.1)."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
    return levels


def _ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH by its recursive definition."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _ref_mth(leaves[:k]) + _ref_mth(leaves[k:])).digest()


@st.composite
def _tensors(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    per = 256 // dtype.itemsize  # elements per v2 chunk; v1 chunks hold four times as many
    count = draw(
        st.one_of(
            st.sampled_from([0, 1, per - 1, per, per + 1, 4 * per, 4 * per + 1, 7 * per]),
            st.integers(0, 37 * per),
        )
    )
    info = np.iinfo(dtype)
    seed = draw(st.integers(0, 2**32 - 1))
    flat = np.random.default_rng(seed).integers(
        info.min, info.max, count, dtype=dtype, endpoint=True
    )
    form = draw(st.sampled_from(["flat", "matrix", "strided", "swapped"]))
    if form == "matrix" and count % 3 == 0:
        return flat.reshape(3, -1)
    if form == "strided":  # a non-contiguous view: every other element of a doubled array
        return np.repeat(flat, 2)[::2]
    if form == "swapped":  # the same values held in the opposite byte order
        return flat.astype(flat.dtype.newbyteorder("S"))
    return flat


@settings(max_examples=150, deadline=None)
@given(values=_tensors(), layout=st.sampled_from([LAYOUT_V1, LAYOUT_V2]))
def test_tensor_hashes_equal_the_hashlib_reference(values: np.ndarray, layout: TraceLayout) -> None:
    leaves = _ref_leaf_hashes(values, layout)
    assert layout.tensor_hashes(values) == leaves
    assert layout.chunk_hashes(layout.encode(values)) == leaves
    assert layout.encode(values) == _ref_bytes(values, layout)
    c = TensorCommitment.of(values, layout)
    assert c.levels.levels == _ref_levels(leaves)
    assert c.root == _ref_mth(leaves)
    assert c.dtype == values.dtype.name and c.shape == values.shape


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_merkle_levels_equal_the_rfc_recursion(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    leaves = [rng.bytes(32) for _ in range(n)]
    tree = MerkleLevels(leaves)
    assert tree.levels == _ref_levels(leaves)
    assert tree.root == _ref_mth(leaves)
    assert tree.size == n
