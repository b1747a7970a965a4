"""MatMulInteger: the exact integer product of zero-point-shifted integer tensors.

``Y = (A - a_zp) @ (B - b_zp)`` with A (…, M, K) an integer tensor, B (K, N) constant or an
integer tensor, a_zp one constant and b_zp one constant or one per column of B. The output is an
exact integer tensor (ONNX's int32; here int64, never wrapped: a product whose K · max|A| ·
max|B| could reach 2**62 is refused). The executor multiplies in float BLAS chunks proven exact
(`exact_matmul`); the referee sums one row times one column in Python integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._arith import I64, exact_matmul
from edgetrust.runtime.fixed._base import ElementSource, Kind, Op, ScalePolicy, register, unravel


@register
class MatMulInteger(Op):
    """(A - a_zp) @ (B - b_zp), exact."""

    op_types = ("MatMulInteger",)
    A: ClassVar[int] = 0
    """Input index of A (B, a_zero_point, b_zero_point follow: QLinearMatMul moves them)."""
    B: ClassVar[int] = 1
    AZ: ClassVar[int] = 2
    BZ: ClassVar[int] = 3

    def setup(self) -> None:
        for k in (self.A, self.B):
            if self.info(k).kind != "i":
                raise self.fail(f"input {k} must be an integer tensor")
        for k in (self.AZ, self.BZ):
            if self.has_input(k) and not self.is_const(k):
                raise self.fail("zero points must be constants")
        self.a_zp = self._zp(self.AZ)
        if self.a_zp.size != 1:
            raise self.fail("a_zero_point must be one value (per-row is not supported)")
        self.b_zp = self._zp(self.BZ)
        self.b_const = self.is_const(self.B)
        if self.b_const and np.asarray(self.info(self.B).const).ndim != 2:
            raise self.fail("a constant B must be 2-D")

    def _zp(self, k: int) -> I64:
        if not self.has_input(k):
            return np.zeros(1, np.int64)
        return np.asarray(self.info(k).const, np.int64).reshape(-1)

    def out_kind(self) -> Kind:
        """Exact integers."""
        return "i"

    def scale_policy(self) -> ScalePolicy:
        """None: integers."""
        return None

    def make_params(self) -> dict[str, I64]:
        """B - b_zp when B is constant (the committed weights)."""
        if not self.b_const:
            return {}
        return {"w": self._shift_b(np.asarray(self.info(self.B).const, np.int64))}

    def _shift_b(self, b: I64) -> I64:
        if b.ndim != 2:
            raise InvalidInputError(f"{self.node.op_type} node {self.label}: B must be 2-D")
        if self.b_zp.size not in (1, b.shape[1]):
            raise self.fail(f"b_zero_point has {self.b_zp.size} values for {b.shape[1]} columns")
        out: I64 = b - self.b_zp.reshape(1, -1)
        return out

    def _operands(self, xs: Sequence[I64 | None]) -> tuple[I64, I64]:
        a = xs[self.A]
        if a is None:
            raise self.fail(f"input {self.A} is missing")
        if self.b_const:
            b = self.params()["w"]
        else:
            raw = xs[self.B]
            if raw is None:
                raise self.fail(f"input {self.B} is missing")
            b = self._shift_b(np.asarray(raw, np.int64))
        if a.ndim < 2 or a.shape[-1] != b.shape[0]:
            raise InvalidInputError(
                f"{self.node.op_type} node {self.label}: shapes {a.shape} and {b.shape} "
                "do not multiply"
            )
        return np.asarray(a, np.int64) - int(self.a_zp[0]), b

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Exact product through float chunks."""
        return self.product(xs)

    def product(self, xs: Sequence[I64 | None]) -> I64:
        """(A - a_zp) @ (B - b_zp)."""
        a, b = self._operands(xs)
        amax = int(np.max(np.abs(a), initial=0))
        bmax = int(np.max(np.abs(b), initial=0))
        return exact_matmul(a, b, max(amax, 1), max(bmax, 1))

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """A's shape with the last dimension N."""
        a = src.input_shape(self.A)
        b = src.param_shape("w") if self.b_const else src.input_shape(self.B)
        if len(a) < 2 or len(b) != 2 or a[-1] != b[0]:
            raise InvalidInputError(
                f"{self.node.op_type} node {self.label}: shapes {a} and {b} do not multiply"
            )
        return (*a[:-1], b[1])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One row of A times one column of B, in Python integers."""
        return self.dot(flat, out_shape, src)

    def dot(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """(A - a_zp) row · (B - b_zp) column for output element `flat`."""
        idx = unravel(flat, out_shape)
        n = idx[-1]
        k = src.input_shape(self.A)[-1]
        row_start = (flat // out_shape[-1]) * k
        a = src.read_input(self.A, row_start + np.arange(k, dtype=np.int64))
        if self.b_const:
            ncols = src.param_shape("w")[1]
            b = src.read_param("w", np.arange(k, dtype=np.int64) * ncols + n)
        else:
            ncols = src.input_shape(self.B)[1]
            raw = src.read_input(self.B, np.arange(k, dtype=np.int64) * ncols + n)
            zp = int(self.b_zp[n if self.b_zp.size > 1 else 0])
            b = raw - zp
        za = int(self.a_zp[0])
        return sum((int(x) - za) * int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))

    def calib_max(self, xs: Any) -> float:  # pragma: no cover - integer outputs are not scaled
        """Not calibrated."""
        return 0.0
