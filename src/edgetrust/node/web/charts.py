"""Charts and the inclusion-proof drawing, laid out on the server as inline SVG geometry.

Pure functions from numbers to coordinates; the templates (`_svg.html`) only place them, so a
page needs no JavaScript and no chart library, and every number drawn is also printed in a
table beside it (a chart is not the only way to read the data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgetrust.log.merkle import inclusion_proof_ranges, leaf_hash, node_hash

__all__ = ["Bar", "LineChart", "PathLevel", "bar_chart", "line_chart", "proof_path"]

WIDTH, HEIGHT, PAD = 640, 240, 44


@dataclass(frozen=True)
class Series:
    """One polyline of a chart."""

    label: str
    css: str
    """Class of the line (colour in style.css)."""
    points: str
    """SVG ``points`` attribute."""
    dots: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Tick:
    """An axis label at a position."""

    pos: float
    text: str


@dataclass(frozen=True)
class LineChart:
    """A line chart: one or two y axes (left, right) over a shared x axis."""

    width: int
    height: int
    pad: int
    series: tuple[Series, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    y2_ticks: tuple[Tick, ...]
    x_label: str
    y_label: str
    y2_label: str
    title: str


def _fmt(v: float) -> str:
    if v == 0 or 0.01 <= abs(v) < 1e6:
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:.2e}"


def _ticks(lo: float, hi: float, n: int, to_pos: object) -> tuple[Tick, ...]:
    assert callable(to_pos)
    if hi <= lo:
        return (Tick(to_pos(lo), _fmt(lo)),)
    return tuple(
        Tick(to_pos(lo + (hi - lo) * i / n), _fmt(lo + (hi - lo) * i / n)) for i in range(n + 1)
    )


def line_chart(
    title: str,
    x_label: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
    *,
    y_label: str = "",
    y2: tuple[str, Sequence[tuple[float, float]], str] | None = None,
    y2_label: str = "",
) -> LineChart:
    """Lay out `series` ((label, [(x, y)], css class)) and an optional right-axis series."""
    xs = [x for _, pts, _ in [*series, *([y2] if y2 else [])] for x, _ in pts] or [0.0]
    x_lo, x_hi = min(xs), max(xs)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x_pos(x: float) -> float:
        return PAD + (inner_w * (x - x_lo) / (x_hi - x_lo) if x_hi > x_lo else inner_w / 2)

    def scale(values: list[float]) -> tuple[float, float]:
        lo, hi = min(values, default=0.0), max(values, default=1.0)
        lo = min(lo, 0.0)
        return lo, hi if hi > lo else lo + 1.0

    def layout(
        items: Sequence[tuple[str, Sequence[tuple[float, float]], str]], lo: float, hi: float
    ) -> tuple[Series, ...]:
        out = []
        for label, pts, css in items:
            dots = tuple(
                (round(x_pos(x), 1), round(PAD + inner_h * (1 - (y - lo) / (hi - lo)), 1))
                for x, y in pts
                if math.isfinite(y)
            )
            out.append(Series(label, css, " ".join(f"{a},{b}" for a, b in dots), dots))
        return tuple(out)

    y_lo, y_hi = scale([y for _, pts, _ in series for _, y in pts if math.isfinite(y)])
    laid = layout(series, y_lo, y_hi)
    y2_ticks: tuple[Tick, ...] = ()
    if y2 is not None:
        lo2, hi2 = scale([y for _, y in y2[1] if math.isfinite(y)])
        laid += layout([y2], lo2, hi2)
        y2_ticks = _ticks(lo2, hi2, 4, lambda v: PAD + inner_h * (1 - (v - lo2) / (hi2 - lo2)))
    n_x = min(len(set(xs)) - 1, 6) or 1
    return LineChart(
        WIDTH,
        HEIGHT,
        PAD,
        laid,
        _ticks(x_lo, x_hi, n_x, x_pos),
        _ticks(y_lo, y_hi, 4, lambda v: PAD + inner_h * (1 - (v - y_lo) / (y_hi - y_lo))),
        y2_ticks,
        x_label,
        y_label,
        y2_label,
        title,
    )


@dataclass(frozen=True)
class Bar:
    """One horizontal bar."""

    label: str
    value: float
    text: str
    y: float
    width: float


def bar_chart(items: Sequence[tuple[str, float, str]], *, width: int = 420) -> list[Bar]:
    """Horizontal bars for (label, value, text shown), longest = `width` px, 28 px apart."""
    top = max((v for _, v, _ in items), default=0.0)
    return [
        Bar(label, value, text, 28.0 * i, width * value / top if top > 0 else 0.0)
        for i, (label, value, text) in enumerate(items)
    ]


@dataclass(frozen=True)
class PathLevel:
    """One step up the inclusion path: the node on the path and its sibling from the proof."""

    path_range: tuple[int, int]
    """Leaves [lo, hi) under the path node at this level."""
    path_hash: str
    """Hash of that node, recomputed from the leaf and the proof so far (hex)."""
    sibling_range: tuple[int, int] | None
    sibling_hash: str
    sibling_left: bool
    """Whether the sibling is the left child of the parent."""


def proof_path(data: bytes, index: int, size: int, proof: Sequence[bytes]) -> list[PathLevel]:
    """The path from leaf `index` to the root of a tree of `size` leaves (RFC 9162 §2.1.3).

    Each level pairs the node on the path with the proof hash that is its sibling, and the
    hash recomputed so far, leaf first; the last level's parent is the root. The recomputation
    is shown, not trusted: the entry page's inclusion step is `verify_inclusion`.
    """
    ranges = inclusion_proof_ranges(index, size)
    if len(ranges) != len(proof):
        return []
    levels: list[PathLevel] = []
    lo, hi = index, index + 1
    current = leaf_hash(data)
    for (s_lo, s_hi), sibling in zip(ranges, proof, strict=True):
        left = s_hi <= lo
        levels.append(PathLevel((lo, hi), current.hex(), (s_lo, s_hi), sibling.hex(), left))
        current = node_hash(sibling, current) if left else node_hash(current, sibling)
        lo, hi = min(lo, s_lo), max(hi, s_hi)
    levels.append(PathLevel((lo, hi), current.hex(), None, "", False))
    return levels
