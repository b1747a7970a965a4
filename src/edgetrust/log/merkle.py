"""RFC 9162 Merkle trees: hashing, audit paths, consistency proofs and their verification.

Pure functions over leaf hashes, written to be read beside RFC 9162 §2 ("Cryptographic
Components"). Trees are the RFC 6962/9162 shape: a tree of ``n`` leaves splits at the largest
power of two smaller than ``n`` (§2.1.1), which is *not* the midpoint, and is equivalent to
building level by level and promoting an unpaired last node unchanged.

Proofs are described first as lists of leaf ranges ``[start, end)`` (`inclusion_proof_ranges`,
`consistency_proof_ranges`): the shape of a proof depends only on the sizes, so a store can
fetch exactly the subtree hashes it needs, and the functions here fill them from a list of leaf
hashes. Verification follows the RFC's bit-twiddling algorithms (§2.1.3.2, §2.1.4.2) and raises
`VerificationError`; a wrong proof never returns quietly.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
from collections.abc import Sequence

from edgetrust.errors import InvalidInputError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "complete_subtrees",
    "consistency_proof",
    "consistency_proof_ranges",
    "fold_subtrees",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "largest_power_of_two_below",
    "leaf_hash",
    "merkle_root_and_paths",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 hash, the only hash RFC 9162 logs here use."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() — the root of the empty tree (RFC 9162 §2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0)) — the hash of one leaf (RFC 9162 §2.1.1).

    The 0x00 prefix (0x01 for interior nodes) is the second-preimage defence: a leaf can never
    be mistaken for an interior node.
    """
    return _sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])) — an interior node (RFC 9162 §2.1.1)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The split point k of a tree of n > 1 leaves: the largest power of two k < n (§2.1.1)."""
    if n < 2:
        raise InvalidInputError(f"a tree of {n} leaves has no split point")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]): the root of the tree whose leaves hash to `leaf_hashes` (RFC 9162 §2.1.1).

    Computed level by level, promoting an unpaired last node, which yields the same tree as the
    RFC's recursive definition in O(n) hashes and no recursion. The empty tree's root is
    SHA-256 of the empty string.
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    prefix = _NODE_PREFIX
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [
            sha(prefix + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def complete_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split the RFC 9162 subtree over leaves ``[start, end)`` into complete subtrees.

    Every node of an RFC 9162 tree covers ``[i·2^k, min((i+1)·2^k, n))``; when that range is
    not a power of two long it is the right-fold of complete subtrees of strictly decreasing
    size, left to right. Returns their ``(level, index)`` coordinates (level 0 = leaves; the
    node at ``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)``), which is
    what a store keeps, so any proof element is at most log2(n) stored hashes.
    """
    if not 0 <= start < end:
        raise InvalidInputError(f"[{start}, {end}) is not a non-empty range of leaves")
    out = []
    pos, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        if pos & ((1 << level) - 1):
            raise InvalidInputError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
        out.append((level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    return out


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Combine the complete-subtree hashes of `complete_subtrees` (left to right) into one.

    The RFC splits at the largest power of two, so the leftmost subtree is the left child and
    everything after it the right child, recursively: a right fold.
    """
    if not hashes:
        raise InvalidInputError("no subtree hashes to fold")
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _sha256(_NODE_PREFIX + h + acc).digest()
    return acc


def _check_index_size(index: int, size: int) -> None:
    if size < 1:
        raise InvalidInputError(f"tree size must be at least 1, got {size}")
    if not 0 <= index < size:
        raise InvalidInputError(f"leaf index {index} is outside a tree of size {size}")


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form PATH(index, D[size]) (RFC 9162 §2.1.3.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) :
    MTH(D[0:k]); returned leaf-to-root, the order the proof is sent in.
    """
    _check_index_size(index, size)
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1).

    PROOF(m, D[n]) = SUBPROOF(m, D[n], true); SUBPROOF(m, D[m], true) = {}, SUBPROOF(m, D[m],
    false) = {MTH(D[m])}; for m <= k it is SUBPROOF(m, D[0:k], b) : MTH(D[k:n]), otherwise
    SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]). A proof from the empty tree, or between
    equal sizes, is empty: there is nothing to prove.
    """
    if size1 < 0 or size2 < 0:
        raise InvalidInputError(f"tree sizes must not be negative, got {size1} and {size2}")
    if size1 > size2:
        raise InvalidInputError(f"size1 ({size1}) is larger than size2 ({size2})")
    if size1 == 0 or size1 == size2:
        return []
    ranges = []
    lo, hi, m, whole = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                ranges.append((lo, hi))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise InvalidInputError(f"leaf hashes are {HASH_SIZE} bytes, got one of {len(h)}")


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `leaf_hashes` (RFC 9162 §2.1.3.1)."""
    _check_leaf_hashes(leaf_hashes)
    return [
        root_from_leaves(leaf_hashes[a:b])
        for a, b in inclusion_proof_ranges(index, len(leaf_hashes))
    ]


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The consistency proof from the first `size1` leaves to all of them (RFC 9162 §2.1.4.1)."""
    _check_leaf_hashes(leaf_hashes)
    return [
        root_from_leaves(leaf_hashes[a:b])
        for a, b in consistency_proof_ranges(size1, len(leaf_hashes))
    ]


def _check_proof_hashes(proof: Sequence[bytes], step: str) -> None:
    for i, p in enumerate(proof):
        if not isinstance(p, bytes | bytearray) or len(p) != HASH_SIZE:
            raise VerificationError(f"proof hash {i} is not {HASH_SIZE} bytes", step=step)


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Recompute the root that `proof` claims for `leaf_hash` at `index` (RFC 9162 §2.1.3.2).

    Raises:
        VerificationError: the index is outside the tree or the proof has the wrong shape (a
            proof for leaf m of a tree of size n has exactly one hash per level at which the
            path has a sibling; anything else is rejected before hashing).
    """
    step = "inclusion"
    if not isinstance(index, int) or not isinstance(size, int) or size < 1:
        raise VerificationError(f"tree size {size!r} has no leaves", step=step)
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}", step=step)
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError(f"leaf hash is {len(leaf_hash)} bytes, not 32", step=step)
    # Expected length: the levels below the point where the paths to `index` and to the last
    # leaf diverge ("inner"), plus one per set bit above it ("border"); RFC 9162 §2.1.3.2 step 4
    # rejects other lengths implicitly, we do it up front for a clear message.
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise VerificationError(
            f"inclusion proof has {len(proof)} hashes, a leaf {index} of a tree of size {size} "
            f"needs {expected}",
            step=step,
        )
    _check_proof_hashes(proof, step)
    # RFC 9162 §2.1.3.2, steps 2-5.
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is too long", step=step)
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is too short", step=step)
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root`.

    RFC 9162 §2.1.3.2. Returns None or raises.

    Raises:
        VerificationError: the proof does not lead from the leaf to `root`.
    """
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(computed, bytes(root)):
        raise VerificationError(
            f"inclusion proof for leaf {index} does not lead to the root of tree size {size}",
            step="inclusion",
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1): RFC 9162 §2.1.4.2.

    Equal sizes need an empty proof and equal roots. A proof from size 0 is refused, as in the
    transparency-dev conformance vectors: every tree extends the empty tree, so such a "proof"
    checks nothing, and a caller that holds no checkpoint yet has no consistency to verify.

    Raises:
        VerificationError: the proof is malformed or does not connect the two roots.
    """
    step = "consistency"
    if not isinstance(size1, int) or not isinstance(size2, int) or size1 < 1:
        raise VerificationError(
            f"no consistency to prove from tree size {size1!r}: size1 must be at least 1",
            step=step,
        )
    if size2 < size1:
        raise VerificationError(f"size2 ({size2}) is smaller than size1 ({size1})", step=step)
    if size1 == size2:
        if proof:
            raise VerificationError("equal tree sizes need an empty proof", step=step)
        if not hmac.compare_digest(bytes(root1), bytes(root2)):
            raise VerificationError(f"two different roots for tree size {size1}", step=step)
        return
    if not proof:
        raise VerificationError("consistency proof is empty", step=step)
    _check_proof_hashes(proof, step)
    path = list(proof)
    # Step 2: a power-of-two old tree is itself a node of the new one; the proof omits it.
    if size1 & (size1 - 1) == 0:
        path.insert(0, bytes(root1))
    # Steps 3-4.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Steps 5-6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long", step=step)
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise VerificationError("consistency proof is too short", step=step)
    if not hmac.compare_digest(fr, bytes(root1)):
        raise VerificationError(
            f"consistency proof does not match the root of size {size1}", step=step
        )
    if not hmac.compare_digest(sr, bytes(root2)):
        raise VerificationError(
            f"consistency proof does not match the root of size {size2}", step=step
        )


def merkle_root_and_paths(leaf_hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and every leaf's audit path (RFC 9162 §2.1.3.1) of one tree, in one pass.

    For batch receipts: tens of thousands of leaves each need their path. Calling
    `inclusion_proof` per leaf would rehash the tree n times (O(n²)); here each level is hashed
    once (n - 1 hashes in all) and paths are built top-down, each node's path being its
    sibling prepended to its parent's, so the per-leaf work is a list copy done in C.
    Returns ``(root, paths)`` with ``paths[i] == inclusion_proof(i, leaf_hashes)``.
    """
    levels = [list(leaf_hashes)]
    _check_leaf_hashes(levels[0])
    if not levels[0]:
        return EMPTY_ROOT, []
    prefix = _NODE_PREFIX
    sha = _sha256
    level = levels[0]
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [
            sha(prefix + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)
        ]
        if odd is not None:
            # Promoted unchanged: the RFC's split at the largest power of two puts an unpaired
            # right-edge node directly under an ancestor further up.
            level.append(odd)
        levels.append(level)
    root = level[0]
    # The 2n new lists hold only bytes and cannot form cycles, but allocating them triggers
    # cyclic-GC passes over the whole heap: ~40% of the time at 65,536 leaves. Pause it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        upper: list[list[bytes]] = [[]]
        for nodes in reversed(levels[:-1]):
            m = len(nodes)
            paths: list[list[bytes]] = []
            extend = paths.extend
            for left, right, parent in zip(nodes[0::2], nodes[1::2], upper, strict=False):
                extend(([right, *parent], [left, *parent]))
            if m & 1:
                paths.append(list(upper[m >> 1]))  # the promoted node: no sibling at this level
            upper = paths
    finally:
        if gc_was_enabled:
            gc.enable()
    return root, upper
