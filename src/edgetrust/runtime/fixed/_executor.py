"""The fixed-point executor: plans a model (scales from calibration), then runs it exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto

from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, ResourceLimitError, UnsupportedError
from edgetrust.runtime.fixed import (  # noqa: F401  (importing registers the ops)
    _batchnorm,
    _conv,
    _convt,
    _elementwise,
    _exact,
    _extra,
    _groupnorm,
    _integer,
    _kernels,
    _linear,
    _movement,
    _norm,
    _pool,
    _qdq,
    _qlinear,
    _recurrent,
    _reduce,
    _shape,
    _split,
    _steps,
)
from edgetrust.runtime.fixed._arith import I64, quantize
from edgetrust.runtime.fixed._base import Op, Settings, TensorInfo
from edgetrust.runtime.fixed._fault import Fault
from edgetrust.runtime.fixed._plan import (
    QMAX,
    Entry,
    Precision,
    QuantPlan,
    build,
    calibration_digest,
    last_use_of,
    opset_of,
)
from edgetrust.runtime.fixed._steps import (
    Steps,
    fusion_map,
    kept_narrowing,
    kept_norms,
    kept_relus,
    norm_values,
    relu_values,
)

if TYPE_CHECKING:
    from edgetrust.runtime.trace import TraceLayout

EXECUTOR_NAME = "fixed"
EXECUTOR_VERSION = "2"
"""Bumped whenever any op's integer definition or the trace layout changes: traces of
different versions differ. Version 2 = version 1's arithmetic, trace layout v2
(`edgetrust.runtime.trace.LAYOUT_V2`); a version 1 receipt is re-executed in layout v1."""

STORAGE: Mapping[str, Any] = MappingProxyType({"int8": np.int8, "int16": np.int16})

_FLOAT_INPUTS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
_INT_INPUTS = {TensorProto.INT32, TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8}
_SYNTHETIC_SAMPLES = 4
_NARROW_MIN = 1 << 16
"""Smaller outputs are not narrowed in traced runs (`_steps.kept_narrowing`): the extra
call and the widening for the next op cost more than the memory saved (digits MLP: +8 µs)."""


def _model_bytes(model: onnx.ModelProto | bytes) -> tuple[onnx.ModelProto, bytes]:
    if isinstance(model, bytes | bytearray):
        raw = bytes(model)
        try:
            proto = onnx.load_from_string(raw)
        except Exception as exc:  # protobuf raises its own DecodeError
            raise InvalidInputError(f"not an ONNX model: {exc}") from exc
        return proto, raw
    if not isinstance(model, onnx.ModelProto):
        raise InvalidInputError("model must be an onnx.ModelProto or ONNX bytes")
    return model, model.SerializeToString()


class FixedExecutor:
    """Bit-exact, deterministic fixed-point execution of an ONNX graph.

    Every tensor is an integer array with a per-tensor scale (weights: per output channel);
    every op has one integer definition (see the op modules), with rounding half away from
    zero and saturation. Results are identical on every machine, thread count and run.

    Args:
        model: the ONNX model (proto or bytes; the digest is over the bytes).
        precision: "int8" (activations and weights in [-127, 127], float32 BLAS) or "int16"
            ([-32767, 32767], float64 BLAS; for models that lose too much at int8).
        calibration: samples (input name → array) that fix the activation scales. Their
            digest goes into the plan. Without samples, a synthetic set is used (seeded
            standard-normal floats, zero integers) - fine for tests, poor for accuracy.
        plan: a plan made earlier (e.g. by the device); then no calibration runs, and the plan
            must be for this model and precision.
        max_elements: refuse any single tensor with more elements than this.
        trace_layout: the layout of traces and weight commitments
            (`edgetrust.runtime.trace.LAYOUT_V2` by default; `LAYOUT_V1` re-executes an
            executor version 1 receipt).

    Raises:
        UnsupportedError: an op (named with its node) or a feature the executor lacks.
        InvalidInputError: malformed model, calibration or plan.
    """

    name = EXECUTOR_NAME

    def __init__(
        self,
        model: onnx.ModelProto | bytes,
        *,
        precision: Precision = "int8",
        calibration: Sequence[Mapping[str, npt.ArrayLike]] | None = None,
        plan: QuantPlan | None = None,
        max_elements: int = 1 << 28,
        trace_layout: TraceLayout | None = None,
    ) -> None:
        from edgetrust.runtime.trace import LAYOUT_V2

        self.trace_layout = LAYOUT_V2 if trace_layout is None else trace_layout
        if precision not in QMAX:
            raise InvalidInputError(f"precision must be 'int8' or 'int16', got {precision!r}")
        if max_elements < 1:
            raise InvalidInputError("max_elements must be positive")
        if plan is not None and calibration is not None:
            raise InvalidInputError("give calibration samples or a plan, not both")
        self.model, raw = _model_bytes(model)
        self.model_digest = digest_bytes(raw)
        self.precision: Precision = precision
        self.qmax = QMAX[precision]
        self.storage = STORAGE[precision]
        self.max_elements = max_elements
        self.settings = Settings(precision, self.qmax, opset_of(self.model))
        graph = self.model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in self.initializers]
        self.input_types = {
            i.name: i.type.tensor_type.elem_type for i in graph.input if i.name in self.input_names
        }
        self.input_dims = {
            i.name: [
                d.dim_value if d.HasField("dim_value") else None
                for d in i.type.tensor_type.shape.dim
            ]
            if i.type.tensor_type.HasField("shape")
            else None
            for i in graph.input
            if i.name in self.input_names
        }
        self.output_names = [o.name for o in graph.output]
        self.nodes = list(graph.node)
        for name in self.input_names:
            t = self.input_types[name]
            if t not in _FLOAT_INPUTS and t not in _INT_INPUTS:
                raise UnsupportedError(f"input {name!r} has unsupported element type {t}")
        if plan is not None:
            if plan.precision != precision:
                raise InvalidInputError(
                    f"plan is for {plan.precision}, executor precision is {precision}"
                )
            if plan.model_digest != self.model_digest:
                raise InvalidInputError("plan was made for a different model")
        else:
            raw_samples = (
                list(calibration) if calibration is not None else self._synthetic_samples()
            )
            if not raw_samples:
                raise InvalidInputError("calibration needs at least one sample")
            checked = [self.validate_inputs(s) for s in raw_samples]
            calib_digest = calibration_digest(checked)
        self.entries: list[Entry] = [
            Entry(f"input:{n}", n, None, self.input_kind(n)) for n in self.input_names
        ]
        self.ops: list[Op] = []
        self.traced_outputs: list[list[int]] = []
        """Per node, the outputs after the first that the trace commits (something reads them)."""
        self.infos: dict[str, TensorInfo] = {}
        scales: dict[str, float] = {}
        if plan is not None:
            self._build(plan.scales, None, scales)
            self.plan = plan
        else:
            self._build(None, checked, scales)
            self.plan = QuantPlan(precision, self.model_digest, calib_digest, scales)
        # Planned: from now on Convs and Adds may hand on int8/int16 arrays (`Op.narrow_inputs`;
        # the plan's own runs above saw int64 only).
        for op in self.ops:
            if type(op) is _conv.Conv or type(op) is _elementwise.AddSub:
                op.narrow_out = True

    # -- planning ---------------------------------------------------------------------------

    def input_kind(self, name: str) -> Literal["q", "i"]:
        """ "q" for float inputs, "i" for integer ones."""
        return "q" if self.input_types[name] in _FLOAT_INPUTS else "i"

    def _synthetic_samples(self) -> list[dict[str, npt.NDArray[Any]]]:
        rng = np.random.default_rng(0)
        out = []
        for _ in range(_SYNTHETIC_SAMPLES):
            sample: dict[str, npt.NDArray[Any]] = {}
            for name in self.input_names:
                dims = self.input_dims[name] or [1]
                shape = tuple(d if d else 1 for d in dims)
                if self.input_kind(name) == "q":
                    dtype = onnx.helper.tensor_dtype_to_np_dtype(self.input_types[name])
                    sample[name] = rng.standard_normal(shape).astype(dtype)
                else:
                    dtype = onnx.helper.tensor_dtype_to_np_dtype(self.input_types[name])
                    sample[name] = np.zeros(shape, dtype)
            out.append(sample)
        return out

    def _build(
        self,
        given: Mapping[str, float] | None,
        samples: list[dict[str, npt.NDArray[Any]]] | None,
        scales: dict[str, float],
    ) -> None:
        build(self, given, samples, scales)

    def _last_use(self) -> dict[str, int]:
        return last_use_of(self.nodes)

    def _checked(self, op: Op, value: I64) -> I64:
        if value.size > self.max_elements:
            raise ResourceLimitError(
                f"node {op.label} would produce {value.size} elements (limit {self.max_elements})",
                limit=self.max_elements,
            )
        return value

    # -- inputs -------------------------------------------------------------------------------

    def validate_inputs(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
        """Check names, dtypes, declared dimensions and finiteness; return arrays."""
        if not isinstance(inputs, Mapping):
            raise InvalidInputError("inputs must map input names to arrays")
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise InvalidInputError(
                f"model has no input {unknown[0]!r} (its inputs: {', '.join(self.input_names)})"
            )
        out: dict[str, npt.NDArray[Any]] = {}
        for name in self.input_names:
            if name not in inputs:
                raise InvalidInputError(f"input {name!r} is missing")
            try:
                arr = np.asarray(inputs[name])
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(f"input {name!r} is not an array") from exc
            kind = self.input_kind(name)
            if kind == "q" and arr.dtype.kind != "f":
                raise InvalidInputError(f"input {name!r} must be floating point, got {arr.dtype}")
            if kind == "i" and arr.dtype.kind not in "iu":
                raise InvalidInputError(f"input {name!r} must be integers, got {arr.dtype}")
            dims = self.input_dims[name]
            if dims is not None:
                if len(dims) != arr.ndim or any(
                    d is not None and d > 0 and d != got
                    for d, got in zip(dims, arr.shape, strict=True)
                ):
                    want = tuple(d if d else "?" for d in dims)
                    raise InvalidInputError(
                        f"input {name!r}: expected shape {want}, got {arr.shape}"
                    )
            if arr.size > self.max_elements:
                raise ResourceLimitError(
                    f"input {name!r} has {arr.size} elements (limit {self.max_elements})",
                    limit=self.max_elements,
                )
            if kind == "q" and not np.all(np.isfinite(arr)):
                raise InvalidInputError(f"input {name!r} contains NaN or Inf")
            out[name] = arr
        return out

    def _quantize_input(self, name: str, arr: npt.NDArray[Any]) -> I64:
        info = self.infos[name]
        if info.kind == "i":
            return np.asarray(arr, np.int64)
        assert info.scale is not None
        return quantize(arr, info.scale, self.qmax)

    def quantize_element(self, name: str, value: float | int) -> int:
        """One input element as the trace holds it (the referee's view of input quantization)."""
        return int(self._quantize_input(name, np.asarray([value]))[0])

    def quantize_inputs(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, I64]:
        """Validate and quantize inputs (the trace's first entries)."""
        checked = self.validate_inputs(inputs)
        return {n: self._quantize_input(n, checked[n]) for n in self.input_names}

    # -- running ------------------------------------------------------------------------------

    def entry_of_tensor(self, tensor: str) -> int | None:
        """The trace entry holding ONNX tensor `tensor` (None for constants)."""
        if not hasattr(self, "_entry_map"):
            self._entry_map = {e.tensor: i for i, e in enumerate(self.entries)}
        return self._entry_map.get(tensor)

    def entry_index(self, node: str | int, output: int = 0) -> int:
        """Trace entry of a node's output (name, ``#<index>``, index) or of ``input:<name>``."""
        if isinstance(node, str) and node.startswith("input:"):
            name = node[len("input:") :]
            if name not in self.input_names:
                raise InvalidInputError(f"model has no input {name!r}")
            return self.input_names.index(name)
        if "_entry_of_output" not in self.__dict__:
            self._entry_of_output = {
                (e.node_index, e.output): i for i, e in enumerate(self.entries)
            }
        index = self.node_index(node)
        if (index, output) not in self._entry_of_output:
            raise InvalidInputError(f"output {output} of node {node!r} is not traced")
        return self._entry_of_output[(index, output)]

    def _apply_fault(self, fault: Fault, kind: str, value: I64) -> I64:
        if not 0 <= fault.element < value.size:
            raise InvalidInputError(
                f"fault element {fault.element} is outside an entry of {value.size} elements"
            )
        out = np.array(value, dtype=np.int64, copy=True)
        flat = out.reshape(-1)
        old = int(flat[fault.element])
        lo, hi = (-self.qmax, self.qmax) if kind == "q" else (-(1 << 62), 1 << 62)
        new = min(hi, max(lo, old + fault.delta))
        if new == old:
            new = min(hi, max(lo, old - fault.delta))
        flat[fault.element] = new
        return out

    def _execute(
        self,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        keep: bool,
        fault: Fault | None = None,
        kept: Any = None,
    ) -> tuple[dict[str, I64], Any]:
        """Run every node; with `keep`, each entry's value is appended to `kept` (a new list
        unless one, or a `_committer.committer`, is given) as soon as it is computed."""
        steps = Steps.of(self) if fault is None else None
        env = dict(steps.quantized(inputs) if steps is not None else self.quantize_inputs(inputs))
        target = self.entry_index(fault.node, fault.output) if fault is not None else -1
        if fault is not None and target < len(self.input_names):
            name = self.input_names[target]
            env[name] = self._apply_fault(fault, self.input_kind(name), env[name])
        if not keep:
            kept = None
        elif kept is None:
            kept = []
        if kept is not None:
            for n in self.input_names:
                kept.append(env[n])
        drops = self._drops()
        entry = len(self.input_names)
        # Untraced runs fuse a BatchNormalization into the Conv it alone follows (the Conv's
        # output is never kept, so only the pair's result is computed; same integers).
        fusions = self._fusions() if not keep and fault is None else {}
        # Runs that keep every value compute a BatchNormalization (and a Relu behind it) in
        # one pass from its input (`_steps.norm_values`; same integers, no fault to follow).
        norms = kept_norms(self) if keep and fault is None else {}
        # ... and a Conv with a Relu behind it in one epilogue pass (`_steps.relu_values`).
        relus = kept_relus(self) if keep and fault is None and _steps.KEPT_RELUS else {}
        ready: dict[int, I64] = {}
        done: set[int] = set()
        for index, (node, op) in enumerate(zip(self.nodes, self.ops, strict=True)):
            value = ready.pop(index, None)
            if value is None and index in norms:
                pair = norm_values(self, index, env.get(node.input[0]))
                if pair is not None:
                    value = pair[0]
                    relu = norms[index]
                    if relu is not None and pair[1] is not None:
                        ready[relu] = pair[1]
            elif value is None and index in relus:
                both = relu_values(self, index, [env.get(n) if n else None for n in node.input])
                if both is not None:
                    value = both[0]
                    if both[1] is not None:
                        ready[relus[index]] = both[1]
            if value is not None:
                entry = self._run_node(index, node, op, [], env, entry, target, fault, kept, value)
            else:
                xs = [env.get(n) if n else None for n in node.input]
                if not op.narrow_inputs:
                    xs = [x if x is None or x.dtype == np.int64 else x.astype(np.int64) for x in xs]
                if index in fusions:
                    chain, run_chain = fusions[index]
                    fused = run_chain(xs)
                    if fused is not None:
                        last = chain[-1]
                        env[self.nodes[last].output[0]] = self._checked(self.ops[last], fused)
                        done.update((index, *chain))
                if index not in done:
                    entry = self._run_node(index, node, op, xs, env, entry, target, fault, kept)
            # Values no later node reads leave `env` (a traced run's `kept` still holds them).
            for name in drops[index]:
                env.pop(name, None)
        return env, kept

    def _drops(self) -> list[tuple[str, ...]]:
        """Per node, the inputs no later node reads and no graph output is (cached)."""
        if not hasattr(self, "_drop_lists"):
            last_use = self._last_use_cache()
            outputs = set(self.output_names)
            self._drop_lists = [
                tuple(
                    n for n in node.input if n and last_use.get(n, -1) <= index and n not in outputs
                )
                for index, node in enumerate(self.nodes)
            ]
        return self._drop_lists

    def _run_node(
        self,
        index: int,
        node: Any,
        op: Op,
        xs: list[I64 | None],
        env: dict[str, I64],
        entry: int,
        target: int,
        fault: Fault | None,
        kept: Any,
        value: I64 | None = None,
    ) -> int:
        """Run one node into `env` (and `kept`, unless None); the next entry index. `value`:
        its output computed already (then `xs` is unused)."""
        traced = self.traced_outputs[index]
        if value is not None:
            outs = [(0, value)]
        elif traced:
            values = op.run_outputs(xs)
            outs = [(0, values[0]), *((k, values[k]) for k in traced)]
        else:
            outs = [(0, op.run(xs))]
        for k, out in outs:
            out = self._checked(op, out)
            if entry == target:
                assert fault is not None
                out = self._apply_fault(fault, op.out_kind(), out)
            if (
                kept is not None
                and out.size >= _NARROW_MIN
                and out.dtype == np.int64
                and index in kept_narrowing(self)
            ):
                small = _kernels.narrow(out, self.qmax, self.storage)
                out = out if small is None else small
            env[node.output[k]] = out
            entry += 1
            if kept is not None:
                kept.append(out)
        return entry

    def _fusions(self) -> dict[int, tuple[list[int], Any]]:
        """Conv, Gemm or Add index → (the indices of the nodes fused behind it: a Conv's
        BatchNormalization and/or Relu, a Gemm's or an Add's Relu; the function computing the
        chain's result from the first node's inputs, or None where it does not apply) where
        each output in the chain is read only by the next node and is no graph output
        (cached; see `_steps.fusion_map`)."""
        if not hasattr(self, "_fusion_map"):
            self._fusion_map = fusion_map(self)
        return self._fusion_map

    def _last_use_cache(self) -> dict[str, int]:
        if not hasattr(self, "_last_use_map"):
            self._last_use_map = self._last_use()
        return self._last_use_map

    def _outputs(self, env: Mapping[str, I64]) -> dict[str, npt.NDArray[Any]]:
        out: dict[str, npt.NDArray[Any]] = {}
        for name in self.output_names:
            if name not in env:
                raise UnsupportedError(f"graph output {name!r} is not computed by any node")
            out[name] = self.dequantize(name, env[name])
        return out

    def dequantize(self, name: str, values: I64) -> npt.NDArray[Any]:
        """Integers of tensor `name` as the user sees them: float32 reals or int64."""
        info = self.infos[name]
        if info.kind == "i":
            return np.asarray(values, np.int64)
        assert info.scale is not None
        return (np.asarray(values, np.float64) * info.scale).astype(np.float32)

    def run(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
        """Outputs by name: float32 (dequantized) for real tensors, int64 for integer ones."""
        steps = Steps.of(self)
        if steps is not None:
            return steps.run(inputs)
        env, _ = self._execute(inputs, keep=False)
        return self._outputs(env)

    def run_integers(self, inputs: Mapping[str, npt.ArrayLike]) -> list[I64]:
        """Every entry's integers (inputs, then node outputs) in the committed storage dtype."""
        _, kept = self._execute(inputs, keep=True)
        return [self.storage_array(e, v) for e, v in zip(self.entries, kept, strict=True)]

    def storage_array(self, entry: Entry, values: I64) -> npt.NDArray[Any]:
        """Integers in the dtype their commitment uses: int8/int16 for reals, int64 integers."""
        if entry.kind == "i":
            return np.ascontiguousarray(values, dtype=np.int64)
        return np.ascontiguousarray(values, dtype=self.storage)

    def run_traced(
        self, inputs: Mapping[str, npt.ArrayLike], *, fault: Fault | None = None
    ) -> tuple[dict[str, npt.NDArray[Any]], Any]:
        """Outputs and the `edgetrust.runtime.trace.Trace` of every node.

        `fault` makes a lying device (demos and tests only): see `Fault`.
        """
        from edgetrust.runtime._committer import committer as open_committer
        from edgetrust.runtime.trace import Trace

        committer = open_committer(
            self.trace_layout, [partial(self.storage_array, e) for e in self.entries]
        )
        try:
            env, _ = self._execute(inputs, keep=True, fault=fault, kept=committer)
        finally:
            committer.close()  # a run that raised leaves no thread polling
        values, commitments = committer.results()
        return self._outputs(env), Trace(self.entries, values, self.trace_layout, commitments)

    # -- description --------------------------------------------------------------------------

    def params(self, index: int) -> dict[str, I64]:
        """The params (quantized weights, multipliers) of node `index`."""
        return self.ops[index].params()

    def weight_commitments(self) -> Any:
        """Element-level commitments of every node's params (computed once, cached)."""
        if not hasattr(self, "_weights"):
            from edgetrust.runtime.trace import WeightCommitments

            self._weights = WeightCommitments.from_executor(self)
        return self._weights

    @property
    def version(self) -> str:
        """The executor version of this executor's trace layout ("1" or "2")."""
        return str(self.trace_layout.version)

    def descriptor(self) -> dict[str, Any]:
        """``{"name", "version", "settings"}`` for a receipt's ``executor`` field."""
        return {
            "name": self.name,
            "version": self.version,
            "settings": {
                "precision": self.precision,
                "plan": self.plan.digest,
                "calibration": self.plan.calibration_digest,
                "weights_root": self.weight_commitments().root_digest,
                **_layout_setting(self.trace_layout),
            },
        }

    def op_for(self, node: str | int) -> Op:
        """The op of a node named by name or by index in the graph's node list."""
        return self.ops[self.node_index(node)]

    def node_index(self, node: str | int) -> int:
        """Resolve a node given by name, ``#<index>``, or index."""
        if isinstance(node, int) and not isinstance(node, bool):
            if 0 <= node < len(self.nodes):
                return node
            raise InvalidInputError(f"node index {node} is outside 0..{len(self.nodes) - 1}")
        if isinstance(node, str):
            text = node[1:] if node.startswith("#") else node
            matches = [i for i, n in enumerate(self.nodes) if n.name and n.name == node]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidInputError(f"node name {node!r} is not unique; use its index")
            if text.isdigit():
                return self.node_index(int(text))
        raise InvalidInputError(f"no node {node!r} in the graph")


def _layout_setting(layout: TraceLayout) -> dict[str, str]:
    """The ``"trace"`` executor setting: absent for v1, so v1 descriptors stay as they were."""
    return {} if layout.version == 1 else {"trace": layout.type}
