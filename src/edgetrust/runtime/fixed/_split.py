"""Split: one tensor cut into consecutive slices along an axis, each output traced.

Integer definition: output k holds the input integers with ``offset_k ≤ i < offset_k + size_k``
along `axis`, unchanged (kind and scale of the input). Sizes come from the constant ``split``
input (opset ≥ 13) or attribute (earlier), else equal parts: ``num_outputs`` (opset 18, the
last part smaller when the axis does not divide) or the number of outputs (which must divide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    norm_axis,
    ravel,
    register,
    unravel,
)


@register
class Split(Op):
    """Consecutive slices along `axis`; every output is committed."""

    op_types = ("Split",)

    def setup(self) -> None:
        self.n_out = len(self.node.output)
        self.axis = int(self.attrs.get("axis", 0))
        self.given: list[int] | None = None
        if self.settings.opset >= 13 and self.has_input(1):
            if not self.is_const(1):
                raise self.fail("the split sizes must be a constant")
            self.given = self.static_ints(1)
        elif self.settings.opset < 13 and "split" in self.attrs:
            self.given = [int(v) for v in self.attrs["split"]]
        if self.given is not None:
            if len(self.given) != self.n_out:
                raise self.fail(f"{len(self.given)} split sizes for {self.n_out} outputs")
            if any(v < 0 for v in self.given):
                raise self.fail(f"split sizes {self.given} must be ≥ 0")
        self.num_outputs = self.attrs.get("num_outputs")
        if self.num_outputs is not None and int(self.num_outputs) != self.n_out:
            raise self.fail(f"num_outputs={self.num_outputs} but {self.n_out} outputs")

    def out_kind(self) -> Kind:
        """The input's kind."""
        return self.info(0).kind

    def scale_policy(self) -> ScalePolicy:
        """The input's scale."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def output_count(self) -> int:
        """All outputs."""
        return self.n_out

    def sizes(self, shape: tuple[int, ...]) -> tuple[int, list[int]]:
        """(axis, size of each output along it) for an input of `shape`."""
        axis = norm_axis(self.axis, len(shape), self.label)
        dim = shape[axis]
        if self.given is not None:
            if sum(self.given) != dim:
                raise InvalidInputError(
                    f"Split node {self.label}: sizes {self.given} do not add up to {dim}"
                )
            return axis, list(self.given)
        if self.num_outputs is not None:
            part = -(-dim // self.n_out)
            out = [min(part, max(0, dim - k * part)) for k in range(self.n_out)]
            return axis, out
        if dim % self.n_out:
            raise InvalidInputError(
                f"Split node {self.label}: axis of {dim} does not split into {self.n_out} parts"
            )
        return axis, [dim // self.n_out] * self.n_out

    def run_outputs(self, xs: Sequence[I64 | None]) -> list[I64]:
        """Every slice (copies: each is committed on its own)."""
        x = self.x(xs, 0)
        axis, sizes = self.sizes(tuple(x.shape))
        cuts = np.cumsum(sizes)[:-1].tolist()
        return [np.ascontiguousarray(p) for p in np.split(x, cuts, axis=axis)]

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """The first slice."""
        x = self.x(xs, 0)
        axis, sizes = self.sizes(tuple(x.shape))
        return np.ascontiguousarray(np.take(x, np.arange(sizes[0]), axis=axis))

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The first output's shape."""
        return self.out_shape_of(0, src)

    def out_shape_of(self, k: int, src: ElementSource) -> tuple[int, ...]:
        """The input's shape with output k's size on the axis."""
        shape = self.in_shape(src, 0)
        axis, sizes = self.sizes(shape)
        if not 0 <= k < self.n_out:
            raise self.fail(f"has no output {k}")
        return (*shape[:axis], sizes[k], *shape[axis + 1 :])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Element of the first output."""
        return self.element_of(0, flat, out_shape, src)

    def element_of(self, k: int, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """The one input element at the same index, shifted by output k's offset."""
        shape = self.in_shape(src, 0)
        axis, sizes = self.sizes(shape)
        if not 0 <= k < self.n_out:
            raise self.fail(f"has no output {k}")
        idx = list(unravel(flat, out_shape))
        idx[axis] += sum(sizes[:k])
        return int(self.read(src, 0, [ravel(idx, shape)])[0])

    def calib_max(self, xs: Any) -> float:  # pragma: no cover - the input's scale is kept
        """Not calibrated."""
        return 0.0
