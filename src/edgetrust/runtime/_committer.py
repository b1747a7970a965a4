"""Committing a traced run's tensors while it runs, on the second core.

`committer` picks the way. Where the SHA-NI kernel is used, a `QueueCommitter`: one native
call on a worker thread serves a queue in shared memory for the whole run, so the GIL changes
hands twice per run. Elsewhere a `Committer`: batches handed to a worker thread one by one,
each a hand-over of the GIL (tens of µs on a virtual machine). Both give the commitments
`TensorCommitment.of` gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.runtime import _sha256, _shani
from edgetrust.runtime._commit import MerkleLevels, TensorCommitment, TraceLayout, _dtype_name
from edgetrust.runtime._sha256 import address, level_starts
from edgetrust.runtime._shani import CLOSED, FINISHED, JOB_WORDS, JOBS, POSTED

_Job = tuple[npt.NDArray[Any], TensorCommitment]

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_BATCH_MIN = 1 << 18
"""Elements per hand-over to the commit thread: smaller tensors wait and go together, since
handing over a small tensor (and the GIL back and forth) costs more than hashing it. Measured
traced/untraced, one process per setting: at 2**16 SqueezeNet int8 1.41, int16 1.25, the
digits MLP 5.2 (its few small tensors then cross threads once, mid-run); at 2**18 1.35, 1.26,
3.2; at 2**20 1.42, 1.35, 3.5. Before batching (tensors of 2**16 or more handed over one by
one, smaller ones inline): 1.57, 1.50, 3.5. A tensor of this size or more goes at once, with
any that wait before it."""


def _worker() -> ThreadPoolExecutor:
    """The process's one commit thread (a new one after a fork: threads do not survive it)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="edgetrust-commit"))
    return _POOL[1]


def _forest(layout: TraceLayout, arrays: Sequence[npt.NDArray[Any]]) -> _sha256.Forest:
    """The trees of `arrays`' canonical bytes in `layout`, laid out for one call."""
    return _sha256.Forest([layout.bytes_of(a) for a in arrays], layout.chunk_bytes, layout.padded)


@dataclass
class _Batch:
    """Entries hashed together in one native call: their indices and values, and the
    committed arrays and trees once hashed (by the worker, if `future` is set)."""

    indices: list[int]
    values: list[Any]
    future: Future[tuple[list[npt.NDArray[Any]], Any]] | None = None


class _Committing:
    """What both committers share: `append` each entry's value as the run computes it,
    `close` when no more come (also when the run raised), then `results`.

    `convert[k]` turns the k-th appended value into the array that is committed (its storage
    dtype); the value must not change after it is appended.
    """

    def __init__(
        self, layout: TraceLayout, convert: Sequence[Callable[[Any], npt.NDArray[Any]]]
    ) -> None:
        self.layout = layout
        self.convert = convert


class Committer(_Committing):
    """Commits tensors as a run appends them: where the native hasher is available, in
    batches of at least `_BATCH_MIN` elements, each one `_sha256.Forest` hashed on a worker
    thread in one call (the GIL released throughout, so the run computes the next nodes
    meanwhile); else inline with hashlib. The same commitments either way.
    """

    def __init__(
        self, layout: TraceLayout, convert: Sequence[Callable[[Any], npt.NDArray[Any]]]
    ) -> None:
        super().__init__(layout, convert)
        self._count = 0
        self._inline: list[_Job] = []
        """Entries committed inline (no native hasher), in order."""
        self._waiting = _Batch([], [])
        """Entries not handed over yet."""
        self._waiting_size = 0
        self._batches: list[_Batch] = []
        """Batches handed to the worker, in order."""
        self._pool = _worker() if _sha256.available() else None

    def append(self, value: Any) -> None:
        """Commit the next entry's value."""
        index, self._count = self._count, self._count + 1
        if self._pool is None:
            arr = self.convert[index](value)
            self._inline.append((arr, TensorCommitment.of(arr, self.layout)))
            return
        self._waiting.indices.append(index)
        self._waiting.values.append(value)
        self._waiting_size += int(getattr(value, "size", 1))
        if self._waiting_size >= _BATCH_MIN:
            batch, self._waiting, self._waiting_size = self._waiting, _Batch([], []), 0
            batch.future = self._pool.submit(self._hash, batch)
            self._batches.append(batch)

    def _hash(self, batch: _Batch) -> tuple[list[npt.NDArray[Any]], Any]:
        """The committed arrays of `batch` and their trees, hashed in one native call."""

        arrs = [self.convert[i](v) for i, v in zip(batch.indices, batch.values, strict=True)]
        trees = _forest(self.layout, arrs)
        trees.hash()  # GIL released: the run computes on meanwhile
        return arrs, trees

    def close(self) -> None:
        """Nothing more is appended (nothing to do here: `results` finishes the work)."""

    def results(self) -> tuple[list[npt.NDArray[Any]], list[TensorCommitment]]:
        """The committed arrays and their commitments, in the order appended. Entries still
        waiting, and batches the worker has not started yet (taken back from the end of its
        queue), are hashed here, so both threads hash until the last one is done (the same
        commitments)."""
        if self._pool is None:
            return [a for a, _ in self._inline], [c for _, c in self._inline]
        pending = self._batches + ([self._waiting] if self._waiting.indices else [])
        self._batches, self._waiting, self._waiting_size = [], _Batch([], []), 0
        hashed: dict[int, tuple[list[npt.NDArray[Any]], Any]] = {}
        for k in range(len(pending) - 1, -1, -1):
            future = pending[k].future
            if future is not None and not future.cancel():
                break  # the worker has started this one, so every one before it
            hashed[k] = self._hash(pending[k])
        arrays: list[npt.NDArray[Any]] = []
        commitments: list[TensorCommitment] = []
        for k, batch in enumerate(pending):
            if k in hashed:
                arrs, trees = hashed[k]
            else:
                assert batch.future is not None  # handed over, and not taken back above
                arrs, trees = batch.future.result()
            for j, arr in enumerate(arrs):
                arrays.append(arr)
                tree = MerkleLevels.from_arrays(trees.levels(j))
                commitments.append(TensorCommitment.from_tree(arr, tree, self.layout))
        return arrays, commitments


_QUEUE_JOBS = 4096
"""Tensors one queue holds; a run with more hashes the rest on its own thread."""
_START_MIN = 1 << 17
"""Elements a run must have appended before its queue starts the worker: starting it (and
posting each tensor) costs ~50 µs of the run's thread, more than the hashing of a small
run's tensors saves (the digits MLP's 66,600 elements: 0.32 ms traced hashed at the end,
0.40 ms through the queue), so a run below it is hashed at the end, in one call."""


class QueueCommitter(_Committing):
    """Commits tensors as a run appends them, through a queue that one native call on the
    worker thread (`_shani.serve`) serves for the whole run: each tensor is posted by a few
    stores to shared memory (its bytes' address and length, where its tree goes), which the
    worker polls, so no thread is woken and the GIL changes hands only when the worker starts
    and returns. `close` serves the queue on this thread too, then waits for the job the
    worker may still be on. The worker starts once `_START_MIN` elements are appended.
    """

    def __init__(
        self, layout: TraceLayout, convert: Sequence[Callable[[Any], npt.NDArray[Any]]]
    ) -> None:
        super().__init__(layout, convert)
        step, padded, big = layout.chunk_bytes, layout.padded, layout.byteorder == ">"
        self._modes = {n: _shani.mode(step, padded, n if big else 1) for n in (1, 2, 4, 8)}
        """Each itemsize's job mode (the kernel swaps bytes for a big-endian layout)."""
        self._arrays: list[npt.NDArray[Any]] = []
        self._kept: list[Any] = []
        """Each tensor (contiguous) and its tree's rows, in order: the worker's call holds
        this list too, so nothing it may read is freed before it returns."""
        self._size = 0
        self._ctl: npt.NDArray[np.int64] | None = None
        """The queue, once the worker is started."""
        self._posted = 0
        self._closed = False
        self._future: Future[int] | None = None

    def append(self, value: Any) -> None:
        """Commit the next entry's value: post it to the queue (or hash it here, past the
        queue's end or once closed), once the queue is started."""
        arr = np.ascontiguousarray(self.convert[len(self._arrays)](value))
        _dtype_name(arr)  # a dtype the layouts commit to, or a typed error
        if not arr.dtype.isnative:  # the kernel reads the machine's byte order
            arr = arr.astype(arr.dtype.newbyteorder("="))
        self._arrays.append(arr)
        if self._ctl is not None:
            out = self._rows_for(arr)
            self._kept.append((arr, out))
            self._post(arr, out)
            return
        self._kept.append((arr, None))
        self._size += arr.size
        if self._size >= _START_MIN and not self._closed:
            self._start()

    def _rows_for(self, arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Room for the tree of `arr`."""
        return np.empty((level_starts(arr.nbytes, self.layout.chunk_bytes)[-1], 32), np.uint8)

    def _start(self) -> None:
        """Start the worker serving a new queue, and post what was appended so far."""
        self._ctl = np.zeros(JOBS + JOB_WORDS * _QUEUE_JOBS, np.int64)
        self._future = _worker().submit(_serve, self._ctl, _nap_address(), self._kept)
        self._kept[:] = [(arr, self._rows_for(arr)) for arr, _ in self._kept]
        for arr, out in self._kept:
            self._post(arr, out)

    def _post(self, arr: npt.NDArray[Any], out: npt.NDArray[np.uint8]) -> None:
        """Post `arr`'s tree (into `out`) to the queue: its own bytes, which the kernel reads
        in the layout's byte order (no copy here)."""
        ctl = self._ctl
        assert ctl is not None  # started
        if arr.size == 0:
            return
        if self._posted >= _QUEUE_JOBS or self._closed:
            self._hash_here(arr, out)
            return
        at = JOBS + JOB_WORDS * self._posted
        ctl[at] = address(arr)
        ctl[at + 1] = arr.nbytes
        ctl[at + 2] = address(out)
        ctl[at + 3] = self._modes[arr.itemsize]
        self._posted += 1
        ctl[POSTED] = self._posted  # after the job's words: x86 keeps the order

    def _hash_here(self, arr: npt.NDArray[Any], out: npt.NDArray[np.uint8]) -> None:
        """`arr`'s tree into `out`, on this thread."""
        layout = self.layout
        _sha256.Forest([layout.bytes_of(arr)], layout.chunk_bytes, layout.padded, out=out).hash()

    def close(self) -> None:
        """Nothing more is appended: every tree is hashed before this returns, by this thread
        (and the worker, if started: this thread serves the queue with it, then waits for the
        job it may still be on). A run that raised calls this too, so no thread polls on."""
        if self._closed:
            return
        ctl = self._ctl
        if ctl is None:  # a small run: all at once, here, each tree in rows of one output
            if self._kept:
                trees = _forest(self.layout, [a for a, _ in self._kept])
                trees.hash()
                self._kept[:] = [(a, trees.rows(k)) for k, (a, _) in enumerate(self._kept)]
            self._closed = True
            return
        ctl[CLOSED] = 1
        future = self._future
        assert future is not None  # set with the queue
        future.cancel()  # if the worker has not started, every job is served here
        _shani.serve(ctl, _nap_address())
        while ctl[FINISHED] < self._posted:  # the worker's last job
            if future.done():  # the worker failed mid-job: hash every tree here again
                for arr, out in self._kept:
                    if arr.size:
                        self._hash_here(arr, out)
                break
        self._closed = True  # only once every tree is hashed

    def results(self) -> tuple[list[npt.NDArray[Any]], list[TensorCommitment]]:
        """The committed arrays and their commitments, in the order appended."""
        self.close()
        step, layout = self.layout.chunk_bytes, self.layout
        commitments = []
        for arr, (_, out) in zip(self._arrays, self._kept, strict=True):
            tree = MerkleLevels.from_rows(out, level_starts(arr.nbytes, step))
            commitments.append(TensorCommitment.from_tree(arr, tree, layout))
        return self._arrays, commitments


@cache
def _nap_address() -> int:
    return _shani.usleep_address()


def _serve(ctl: npt.NDArray[np.int64], nap: int, kept: list[Any]) -> int:
    """`_shani.serve` on the worker; `kept` only holds the tensors alive meanwhile."""
    return int(_shani.serve(ctl, nap))


QUEUE = True
"""Whether `committer` may use the queue (tests compare both ways)."""


def committer(
    layout: TraceLayout, convert: Sequence[Callable[[Any], npt.NDArray[Any]]]
) -> Committer | QueueCommitter:
    """The committer for a traced run on this machine (see the module docstring)."""
    from edgetrust.runtime import _sha256

    if QUEUE and _sha256.kernel() == "sha-ni":
        return QueueCommitter(layout, convert)
    return Committer(layout, convert)
