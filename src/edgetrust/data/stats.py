"""Named statistics for `stats` jobs: differentially private, and refused below k records.

Every statistic is the Laplace mechanism over values clipped to bounds the job names (the
bounds are part of the job, so the sensitivity is public): ``count`` (sensitivity 1),
``sum`` (max |bound|), ``mean`` (a noisy sum over a noisy count, ε split in half) and
``histogram`` (one noisy count per bin; disjoint bins, so ε is spent once). With ``groupBy``,
each group (a value of an integer or boolean column) is a disjoint part of the data, so ε is
spent once across groups too; every group, and the whole data set, must hold at least k
records. Several columns compose sequentially: each gets ε / columns. Results are floats:
noise makes them differ from run to run, by design.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.data.dataset import Table
from edgetrust.errors import InvalidInputError

__all__ = ["MAX_BINS", "MAX_GROUPS", "STATISTICS", "StatsQuery", "run_stats"]

STATISTICS = ("count", "histogram", "mean", "sum")
MAX_GROUPS = 1000
MAX_BINS = 256


class GroupTooSmallError(InvalidInputError):
    """A group (or the whole data set) has fewer records than the grant's k."""

    def __init__(self, message: str, *, size: int, k: int) -> None:
        super().__init__(message)
        self.size = size
        self.k = k


@dataclass(frozen=True)
class StatsQuery:
    """A parsed statistics request."""

    stat: str
    columns: tuple[str, ...]
    epsilon: float
    bounds: Mapping[str, tuple[float, float]]
    group_by: str | None = None
    bins: int = 10

    @classmethod
    def parse(cls, stat: str, params: Mapping[str, Any]) -> StatsQuery:
        """Parse and check a ``stats`` job's algorithm and params."""
        if stat not in STATISTICS:
            raise InvalidInputError(f"unknown statistic {stat!r:.20} (known: {STATISTICS})")
        if set(params) - {"columns", "epsilon", "bounds", "groupBy", "bins"}:
            raise InvalidInputError("stats params are columns, epsilon, bounds, groupBy, bins")
        cols = params.get("columns", [])
        if (
            not isinstance(cols, list)
            or not all(isinstance(c, str) for c in cols)
            or len(cols) > 64
        ):
            raise InvalidInputError("stats columns must be a list of ≤ 64 column names")
        if stat != "count" and not cols:
            raise InvalidInputError(f"{stat} needs at least one column")
        eps = params.get("epsilon")
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps <= 100:
            raise InvalidInputError("stats epsilon must be a number in (0, 100]")
        raw_bounds = params.get("bounds", {})
        if not isinstance(raw_bounds, dict):
            raise InvalidInputError("stats bounds must map columns to [low, high]")
        bounds: dict[str, tuple[float, float]] = {}
        for c in cols:
            b = raw_bounds.get(c)
            if (
                not isinstance(b, list)
                or len(b) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in b)
                or not all(math.isfinite(x) for x in b)
                or not b[0] < b[1]
            ):
                raise InvalidInputError(
                    f"column {c!r:.40} needs bounds [low, high] with low < high"
                )
            bounds[c] = (float(b[0]), float(b[1]))
        group_by = params.get("groupBy")
        if group_by is not None and not isinstance(group_by, str):
            raise InvalidInputError("stats groupBy must be a column name")
        bins = params.get("bins", 10)
        if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= MAX_BINS:
            raise InvalidInputError(f"histogram bins must be 1..{MAX_BINS}")
        return cls(stat, tuple(cols), float(eps), bounds, group_by, bins)


def _column(table: Table, name: str) -> npt.NDArray[np.float64]:
    col = table.get(name)
    if col is None:
        raise InvalidInputError(f"the dataset has no column {name!r:.40}")
    if col.ndim != 1:
        raise InvalidInputError(f"column {name!r:.40} is not scalar per record")
    return col.astype(np.float64)


def _groups(table: Table, query: StatsQuery) -> list[tuple[Any, npt.NDArray[np.bool_]]]:
    n = len(next(iter(table.values())))
    if query.group_by is None:
        return [(None, np.ones(n, dtype=np.bool_))]
    col = table.get(query.group_by)
    if col is None or col.ndim != 1 or col.dtype.kind not in "biu":
        raise InvalidInputError(f"groupBy {query.group_by!r:.40} must be an integer column")
    values = np.unique(col)
    if len(values) > MAX_GROUPS:
        raise InvalidInputError(f"groupBy makes {len(values)} groups, over {MAX_GROUPS}")
    return [(v.item(), col == v) for v in values]


def run_stats(
    table: Table, query: StatsQuery, *, k: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Compute `query` on `table` with Laplace noise; refuse any group of fewer than `k`.

    Raises:
        GroupTooSmallError: a group, or the whole data set, has fewer than `k` records.
        InvalidInputError: unknown columns, non-scalar columns, too many groups.
    """
    n = len(next(iter(table.values())))
    if n < k:
        raise GroupTooSmallError(f"the dataset has {n} records, fewer than k = {k}", size=n, k=k)
    groups = _groups(table, query)
    for value, mask in groups:
        size = int(mask.sum())
        if size < k:
            raise GroupTooSmallError(
                f"group {value!r} has {size} records, fewer than k = {k}", size=size, k=k
            )
    data = {c: _column(table, c) for c in query.columns}
    eps_col = query.epsilon / max(1, len(query.columns))
    out: list[dict[str, Any]] = []
    for value, mask in groups:
        entry: dict[str, Any] = {"group": value}
        if query.stat == "count":
            entry["count"] = float(mask.sum() + rng.laplace(0, 1 / query.epsilon))
        for c in query.columns:
            lo, hi = query.bounds[c]
            x = np.clip(data[c][mask], lo, hi)
            if query.stat == "sum":
                entry[c] = float(x.sum() + rng.laplace(0, max(abs(lo), abs(hi)) / eps_col))
            elif query.stat == "mean":
                s = x.sum() + rng.laplace(0, max(abs(lo), abs(hi)) / (eps_col / 2))
                cnt = max(1.0, len(x) + rng.laplace(0, 1 / (eps_col / 2)))
                entry[c] = float(np.clip(s / cnt, lo, hi))
            elif query.stat == "histogram":
                counts, _ = np.histogram(x, bins=query.bins, range=(lo, hi))
                noisy = counts + rng.laplace(0, 1 / eps_col, size=counts.shape)
                entry[c] = [float(v) for v in noisy]
        out.append(entry)
    return {"stat": query.stat, "epsilon": query.epsilon, "groups": out}
