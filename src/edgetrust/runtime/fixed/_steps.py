"""A fixed executor's untraced run, compiled once into a flat list of steps.

`FixedExecutor._execute` is the definition of a run; `Steps` is the same run without its
per-node bookkeeping. Built once per executor (lazily), it holds tensors in a list indexed by
slot instead of a dict of names, reads each node's inputs from precomputed slots, drops values
after their last reader from precomputed lists, resolves the fusions (`_fusions`) once, and
quantizes a float input and checks its finiteness in one compiled pass. The ops called, their
order, their inputs and the widening of narrow arrays are those of `_execute(keep=False)`, so
the integers are too (tests compare the two). Traced runs and fault injection keep the general
path (a traced run without a fault quantizes its inputs here, `Steps.quantized`); so does any
input that is not a plain dict of well-formed arrays (the general path then raises the typed
error it always raised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import UnsupportedError
from edgetrust.runtime.fixed import _kernels
from edgetrust.runtime.fixed._arith import I64

if TYPE_CHECKING:
    from edgetrust.runtime.fixed._executor import FixedExecutor

_I64 = np.dtype(np.int64)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NONE = 0
"""The slot that is never written: constants and absent optional inputs read None there."""

Env = list[Any]
Step = Callable[[Env], None]


class Steps:
    """The run of one executor's nodes as closures over slots (see the module docstring)."""

    def __init__(self, ex: FixedExecutor) -> None:
        self.ex = ex
        self.fusions = ex._fusions()
        slot_of: dict[str, int] = {}

        def slot(name: str) -> int:
            return slot_of.setdefault(name, len(slot_of) + 1)

        for name in ex.input_names:
            slot(name)
        for index, node in enumerate(ex.nodes):
            for k in (0, *ex.traced_outputs[index]):
                slot(node.output[k])
        self.slot_of = slot_of
        self.inputs = [
            (name, slot_of[name], ex.input_kind(name), _scale(ex, name), ex.input_dims[name])
            for name in ex.input_names
        ]
        self.outputs = [
            (name, slot_of.get(name), ex.infos[name].kind, _scale(ex, name))
            for name in ex.output_names
        ]
        last_use = ex._last_use_cache()
        outputs = set(ex.output_names)
        n_slots = len(slot_of) + 1
        # A fused chain's members skip when its head's flag slot says the chain ran.
        flag_of: dict[int, int] = {}
        for head, (chain, _) in self.fusions.items():
            flag_of[head] = n_slots
            for j in chain:
                flag_of[j] = n_slots
            n_slots += 1
        self.n_slots = n_slots
        self.steps: list[tuple[Step, tuple[int, ...]]] = []
        for index, node in enumerate(ex.nodes):
            drops = tuple(
                slot_of[name]
                for name in dict.fromkeys(node.input)
                if name and name in slot_of and last_use.get(name, -1) <= index
                if name not in outputs
            )
            if index in self.fusions:
                step = self._fused(index, flag_of[index])
            else:
                step = self._node(index, flag_of.get(index))
            self.steps.append((step, drops))

    @staticmethod
    def of(ex: FixedExecutor) -> Steps | None:
        """`ex`'s steps (cached; rebuilt when its fusions are replaced), or None where an
        output is no input or node output (the general path then raises)."""
        steps: Steps | None = ex.__dict__.get("_steps")
        if steps is None or steps.fusions is not ex._fusions():
            steps = Steps(ex)
            ex.__dict__["_steps"] = steps
        return steps if all(slot is not None for _, slot, _, _ in steps.outputs) else None

    # -- steps --------------------------------------------------------------------------------

    def _reader(self, index: int) -> Callable[[Env], list[I64 | None]]:
        """The node's `xs` from the slots: as `_execute` builds them (narrow arrays widened
        for ops that do not take them)."""
        node, op = self.ex.nodes[index], self.ex.ops[index]
        ins = tuple(self.slot_of.get(name, _NONE) if name else _NONE for name in node.input)
        if op.narrow_inputs:
            return lambda env: [env[i] for i in ins]
        wide = tuple(k for k, i in enumerate(ins) if i != _NONE)

        def read(env: Env) -> list[I64 | None]:
            xs = [env[i] for i in ins]
            for k in wide:
                x = xs[k]
                if x is not None and x.dtype != _I64:
                    xs[k] = x.astype(np.int64)
            return xs

        return read

    def _node(self, index: int, flag: int | None) -> Step:
        """One node run on its own (`_execute`'s `_run_node` without fault or keep); a fused
        chain's member (`flag` given) only when its chain did not run."""
        read = self._reader(index)
        node_run = self._node_from(index)

        def run(env: Env) -> None:
            node_run(env, read(env))

        if flag is None:
            return run

        def member(env: Env) -> None:
            if not env[flag]:
                node_run(env, read(env))

        return member

    def _fused(self, index: int, flag: int) -> Step:
        """A fused chain's head: the chain's result in one call, or the head alone where that
        does not apply (its members then run as their own steps)."""
        ex = self.ex
        chain, run_chain = self.fusions[index]
        last = chain[-1]
        last_op, last_out = ex.ops[last], self.slot_of[ex.nodes[last].output[0]]
        read = self._reader(index)
        head = self._node_from(index)
        checked = ex._checked

        def run(env: Env) -> None:
            xs = read(env)
            fused = run_chain(xs)
            if fused is not None:
                env[last_out] = checked(last_op, fused)
                env[flag] = True
            else:
                head(env, xs)

        return run

    def _node_from(self, index: int) -> Callable[[Env, list[I64 | None]], None]:
        """A node run on `xs` already read (a fused head whose chain did not apply)."""
        ex = self.ex
        node, op = ex.nodes[index], ex.ops[index]
        out = self.slot_of[node.output[0]]
        extra = tuple((k, self.slot_of[node.output[k]]) for k in ex.traced_outputs[index])
        checked = ex._checked

        def run(env: Env, xs: list[I64 | None]) -> None:
            if extra:
                values = op.run_outputs(xs)
                env[out] = checked(op, values[0])
                for k, s in extra:
                    env[s] = checked(op, values[k])
            else:
                env[out] = checked(op, op.run(xs))

        return run

    # -- a run --------------------------------------------------------------------------------

    def _load(self, inputs: Mapping[str, npt.ArrayLike], env: Env) -> None:
        """Quantized inputs into their slots (`quantized`)."""
        quantized = self.quantized(inputs)
        for name, slot, _, _, _ in self.inputs:
            env[slot] = quantized[name]

    def quantized(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, I64]:
        """`quantize_inputs`, by one compiled pass per well-formed float array (the general
        path for anything else, and its errors)."""
        ex = self.ex
        out: dict[str, I64] = {}
        if type(inputs) is dict and len(inputs) == len(self.inputs):
            for name, _, kind, scale, dims in self.inputs:
                arr = inputs.get(name)
                if type(arr) is not np.ndarray or arr.size > ex.max_elements:
                    break
                if dims is not None and (
                    len(dims) != arr.ndim
                    or any(
                        d is not None and d > 0 and d != got
                        for d, got in zip(dims, arr.shape, strict=True)
                    )
                ):
                    break
                if kind == "q":
                    if arr.dtype not in _FLOATS:
                        break
                    q = _kernels.quantize(arr, scale, ex.qmax)
                    if q is None:
                        break
                    out[name] = q
                else:
                    if arr.dtype.kind not in "iu":
                        break
                    out[name] = np.asarray(arr, np.int64)
            else:
                return out
        return ex.quantize_inputs(inputs)

    def run(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
        """`FixedExecutor.run`: the outputs by name."""
        env: Env = [None] * self.n_slots
        self._load(inputs, env)
        for step, drops in self.steps:
            step(env)
            for s in drops:
                env[s] = None
        out: dict[str, npt.NDArray[Any]] = {}
        for name, slot, kind, scale in self.outputs:
            assert slot is not None
            value = env[slot]
            if value is None:
                raise UnsupportedError(f"graph output {name!r} is not computed by any node")
            if kind == "i":
                out[name] = np.asarray(value, np.int64)
                continue
            fast = _kernels.dequantize(value, scale)
            out[name] = fast if fast is not None else self.ex.dequantize(name, value)
        return out


def _scale(ex: FixedExecutor, name: str) -> float:
    """A "q" tensor's scale (1.0, unused, for "i" ones)."""
    scale = ex.infos[name].scale
    return 1.0 if scale is None else float(scale)


def kept_norms(ex: FixedExecutor) -> dict[int, int | None]:
    """For a run that keeps every value: BatchNormalization index → the index of a later
    Relu reading its output (None if none), cached. `norm_values` computes both in one pass
    from the BatchNormalization's input - in that input's own (narrow) dtype, where the
    node-by-node path widens it to int64 and back for the commitment."""
    found: dict[int, int | None] | None = ex.__dict__.get("_kept_norms")
    if found is None:
        from edgetrust.runtime.fixed._batchnorm import BatchNormalization

        found = {}
        for i, op in enumerate(ex.ops):
            if type(op) is not BatchNormalization or ex.traced_outputs[i]:
                continue
            found[i] = _relu_after(ex, i)
        ex.__dict__["_kept_norms"] = found
    return found


def _relu_after(ex: FixedExecutor, i: int) -> int | None:
    """The first later Relu whose only input is node `i`'s output, if any."""
    from edgetrust.runtime.fixed._elementwise import Relu

    out = ex.nodes[i].output[0]
    return next(
        (
            j
            for j in range(i + 1, len(ex.nodes))
            if type(ex.ops[j]) is Relu and list(ex.nodes[j].input) == [out]
        ),
        None,
    )


def norm_values(ex: FixedExecutor, index: int, x: Any) -> tuple[I64, I64 | None] | None:
    """BatchNormalization `index` on `x` (and max(·, 0) of it when `kept_norms` names a
    Relu) by its `channel_table`: the integers of its `run` (and the Relu's); None where the
    table or the compiled gather does not apply."""
    op = ex.ops[index]
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    table = op.channel_table(x.shape[1])  # type: ignore[attr-defined]
    if table is None:
        return None
    relu = kept_norms(ex)[index] is not None
    return _kernels.gather_relu(x, table, 2 * ex.qmax + 1, ex.qmax, relu)


KEPT_RELUS = True
"""Whether runs that keep every value use `relu_values` (tests and benchmarks switch it off
to compare with the node-by-node path)."""


def kept_relus(ex: FixedExecutor) -> dict[int, int]:
    """For a run that keeps every value: Conv index → the index of a later Relu reading
    only its output, where the Conv's compiled epilogue may write both (`relu_values`),
    cached. Other nodes may read the Conv's output too: both values are kept."""
    found: dict[int, int] | None = ex.__dict__.get("_kept_relus")
    if found is None:
        from edgetrust.runtime.fixed._conv import Conv

        found = {}
        for i, op in enumerate(ex.ops):
            if type(op) is not Conv or ex.traced_outputs[i] or len(ex.nodes[i].output) != 1:
                continue
            relu = _relu_after(ex, i)
            if relu is not None and op.fusable():
                found[i] = relu
        ex.__dict__["_kept_relus"] = found
    return found


def relu_values(
    ex: FixedExecutor, index: int, xs: list[I64 | None]
) -> tuple[I64, I64 | None] | None:
    """Conv `index` on `xs` and the Relu `kept_relus` names on its output, from one compiled
    epilogue pass (`_elementwise.KeptRelu`): the integers of the Conv's `run` and of the
    Relu's, in the dtypes those give. The Relu's is None where the Conv ran without that
    pass (the Relu then runs itself); both are None where `run_fused` does not apply."""
    from edgetrust.runtime.fixed._conv import Conv
    from edgetrust.runtime.fixed._elementwise import KeptRelu

    op = ex.ops[index]
    assert isinstance(op, Conv)
    post = KeptRelu()
    out = op.run_fused(xs, post)
    if out is None:
        return None
    relu = post.relu
    if relu is None or relu.size != out.size:
        return out, None
    return out, relu.reshape(out.shape)  # the epilogue's view (N, C, H·W on the BLAS path)


def fusion_map(ex: FixedExecutor) -> dict[int, tuple[list[int], Any]]:
    """`FixedExecutor._fusions`, computed: Conv → BatchNormalization and/or Relu, Gemm or
    Add/Sub/Sum → Relu, where each output in the chain is read only by the next node and is
    no graph output, with the function computing the chain's result from the head's inputs."""
    from edgetrust.runtime.fixed import _batchnorm, _conv, _elementwise, _linear

    readers: dict[str, list[int]] = {}
    for j, node in enumerate(ex.nodes):
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(j)

    def sole_reader(i: int, kind: type) -> int | None:
        out = ex.nodes[i].output[0]
        users = readers.get(out, [])
        if out in ex.output_names or len(users) != 1:
            return None
        j = users[0]
        ok = type(ex.ops[j]) is kind and ex.nodes[j].input[0] == out
        return j if ok else None

    found: dict[int, tuple[list[int], Any]] = {}
    for i, op in enumerate(ex.ops):
        if len(ex.nodes[i].output) != 1:
            continue
        if type(op) is _linear.Gemm or type(op) is _elementwise.AddSub:
            relu = sole_reader(i, _elementwise.Relu)
            if relu is not None:
                found[i] = ([relu], op.run_relu)
            continue
        if type(op) is not _conv.Conv or not op.fusable():
            continue
        bn = sole_reader(i, _batchnorm.BatchNormalization)
        relu = sole_reader(i if bn is None else bn, _elementwise.Relu)
        post: Any = None
        if bn is not None:
            norm = ex.ops[bn]
            assert isinstance(norm, _batchnorm.BatchNormalization)
            post = norm.channel_post(op.oc, relu=relu is not None)
        elif relu is not None:
            post = _elementwise.RELU_POST
        if post is not None:
            found[i] = ([j for j in (bn, relu) if j is not None], partial(op.run_fused, post=post))
    return found


def kept_narrowing(ex: FixedExecutor) -> set[int]:
    """For a run that keeps every value: the nodes whose int64 real output is stored in the
    commitment's dtype (int8/int16) as soon as it is made - when every integer fits, which
    `_kernels.narrow` checks - because a reader takes narrow arrays (e.g. a Relu behind an
    op that gave int64): that reader then runs on the narrow array, and the commitment needs
    no conversion. Readers that do not take them get it widened back (same integers)."""
    found: set[int] | None = ex.__dict__.get("_kept_narrow")
    if found is None:
        readers: dict[str, list[int]] = {}
        for j, node in enumerate(ex.nodes):
            for name in node.input:
                if name:
                    readers.setdefault(name, []).append(j)
        found = {
            i
            for i, op in enumerate(ex.ops)
            if op.out_kind() == "q"
            and len(ex.nodes[i].output) == 1
            and any(ex.ops[j].narrow_inputs for j in readers.get(ex.nodes[i].output[0], []))
        }
        ex.__dict__["_kept_narrow"] = found
    return found
