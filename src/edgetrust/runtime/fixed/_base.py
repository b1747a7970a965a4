"""The contract every fixed-point op implements, and the registry of ops.

An op is built once per model from its ONNX node, the kinds and scales of its inputs, and the
quantization plan. It then offers three views of the same integer definition:

* ``run`` - the whole output tensor, vectorised (the executor);
* ``element`` - one output element, reading only the input and weight elements it depends on
  through an `ElementSource` (the dispute referee: work proportional to one element);
* ``out_shape`` - the output shape from the input shapes (the referee, for a shape dispute).

Tensors are int64 arrays. A "q" tensor holds integers in [-qmax, qmax] standing for
``value · scale`` (symmetric, zero-point 0); an "i" tensor holds exact integers (token ids,
shapes). Constant inputs (initializers, Constant nodes) are read through *params*: int64 arrays
derived from the model and the plan, committed element by element (the model's weight
commitments), and computed lazily so that building an op costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.runtime.fixed._arith import I64, Rescale, make_rescale, quantize, scale_for

Kind = Literal["q", "i"]
ScalePolicy = float | Literal["calibrate"] | None


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How a node is named everywhere (errors, traces, disputes): its name, else its index."""
    return node.name if node.name else f"#{index}"


@dataclass(frozen=True)
class TensorInfo:
    """What the plan knows about a tensor before any input is seen."""

    name: str
    kind: Kind
    """"q" (quantized real) or "i" (exact integer)."""
    scale: float | None
    """Real value of one integer step, for "q" tensors."""
    const: npt.NDArray[Any] | None = None
    """The float64 (for "q") or int64 (for "i") value when known from the model alone."""
    dtype: str | None = None
    """The initializer's own numpy dtype name (zero points: uint8 or int8), when one."""


class ElementSource(Protocol):
    """Read access to the elements one output element depends on.

    The executor's tests back it with whole arrays; the dispute referee backs it with openings
    checked against Merkle commitments, and counts what is read.
    """

    def input_shape(self, k: int) -> tuple[int, ...]:
        """Shape of the op's activation input `k`."""
        ...

    def read_input(self, k: int, flat: I64) -> I64:
        """Elements of activation input `k` at C-order flat indices `flat` (same shape)."""
        ...

    def param_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the op's param `name`."""
        ...

    def read_param(self, name: str, flat: I64) -> I64:
        """Elements of param `name` at flat indices `flat` (same shape)."""
        ...


@dataclass(frozen=True)
class Settings:
    """Executor-wide settings every op sees."""

    precision: str
    qmax: int
    opset: int


class Op:
    """Base class: one ONNX node's integer definition. Subclasses set `op_types`."""

    op_types: ClassVar[tuple[str, ...]] = ()
    movement: ClassVar[bool] = False
    """Pure data movement (reshape, transpose, ...): outputs keep the input's kind and scale,
    and constants through it are folded (so a reshaped weight is still a weight)."""
    narrow_inputs: bool = False
    """Whether `run` (and `run_fused`) take activations held in int8/int16 arrays and give
    the same integers as from int64 ones. The executor widens every input of the other ops
    to int64 first; only a Conv's compiled epilogue and a two-input Add's compiled pass
    produce narrow arrays (`Conv.narrow_out`, `AddSub.narrow_out`), and the ops that accept
    them pass them on (MaxPool, Relu, Concat without rescaling)."""

    def __init__(
        self, node: onnx.NodeProto, index: int, infos: Sequence[TensorInfo | None], s: Settings
    ) -> None:
        self.node = node
        self.index = index
        self.label = node_label(node, index)
        self.infos = list(infos)
        self.settings = s
        self.qmax = s.qmax
        self.attrs: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.out_scale: float | None = None
        self._params: dict[str, I64] | None = None
        self.setup()

    # -- construction -----------------------------------------------------------------------

    def setup(self) -> None:
        """Check inputs and attributes; compute cheap static parameters."""

    def fail(self, what: str) -> UnsupportedError:
        """An UnsupportedError naming this node."""
        return UnsupportedError(f"{self.node.op_type} node {self.label}: {what}")

    def make_rescale(self, ratios: npt.ArrayLike) -> Rescale:
        """`_arith.make_rescale`, failing with this node's name on a degenerate ratio."""
        try:
            return make_rescale(ratios)
        except ValueError as exc:
            raise self.fail(f"scales cannot be combined: {exc}") from exc

    def info(self, k: int) -> TensorInfo:
        """Info of input `k`, which must be present."""
        if k >= len(self.infos) or self.infos[k] is None:
            raise self.fail(f"input {k} is required")
        info = self.infos[k]
        assert info is not None
        return info

    def has_input(self, k: int) -> bool:
        """Whether optional input `k` is given."""
        return k < len(self.infos) and self.infos[k] is not None

    def is_const(self, k: int) -> bool:
        """Whether input `k` is known from the model alone."""
        return self.has_input(k) and self.info(k).const is not None

    def static_ints(self, k: int) -> list[int]:
        """A constant integer input (shape, axes) as Python ints."""
        info = self.info(k)
        if info.kind != "i" or info.const is None:
            raise self.fail(f"input {k} must be a constant integer tensor")
        return [int(v) for v in np.asarray(info.const).reshape(-1)]

    def can_fold(self) -> bool:
        """Whether `fold` computes the output at plan time when every input is constant."""
        return self.movement

    def fold(self, consts: Sequence[npt.NDArray[Any] | None]) -> npt.NDArray[Any]:
        """The output on constant (float64 or int64) inputs; only for `can_fold` ops."""
        raise NotImplementedError

    def out_kind(self) -> Kind:
        """Kind of the output: "q" if any present input is "q", else "i"."""
        return "q" if any(i is not None and i.kind == "q" for i in self.infos) else "i"

    def scale_policy(self) -> ScalePolicy:
        """A fixed output scale, "calibrate" (from the op's wide values), or None ("i")."""
        if self.out_kind() == "i":
            return None
        return "calibrate"

    def calib_max(self, xs: Sequence[I64 | None]) -> float:
        """Largest |real output| before requantization, for calibration."""
        raise NotImplementedError

    def calib_pass(self, xs: Sequence[I64 | None]) -> tuple[float, Any]:
        """`calib_max` plus state that `run_calibrated` can reuse (default: none)."""
        return self.calib_max(xs), None

    def run_calibrated(self, xs: Sequence[I64 | None], state: Any) -> I64:
        """`run`, given the state `calib_pass` returned for the same inputs."""
        return self.run(xs)

    def set_out_scale(self, scale: float | None) -> None:
        """Fix the output scale (from the plan or calibration)."""
        self.out_scale = scale

    # -- params ---------------------------------------------------------------------------

    def params(self) -> dict[str, I64]:
        """All params, computed once. Needs the output scale to be set."""
        if self._params is None:
            self._params = self.make_params()
        return self._params

    def make_params(self) -> dict[str, I64]:
        """Default: every constant input k becomes param ``in{k}``, quantized per tensor."""
        out: dict[str, I64] = {}
        for k, info in enumerate(self.infos):
            if info is not None and info.const is not None:
                out[f"in{k}"] = const_param(info, self.qmax)
        return out

    # -- evaluation ---------------------------------------------------------------------------

    def x(self, xs: Sequence[I64 | None], k: int) -> I64:
        """Input `k` for `run`: the activation, or the constant's param."""
        if self.is_const(k):
            return self.params()[f"in{k}"]
        v = xs[k]
        if v is None:
            raise self.fail(f"input {k} is missing")
        return v

    def run(self, xs: Sequence[I64 | None]) -> I64:
        """The whole output."""
        raise NotImplementedError

    def out_shape(self, src: ElementSource) -> tuple[int, ...]:
        """The output shape, from input shapes (and small integer inputs)."""
        raise NotImplementedError

    def element(self, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Output element at C-order index `flat`, reading only what it depends on."""
        raise NotImplementedError

    # -- more than one output ---------------------------------------------------------------

    def output_count(self) -> int:
        """How many outputs the op computes (and the trace can commit); they all share the
        first output's kind and scale."""
        return 1

    def run_outputs(self, xs: Sequence[I64 | None]) -> list[I64]:
        """Every output, in order (only called when a later output is read)."""
        return [self.run(xs)]

    def out_shape_of(self, k: int, src: ElementSource) -> tuple[int, ...]:
        """Shape of output `k`."""
        if k != 0:
            raise self.fail(f"output {k} is not computed")
        return self.out_shape(src)

    def element_of(self, k: int, flat: int, out_shape: tuple[int, ...], src: ElementSource) -> int:
        """Element `flat` of output `k`."""
        if k != 0:
            raise self.fail(f"output {k} is not computed")
        return self.element(flat, out_shape, src)

    # -- element helpers --------------------------------------------------------------------

    def in_shape(self, src: ElementSource, k: int) -> tuple[int, ...]:
        """Shape of input k, whether activation or constant param."""
        if self.is_const(k):
            return src.param_shape(f"in{k}")
        return src.input_shape(k)

    def read(self, src: ElementSource, k: int, flat: npt.ArrayLike) -> I64:
        """Read elements of input k (activation or constant) at flat indices."""
        idx = np.asarray(flat, dtype=np.int64)
        if self.is_const(k):
            return src.read_param(f"in{k}", idx)
        return src.read_input(k, idx)

    def read_ints(self, src: ElementSource, k: int) -> list[int]:
        """A small integer input in full (shape vectors, axes), static or read."""
        info = self.info(k)
        if info.kind != "i":
            raise self.fail(f"input {k} must be an integer tensor")
        if info.const is not None:
            return [int(v) for v in np.asarray(info.const).reshape(-1)]
        n = int(np.prod(src.input_shape(k), dtype=np.int64))
        return [int(v) for v in src.read_input(k, np.arange(n, dtype=np.int64))]


def const_param(info: TensorInfo, qmax: int) -> I64:
    """A constant as a per-tensor param: quantized with its plan scale, or exact integers."""
    assert info.const is not None
    if info.kind == "i":
        return np.asarray(info.const, dtype=np.int64)
    assert info.scale is not None
    return quantize(info.const, info.scale, qmax)


def const_scale(value: npt.NDArray[Any], qmax: int) -> float:
    """Per-tensor scale of a float constant: max |value| / qmax."""
    a = np.asarray(value, dtype=np.float64)
    return scale_for(float(np.max(np.abs(a))) if a.size else 0.0, qmax)


OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make `cls` handle its `op_types`."""
    for t in cls.op_types:
        OPS[t] = cls
    return cls


def unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    """C-order multi-index of `flat` in `shape`."""
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(flat, tuple(shape)))


def ravel(index: Sequence[int], shape: Sequence[int]) -> int:
    """C-order flat index of `index` in `shape`."""
    if not shape:
        return 0
    return int(np.ravel_multi_index(tuple(index), tuple(shape)))


def broadcast_index(out_index: Sequence[int], in_shape: Sequence[int]) -> int:
    """Flat index, in an input of `in_shape`, of the element broadcast to `out_index`."""
    offset = len(out_index) - len(in_shape)
    idx = [0 if d == 1 else out_index[offset + i] for i, d in enumerate(in_shape)]
    return ravel(idx, in_shape)


def broadcast_shapes(shapes: Sequence[Sequence[int]], what: Callable[[], str]) -> tuple[int, ...]:
    """numpy broadcasting of shapes, as an InvalidInputError naming the node on mismatch."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as exc:
        raise InvalidInputError(f"{what()}: shapes {list(shapes)} do not broadcast") from exc


def norm_axis(axis: int, rank: int, label: str) -> int:
    """A possibly negative axis, checked against `rank`."""
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise InvalidInputError(f"node {label}: axis {axis} is out of range for rank {rank}")
    return a
