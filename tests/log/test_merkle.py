"""RFC 9162 Merkle functions against published vectors and an independent implementation."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.log import merkle
from edgetrust.log.merkle import (
    EMPTY_ROOT,
    complete_subtrees,
    consistency_proof,
    fold_subtrees,
    inclusion_proof,
    leaf_hash,
    merkle_root_and_paths,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

ASSETS = Path(__file__).parent.parent / "assets"
TD_VECTORS = ASSETS / "transparency-dev-merkle" / "testdata"
RFC6962 = json.loads((ASSETS / "log" / "rfc6962-vectors.json").read_text())


# --- An independent implementation: RFC 9162 §2.1 transcribed literally, recursive, slow. ---


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_tree(leaves: tuple[bytes, ...]):  # type: ignore[no-untyped-def]
    """MTH, PATH and PROOF exactly as RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 define them."""

    @cache
    def mth(a: int, b: int) -> bytes:
        n = b - a
        if n == 0:
            return _h(b"")
        if n == 1:
            return leaves[a]  # leaves are already leaf hashes
        k = _split(n)
        return _h(b"\x01" + mth(a, a + k) + mth(a + k, b))

    def path(m: int, a: int, b: int) -> list[bytes]:
        n = b - a
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, a, a + k), mth(a + k, b)]
        return [*path(m - k, a + k, b), mth(a, a + k)]

    def subproof(m: int, a: int, b: int, whole: bool) -> list[bytes]:
        n = b - a
        if m == n:
            return [] if whole else [mth(a, b)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, a, a + k, whole), mth(a + k, b)]
        return [*subproof(m - k, a + k, b, False), mth(a, a + k)]

    return mth, path, subproof


def naive_verify_inclusion(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> bool:
    """Rebuild the root by undoing PATH's recursion: the last proof hash is the top sibling."""
    if not 0 <= index < size or len(leaf) != 32 or any(len(p) != 32 for p in proof):
        return False

    def up(m: int, n: int, rest: list[bytes]) -> bytes | None:
        if n == 1:
            return leaf if not rest else None
        if not rest:
            return None
        *inner, sibling = rest
        k = _split(n)
        if m < k:
            below = up(m, k, inner)
            return None if below is None else _h(b"\x01" + below + sibling)
        below = up(m - k, n - k, inner)
        return None if below is None else _h(b"\x01" + sibling + below)

    return up(index, size, list(proof)) == root


def naive_verify_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> bool:
    """Undo SUBPROOF's recursion, computing the old and new subtree hashes side by side."""
    if not 0 < size1 <= size2 or any(len(p) != 32 for p in proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    rest = list(proof)

    def rec(m: int, n: int, whole: bool) -> tuple[bytes, bytes] | None:
        if m == n:
            if whole:
                return root1, root1
            if not rest:
                return None
            h = rest.pop()
            return h, h
        if not rest:
            return None
        k = _split(n)
        sibling = rest.pop()
        if m <= k:
            sub = rec(m, k, whole)
            if sub is None:
                return None
            return sub[0], _h(b"\x01" + sub[1] + sibling)
        sub = rec(m - k, n - k, False)
        if sub is None:
            return None
        return _h(b"\x01" + sibling + sub[0]), _h(b"\x01" + sibling + sub[1])

    got = rec(size1, size2, True)
    return got is not None and not rest and got == (root1, root2)


def _leaves(n: int, salt: int = 0) -> tuple[bytes, ...]:
    return tuple(leaf_hash(f"{salt}:{i}".encode()) for i in range(n))


# --- RFC 6962 reference vectors ---


def test_empty_tree_and_hash_prefixes() -> None:
    assert root_from_leaves([]) == EMPTY_ROOT == bytes.fromhex(RFC6962["roots"][0])
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_rfc6962_roots_for_every_size() -> None:
    leaves = [leaf_hash(bytes.fromhex(d)) for d in RFC6962["leaves"]]
    for size, want in enumerate(RFC6962["roots"]):
        assert root_from_leaves(leaves[:size]).hex() == want, size


def test_rfc6962_complete_subtree_hashes() -> None:
    leaves = [leaf_hash(bytes.fromhex(d)) for d in RFC6962["leaves"]]
    for level, hashes in enumerate(RFC6962["node_hashes"]):
        for index, want in enumerate(hashes):
            width = 1 << level
            assert root_from_leaves(leaves[index * width : (index + 1) * width]).hex() == want


def test_rfc6962_published_proofs() -> None:
    leaves = [leaf_hash(bytes.fromhex(d)) for d in RFC6962["leaves"]]
    roots = [bytes.fromhex(r) for r in RFC6962["roots"]]
    for v in RFC6962["inclusion"]:
        proof = [bytes.fromhex(p) for p in v["proof"]]
        assert inclusion_proof(v["index"], leaves[: v["size"]]) == proof
        verify_inclusion(leaves[v["index"]], v["index"], v["size"], proof, roots[v["size"]])
    for v in RFC6962["consistency"]:
        proof = [bytes.fromhex(p) for p in v["proof"]]
        assert consistency_proof(v["size1"], leaves[: v["size2"]]) == proof
        verify_consistency(v["size1"], v["size2"], proof, roots[v["size1"]], roots[v["size2"]])


# --- transparency-dev conformance vectors ---


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v or "")


def _vector_files(kind: str) -> list[Path]:
    files = sorted((TD_VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors found under {TD_VECTORS}"
    return files


@pytest.mark.parametrize(
    "path", _vector_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_transparency_dev_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in v["proof"] or []]
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "path", _vector_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_transparency_dev_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vector_counts_cover_both_outcomes() -> None:
    # A vector runner that silently read nothing would pass every case above.
    outcomes = {
        json.loads(p.read_text())["wantErr"]
        for kind in ("inclusion", "consistency")
        for p in _vector_files(kind)
    }
    assert outcomes == {True, False}
    assert len(_vector_files("inclusion")) + len(_vector_files("consistency")) > 150


# --- cross-check against the naive implementation: every 0 < m <= n <= 128 ---


def test_cross_check_all_sizes_up_to_128() -> None:
    all_leaves = _leaves(128)
    for n in range(1, 129):
        leaves = all_leaves[:n]
        mth, path, subproof = naive_tree(leaves)
        root = root_from_leaves(leaves)
        assert root == mth(0, n)
        fast_root, paths = merkle_root_and_paths(leaves)
        assert fast_root == root
        for i in range(n):
            want = path(i, 0, n)
            assert inclusion_proof(i, leaves) == want == paths[i], (i, n)
            verify_inclusion(leaves[i], i, n, want, root)
        for m in range(1, n + 1):
            want = subproof(m, 0, n, True)
            assert consistency_proof(m, leaves) == want, (m, n)
            verify_consistency(m, n, want, mth(0, m), root)
            assert naive_verify_consistency(m, n, want, mth(0, m), root)


def test_complete_subtrees_fold_to_the_range_root() -> None:
    leaves = _leaves(100)
    for start, end in [(0, 1), (0, 100), (64, 100), (96, 100), (0, 37), (32, 37), (99, 100)]:
        parts = complete_subtrees(start, end)
        hashes = [root_from_leaves(leaves[i << lv : (i + 1) << lv]) for lv, i in parts]
        assert fold_subtrees(hashes) == root_from_leaves(leaves[start:end])
    with pytest.raises(InvalidInputError):
        complete_subtrees(3, 7)  # not a node of any RFC 9162 tree
    with pytest.raises(InvalidInputError):
        complete_subtrees(5, 5)


def test_invalid_arguments_to_proof_builders() -> None:
    leaves = _leaves(5)
    for index in (-1, 5, 6):
        with pytest.raises(InvalidInputError):
            inclusion_proof(index, leaves)
    with pytest.raises(InvalidInputError):
        inclusion_proof(0, [])
    with pytest.raises(InvalidInputError):
        consistency_proof(6, leaves)
    with pytest.raises(InvalidInputError):
        consistency_proof(-1, leaves)
    with pytest.raises(InvalidInputError):
        inclusion_proof(0, [b"short"])
    assert consistency_proof(0, leaves) == []
    assert consistency_proof(5, leaves) == []


def test_verifiers_reject_bad_types_and_ranges() -> None:
    leaves = _leaves(4)
    root = root_from_leaves(leaves)
    proof = inclusion_proof(1, leaves)
    for index, size in [(-1, 4), (4, 4), (1, 0), (1, -3)]:
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[1], index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaves[1], 1, 4, [*proof[:-1], proof[-1][:31]], root)
    with pytest.raises(VerificationError):
        verify_consistency(3, 2, [], root, root)
    with pytest.raises(VerificationError):
        verify_consistency(0, 4, [], EMPTY_ROOT, root)


def test_merkle_root_and_paths_edge_sizes() -> None:
    assert merkle_root_and_paths([]) == (EMPTY_ROOT, [])
    one = _leaves(1)
    assert merkle_root_and_paths(one) == (one[0], [[]])
    for n in (2, 3, 255, 256, 257, 1000):
        leaves = _leaves(n, salt=n)
        root, paths = merkle_root_and_paths(leaves)
        assert root == root_from_leaves(leaves)
        for i in {0, n // 3, n - 2, n - 1}:
            assert paths[i] == inclusion_proof(i, leaves)
        # Paths are independent lists: mutating one must not change another.
        paths[-1].append(b"x" * 32)
        assert paths[0] == inclusion_proof(0, leaves)


# --- hypothesis: random trees, proofs verify, tampering is rejected ---

sizes = st.integers(min_value=1, max_value=300)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[tuple[bytes, ...], int]:
    n = draw(sizes)
    return _leaves(n, salt=draw(st.integers(0, 10**6))), draw(st.integers(0, n - 1))


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(tree_and_index(), st.integers(0, 255), st.data())
def test_inclusion_proofs_verify_and_any_hash_bit_flip_is_rejected(
    tree: tuple[tuple[bytes, ...], int], bit: int, data: st.DataObject
) -> None:
    leaves, index = tree
    n = len(leaves)
    root = root_from_leaves(leaves)
    proof = inclusion_proof(index, leaves)
    verify_inclusion(leaves[index], index, n, proof, root)
    assert root_from_inclusion_proof(leaves[index], index, n, proof) == root

    target = data.draw(st.sampled_from(["leaf", "root", *(["proof"] if proof else [])]))
    leaf, bad_root, bad_proof = leaves[index], root, list(proof)
    if target == "leaf":
        leaf = _flip(leaf, bit)
    elif target == "root":
        bad_root = _flip(root, bit)
    else:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad_proof[k] = _flip(bad_proof[k], bit)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, n, bad_proof, bad_root)


@settings(max_examples=300, deadline=None)
@given(tree_and_index(), st.sampled_from(["index", "size"]), st.integers(0, 12))
def test_inclusion_with_a_flipped_index_or_size_agrees_with_the_naive_verifier(
    tree: tuple[tuple[bytes, ...], int], what: str, bit: int
) -> None:
    # A flipped size can verify when both sizes give the path the same shape: RFC 6962 proofs
    # bind the size only through the signed checkpoint. So the property is agreement with the
    # independent verifier, which undoes the RFC's recursion rather than its bit arithmetic.
    leaves, index = tree
    n = len(leaves)
    root = root_from_leaves(leaves)
    proof = inclusion_proof(index, leaves)
    i2, n2 = (index ^ (1 << bit), n) if what == "index" else (index, n ^ (1 << bit))
    naive = naive_verify_inclusion(leaves[index], i2, n2, proof, root)
    if what == "index":
        assert not naive  # the index alone is always bound by the path's shape
    try:
        verify_inclusion(leaves[index], i2, n2, proof, root)
    except VerificationError:
        assert not naive
    else:
        assert naive


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[tuple[bytes, ...], int]:
    n = draw(sizes)
    return _leaves(n, salt=draw(st.integers(0, 10**6))), draw(st.integers(1, n))


@settings(max_examples=200, deadline=None)
@given(two_sizes(), st.integers(0, 255), st.data())
def test_consistency_proofs_verify_and_any_hash_bit_flip_is_rejected(
    tree: tuple[tuple[bytes, ...], int], bit: int, data: st.DataObject
) -> None:
    leaves, m = tree
    n = len(leaves)
    root1, root2 = root_from_leaves(leaves[:m]), root_from_leaves(leaves)
    proof = consistency_proof(m, leaves)
    verify_consistency(m, n, proof, root1, root2)
    assert naive_verify_consistency(m, n, proof, root1, root2)

    target = data.draw(st.sampled_from(["root1", "root2", *(["proof"] if proof else [])]))
    r1, r2, bad_proof = root1, root2, list(proof)
    if target == "root1":
        r1 = _flip(r1, bit)
    elif target == "root2":
        r2 = _flip(r2, bit)
    else:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad_proof[k] = _flip(bad_proof[k], bit)
    with pytest.raises(VerificationError):
        verify_consistency(m, n, bad_proof, r1, r2)


@settings(max_examples=300, deadline=None)
@given(two_sizes(), st.sampled_from(["size1", "size2"]), st.integers(0, 12))
def test_consistency_with_a_flipped_size_agrees_with_the_naive_verifier(
    tree: tuple[tuple[bytes, ...], int], what: str, bit: int
) -> None:
    leaves, m = tree
    n = len(leaves)
    assume(m < n)
    root1, root2 = root_from_leaves(leaves[:m]), root_from_leaves(leaves)
    proof = consistency_proof(m, leaves)
    m2, n2 = (m ^ (1 << bit), n) if what == "size1" else (m, n ^ (1 << bit))
    naive = naive_verify_consistency(m2, n2, proof, root1, root2)
    try:
        verify_consistency(m2, n2, proof, root1, root2)
    except VerificationError:
        assert not naive
    else:
        assert naive


@settings(max_examples=100, deadline=None)
@given(tree_and_index(), st.data())
def test_truncated_extended_or_reordered_proofs_are_rejected(
    tree: tuple[tuple[bytes, ...], int], data: st.DataObject
) -> None:
    leaves, index = tree
    n = len(leaves)
    root = root_from_leaves(leaves)
    proof = inclusion_proof(index, leaves)
    variants = [[*proof, root], [root, *proof], [*proof, b""]]
    if proof:
        variants += [proof[:-1], proof[1:]]
    if len(proof) > 1 and proof[0] != proof[-1]:
        variants.append(list(reversed(proof)))
    bad = data.draw(st.sampled_from(variants))
    with pytest.raises(VerificationError):
        verify_inclusion(leaves[index], index, n, bad, root)


def test_module_exports_are_sorted() -> None:
    names = merkle.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
