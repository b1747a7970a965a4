"""Planning for the fixed-point executor: the plan format and building a model's op list.

`build` walks the graph once: it makes each node's `Op`, fixes every tensor's scale (from a
given `QuantPlan`, from the model itself, or from calibration samples run through the integer
pipeline), and lays out the trace entries. `FixedExecutor` then only runs the ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from edgetrust.encoding import canonical_json, digest_bytes, digest_tensor, parse_json
from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.runtime.fixed._arith import I64, scale_for
from edgetrust.runtime.fixed._base import OPS, TensorInfo, const_scale, node_label

if TYPE_CHECKING:
    from edgetrust.runtime.fixed._executor import FixedExecutor

Precision = Literal["int8", "int16"]

QMAX: Mapping[str, int] = MappingProxyType({"int8": 127, "int16": 32767})


@dataclass(frozen=True)
class QuantPlan:
    """Everything beyond the model that fixes a fixed-point run: the per-tensor scales.

    A plan is a deterministic function of (model, precision, calibration samples): calibration
    runs the integer pipeline itself, node by node, and takes exact integer maxima, so any
    machine recomputes the same plan. Receipts name it by `digest`.
    """

    precision: Precision
    model_digest: str
    """sha256 of the ONNX bytes the plan was made for."""
    calibration_digest: str
    """sha256 over the calibration samples (see `calibration_digest`)."""
    scales: Mapping[str, float] = field(default_factory=dict)
    """Scale of every per-tensor-quantized real tensor (inputs, node outputs, constants)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (scales as numbers; RFC 8785 round-trips float64 exactly)."""
        return {
            "type": "https://edgetrust.dev/fixed-plan/v1",
            "precision": self.precision,
            "model": self.model_digest,
            "calibration": self.calibration_digest,
            "scales": dict(sorted(self.scales.items())),
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON."""
        return digest_bytes(self.to_json())

    @staticmethod
    def from_json(data: bytes | str) -> QuantPlan:
        """Parse a plan (untrusted input)."""
        obj = parse_json(data, what="fixed-point plan", max_bytes=16 * 2**20)
        if not isinstance(obj, dict) or obj.get("type") != "https://edgetrust.dev/fixed-plan/v1":
            raise InvalidInputError("not a fixed-point plan (type fixed-plan/v1)")
        precision = obj.get("precision")
        if precision not in QMAX:
            raise InvalidInputError(f"plan precision must be int8 or int16, got {precision!r}")
        scales = obj.get("scales")
        if not isinstance(scales, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            for k, v in scales.items()
        ):
            raise InvalidInputError("plan scales must map tensor names to positive numbers")
        model, calib = obj.get("model"), obj.get("calibration")
        if not isinstance(model, str) or not isinstance(calib, str):
            raise InvalidInputError("plan needs model and calibration digests")
        prec: Precision = "int8" if precision == "int8" else "int16"
        return QuantPlan(prec, model, calib, {k: float(v) for k, v in scales.items()})


def calibration_digest(samples: Sequence[Mapping[str, npt.ArrayLike]]) -> str:
    """sha256 of the canonical JSON list of ``{input name: tensor digest}`` per sample."""
    return digest_bytes(
        canonical_json(
            [{k: digest_tensor(np.asarray(v)) for k, v in sorted(s.items())} for s in samples]
        )
    )


@dataclass(frozen=True)
class Entry:
    """One traced tensor: a graph input (quantized) or a node's output."""

    label: str
    """``input:<name>`` for inputs, else the node's name or ``#<index>``."""
    tensor: str
    """The ONNX tensor name."""
    node_index: int | None
    """Index in the graph's node list, None for inputs."""
    kind: Literal["q", "i"]
    output: int = 0
    """Which of the node's outputs (a later one is traced only when something reads it; its
    label is ``<node label>/<output>``)."""


def describe_attrs(node: onnx.NodeProto) -> str:
    """A node's attributes as ``name=value`` (long values cut), or "none"."""
    parts = []
    for a in node.attribute:
        try:
            v = onnx.helper.get_attribute_value(a)
        except Exception:  # an attribute onnx itself cannot decode
            v = "?"
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        text = (
            repr(v) if not isinstance(v, onnx.TensorProto | onnx.GraphProto) else type(v).__name__
        )
        parts.append(f"{a.name}={text[:40]}")
    return ", ".join(parts) if parts else "none"


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise UnsupportedError("model does not import the default ONNX opset")


def _fixed_scale(
    name: str,
    given: Mapping[str, float] | None,
    computed: float,
    scales: dict[str, float],
) -> float:
    """Record a scale the model itself determines, checking it against a given plan."""
    if given is not None:
        if given.get(name) != computed:
            raise InvalidInputError(f"plan scale for {name!r} does not match the model")
    scales[name] = computed
    return computed


def build(
    ex: FixedExecutor,
    given: Mapping[str, float] | None,
    samples: list[dict[str, npt.NDArray[Any]]] | None,
    scales: dict[str, float],
) -> None:
    """Plan `ex`: fill its infos, ops, entries and traced outputs, and the scales.

    With a `given` plan its scales are used (and checked against what the model fixes);
    otherwise `samples` run through the integer pipeline node by node and each output
    scale comes from the exact integer maximum over them.
    """
    qmax = ex.qmax
    envs: list[dict[str, I64]] = [{} for _ in samples or []]
    for name in ex.input_names:
        kind = ex.input_kind(name)
        in_scale: float | None = None
        if kind == "q":
            if given is not None:
                if name not in given:
                    raise InvalidInputError(f"plan has no scale for input {name!r}")
                in_scale = given[name]
            else:
                assert samples is not None
                m = max(float(np.max(np.abs(s[name]), initial=0.0)) for s in samples)
                in_scale = scale_for(m, qmax)
            scales[name] = in_scale
        ex.infos[name] = TensorInfo(name, kind, in_scale)
        for env, s in zip(envs, samples or [], strict=True):
            env[name] = ex._quantize_input(name, s[name])
    for name, t in ex.initializers.items():
        value = numpy_helper.to_array(t)
        if value.dtype.kind == "f":
            c = value.astype(np.float64)
            ex.infos[name] = TensorInfo(name, "q", const_scale(c, qmax), c)
        elif value.dtype.kind in "iu":
            ints = value.astype(np.int64)
            ex.infos[name] = TensorInfo(name, "i", None, ints, value.dtype.name)
        elif value.dtype.kind == "b":
            ex.infos[name] = TensorInfo(name, "i", None, value.astype(np.int64))
        else:
            raise UnsupportedError(f"initializer {name!r} has unsupported dtype {value.dtype}")
    last_use = last_use_of(ex.nodes)
    for index, node in enumerate(ex.nodes):
        label = node_label(node, index)
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(
                f"op {node.domain}.{node.op_type} (node {label}) is not supported"
            )
        cls = OPS.get(node.op_type)
        if cls is None:
            raise UnsupportedError(
                f"op {node.op_type} (node {label}) is not supported by the fixed-point "
                f"executor (seen: opset {ex.settings.opset}, attributes: "
                f"{describe_attrs(node)}); supported: {', '.join(sorted(OPS))}"
            )
        infos: list[TensorInfo | None] = []
        for name in node.input:
            if not name:
                infos.append(None)
                continue
            if name not in ex.infos:
                raise InvalidInputError(
                    f"node {label} reads {name!r}, which no earlier node, input or "
                    "initializer defines (the graph must be topologically sorted)"
                )
            infos.append(ex.infos[name])
        outs = [o for o in node.output if o]
        if not outs or node.output[0] == "":
            raise UnsupportedError(f"node {label} has no first output")
        op = cls(node, index, infos, ex.settings)
        traced = [
            k
            for k, extra in enumerate(node.output)
            if k > 0 and extra and (extra in last_use or extra in ex.output_names)
        ]
        if traced and traced[-1] >= op.output_count():
            raise UnsupportedError(
                f"{node.op_type} node {label}: only the first output is supported"
            )
        ex.traced_outputs.append(traced)
        out_name = node.output[0]
        states: list[tuple[float, Any]] = []
        kind = op.out_kind()
        policy = op.scale_policy()
        scale: float | None
        if kind == "i":
            scale = None
        elif isinstance(policy, float):
            scale = _fixed_scale(out_name, given, policy, scales)
        elif given is not None:
            if out_name not in given:
                raise InvalidInputError(f"plan has no scale for {out_name!r} (node {label})")
            scale = given[out_name]
            scales[out_name] = scale
        else:
            states = [
                op.calib_pass([env.get(n) if n else None for n in node.input]) for env in envs
            ]
            scale = scale_for(max((m for m, _ in states), default=0.0), qmax)
            scales[out_name] = scale
        op.set_out_scale(scale)
        const = None
        if op.can_fold() and all(i is None or i.const is not None for i in infos):
            const = op.fold([i.const if i is not None else None for i in infos])
            const = const.astype(np.float64) if kind == "q" else const.astype(np.int64)
        ex.infos[out_name] = TensorInfo(out_name, kind, scale, const)
        for info in infos:
            if info is not None and info.const is not None and info.kind == "q":
                scales.setdefault(info.name, info.scale or 1.0)
        ex.ops.append(op)
        ex.entries.append(Entry(label, out_name, index, kind))
        for k in traced:
            name = node.output[k]
            ex.infos[name] = TensorInfo(name, kind, scale)
            ex.entries.append(Entry(f"{label}/{k}", name, index, kind, k))
        for j, env in enumerate(envs):
            xs = [env.get(n) if n else None for n in node.input]
            if traced:
                values = op.run_outputs(xs)
                for k in traced:
                    env[node.output[k]] = ex._checked(op, values[k])
                value = values[0]
            else:
                value = op.run_calibrated(xs, states[j][1]) if states else op.run(xs)
            env[out_name] = ex._checked(op, value)
            for name in list(env):
                if last_use.get(name, -1) <= index and name not in ex.output_names:
                    del env[name]
    for name in ex.output_names:
        if name not in ex.infos:
            raise InvalidInputError(f"graph output {name!r} is never produced")
    if given is not None and scales != dict(given):
        raise InvalidInputError("plan scales do not match the model (extra or missing)")


def last_use_of(nodes: Sequence[onnx.NodeProto]) -> dict[str, int]:
    """Per tensor name, the index of the last node that reads it."""
    out: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name:
                out[name] = index
    return out
