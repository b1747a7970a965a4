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
    LAYOUT_V1,
    LAYOUT_V2,
    ChunkOpening,
    ElementProof,
    LeafOpening,
    MerkleLevels,
    TensorCommitment,
    TraceLayout,
    parse_entry_leaf,
    split,
)

V2_CHUNK = 256


def _naive_tensor_root(values: np.ndarray) -> bytes:
    data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    leaves = [leaf_hash(data[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES)]
    return root_from_leaves(leaves)


def _naive_v2_tensor_root(values: np.ndarray) -> bytes:
    data = values.astype(values.dtype.newbyteorder(">")).tobytes()
    data += bytes(-len(data) % V2_CHUNK)
    leaves = [leaf_hash(data[i : i + V2_CHUNK]) for i in range(0, len(data), V2_CHUNK)]
    return root_from_leaves(leaves)


def _naive_v2_leaf(values: np.ndarray) -> bytes:
    head = bytes([2, values.dtype.itemsize, values.ndim, 0])
    head += b"".join(int(d).to_bytes(4, "big") for d in values.shape).ljust(28, b"\0")
    return head + int(values.size).to_bytes(32, "big") + _naive_v2_tensor_root(values)


def test_trace_root_is_the_two_level_rfc9162_tree_v2(
    digits_int8: FixedExecutor, digits: dict[str, Any]
) -> None:
    _, trace = digits_int8.run_traced({"input": digits["x_test"][:40]})
    assert trace.layout is LAYOUT_V2 and digits_int8.version == "2"
    leaves = [_naive_v2_leaf(v) for v in trace.values]
    assert all(len(d) == 96 for d in leaves)
    assert trace.leaf_bytes == leaves
    assert trace.root == root_from_leaves([leaf_hash(d) for d in leaves])
    assert trace.root_digest == "sha256:" + trace.root.hex()


def test_trace_root_is_the_two_level_rfc9162_tree(
    digits_int8: FixedExecutor, digits: dict[str, Any]
) -> None:
    # Layout v1 (executor version 1 receipts) is unchanged.
    v1 = FixedExecutor(
        digits["onnx"], precision="int8", plan=digits_int8.plan, trace_layout=LAYOUT_V1
    )
    assert v1.version == "1"
    _, trace = v1.run_traced({"input": digits["x_test"][:40]})
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
@given(
    st.integers(0, 10_000),
    st.sampled_from(["leaf", "chunk", "leafpath", "chunkpath", "index"]),
    st.sampled_from([LAYOUT_V1, LAYOUT_V2]),
)
def test_any_tampering_is_detected(seed: int, where: str, layout: TraceLayout) -> None:
    rng = np.random.default_rng(seed)
    values = [
        rng.integers(-127, 128, size=int(rng.integers(1, 3000))).astype(np.int8) for _ in range(5)
    ]
    from edgetrust.runtime.fixed import Entry
    from edgetrust.runtime.trace import Trace

    trace = Trace([Entry(f"#{i}", f"t{i}", i, "q") for i in range(5)], values, layout)
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


@pytest.mark.parametrize("layout", [LAYOUT_V1, LAYOUT_V2])
def test_proof_for_another_element_is_refused(layout: TraceLayout) -> None:
    from edgetrust.runtime.fixed import Entry
    from edgetrust.runtime.trace import Trace

    values = [np.arange(3000, dtype=np.int16)]
    trace = Trace([Entry("#0", "t", 0, "q")], values, layout)
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


_GOOD_V2 = _naive_v2_leaf(np.zeros((2, 3), np.int8))


@pytest.mark.parametrize(
    "data",
    [
        _GOOD_V2[:95],
        _GOOD_V2 + b"\0",
        _GOOD_V2[:1] + b"\x03" + _GOOD_V2[2:],  # item size 3
        _GOOD_V2[:2] + b"\x08" + _GOOD_V2[3:],  # rank 8
        _GOOD_V2[:3] + b"\x01" + _GOOD_V2[4:],  # reserved byte
        _GOOD_V2[:31] + b"\x01" + _GOOD_V2[32:],  # a dim past the rank
        _GOOD_V2[:63] + b"\x07" + _GOOD_V2[64:],  # count differs from the shape
        _GOOD_V2 + bytes(32) + bytes(32),  # param leaf without a name
        _GOOD_V2 + bytes(32) + b"w\0x".ljust(32, b"\0"),  # NUL inside the name
    ],
)
def test_malformed_v2_entry_leaves_are_refused(data: bytes) -> None:
    assert parse_entry_leaf(_GOOD_V2).shape == (2, 3)
    with pytest.raises(InvalidInputError):
        parse_entry_leaf(data)


def test_v2_chunks_are_fixed_size_and_zero_padded() -> None:
    from edgetrust.runtime.fixed import Entry
    from edgetrust.runtime.trace import Trace

    trace = Trace([Entry("#0", "t", 0, "q")], [np.arange(300, dtype=np.int16)])
    last = trace.open_chunk(0, 2)
    assert len(last.data) == V2_CHUNK and last.data[88:] == bytes(V2_CHUNK - 88)
    leaf = parse_entry_leaf(trace.leaf_bytes[0])
    last.verify(leaf)
    padded = ChunkOpening(2, last.data[:-1] + b"\x01", last.path)
    with pytest.raises(VerificationError):
        padded.verify(leaf)
    short = ChunkOpening(2, last.data[:88], last.path)
    with pytest.raises(VerificationError, match="bytes"):
        short.verify(leaf)


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
    assert TensorCommitment.of(wq.astype(np.int8), LAYOUT_V2).root == leaf.root
    assert len(w.leaf_bytes[i]) == 160 and w.leaf_bytes[i][128:129] == b"w"


_NEWER_OPS: list[tuple[str, list[list[int]], dict[int, np.ndarray], dict[str, Any]]] = [
    ("LRN", [[1, 4, 3, 3]], {}, {"size": 3}),
    ("HardSwish", [[2, 5]], {}, {}),
    ("HardSigmoid", [[2, 5]], {}, {}),
    ("LeakyRelu", [[2, 5]], {}, {"alpha": 0.1}),
    ("PRelu", [[2, 5]], {1: np.full(5, 0.2, np.float32)}, {}),
    ("MaxPool", [[1, 2, 4, 4]], {}, {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", [[1, 2, 4, 4]], {}, {"kernel_shape": [2, 2]}),
    ("GlobalMaxPool", [[1, 2, 4, 4]], {}, {}),
    ("ReduceMax", [[2, 3, 4]], {1: np.array([1], np.int64)}, {"keepdims": 0}),
    ("ReduceMin", [[2, 3, 4]], {1: np.array([2], np.int64)}, {}),
    ("Abs", [[3, 4]], {}, {}),
    ("Neg", [[3, 4]], {}, {}),
    ("Max", [[3, 4], [3, 4]], {}, {}),
    ("Where", [[3, 4], [3, 4]], {0: np.array([True, False, True, False])}, {}),
    ("Tile", [[2, 3]], {1: np.array([2, 1], np.int64)}, {}),
    ("Pad", [[2, 3]], {1: np.array([0, 1, 0, 1], np.int64)}, {}),
    ("LpNormalization", [[2, 6]], {}, {"axis": -1, "p": 2}),
]


@pytest.mark.parametrize("case", _NEWER_OPS, ids=[c[0] for c in _NEWER_OPS])
def test_newer_ops_commit_in_layout_v2(
    case: tuple[str, list[list[int]], dict[int, np.ndarray], dict[str, Any]],
) -> None:
    """Ops added after layout v2 trace through the same commitment: fixed-size v2 leaves."""
    from tests.runtime import graphs

    op, shapes, consts, attrs = case
    model = graphs.single_op(op, shapes, consts=consts, **attrs).SerializeToString()
    rng = np.random.default_rng(0)
    x = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    ex = FixedExecutor(model, precision="int8", calibration=[x])
    _, trace = ex.run_traced(x)
    assert trace.layout is LAYOUT_V2 and ex.descriptor()["settings"]["trace"] == LAYOUT_V2.type
    assert trace.leaf_bytes == [_naive_v2_leaf(v) for v in trace.values]
    assert all(len(p) == 160 for p in ex.weight_commitments().leaf_bytes)
    for k in range(trace.size):
        for element in {0, trace.values[k].size - 1}:
            proof = trace.prove(k, element)
            assert proof.verify(trace.root, trace.size, element) == int(
                trace.values[k].reshape(-1)[element]
            )
