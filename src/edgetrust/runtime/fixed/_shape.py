"""Data movement and constants: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity,
Dropout (inference: the identity), Concat, Gather, Shape, Constant, ConstantOfShape.

Movement ops copy integers and keep the input's kind and scale. Concat of real inputs with
different scales requantizes each to the largest of them (a ratio ≤ 1, so nothing saturates).
Constants are quantized per tensor (scale max|c| / qmax) and live in the node's params.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, numpy_helper

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import I64, apply_rescale, quantize, saturate
from edgetrust.runtime.fixed._base import (
    ElementSource,
    Kind,
    Op,
    ScalePolicy,
    const_scale,
    norm_axis,
    ravel,
    register,
    unravel,
)


class _Movement(Op):
    """Ops whose output elements are input elements, moved."""

    movement = True

    def scale_policy(self) -> ScalePolicy:
        """The data input's scale."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def out_kind(self) -> Kind:
        """The data input's kind."""
        return self.info(0).kind

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Output shape from the input shape and the op's small integer inputs."""
        raise NotImplementedError

    def int_inputs(self) -> list[int]:
        """Indices of inputs that are shape/axes vectors."""
        return []

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """Default: a C-order reshape to `target`."""
        return np.reshape(x, self.target(tuple(x.shape), ints))

    def _ints_run(self, xs: Sequence[Any]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for k in self.int_inputs():
            if not self.has_input(k):
                continue
            if self.is_const(k):
                out[k] = self.static_ints(k)
            else:
                v = xs[k]
                if v is None:
                    raise self.fail(f"input {k} is missing")
                if self.info(k).kind != "i":
                    raise self.fail(f"input {k} must be an integer tensor")
                out[k] = [int(i) for i in np.asarray(v).reshape(-1)]
        return out

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Move the data input."""
        out: I64 = self.move(self.x(xs, 0), self._ints_run(xs))
        return out

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """The same movement on float (or int) constants, at plan time."""
        x = consts[0]
        assert x is not None
        return self.move(x, self._ints_run(consts))

    def _ints_src(self, src: ElementSource) -> dict[int, list[int]]:
        return {k: self.read_ints(src, k) for k in self.int_inputs() if self.has_input(k)}

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """`target` of the input shape."""
        return self.target(self.in_shape(src, 0), self._ints_src(src))

    def source_index(self, flat: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """Flat input index of output element `flat`: unchanged for C-order reshapes."""
        return flat

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the one source element."""
        j = self.source_index(flat, self.in_shape(src, 0), out_shape)
        return int(self.read(src, 0, [j])[0])


def _check_count(label: str, shape: Sequence[int], out: Sequence[int]) -> tuple[int, ...]:
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(out, dtype=np.int64)):
        raise InvalidInputError(f"node {label}: cannot reshape {tuple(shape)} to {tuple(out)}")
    return tuple(int(d) for d in out)


@register
class Reshape(_Movement):
    """Reshape with 0 (copy, unless allowzero) and -1 (infer)."""

    op_types = ("Reshape",)

    def int_inputs(self) -> list[int]:
        """The shape input."""
        return [1]

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Resolve 0 and -1."""
        if 1 not in ints:
            raise self.fail("the shape input is required")
        want = list(ints[1])
        allowzero = int(self.attrs.get("allowzero", 0))
        for i, d in enumerate(want):
            if d == 0 and not allowzero:
                if i >= len(shape):
                    raise InvalidInputError(f"node {self.label}: 0 in shape beyond input rank")
                want[i] = shape[i]
        if want.count(-1) > 1 or any(d < -1 for d in want):
            raise InvalidInputError(f"node {self.label}: invalid target shape {ints[1]}")
        if -1 in want:
            known = int(np.prod([d for d in want if d != -1], dtype=np.int64))
            total = int(np.prod(shape, dtype=np.int64))
            if known == 0 or total % known:
                raise InvalidInputError(f"node {self.label}: cannot reshape {shape} to {ints[1]}")
            want[want.index(-1)] = total // known
        return _check_count(self.label, shape, want)


@register
class Flatten(_Movement):
    """To 2-D at `axis`."""

    op_types = ("Flatten",)

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """(prod(shape[:axis]), prod(shape[axis:]))."""
        axis = int(self.attrs.get("axis", 1))
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis <= len(shape):
            raise InvalidInputError(f"node {self.label}: axis {axis} out of range")
        return (
            int(np.prod(shape[:axis], dtype=np.int64)),
            int(np.prod(shape[axis:], dtype=np.int64)),
        )


@register
class Identity(_Movement):
    """Unchanged."""

    op_types = ("Identity",)

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Same shape."""
        return shape


@register
class Dropout(_Movement):
    """Inference-mode Dropout: the identity (ratio and seed are ignored, as ONNX defines it).

    The optional mask output (all true at inference) is accepted when nothing reads it; a
    model that reads it, or asks for training mode, is refused naming the node.
    """

    op_types = ("Dropout",)

    def setup(self) -> None:
        if int(self.attrs.get("is_test", 1)) == 0 and self.settings.opset < 7:
            raise self.fail("is_test=0 (training mode) is not supported")
        if self.has_input(2):
            if not self.is_const(2):
                raise self.fail("training_mode must be a constant (false) at inference")
            if bool(np.any(np.asarray(self.info(2).const))):
                raise self.fail("training_mode=true is not supported (inference only)")

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Same shape."""
        return shape


@register
class Squeeze(_Movement):
    """Remove size-1 axes (given, or all)."""

    op_types = ("Squeeze",)

    def int_inputs(self) -> list[int]:
        """Axes, from opset 13."""
        return [1] if self.settings.opset >= 13 else []

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Drop the axes."""
        axes = ints.get(1) if self.settings.opset >= 13 else self.attrs.get("axes")
        if axes is None:
            return tuple(d for d in shape if d != 1)
        norm = {norm_axis(int(a), len(shape), self.label) for a in axes}
        if any(shape[a] != 1 for a in norm):
            raise InvalidInputError(f"node {self.label}: cannot squeeze a dimension ≠ 1")
        return tuple(d for i, d in enumerate(shape) if i not in norm)


@register
class Unsqueeze(_Movement):
    """Insert size-1 axes."""

    op_types = ("Unsqueeze",)

    def int_inputs(self) -> list[int]:
        """Axes, from opset 13."""
        return [1] if self.settings.opset >= 13 else []

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Insert ones at the (output-rank) axes."""
        axes = ints.get(1) if self.settings.opset >= 13 else self.attrs.get("axes")
        if axes is None:
            raise self.fail("axes are required")
        rank = len(shape) + len(axes)
        norm = sorted(norm_axis(int(a), rank, self.label) for a in axes)
        if len(set(norm)) != len(norm):
            raise InvalidInputError(f"node {self.label}: repeated axes")
        out = list(shape)
        for a in norm:
            out.insert(a, 1)
        return tuple(out)


@register
class Transpose(_Movement):
    """Permute axes (default: reverse)."""

    op_types = ("Transpose",)

    def perm(self, rank: int) -> list[int]:
        """The permutation, checked."""
        perm = self.attrs.get("perm")
        p = list(range(rank))[::-1] if perm is None else [int(v) for v in perm]
        if sorted(p) != list(range(rank)):
            raise InvalidInputError(f"node {self.label}: perm {p} is not a permutation of {rank}")
        return p

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Permuted shape."""
        return tuple(shape[i] for i in self.perm(len(shape)))

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """np.transpose (a contiguous copy)."""
        return np.ascontiguousarray(np.transpose(x, self.perm(x.ndim)))

    def source_index(self, flat: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """in_index[perm[i]] = out_index[i]."""
        out_idx = unravel(flat, out_shape)
        perm = self.perm(len(in_shape))
        in_idx = [0] * len(in_shape)
        for i, p in enumerate(perm):
            in_idx[p] = out_idx[i]
        return ravel(in_idx, in_shape)


@register
class Slice(_Movement):
    """data[starts:ends:steps] on the given axes (opset ≥ 10 form, numpy clamping)."""

    op_types = ("Slice",)

    def setup(self) -> None:
        if self.settings.opset < 10:
            raise self.fail("only the opset ≥ 10 form (starts/ends as inputs) is supported")

    def int_inputs(self) -> list[int]:
        """starts, ends, axes, steps."""
        return [1, 2, 3, 4]

    def ranges(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> list[range]:
        """Per axis, the input positions kept."""
        starts, ends = ints.get(1), ints.get(2)
        if starts is None or ends is None or len(starts) != len(ends):
            raise InvalidInputError(f"node {self.label}: starts and ends must have equal length")
        axes = ints.get(3, list(range(len(starts))))
        steps = ints.get(4, [1] * len(starts))
        if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
            raise InvalidInputError(f"node {self.label}: bad axes or steps")
        out = [range(d) for d in shape]
        for a, st, en, sp in zip(axes, starts, ends, steps, strict=True):
            ax = norm_axis(a, len(shape), self.label)
            out[ax] = range(*slice(st, en, sp).indices(shape[ax]))
        return out

    def target(self, shape: tuple[int, ...], ints: dict[int, list[int]]) -> tuple[int, ...]:
        """Lengths of the kept ranges."""
        return tuple(len(r) for r in self.ranges(shape, ints))

    def move(self, x: npt.NDArray[Any], ints: dict[int, list[int]]) -> npt.NDArray[Any]:
        """Strided copy."""
        rs = self.ranges(tuple(x.shape), ints)
        # Index arrays, not slices: a range ending at -1 (negative steps) is not a slice end.
        return np.ascontiguousarray(x[np.ix_(*[np.asarray(r, np.int64) for r in rs])])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Map the index back through each range."""
        shape = self.in_shape(src, 0)
        rs = self.ranges(shape, self._ints_src(src))
        idx = unravel(flat, out_shape)
        j = ravel([r[i] for r, i in zip(rs, idx, strict=True)], shape)
        return int(self.read(src, 0, [j])[0])


@register
class Gather(Op):
    """np.take(data, indices, axis), negative indices counted from the end."""

    op_types = ("Gather",)
    movement = True

    def setup(self) -> None:
        if self.info(1).kind != "i":
            raise self.fail("indices must be integers")
        self.axis = int(self.attrs.get("axis", 0))

    def scale_policy(self) -> ScalePolicy:
        """The data's scale."""
        return self.info(0).scale if self.info(0).kind == "q" else None

    def out_kind(self) -> Kind:
        """The data's kind."""
        return self.info(0).kind

    def _take(self, data: npt.NDArray[Any], idx: npt.NDArray[Any]) -> npt.NDArray[Any]:
        axis = norm_axis(self.axis, data.ndim, self.label)
        n = data.shape[axis]
        idx = np.asarray(idx, np.int64)
        if np.any((idx < -n) | (idx >= n)):
            raise InvalidInputError(f"Gather node {self.label}: an index is outside [-{n}, {n})")
        return np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Take."""
        out: I64 = self._take(self.x(xs, 0), self.x(xs, 1))
        return out

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """Take on constants."""
        assert consts[0] is not None and consts[1] is not None
        return self._take(consts[0], consts[1])

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """data.shape[:axis] + indices.shape + data.shape[axis+1:]."""
        d = self.in_shape(src, 0)
        i = self.in_shape(src, 1)
        axis = norm_axis(self.axis, len(d), self.label)
        return (*d[:axis], *i, *d[axis + 1 :])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read the index, then the data element."""
        d = self.in_shape(src, 0)
        ishape = self.in_shape(src, 1)
        axis = norm_axis(self.axis, len(d), self.label)
        idx = unravel(flat, out_shape)
        mid = idx[axis : axis + len(ishape)]
        j = int(self.read(src, 1, [ravel(mid, ishape)])[0])
        n = d[axis]
        if not -n <= j < n:
            raise InvalidInputError(f"Gather node {self.label}: index {j} is outside [-{n}, {n})")
        j = j + n if j < 0 else j
        data_idx = (*idx[:axis], j, *idx[axis + len(ishape) :])
        return int(self.read(src, 0, [ravel(data_idx, d)])[0])


@register
class Concat(Op):
    """Concatenate along `axis`; real inputs are requantized to the largest input scale."""

    op_types = ("Concat",)
    narrow_inputs = True  # a rescaled part is widened for the rescale and narrowed back

    def setup(self) -> None:
        kinds = {i.kind for i in self.infos if i is not None}
        if len(kinds) != 1:
            raise self.fail("mixes integer and real inputs")
        self.axis = int(self.attrs["axis"]) if "axis" in self.attrs else None
        if self.axis is None:
            raise self.fail("axis is required")
        self.present = [k for k, i in enumerate(self.infos) if i is not None]
        if self.out_kind() == "q":
            scales = [self.info(k).scale or 1.0 for k in self.present]
            self._out = max(scales)
            self.rescales = {
                k: (None if s == self._out else self.make_rescale(s / self._out))
                for k, s in zip(self.present, scales, strict=True)
            }
            self._foldable = len(set(scales)) == 1
        else:
            self._foldable = True

    def can_fold(self) -> bool:
        """Integers, or reals that share one scale."""
        return self._foldable

    def scale_policy(self) -> ScalePolicy:
        """The largest input scale."""
        return self._out if self.out_kind() == "q" else None

    def _one(self, k: int, v: I64) -> I64:
        if self.out_kind() == "i":
            return v
        rs = self.rescales[k]
        if rs is None:
            return v
        if v.dtype != np.int64:  # narrow in, narrow out: one compiled pass, no int64 copies
            fast = _kernels.requantize_narrow(v, rs.mult, rs.shift, self.qmax)
            if fast is not None:
                return fast
        out = saturate(apply_rescale(np.asarray(v, np.int64), rs), self.qmax)
        return out if v.dtype == np.int64 else out.astype(v.dtype)  # |out| ≤ qmax fits

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """Concatenate."""
        parts = [self._one(k, self.x(xs, k)) for k in self.present]
        ranks = {p.ndim for p in parts}
        if len(ranks) != 1:
            raise InvalidInputError(f"Concat node {self.label}: inputs differ in rank")
        axis = norm_axis(self.axis or 0, parts[0].ndim, self.label)
        try:
            return np.concatenate(parts, axis=axis)
        except ValueError as exc:
            raise InvalidInputError(f"Concat node {self.label}: {exc}") from exc

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """Concatenate constants (same scale or integers)."""
        parts = [consts[k] for k in self.present]
        axis = norm_axis(self.axis or 0, np.asarray(parts[0]).ndim, self.label)
        return np.concatenate([np.asarray(p) for p in parts], axis=axis)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """Sum of the axis lengths."""
        shapes = [self.in_shape(src, k) for k in self.present]
        axis = norm_axis(self.axis or 0, len(shapes[0]), self.label)
        for s in shapes:
            if len(s) != len(shapes[0]) or any(
                a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != axis
            ):
                raise InvalidInputError(f"Concat node {self.label}: shapes {shapes} differ")
        return (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :])

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Find the input, read one element, requantize."""
        axis = norm_axis(self.axis or 0, len(out_shape), self.label)
        idx = list(unravel(flat, out_shape))
        pos = idx[axis]
        for k in self.present:
            shape = self.in_shape(src, k)
            if pos < shape[axis]:
                idx[axis] = pos
                v = self.read(src, k, [ravel(idx, shape)])
                return int(self._one(k, v)[0])
            pos -= shape[axis]
        raise InvalidInputError(f"Concat node {self.label}: index outside the output")


@register
class Shape(Op):
    """The input's shape as integers (with opset-15 start/end)."""

    op_types = ("Shape",)

    def out_kind(self) -> Kind:
        """Integers."""
        return "i"

    def make_params(self) -> dict[str, I64]:
        """No params (a constant input's shape is its param's shape)."""
        return super().make_params()

    def _dims(self, shape: tuple[int, ...]) -> list[int]:
        start = int(self.attrs.get("start", 0))
        end = self.attrs.get("end")
        return list(shape[start : None if end is None else int(end)])

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """np.array(shape)."""
        return np.array(self._dims(tuple(self.x(xs, 0).shape)), dtype=np.int64)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """(rank,)."""
        return (len(self._dims(self.in_shape(src, 0))),)

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """One dimension."""
        return self._dims(self.in_shape(src, 0))[flat]


def constant_value(attrs: dict[str, Any], label: str) -> npt.NDArray[Any]:
    """The value of a Constant node as float64 or int64."""
    if "value" in attrs:
        t = attrs["value"]
        if t.data_type in (TensorProto.STRING, TensorProto.BOOL):
            raise ValueError(f"Constant node {label}: type {t.data_type} is not supported")
        arr = numpy_helper.to_array(t)
    elif "value_float" in attrs:
        arr = np.array(attrs["value_float"], np.float32)
    elif "value_floats" in attrs:
        arr = np.array(attrs["value_floats"], np.float32)
    elif "value_int" in attrs:
        arr = np.array(attrs["value_int"], np.int64)
    elif "value_ints" in attrs:
        arr = np.array(attrs["value_ints"], np.int64)
    else:
        raise ValueError(f"Constant node {label}: only tensor and numeric values")
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    raise ValueError(f"Constant node {label}: dtype {arr.dtype} is not supported")


@register
class Constant(Op):
    """A constant tensor from the node's attributes."""

    op_types = ("Constant",)
    movement = True

    def setup(self) -> None:
        try:
            self.value = constant_value(self.attrs, self.label)
        except ValueError as exc:
            raise self.fail(str(exc)) from exc

    def out_kind(self) -> Kind:
        """By dtype."""
        return "q" if self.value.dtype.kind == "f" else "i"

    def scale_policy(self) -> ScalePolicy:
        """max |value| / qmax."""
        return const_scale(self.value, self.qmax) if self.out_kind() == "q" else None

    def make_params(self) -> dict[str, I64]:
        """The quantized value."""
        if self.out_kind() == "i":
            return {"value": self.value.astype(np.int64)}
        assert self.out_scale is not None
        return {"value": quantize(self.value, self.out_scale, self.qmax)}

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """The value."""
        return self.value

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """The value."""
        return self.params()["value"]

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The value's shape."""
        return src.param_shape("value")

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Read it."""
        return int(src.read_param("value", np.array([flat]))[0])


@register
class ConstantOfShape(Op):
    """A tensor of the given shape filled with one value."""

    op_types = ("ConstantOfShape",)
    movement = True

    def setup(self) -> None:
        if self.info(0).kind != "i":
            raise self.fail("shape must be integers")
        t = self.attrs.get("value")
        v = numpy_helper.to_array(t).reshape(-1) if t is not None else np.zeros(1, np.float32)
        if v.size != 1 or v.dtype.kind not in "fiu":
            raise self.fail("value must be one number")
        self.fvalue = float(v[0])
        self.kind: Kind = "q" if v.dtype.kind == "f" else "i"
        if self.kind == "q":
            self._scale = abs(self.fvalue) / self.qmax if self.fvalue else 1.0
            self.qvalue = int(quantize(np.array([self.fvalue]), self._scale, self.qmax)[0])
        else:
            self.qvalue = int(v[0])

    def out_kind(self) -> Kind:
        """By the value's dtype."""
        return self.kind

    def scale_policy(self) -> ScalePolicy:
        """|value| / qmax (so the value is exactly ±qmax)."""
        return self._scale if self.kind == "q" else None

    def _shape(self, dims: list[int]) -> tuple[int, ...]:
        if any(d < 0 for d in dims):
            raise InvalidInputError(f"node {self.label}: negative dimension in {dims}")
        return tuple(dims)

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """np.full."""
        dims = [int(d) for d in np.asarray(self.x(xs, 0)).reshape(-1)]
        return np.full(self._shape(dims), self.qvalue, np.int64)

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """np.full on the real value."""
        assert consts[0] is not None
        dims = [int(d) for d in np.asarray(consts[0]).reshape(-1)]
        dtype = np.float64 if self.kind == "q" else np.int64
        return np.full(self._shape(dims), self.fvalue if self.kind == "q" else self.qvalue, dtype)

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The shape input's values."""
        return self._shape(self.read_ints(src, 0))

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """The value."""
        return self.qvalue
