"""The resource guard: estimate what an EZKL setup will cost, and refuse before paying it.

Halo2 key generation and proving hold every column of the circuit as polynomials over
``2^logrows`` rows (in coefficient, Lagrange and extended form), so memory grows linearly with
``2^logrows`` and jumps by 2× with each extra logrow. EZKL users report setups eating more than
1 TB for a 5M-parameter ViT (ezkl issue #767): such a model must be refused with the numbers
before the work starts, not found out by the OOM killer.

The estimate is empirical and deliberately simple: bytes per row measured on this project's
digits MLP (logrows 15: proving key 466 MB, peak RSS 635 MB in setup and 1.07 GB in proving,
i.e. ~14 KiB and ~34 KiB per row), scaled by the two settings that multiply the column count:
``num_inner_cols`` and the number of table columns a lookup range needs. It is checked twice:
from the ONNX graph before anything runs (a lower bound: every fixed parameter takes at least
one cell), then from EZKL's calibrated settings before compiling and key generation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgetrust.errors import InvalidInputError, ResourceLimitError

__all__ = [
    "PEAK_BYTES_PER_ROW",
    "PK_BYTES_PER_ROW",
    "ResourceEstimate",
    "ZkResourceLimitError",
    "check_budget",
    "default_memory_budget",
    "estimate_from_onnx",
    "estimate_from_settings",
    "max_logrows_for_budget",
]

PK_BYTES_PER_ROW = 15 * 1024
"""Proving-key bytes per circuit row at the reference column count (measured ~13.9 KiB)."""

PEAK_BYTES_PER_ROW = 36 * 1024
"""Peak resident bytes per row of setup or proving, whichever is larger (measured ~33.5 KiB)."""

_REFERENCE_INNER_COLS = 2
"""``num_inner_cols`` of the reference measurement (EZKL's default)."""


class ZkResourceLimitError(ResourceLimitError):
    """A ZK setup would need more memory than the budget allows; carries the numbers."""

    def __init__(self, message: str, *, estimate: ResourceEstimate, budget: int) -> None:
        super().__init__(message, limit=budget)
        self.estimate = estimate
        """The estimate that exceeded the budget."""
        self.budget = budget
        """The memory budget in bytes."""


@dataclass(frozen=True)
class ResourceEstimate:
    """What a setup and a proof are expected to cost, from the circuit's size."""

    logrows: int
    """log2 of the circuit's row count."""
    peak_bytes: int
    """Estimated peak resident memory of key generation or proving."""
    proving_key_bytes: int
    """Estimated size of the proving key on disk."""
    basis: str
    """``"onnx lower bound"`` (before EZKL ran) or ``"settings"`` (after calibration)."""

    @property
    def rows(self) -> int:
        """Rows of the circuit: ``2^logrows``."""
        return 1 << self.logrows

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored with the artifacts)."""
        return {
            "logrows": self.logrows,
            "peakBytes": self.peak_bytes,
            "provingKeyBytes": self.proving_key_bytes,
            "basis": self.basis,
        }


def _memory_total() -> int:
    """RAM of this machine, or the cgroup (container) limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            total = int(raw)
    return int(total)


def default_memory_budget() -> int:
    """Half of this machine's memory: the default limit for a ZK setup or proof."""
    return _memory_total() // 2


def _estimate(logrows: int, factor: float, basis: str) -> ResourceEstimate:
    rows = 1 << logrows
    return ResourceEstimate(
        logrows=logrows,
        peak_bytes=math.ceil(rows * PEAK_BYTES_PER_ROW * factor),
        proving_key_bytes=math.ceil(rows * PK_BYTES_PER_ROW * factor),
        basis=basis,
    )


def estimate_from_settings(settings: Mapping[str, Any]) -> ResourceEstimate:
    """Estimate from EZKL settings (``settings.json`` after calibration).

    Raises:
        InvalidInputError: the settings lack ``run_args.logrows`` or have odd values.
    """
    try:
        run_args = settings["run_args"]
        logrows = int(run_args["logrows"])
        inner = int(run_args.get("num_inner_cols", _REFERENCE_INNER_COLS))
        lo, hi = run_args.get("lookup_range", (0, 0))
        lookup_len = int(hi) - int(lo) + 1
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"EZKL settings lack run_args.logrows: {exc}") from exc
    if not 1 <= logrows <= 40 or inner < 1:
        raise InvalidInputError(f"EZKL settings have logrows {logrows}, num_inner_cols {inner}")
    # A lookup range longer than the column spreads the table over several columns.
    table_cols = max(1, math.ceil(lookup_len / (1 << logrows)))
    factor = inner / _REFERENCE_INNER_COLS * table_cols
    return _estimate(logrows, factor, "settings")


def _count_parameters(model: onnx.ModelProto) -> int:
    """Elements of every initializer and Constant tensor: the model's fixed parameters."""
    count = sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                count += int(np.prod(attr.t.dims, dtype=np.int64))
    return count


def estimate_from_onnx(
    model: onnx.ModelProto, *, num_inner_cols: int = _REFERENCE_INNER_COLS
) -> ResourceEstimate:
    """A lower bound from the graph alone, before EZKL reads it.

    With parameters fixed in the circuit, each parameter is used in at least one cell, and
    a row holds `num_inner_cols` cells, so ``rows >= parameters / num_inner_cols``. Cheap
    (shapes only), which is the point: it rejects a ViT before EZKL spends minutes on it.
    """
    params = _count_parameters(model)
    rows = max(1, math.ceil(params / num_inner_cols))
    return _estimate(max(1, math.ceil(math.log2(rows))), 1.0, "onnx lower bound")


def max_logrows_for_budget(budget: int) -> int:
    """The largest logrows whose estimated peak fits in `budget` bytes (at least 1)."""
    logrows = 1
    while (1 << (logrows + 1)) * PEAK_BYTES_PER_ROW <= budget and logrows < 40:
        logrows += 1
    return logrows


def _gib(n: int | float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_budget(estimate: ResourceEstimate, budget: int) -> None:
    """Raise `ZkResourceLimitError` with the numbers when `estimate` exceeds `budget`."""
    if estimate.peak_bytes <= budget:
        return
    raise ZkResourceLimitError(
        f"refusing ZK setup: the circuit needs 2^{estimate.logrows} rows "
        f"({estimate.basis}); estimated peak memory {_gib(estimate.peak_bytes)} "
        f"(proving key {_gib(estimate.proving_key_bytes)}) exceeds the memory budget of "
        f"{_gib(budget)}; raise the budget only if this machine really has the memory",
        estimate=estimate,
        budget=budget,
    )
