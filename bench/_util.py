"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of `number` calls of `fn`, over `repeat` tries, per call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def median_of(fn: Callable[[], object], *, repeat: int = 5) -> float:
    """Median wall time in seconds of one call of `fn` over `repeat` tries."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ort_session(model: bytes) -> Any:
    """An onnxruntime CPU session on one thread (the fixed executor's benches compare kernels,
    not core counts); warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def interleaved_medians(
    fns: list[Callable[[], object]], repeat: int, block: int = 5
) -> list[float]:
    """Median wall time in seconds of one call of each of `fns`, timed in turns: `repeat`
    rounds, each running every fn once untimed (its caches warm again after the others ran)
    and then `block` timed calls. A machine whose speed drifts during the run (shared cores,
    turbo) drifts for all of them alike, so their ratios hold; each is timed warm, as a loop
    of its own calls would be (turns of one call each would time every call with the
    others' data in the caches: the digits MLP's onnxruntime call 34 -> 54 us)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def warm_median(fn: Callable[[], object], repeat: int = 3) -> float:
    """`median_of` after one untimed warm-up call."""
    fn()
    return median_of(fn, repeat=repeat)
