"""Tensor commitments: the fast hashing path equals a plain hashlib reference, bit for bit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError
from edgetrust.log.merkle import EMPTY_ROOT
from edgetrust.runtime import _commit, _committer, _sha256, _shani
from edgetrust.runtime._commit import LAYOUT_V1, LAYOUT_V2, MerkleLevels, TensorCommitment
from edgetrust.runtime.fixed import FixedExecutor
from edgetrust.runtime.trace import TraceLayout
from tests.runtime.graphs import resnet_style

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


def test_the_native_tree_path_is_available_here() -> None:
    """The machines CI runs on have numba and OpenSSL's SHA256_* symbols: the native path is
    taken (else traced runs silently fall back to the slower hashlib path)."""
    levels = _sha256.tree_levels(np.zeros(300, np.uint8), 256, True)
    assert levels is not None
    assert [[bytes(h) for h in lv] for lv in levels] == _ref_levels(
        _ref_leaf_hashes(np.zeros(300, np.int8), LAYOUT_V2)
    )


def test_the_sha_ni_kernel_is_preferred_where_the_cpu_has_it() -> None:
    """On a CPU with SHA-NI (and numba compiling for it) the two-lane kernel is the one used;
    elsewhere OpenSSL's. Either agrees with hashlib (checked when it is built)."""
    from edgetrust.runtime import _shani

    assert _sha256.kernel() == ("sha-ni" if _shani.supported() else "openssl")
    assert _sha256.build("openssl") is not None


def test_numba_compiling_for_another_cpu_falls_back_to_openssl() -> None:
    """With numba told to compile for a generic CPU, the SHA-NI kernel must not be compiled at
    all (LLVM would abort the process on the intrinsics): the process picks OpenSSL's kernel
    and still hashes as hashlib does."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, hashlib\n"
        "from edgetrust.runtime import _sha256\n"
        "print(_sha256.kernel())\n"
        "lv = _sha256.tree_levels(np.zeros(10, np.uint8), 256, True)\n"
        "assert bytes(lv[0][0]) == hashlib.sha256(bytes(257)).digest()\n"
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "generic"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["openssl"]


_KERNELS = {name: _sha256.build(name) for name in _sha256._CANDIDATES}
_BUILT = [name for name, tree in _KERNELS.items() if tree is not None]


@settings(max_examples=150, deadline=None)
@given(
    values=_tensors(),
    layout=st.sampled_from([LAYOUT_V1, LAYOUT_V2]),
    pick=st.integers(0),
    kernel=st.sampled_from(_BUILT),
)
def test_native_trees_equal_the_hashlib_reference(
    values: np.ndarray, layout: TraceLayout, pick: int, kernel: str
) -> None:
    """Every tensor through each native kernel this machine builds (the size floor lowered to
    0): same levels, root and audit paths as the reference and as the hashlib path."""
    leaves = _ref_leaf_hashes(values, layout)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_commit, "_NATIVE_MIN", 0)
        mp.setattr(_sha256, "_kernel", (kernel, _KERNELS[kernel]))
        native = TensorCommitment.of(values, layout)
        assert native.levels.levels == _ref_levels(leaves)
        assert native.root == _ref_mth(leaves)
        mp.setattr(_sha256, "ENABLED", False)
        plain = TensorCommitment.of(values, layout)
    assert plain.root == native.root
    if leaves:
        index = pick % len(leaves)
        assert native.levels.path(index) == plain.levels.path(index)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3000),
    step=st.sampled_from([1, 7, 63, 64, 65, 119, 256, 1024]),
    padded=st.booleans(),
)
def test_each_kernel_hashes_every_chunk_length_as_hashlib(
    data: bytes, step: int, padded: bool
) -> None:
    """Chunk sizes around the SHA-256 block (55, 56, 64 bytes of message, ...), short and
    padded last chunks, odd widths: every level equal to hashlib's, for each kernel built."""
    arr = np.frombuffer(data, np.uint8)
    parts = [arr, arr[: len(arr) // 3], arr[:1]]  # several trees in one call
    layout = TraceLayout(0, step, "<", padded)
    for name in _BUILT:
        trees = _sha256.Forest(parts, step, padded)
        trees.hash(_KERNELS[name])
        for k, part in enumerate(parts):
            want = MerkleLevels(layout._hash_memory(part.data)).levels if part.size else [[]]
            got = [[bytes(h) for h in lv] for lv in trees.levels(k)]
            assert got == want, name


def _resnet_run() -> tuple[FixedExecutor, dict[str, np.ndarray]]:
    model = resnet_style(size=64, width=16).SerializeToString()
    x = {"input": np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    return FixedExecutor(model, precision="int8", calibration=[x]), x


def test_a_traced_run_commits_the_same_through_the_queue_the_batches_and_inline() -> None:
    """Through the queue (where SHA-NI is used), the batches handed to the worker, and inline
    with hashlib: the trace (values, entry leaves, root) is the same, and its tensors are big
    enough to take the native path."""
    ex, x = _resnet_run()
    _, first = ex.run_traced(x)
    assert max(v.nbytes for v in first.values) >= _commit._NATIVE_MIN
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_committer, "QUEUE", False)
        _, batched = ex.run_traced(x)
        mp.setattr(_sha256, "ENABLED", False)
        _, inline = ex.run_traced(x)
    for other in (batched, inline):
        assert first.root == other.root
        assert first.leaf_bytes == other.leaf_bytes
        assert all(np.array_equal(a, b) for a, b in zip(first.values, other.values, strict=True))


def _queued(values: list[np.ndarray], layout: TraceLayout) -> _committer.QueueCommitter:
    committer = _committer.QueueCommitter(layout, [np.asarray] * len(values))
    for v in values:
        committer.append(v)
    return committer


@pytest.mark.skipif(_sha256.kernel() != "sha-ni", reason="the queue needs the SHA-NI kernel")
def test_a_posted_job_is_what_the_kernel_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A post writes the tensor's own bytes (address, length), where its tree goes, and the
    mode of the layout's chunk size, padding and byte swap, then counts it."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    idle: Future[int] = Future()  # no worker: the job stays in the queue, unclaimed
    monkeypatch.setattr(_committer, "_START_MIN", 1)
    monkeypatch.setattr(_committer, "_worker", lambda: SimpleNamespace(submit=lambda *a: idle))
    arr = np.arange(300, dtype=np.int16)
    committer = _queued([arr], LAYOUT_V2)
    ctl = committer._ctl
    assert ctl is not None
    (kept, out), at = committer._kept[0], _shani.JOBS
    assert ctl[_shani.POSTED] == 1 and ctl[_shani.CLAIMED] == 0
    assert list(ctl[at : at + _shani.JOB_WORDS]) == [
        _sha256.address(kept),
        arr.nbytes,
        _sha256.address(out),
        _shani.mode(256, True, 2),
    ]
    assert _shani.mode(256, True, 2) == 256 << 5 | 2 << 1 | 1
    idle.set_result(0)
    _, (c,) = committer.results()  # served here
    assert c.root == TensorCommitment.of(arr, LAYOUT_V2).root


def test_the_queue_is_used_where_the_sha_ni_kernel_is() -> None:
    """A traced run on a SHA-NI machine goes through the queue (else through batches)."""
    kind = _committer.committer(LAYOUT_V2, [])
    kind.close()
    want = _committer.QueueCommitter if _sha256.kernel() == "sha-ni" else _committer.Committer
    assert type(kind) is want


def test_a_run_that_raises_leaves_no_worker_polling() -> None:
    """A traced run that raises mid-way closes its queue: the worker's call returns (it is
    free for the next run, which commits as before)."""
    ex, x = _resnet_run()
    _, want = ex.run_traced(x)
    boom = RuntimeError("a node failed")

    def fail(*args: object) -> None:
        raise boom

    opened: list[object] = []
    factory = _committer.committer

    def spy(*args: object) -> object:
        opened.append(factory(*args))  # type: ignore[arg-type]
        return opened[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_committer, "committer", spy)
        mp.setattr(ex.ops[3], "run", fail)
        mp.setattr(ex.ops[3], "run_outputs", fail)
        mp.setattr(ex.ops[3], "run_fused", fail, raising=False)
        with pytest.raises(RuntimeError, match="a node failed"):
            ex.run_traced(x)
    (used,) = opened
    if isinstance(used, _committer.QueueCommitter):
        assert used._ctl[_shani.CLOSED] == 1
        assert used._future.cancelled() or used._future.result(timeout=30) >= 0
    assert ex.run_traced(x)[1].root == want.root


def test_a_forked_child_gets_its_own_commit_thread() -> None:
    """The parent's worker thread does not survive a fork; the child's traced run must not
    wait on it forever (it gets a new one and the same root)."""
    import multiprocessing

    ex, x = _resnet_run()
    _, trace = ex.run_traced(x)  # the parent's thread exists
    queue: multiprocessing.Queue[bytes] = multiprocessing.get_context("fork").Queue()

    def child() -> None:
        queue.put(ex.run_traced(x)[1].root)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=120)
    if proc.is_alive():
        proc.kill()
        pytest.fail("the forked child's traced run hung")
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == trace.root


_SMALL_BATCH = 1 << 12
"""The batch size the hypothesis test sets, so that its tensors stay small."""


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 3 * _SMALL_BATCH // 2), min_size=1, max_size=12),
    st.sampled_from(DTYPES),
    st.sampled_from([LAYOUT_V1, LAYOUT_V2]),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["batches", "queue"]),
)
def test_the_committer_commits_small_and_large_tensors_as_one_by_one(
    sizes: list[int], dtype: str, layout: TraceLayout, seed: int, kind: str
) -> None:
    """However tensors of mixed sizes are batched for the worker (small ones wait for company,
    a large one goes at once with those waiting) or queued (from the first tensor past the
    start size; the queue holds 3 here, so the rest is hashed on the caller's thread; the
    kernel reads each dtype's bytes in the layout's order), each gets its own commitment, in
    order."""
    if kind == "queue" and _sha256.kernel() != "sha-ni":
        kind = "batches"  # the queue exists only with the SHA-NI kernel
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    values = [rng.integers(info.min, info.max, n, endpoint=True).astype(dtype) for n in sizes]
    convert = [np.ascontiguousarray] * len(values)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_committer, "_BATCH_MIN", _SMALL_BATCH)
        mp.setattr(_committer, "_QUEUE_JOBS", 3)
        mp.setattr(_committer, "_START_MIN", _SMALL_BATCH)
        committer: _committer.Committer | _committer.QueueCommitter
        if kind == "queue":
            committer = _committer.QueueCommitter(layout, convert)
        else:
            committer = _committer.Committer(layout, convert)
        for v in values:
            committer.append(v)
    if sum(sizes) >= _SMALL_BATCH:
        if isinstance(committer, _committer.Committer):
            assert committer._batches, "nothing was handed to the worker"
        else:
            assert committer._ctl is not None, "the queue never started"
    arrays, commitments = committer.results()
    assert len(arrays) == len(values)
    for v, a, c in zip(values, arrays, commitments, strict=True):
        assert np.array_equal(a, v)
        want = TensorCommitment.of(v, layout)
        assert (c.root, c.dtype, c.shape) == (want.root, want.dtype, want.shape)
        assert c.levels.levels == want.levels.levels


def test_many_small_tensors_reach_the_worker_in_batches() -> None:
    """Tensors below the batch size are handed over together once they add up to it."""
    committer = _committer.Committer(LAYOUT_V1, [np.ascontiguousarray] * 40)
    small = _committer._BATCH_MIN // 8
    for k in range(40):
        committer.append(np.full(small, k, np.int8))
    assert [len(b.indices) for b in committer._batches] == [8] * 5
    _, commitments = committer.results()
    assert [c.root for c in commitments] == [
        TensorCommitment.of(np.full(small, k, np.int8)).root for k in range(40)
    ]


@pytest.mark.skipif(_sha256.kernel() != "sha-ni", reason="the queue needs the SHA-NI kernel")
def test_a_worker_that_fails_mid_job_leaves_no_tree_unhashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the worker's call ends with jobs claimed but not finished, `close` does not wait
    forever: it hashes every tree itself (the same commitments)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    failed: Future[int] = Future()
    failed.set_exception(MemoryError("worker"))
    monkeypatch.setattr(_committer, "_START_MIN", 1)
    monkeypatch.setattr(
        _committer, "_worker", lambda: SimpleNamespace(submit=lambda *a, **k: failed)
    )
    values = [np.arange(n, dtype=np.int16) * 3 for n in (700, 1, 0, 2049)]
    committer = _queued(values, LAYOUT_V2)
    monkeypatch.setattr(_shani, "serve", lambda ctl, nap: 0)  # claims nothing: jobs look lost
    _, commitments = committer.results()
    assert [c.root for c in commitments] == [TensorCommitment.of(v, LAYOUT_V2).root for v in values]


@pytest.mark.skipif(_sha256.kernel() != "sha-ni", reason="the queue needs the SHA-NI kernel")
@pytest.mark.parametrize("layout", [LAYOUT_V1, LAYOUT_V2])
def test_the_queue_commits_arrays_of_either_byte_order(
    layout: TraceLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrays in big-endian memory commit as their values do (the kernel reads the machine's
    order); a dtype no layout commits to is a typed error."""
    monkeypatch.setattr(_committer, "_START_MIN", 1)
    values = [np.arange(600, dtype=">i2") - 300, np.arange(90, dtype=">i8") << 40]
    _, commitments = _queued(values, layout).results()
    want = [TensorCommitment.of(v.astype(v.dtype.newbyteorder("=")), layout) for v in values]
    assert [c.root for c in commitments] == [w.root for w in want]
    with pytest.raises(InvalidInputError):
        _queued([np.zeros(4, np.float32)], layout)
