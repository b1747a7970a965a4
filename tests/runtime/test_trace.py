"""Trace and weight commitments: two-level RFC 9162 trees, element proofs, tamper detection."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.encoding import canonical_json
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.log.merkle import inclusion_proof, leaf_hash, root_from_leaves
from edgetrust.runtime.fixed import FixedExecutor
from edgetrust.runtime.trace import (
    CHUNK_BYTES,
    ChunkOpening,
    ElementProof,
    LeafOpening,
    MerkleLevels,
    TensorCommitment,
    parse_entry_leaf,
    split,
)


def _naive_tensor_root(values: np.ndarray) -> bytes:
    data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    leaves = [leaf_hash(data[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES)]
    return root_from_leaves(leaves)


def test_trace_root_is_the_two_level_rfc9162_tree(
    digits_int8: FixedExecutor, digits: dict[str, Any]
) -> None:
    _, trace = digits_int8.run_traced({"input": digits["x_test"][:40]})
    leaves = []
    for v in trace.values:
        leaves.append(
            canonical_json(
                {"dtype": v.dtype.name, "shape": list(v.shape), "root": _naive_tensor_root(v).hex()}
            )
        )
    assert trace.leaf_bytes == leaves
    assert trace.root == root_from_leaves([leaf_hash(d) for d in leaves])
    assert trace.root_digest == "sha256:" + trace.root.hex()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 31, 64, 100])
def test_levels_give_rfc9162_subtrees_and_paths(n: int) -> None:
    hashes = [os.urandom(32) for _ in range(n)]
    tree = MerkleLevels(hashes)
    assert tree.root == root_from_leaves(hashes)
    for i in range(n):
        assert tree.path(i) == inclusion_proof(i, hashes)

    def walk(lo: int, hi: int) -> None:
        assert tree.subtree(lo, hi) == root_from_leaves(hashes[lo:hi])
        if hi - lo > 1:
            k = split(lo, hi)
            walk(lo, k)
            walk(k, hi)

    walk(0, n)
    if n > 2:
        with pytest.raises(InvalidInputError):
            tree.subtree(1, n)


def test_every_element_is_proven_by_two_paths(
    digits_int8: FixedExecutor, digits: dict[str, Any]
) -> None:
    _, trace = digits_int8.run_traced({"input": digits["x_test"][:40]})
    rng = np.random.default_rng(0)
    for k in range(trace.size):
        flat = trace.values[k].reshape(-1)
        for j in set(rng.integers(0, flat.size, 20).tolist()) | {0, flat.size - 1}:
            proof = trace.prove(k, j)
            assert proof.verify(trace.root, trace.size, j) == int(flat[j])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["leaf", "chunk", "leafpath", "chunkpath", "index"]))
def test_any_tampering_is_detected(seed: int, where: str) -> None:
    rng = np.random.default_rng(seed)
    values = [
        rng.integers(-127, 128, size=int(rng.integers(1, 3000))).astype(np.int8) for _ in range(5)
    ]
    from edgetrust.runtime.fixed import Entry
    from edgetrust.runtime.trace import Trace

    trace = Trace([Entry(f"#{i}", f"t{i}", i, "q") for i in range(5)], values)
    k = int(rng.integers(0, 5))
    j = int(rng.integers(0, values[k].size))
    p = trace.prove(k, j)
    leaf, chunk = p.leaf, p.chunk
    if where == "leaf":
        d = bytearray(leaf.data)
        d[int(rng.integers(0, len(d)))] ^= 1
        p = ElementProof(LeafOpening(leaf.index, bytes(d), leaf.path), chunk)
    elif where == "chunk":
        d = bytearray(chunk.data)
        d[int(rng.integers(0, len(d)))] ^= 1 << int(rng.integers(0, 8))
        p = ElementProof(leaf, ChunkOpening(chunk.index, bytes(d), chunk.path))
    elif where == "leafpath" and leaf.path:
        path = list(leaf.path)
        path[0] = bytes(32)
        p = ElementProof(LeafOpening(leaf.index, leaf.data, tuple(path)), chunk)
    elif where == "chunkpath" and chunk.path:
        path = list(chunk.path)
        path[-1] = os.urandom(32)
        p = ElementProof(leaf, ChunkOpening(chunk.index, chunk.data, tuple(path)))
    else:
        p = ElementProof(LeafOpening((leaf.index + 1) % 5, leaf.data, leaf.path), chunk)
    with pytest.raises((VerificationError, InvalidInputError)):
        p.verify(trace.root, trace.size, j)


def test_proof_for_another_element_is_refused() -> None:
    from edgetrust.runtime.fixed import Entry
    from edgetrust.runtime.trace import Trace

    values = [np.arange(3000, dtype=np.int16)]
    trace = Trace([Entry("#0", "t", 0, "q")], values)
    proof = trace.prove(0, 10)
    assert proof.verify(trace.root, 1, 10) == 10
    with pytest.raises(VerificationError, match="not in chunk"):
        proof.verify(trace.root, 1, 2000)
    with pytest.raises(VerificationError, match="outside"):
        proof.verify(trace.root, 1, 5000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"dtype":"float32","root":"' + b"0" * 64 + b'","shape":[1]}',
        b'{"dtype":"int8","root":"' + b"0" * 63 + b'","shape":[1]}',
        b'{"dtype":"int8","root":"' + b"z" * 64 + b'","shape":[1]}',
        b'{"dtype":"int8","root":"' + b"0" * 64 + b'","shape":[-1]}',
        b'{"dtype":"int8","root":"' + b"0" * 64 + b'","shape":[true]}',
        b'{"dtype":"int8","root":"' + b"0" * 64 + b'","shape":[1099511627776,1099511627776]}',
        b'{"shape":[1],"dtype":"int8","root":"' + b"0" * 64 + b'"}',
        b"{" * 5000,
    ],
)
def test_malformed_entry_leaves_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_entry_leaf(data)


def test_weight_commitments_cover_every_param(digits_int8: FixedExecutor) -> None:
    w = digits_int8.weight_commitments()
    assert w is digits_int8.weight_commitments()  # computed once
    assert (0, "w") in w.index and (0, "mult") in w.index
    i = w.index[(0, "w")]
    leaf = parse_entry_leaf(w.leaf_bytes[i])
    assert leaf.extra == {"node": 0, "param": "w"}
    assert leaf.dtype == "int8"
    wq = digits_int8.params(0)["w"]
    assert leaf.shape == wq.shape
    proof = w.prove(i, 5)
    assert proof.verify(w.root, w.size, 5) == int(wq.reshape(-1)[5])
    assert TensorCommitment.of(wq.astype(np.int8)).root == leaf.root
